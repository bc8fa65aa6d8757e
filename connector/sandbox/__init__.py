"""A faithful local emulator of DingTalk's side (Stream gateway, OpenAPI, cards, robot sends).

A protocol peer, not a mock: the unmodified dingtalk-stream SDK works against it
when DINGTALK_OPENAPI_ENDPOINT points here (set before the SDK is imported).
"""

from .server import EmulatorServer, create_emulator_app
from .state import SANDBOX_AI_CARD_TEMPLATE, SDK_AI_CARD_TEMPLATE, Sandbox

DEFAULT_CLIENT_ID = "ding-sandbox-app"
DEFAULT_CLIENT_SECRET = "sandbox-secret"

__all__ = ["DEFAULT_CLIENT_ID", "DEFAULT_CLIENT_SECRET", "EmulatorServer", "SANDBOX_AI_CARD_TEMPLATE",
           "SDK_AI_CARD_TEMPLATE", "Sandbox", "create_emulator_app"]
