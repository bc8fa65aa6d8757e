"""`python -m connector.skills` (also `appliance-skills`): list, enable, disable, verify skills; index documents.

enable / disable write ``[connector.plugins.<name>] enabled`` into the config file (comments and layout kept);
restart the connector to apply.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..config_file import ConfigError, config_path


def _plugins() -> dict[str, dict[str, Any]]:
    from pydantic import ValidationError

    from ..config_file import explain
    from ..settings import ConnectorSettings

    try:
        return dict(ConnectorSettings().plugins)
    except ValidationError as exc:
        raise ConfigError(explain(exc, "connector", "CONNECTOR_")) from exc


def cmd_list(args: argparse.Namespace) -> int:
    from .registry import discover, is_enabled

    plugins = _plugins()
    rows = []
    for name, spec in sorted(discover().items()):
        table = plugins.get(name, {})
        order = table.get("order", spec.cls.default_order if spec.cls else "-")
        rows.append({"name": name, "enabled": is_enabled(spec, table), "order": order, "origin": spec.origin,
                     "description": spec.description or (spec.load_error or "")})
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=1))
        return 0
    width = max(len(r["name"]) for r in rows)
    for r in sorted(rows, key=lambda r: (not r["enabled"], str(r["order"]), r["name"])):
        state = "enabled " if r["enabled"] else "disabled"
        print(f"{r['name']:<{width}}  {state}  order {r['order']!s:>4}  {r['origin']:<24} {r['description']}")
    return 0


def _set_enabled(args: argparse.Namespace, value: bool) -> int:
    import tomlkit

    from .registry import discover

    specs = discover()
    if args.name not in specs:
        print(f"no such skill: {args.name} (known: {', '.join(sorted(specs))})", file=sys.stderr)
        return 2
    path = Path(args.config) if args.config else config_path()
    if path is None:
        print("no config file found ($APPLIANCE_CONFIG, ./appliance.toml, /etc/appliance/appliance.toml); "
              "name one with --config (it is created if missing)", file=sys.stderr)
        return 2
    document = tomlkit.parse(path.read_text(encoding="utf-8")) if path.exists() else tomlkit.document()
    connector = document.setdefault("connector", tomlkit.table())
    plugins = connector.setdefault("plugins", tomlkit.table(is_super_table=True))
    table = plugins.setdefault(args.name, tomlkit.table())
    table["enabled"] = value
    path.write_text(tomlkit.dumps(document), encoding="utf-8")
    print(f"{args.name}: {'enabled' if value else 'disabled'} in {path}; restart the connector to apply "
          "(systemctl restart appliance-connector)")
    if value:
        from .registry import verify

        item = verify(dict(document.unwrap()["connector"]["plugins"]), [args.name])[0]
        for problem in item.problems:
            print(f"  warning: {problem}", file=sys.stderr)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from .registry import verify

    report = verify(_plugins(), args.names or None)
    failed = False
    for item in report:
        if item.ok:
            print(f"ok       {item.name} ({item.origin}{', enabled' if item.enabled else ''})")
        else:
            failed = failed or item.enabled or bool(args.names)
            print(f"{'FAIL' if item.enabled or args.names else 'warn'}     {item.name} ({item.origin}"
                  f"{', enabled' if item.enabled else ', disabled'})")
            for problem in item.problems:
                print(f"         - {problem}")
    return 1 if failed else 0


def cmd_index(args: argparse.Namespace) -> int:
    """Bring the knowledge base's index up to date now (what the connector does at start and every interval)."""
    from .registry import configure, discover

    spec = discover()["knowledge_base"]
    table = dict(_plugins().get("knowledge_base", {}))
    if args.folder:
        table["folder"] = args.folder
    if args.index_dir:
        table["index_dir"] = args.index_dir
    skill = configure(spec, {**table, "enabled": True})
    index = skill.open_index()  # type: ignore[attr-defined]
    report = index.scan()
    print(f"{skill.config.folder}: {report.summary()}")  # type: ignore[attr-defined]
    for rel, reason in report.failed.items():
        print(f"  failed: {rel}: {reason}")
    documents, chunks = index.size
    print(f"index {skill.index_dir}: {documents} documents, {chunks} chunks")  # type: ignore[attr-defined]
    if args.query:
        for hit in index.search(args.query, skill.config.top_k, skill.config.min_score,  # type: ignore[attr-defined]
                                skill.config.score_margin, skill.config.min_lift):  # type: ignore[attr-defined]
            print(f"  {hit.score:.3f}  {hit.source}: {hit.text[:100]}")
    return 1 if report.failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m connector.skills", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", help="installed skills, enabled or not, in the order they run")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_list)
    for name, value in (("enable", True), ("disable", False)):
        p = sub.add_parser(name, help=f"{name} a skill in the config file")
        p.add_argument("name")
        p.add_argument("--config", help="the config file (default: the one the connector reads)")
        p.set_defaults(run=lambda a, v=value: _set_enabled(a, v))
    p = sub.add_parser("verify", help="check skills' packages, configuration and resources (exit 1 on problems)")
    p.add_argument("names", nargs="*")
    p.set_defaults(run=cmd_verify)
    p = sub.add_parser("index", help="index the knowledge base's folder now (only changed files are embedded)")
    p.add_argument("--folder")
    p.add_argument("--index-dir")
    p.add_argument("--query", help="then show what this question retrieves")
    p.set_defaults(run=cmd_index)
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except ConfigError as exc:
        print(f"configuration: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        from .base import SkillError

        if isinstance(exc, SkillError):
            print(str(exc), file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
