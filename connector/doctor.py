"""`python -m connector.doctor`: check the connector's configuration against the real services before a start.

With the settings the connector would use (CONNECTOR_* variables, the [connector] table of the config file) it
fetches a DingTalk access token with the AppKey / AppSecret; probes each permission the configuration needs
(Card.Instance.Write, Card.Streaming.Write, qyapi_robot_sendmsg, and qyapi_get_member when document access or
department quotas are on) and names a missing one with where to grant it; checks that the card template is
usable; opens the Stream gateway handshake with a timeout; compares this host's clock with DingTalk's; pings
Redis (version, password, persistence); and asks the model server whether it is ready and which model it serves.
Every probe is harmless: connector/doctor_checks.py says what each one does and why.

Prints a table (or JSON with --json) and exits 1 when any check fails, 2 when the settings themselves are
invalid, 0 otherwise (warnings included). Secrets are never printed. `make doctor` runs it after the inference
doctor.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from typing import TYPE_CHECKING

from .doctor_checks import Check, check_model, check_redis, mask_url
from .doctor_dingtalk import DingTalk

if TYPE_CHECKING:
    from .settings import ConnectorSettings

__all__ = ["Check", "main", "run"]
MARK = {"ok": "ok", "warn": "WARN", "fail": "FAIL", "skip": "skip"}


async def run(settings: ConnectorSettings) -> list[Check]:
    """Every check, in a fixed order; DingTalk, Redis and the model server are asked at the same time."""
    dingtalk = DingTalk(settings)
    try:
        groups = await asyncio.gather(dingtalk.run(), check_redis(settings), check_model(settings))
    finally:
        await dingtalk.close()
    return [check for group in groups for check in group]


def render(checks: list[Check]) -> str:
    width = max(len(c.name) for c in checks)
    lines = [f"{'':4}  {'check':<{width}}  detail"]
    for c in checks:
        lines.append(f"{MARK[c.status]:<4}  {c.name:<{width}}  {c.detail}")
        if c.fix and c.status in ("fail", "warn"):
            lines.append(f"{'':4}  {'':<{width}}  fix: {c.fix}")
    return "\n".join(lines)


def summary(checks: list[Check]) -> dict[str, int]:
    return {status: sum(c.status == status for c in checks) for status in MARK}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m connector.doctor", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="print the checks as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)  # --help exits here, before anything else
    from .settings import settings_or_exit

    try:
        settings = settings_or_exit("doctor")
    except SystemExit as exc:
        return int(exc.code or 2)
    logging.basicConfig(level=logging.CRITICAL)  # the clients' own error logs would repeat what the checks say
    checks = asyncio.run(run(settings))
    failed = any(c.status == "fail" for c in checks)
    if args.json:
        print(json.dumps({"ok": not failed, "summary": summary(checks), "checks": [c.as_dict() for c in checks]},
                         ensure_ascii=False, indent=2))
    else:
        redis = mask_url(settings.redis_url.get_secret_value()) if settings.redis_url else "none"
        print(f"connector doctor: DingTalk {settings.openapi_endpoint} (AppKey {settings.client_id or 'unset'}), "
              f"model {settings.model_base_url}, Redis {redis}\n")
        print(render(checks))
        counts = summary(checks)
        print(f"\ndoctor: {counts['fail']} failed, {counts['warn']} warning(s), {counts['ok']} ok"
              + (f", {counts['skip']} skipped" if counts["skip"] else "") + ".")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
