"""Entry point: `python -m connector`. Settings are built here and passed down."""

from __future__ import annotations

import asyncio
import logging
import os
import sys

from .core import pii
from .settings import settings_or_exit


class _Redact(logging.Filter):
    """Belt and braces: no configured secret ever reaches a log line."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self._secrets = [s for s in secrets if len(s) >= 4]

    def filter(self, record: logging.LogRecord) -> bool:
        if self._secrets:
            message = record.getMessage()
            if any(s in message for s in self._secrets):
                for secret in self._secrets:
                    message = message.replace(secret, "***")
                record.msg, record.args = message, None
        return True


def main(argv: list[str] | None = None) -> None:
    # arguments (pydantic-settings' CLI source: --help lists every setting), then env, then the file
    settings = settings_or_exit("connector", code=1, _cli_parse_args=sys.argv[1:] if argv is None else argv,
                                _cli_prog_name="python -m connector", _cli_kebab_case=True)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    pii.install()  # ID-card, bank-card, mobile numbers and e-mail addresses masked in every log line
    logging.getLogger("httpx").setLevel(logging.WARNING)
    redact = _Redact(settings.secrets())
    for handler in logging.getLogger().handlers:
        handler.addFilter(redact)
    if not settings.has_credentials:
        sys.exit("connector: set CONNECTOR_CLIENT_ID and CONNECTOR_CLIENT_SECRET (the DingTalk app's AppKey and "
                 "AppSecret), or start the whole appliance with `make run`, which uses the local emulator.")
    # the SDK reads its endpoint at import time
    os.environ["DINGTALK_OPENAPI_ENDPOINT"] = settings.openapi_endpoint.rstrip("/")
    from .app import serve
    from .skills.base import SkillError

    try:
        asyncio.run(serve(settings))
    except SkillError as exc:
        sys.exit(f"connector: {exc}")


if __name__ == "__main__":
    main()
