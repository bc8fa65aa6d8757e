"""One error hierarchy, and one table mapping it to HTTP status and OpenAI error type."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar


class InferenceError(Exception):
    """Base of every error the server reports to a client."""

    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.headers = headers or {}


class InvalidRequest(InferenceError):
    pass


class ContextLengthExceeded(InvalidRequest):
    code = "context_length_exceeded"


class AuthenticationFailed(InferenceError):
    code = "invalid_api_key"


class PermissionDenied(InferenceError):
    code = "insufficient_scope"


class NotFound(InferenceError):
    pass


class ModelNotFound(NotFound):
    code = "model_not_found"


class PayloadTooLarge(InferenceError):
    code = "payload_too_large"


class Overloaded(InferenceError):
    code = "server_overloaded"

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})


class NotReady(InferenceError):
    code = "model_loading"

    def __init__(self, message: str = "The model is still loading; try again shortly.") -> None:
        super().__init__(message, headers={"Retry-After": "5"})


class EngineFailure(InferenceError):
    code = "engine_error"


class MethodNotAllowed(InferenceError):
    pass


# The one table: error class -> (HTTP status, OpenAI error type). Row order does not matter: the most
# specific class of an error wins (`most_specific` walks its MRO).
ERROR_TABLE: dict[type[InferenceError], tuple[int, str]] = {
    InferenceError: (500, "server_error"),
    InvalidRequest: (400, "invalid_request_error"),
    ContextLengthExceeded: (400, "invalid_request_error"),
    AuthenticationFailed: (401, "authentication_error"),
    PermissionDenied: (403, "permission_error"),
    NotFound: (404, "not_found_error"),
    ModelNotFound: (404, "invalid_request_error"),
    MethodNotAllowed: (405, "invalid_request_error"),
    PayloadTooLarge: (413, "invalid_request_error"),
    Overloaded: (429, "rate_limit_error"),
    NotReady: (503, "service_unavailable_error"),
    EngineFailure: (500, "server_error"),
}

T = TypeVar("T")


def most_specific(table: Mapping[type, T], error: BaseException) -> T | None:
    """The row of the error's most specific class in `table`, whatever the rows' order (the error's MRO
    is walked, as httpx's map_exceptions picks the most specific mapping); None when no class matches."""
    for cls in type(error).__mro__:
        if cls in table:
            return table[cls]
    return None


def status_and_type(error: InferenceError) -> tuple[int, str]:
    return most_specific(ERROR_TABLE, error) or (500, "server_error")


def error_body(error: InferenceError) -> dict[str, Any]:
    _, kind = status_and_type(error)
    return {"error": {"message": error.message, "type": kind, "param": error.param, "code": error.code}}
