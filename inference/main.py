"""Entry point: `python -m inference` / `appliance-inference`. Settings built here, passed down."""

from __future__ import annotations

import logging
import os

from . import pii
from .cli import parse_args
from .settings import InferenceSettings


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # customers are offline: never reach a model hub
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from pydantic import ValidationError

    from .config_file import ConfigError, explain

    try:
        settings = InferenceSettings(**parse_args(argv))  # type: ignore[arg-type]
    except ValidationError as exc:
        raise SystemExit(f"inference: {explain(exc, 'inference', 'INFERENCE_')}") from None
    except ConfigError as exc:
        raise SystemExit(f"inference: {exc}") from None
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    pii.install()  # ID-card, bank-card, mobile numbers and e-mail addresses masked in every log line
    import uvicorn

    from .app import authenticator, create_app
    from .engines import build_engine

    try:
        authenticator(settings)  # a bad key file or certificate stops the start before the model is loaded
    except ValueError as exc:
        raise SystemExit(f"inference: {exc}") from None
    if settings.ssl_certfile:
        import ssl

        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(settings.ssl_certfile,
                                                                                settings.ssl_keyfile)
        except OSError as exc:  # ssl.SSLError is an OSError
            raise SystemExit(f"inference: cannot serve HTTPS with {settings.ssl_certfile} and "
                             f"{settings.ssl_keyfile}: {exc}") from None
    app = create_app(settings, build_engine(settings))
    drain = app.state.drain  # SIGTERM's graceful stop: inference/serving/drain.py

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: object) -> None:
            drain.start()
            super().handle_exit(sig, frame)  # type: ignore[arg-type]

    tls = {"ssl_certfile": str(settings.ssl_certfile), "ssl_keyfile": str(settings.ssl_keyfile)} \
        if settings.ssl_certfile else {}
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level=settings.log_level, **tls,
                            access_log=settings.log_level == "debug", timeout_graceful_shutdown=drain.graceful_shutdown_s)
    Server(config).run()


if __name__ == "__main__":
    main()
