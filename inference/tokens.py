"""`python -m inference.tokens`: mint short-lived API tokens and manage the named API keys.

    issue    --sub connector --ttl 3600 [--scope generate]   print an HS256 token (jwt_secret from the settings)
    new-key  --name connector [--file keys.toml]             print a new random key once; store its SHA-256
    revoke   --name connector [--file keys.toml]             remove a key
    list     [--file keys.toml]                               the key names

The secret and the key file come from the inference settings (INFERENCE_JWT_SECRET, INFERENCE_API_KEYS_FILE,
or the [inference] table of the config file), as the server reads them; verification is inference/auth.py.
"""

from __future__ import annotations

import argparse
import secrets
import sys
from pathlib import Path

import tomlkit

from .auth import SCOPES, issue_token, key_digest, load_key_file


def _settings():
    from pydantic import ValidationError

    from .config_file import ConfigError, explain
    from .settings import InferenceSettings

    try:
        return InferenceSettings()
    except ValidationError as exc:
        raise SystemExit(f"inference.tokens: {explain(exc, 'inference', 'INFERENCE_')}") from None
    except ConfigError as exc:
        raise SystemExit(f"inference.tokens: {exc}") from None


def _key_file(given: Path | None) -> Path:
    path = given or _settings().api_keys_file
    if path is None:
        raise SystemExit("inference.tokens: no key file: pass --file or set INFERENCE_API_KEYS_FILE")
    return path


def _issue(args: argparse.Namespace) -> int:
    settings = _settings()
    if settings.jwt_secret is None:
        raise SystemExit("inference.tokens: no jwt_secret set (INFERENCE_JWT_SECRET or [inference] jwt_secret)")
    if args.ttl > settings.jwt_max_lifetime_s:
        raise SystemExit(f"inference.tokens: --ttl {args.ttl} exceeds the server's jwt_max_lifetime_s "
                         f"({settings.jwt_max_lifetime_s}): the server would refuse it")
    scope = " ".join(args.scope) if args.scope else None
    print(issue_token(settings.jwt_secret.get_secret_value(), subject=args.sub, ttl_s=args.ttl, scope=scope))
    return 0


def _load(path: Path) -> tomlkit.TOMLDocument:
    if path.exists():
        load_key_file(path)  # refuses a malformed file before it is rewritten
        return tomlkit.parse(path.read_text())
    doc = tomlkit.document()
    doc.add(tomlkit.comment("API keys of the inference server: name = SHA-256 of the key (inference/auth.py)"))
    return doc


def _save(path: Path, doc: tomlkit.TOMLDocument) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(tomlkit.dumps(doc))
    tmp.chmod(0o600)
    tmp.replace(path)


def _table(doc: tomlkit.TOMLDocument):
    if "keys" not in doc:
        doc["keys"] = tomlkit.table()
    return doc["keys"]


def _new_key(args: argparse.Namespace) -> int:
    path = _key_file(args.file)
    doc = _load(path)
    table = _table(doc)
    if args.name in table and not args.replace:
        raise SystemExit(f"inference.tokens: a key named {args.name!r} exists (pass --replace to rotate it)")
    key = "sk-" + secrets.token_urlsafe(32)
    table[args.name] = key_digest(key)
    _save(path, doc)
    print(key)
    print(f"stored the SHA-256 of key {args.name!r} in {path}; the key itself is shown only now", file=sys.stderr)
    return 0


def _revoke(args: argparse.Namespace) -> int:
    path = _key_file(args.file)
    doc = _load(path)
    table = _table(doc)
    if args.name not in table:
        raise SystemExit(f"inference.tokens: no key named {args.name!r} in {path}")
    del table[args.name]
    _save(path, doc)
    print(f"revoked {args.name!r} (the server reads the file at start: restart it)", file=sys.stderr)
    return 0


def _list(args: argparse.Namespace) -> int:
    path = _key_file(args.file)
    for name in (load_key_file(path) if path.exists() else {}):
        print(name)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inference.tokens", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    issue = sub.add_parser("issue", help="print an HS256 bearer token")
    issue.add_argument("--sub", required=True, help="the token's subject (shown in logs and metrics)")
    issue.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds (default 3600)")
    issue.add_argument("--scope", nargs="+", choices=SCOPES, help="limit the token (default: every scope)")
    issue.set_defaults(run=_issue)
    new = sub.add_parser("new-key", help="make a named API key; its hash goes into the key file")
    new.add_argument("--name", required=True)
    new.add_argument("--file", type=Path, help="default: the settings' api_keys_file")
    new.add_argument("--replace", action="store_true", help="rotate an existing key")
    new.set_defaults(run=_new_key)
    revoke = sub.add_parser("revoke", help="remove a named API key")
    revoke.add_argument("--name", required=True)
    revoke.add_argument("--file", type=Path)
    revoke.set_defaults(run=_revoke)
    listing = sub.add_parser("list", help="the names of the keys in the key file")
    listing.add_argument("--file", type=Path)
    listing.set_defaults(run=_list)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except ValueError as exc:
        raise SystemExit(f"inference.tokens: {exc}") from None


if __name__ == "__main__":
    sys.exit(main())
