"""Settings of the connector process: one object, built in main() and passed down."""

from __future__ import annotations

import ipaddress
from typing import Any, ClassVar, Literal
from urllib.parse import urlparse

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from .config_file import FileSettings

SDK_AI_CARD_TEMPLATE = "382e4302-551d-4880-bf29-a30acfab2e71.schema"


class ConnectorSettings(FileSettings):
    """Precedence: arguments, then environment variables, then [connector] in the TOML file (config_file.py).
    Every field can be set with a ``CONNECTOR_<NAME>`` environment variable."""

    model_config = SettingsConfigDict(env_prefix="CONNECTOR_", extra="ignore", frozen=True)
    toml_section: ClassVar[str] = "connector"

    # DingTalk app (Stream mode)
    channel: Literal["stream"] = Field("stream", description="DingTalk Stream mode (the only mode supported)")
    client_id: str = Field("", description="AppKey")
    client_secret: SecretStr = Field(SecretStr(""), description="AppSecret")
    robot_code: str | None = Field(None, description="default: the AppKey")
    openapi_endpoint: str = "https://api.dingtalk.com"
    oapi_endpoint: str | None = Field(
        None, description="DingTalk's old-style API host (the contact API's user detail); default: "
                          "https://oapi.dingtalk.com with DingTalk's own openapi_endpoint, else openapi_endpoint "
                          "(the emulator serves both)")
    card_template_id: str = SDK_AI_CARD_TEMPLATE
    card_content_key: str = "msgContent"
    card_update_interval_s: float = Field(0.4, ge=0.05, le=5.0)
    card_qps: float = Field(20.0, gt=0, description="app-wide budget of card API calls per second")
    card_cooloff_s: float = Field(60.0, ge=0)
    retry_attempts: int = Field(3, ge=1, description="attempts in all (3: one try and two retries)")
    retry_backoff_factor: float = Field(1.5, ge=1.0)
    retry_base_delay_s: float = Field(0.3, ge=0)
    retry_max_delay_s: float = Field(10.0, ge=0, description="longest wait between attempts, Retry-After included")
    heartbeat_interval_s: float = Field(30.0, gt=0)
    stream_handshake_timeout_s: float = Field(10.0, gt=0, description="the gateway's connections/open call")
    reconnect_max_backoff_s: float = Field(300.0, gt=0)
    webhook_chunk_chars: int = Field(3800, ge=200)

    # model (OpenAI-compatible)
    model_base_url: str = "http://127.0.0.1:8000/v1"
    model_name: str | None = Field(None, description="default: the first model the server lists")
    model_api_key: SecretStr = SecretStr("unused")
    model_jwt_secret: SecretStr | None = Field(
        None, description="the inference server's jwt_secret: send short-lived HS256 tokens instead of the key")
    model_token_ttl_s: int = Field(600, ge=30, le=3600, description="lifetime of each minted model token")
    model_ca_bundle: str | None = Field(None, description="CA file that signed the model server's certificate "
                                                          "(scripts/make_certs.py's ca.pem); default: the system's")
    model_allow_plain_http: bool = Field(False, description="allow http:// to a model server that is not on this "
                                                            "host (a private network you trust)")
    temperature: float = Field(0.7, ge=0, le=2)
    max_tokens: int = Field(512, ge=1)
    repetition_penalty: float | None = Field(None, gt=0, le=2, description="sent to the model server (vLLM's "
                                             "extension, ours too); none: the server's default")
    loop_guard: bool = Field(False, description="ask the model server to stop an answer once a block of words comes "
                                                "back (our extension: loop_guard), and show it without the repeat")
    model_timeout_s: float = Field(120.0, gt=0)
    model_connect_timeout_s: float = Field(5.0, gt=0)
    system_prompt: str = Field("", description="empty: the model's own default (its chat template's)")

    # context
    redis_url: SecretStr | None = Field(None, description="redis://[:password@]host:port/db; none: in-process store")
    redis_ca_bundle: str | None = Field(None, description="CA file for rediss:// (TLS); default: the system's")
    context_ttl_s: int = Field(1800, ge=1)
    context_max_turns: int = Field(40, ge=2, description="history kept per context (user and assistant turns); "
                                   "past it the oldest half goes at once, so the prompt's beginning stays the "
                                   "same and the inference server's prefix cache reuses it")
    context_window: int | None = Field(None, ge=64, description="default: the model's max_model_len")
    context_turns_with_documents: int | None = Field(
        None, ge=0, description="history turns sent with the question when skills add documents (a small model "
                                "otherwise repeats an earlier answer); none: as many as fit")
    group_context_per_sender: bool = True
    dedup_ttl_s: int = Field(86400, ge=60)

    # flow control and policy
    max_in_flight: int = Field(32, ge=1)
    max_backlog: int = Field(1000, ge=1)
    max_expected_wait_s: float = Field(30.0, ge=0, description="answer a new message at once with a polite busy "
                                       "notice when its expected wait (the work ahead / the measured service rate) "
                                       "is longer; 0: never")
    queue_refresh_s: float = Field(2.0, gt=0, description="how often queued messages' cards get their new position "
                                   "(within a quarter of card_qps)")
    queue_notice_after_s: float = Field(15.0, ge=0, description="without card permissions (no queued card), a "
                                        "waiting message whose expected wait is longer gets one short text notice "
                                        "with its position; 0: never")
    user_rate_limit: int = Field(20, ge=1, description="messages per user per rate window")
    user_rate_window_s: float = Field(60.0, gt=0)
    max_message_chars: int = Field(4000, ge=1)
    allow_users: list[str] = Field(default_factory=list, description="staff ids; empty: everyone")
    allow_groups: list[str] = Field(default_factory=list, description="conversation ids; empty: every group")
    drain_timeout_s: float = Field(30.0, ge=0)

    # compliance (docs: README "Compliance"): audit trail, identity, quotas, personal data
    audit_enabled: bool = Field(True, description="one hash-chained audit record per handled message")
    audit_dsn: SecretStr | None = Field(
        None, description="postgresql://user:pass@host/db (replicas share one chain); none: the SQLite file")
    audit_path: str = Field("var/audit.sqlite3", description="the SQLite audit file when no audit_dsn is set")
    audit_spill_path: str = Field("var/audit-spill.jsonl",
                                  description="records the database could not take, replayed when it is back")
    audit_content: Literal["full", "hash", "none"] = Field(
        "full", description="question and answer as text, as SHA-256 digests, or not at all")
    audit_mask_pii: bool = Field(False, description="mask ID-card, bank-card, mobile numbers, e-mail in records")
    audit_retention_days: int = Field(0, ge=0, description="purge records older than this daily; 0: keep all")
    audit_queue_size: int = Field(10000, ge=1, description="records waiting for the writer; beyond: spilled")
    admin_users: list[str] = Field(default_factory=list,
                                   description="staff ids exempt from quotas (DingTalk's own admins are too)")
    directory_ttl_s: int = Field(3600, ge=0, description="how long a user's departments (DingTalk's contact "
                                                         "API) are cached; 0: looked up for every message")
    quota_user_messages_per_day: int = Field(0, ge=0, description="0: no limit")
    quota_user_tokens_per_day: int = Field(0, ge=0, description="completion tokens; 0: no limit")
    quota_department_messages_per_day: int = Field(0, ge=0, description="0: no limit")
    quota_department_tokens_per_day: int = Field(0, ge=0, description="0: no limit")
    quota_timezone: str = Field("Asia/Shanghai", description="quotas reset at midnight in this time zone")

    # skills: [connector.plugins.<name>] tables in the config file (enabled, order, the skill's own keys)
    plugins: dict[str, dict[str, Any]] = Field(default_factory=dict)

    # observability
    health_host: str = "127.0.0.1"
    health_port: int = Field(8001, ge=0, le=65535)
    log_level: str = "info"

    # ops alerts (connector/alerts.py): Alertmanager -> POST /alerts on the health port -> the DingTalk ops group
    alerts_token: SecretStr | None = Field(
        None, description="bearer token Alertmanager sends to POST /alerts; none: /alerts is off")
    alerts_conversation_id: str | None = Field(
        None, description="the ops group's openConversationId: alerts go by the robot group-send API")
    alerts_webhook_url: SecretStr | None = Field(
        None, description="or a group custom robot's webhook (https://oapi.dingtalk.com/robot/send?access_token=...)")
    alerts_webhook_secret: SecretStr | None = Field(
        None, description="the custom robot's signing secret (加签, SEC...); none: the robot has no signing")
    alerts_max_per_minute: int = Field(10, ge=1, le=20, description="messages to the ops group in any 60 s; "
                                                                     "beyond: merged into one summary")

    @field_validator("redis_url", "audit_dsn", "model_jwt_secret", "alerts_token", "alerts_webhook_url",
                     "alerts_webhook_secret")
    @classmethod
    def _empty_is_none(cls, value: SecretStr | None) -> SecretStr | None:
        return value if value is not None and value.get_secret_value() else None

    @field_validator("quota_timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (an IANA name such as Asia/Shanghai)") from None
        return value

    @model_validator(mode="after")
    def _model_transport(self) -> ConnectorSettings:
        url = urlparse(self.model_base_url)
        if url.scheme not in ("http", "https"):
            raise ValueError(f"model_base_url must be http:// or https://, not {url.scheme or 'nothing'}://")
        if url.scheme == "http" and not self.model_allow_plain_http and not _on_this_host(url.hostname or ""):
            raise ValueError(f"model_base_url {self.model_base_url} is plain HTTP to another host: questions and "
                             "answers would cross the network unencrypted. Use https:// (the inference server's "
                             "ssl_certfile, the CA in model_ca_bundle) or set model_allow_plain_http")
        return self

    @model_validator(mode="after")
    def _alerts_destination(self) -> ConnectorSettings:
        if self.alerts_token and not (self.alerts_conversation_id or self.alerts_webhook_url):
            raise ValueError("alerts_token is set but alerts have nowhere to go: set alerts_conversation_id (the "
                             "ops group's openConversationId) or alerts_webhook_url (a group custom robot)")
        if self.alerts_conversation_id and self.alerts_webhook_url:
            raise ValueError("set either alerts_conversation_id or alerts_webhook_url, not both")
        return self

    def model_extra_body(self) -> dict[str, Any]:
        """The sampling extensions sent with every chat request (the OpenAI client's extra_body)."""
        body: dict[str, Any] = {}
        if self.repetition_penalty is not None:
            body["repetition_penalty"] = self.repetition_penalty
        if self.loop_guard:
            from .core.repetition import LOOP_BLOCK, LOOP_REPEATS

            body["loop_guard"] = {"ngram": LOOP_BLOCK, "repeats": LOOP_REPEATS}
        return body

    @property
    def has_credentials(self) -> bool:
        return bool(self.client_id and self.client_secret.get_secret_value())

    @property
    def oapi(self) -> str:
        """Where the old-style API (oapi.dingtalk.com) is reached."""
        if self.oapi_endpoint:
            return self.oapi_endpoint.rstrip("/")
        if self.openapi_endpoint.rstrip("/") == "https://api.dingtalk.com":
            return "https://oapi.dingtalk.com"
        return self.openapi_endpoint.rstrip("/")

    @property
    def robot(self) -> str:
        return self.robot_code or self.client_id

    def secrets(self) -> list[str]:
        """Every configured secret, for log hygiene checks."""
        values = [self.client_secret.get_secret_value(), self.model_api_key.get_secret_value()]
        if self.redis_url:
            values.append(self.redis_url.get_secret_value())
        if self.audit_dsn:
            values.append(self.audit_dsn.get_secret_value())
        if self.model_jwt_secret:
            values.append(self.model_jwt_secret.get_secret_value())
        for secret in (self.alerts_token, self.alerts_webhook_url, self.alerts_webhook_secret):
            if secret:
                values.append(secret.get_secret_value())
        return [v for v in values if v and v != "unused"]


def _on_this_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def settings_or_exit(prog: str, *, code: int = 2, **values: Any) -> ConnectorSettings:
    """The settings (arguments in `values`, then the environment, then the config file), or the reason they are
    invalid on stderr, worded for the operator, and exit `code`: every command line of the connector's."""
    import sys

    from pydantic import ValidationError

    from .config_file import ConfigError, explain

    try:
        return ConnectorSettings(**values)
    except ValidationError as exc:
        message = explain(exc, "connector", "CONNECTOR_")
    except ConfigError as exc:
        message = str(exc)
    print(f"{prog}: {message}", file=sys.stderr)
    raise SystemExit(code)
