"""Engine errors -> the server's HTTP errors: the one place that maps them (engines know nothing of HTTP).

The advice that names a route belongs here, not in the engine: an engine says "this model has no chat
template", serving adds "use /v1/completions".
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ..engines.errors import (EngineError, EngineNotRunning, GenerationFailed, ModelHasNoChatTemplate, PromptEmpty,
                              RequestInvalidForModel, SchemaNotUsable, StartupError, ToolsNotSupported)
from ..errors import EngineFailure, InferenceError, InvalidRequest, NotReady, most_specific

# engine error class -> the HTTP error it becomes. Row order does not matter: the most specific class wins.
ENGINE_ERRORS: dict[type[EngineError], Callable[[EngineError], InferenceError]] = {
    EngineError: lambda e: EngineFailure(e.message),
    StartupError: lambda e: NotReady(f"The model failed to load: {e.message}"),
    EngineNotRunning: lambda e: EngineFailure(e.message),
    GenerationFailed: lambda e: EngineFailure(e.message),
    RequestInvalidForModel: lambda e: InvalidRequest(e.message, param=getattr(e, "param", None)),
    ModelHasNoChatTemplate: lambda e: InvalidRequest(f"{e.message.rstrip('.')}; use /v1/completions.",
                                                     param="messages"),
    PromptEmpty: lambda e: InvalidRequest(e.message, param="prompt"),
    ToolsNotSupported: lambda e: InvalidRequest(e.message, param="tools"),
    SchemaNotUsable: lambda e: InvalidRequest(e.message, param=getattr(e, "param", None)),
}


def http_error(error: EngineError) -> InferenceError:
    """The HTTP error an engine error becomes (its most specific row of ENGINE_ERRORS)."""
    make = most_specific(ENGINE_ERRORS, error) or ENGINE_ERRORS[EngineError]
    return make(error)


@contextmanager
def engine_errors() -> Iterator[None]:
    """Around every call into the engine: its errors leave as HTTP errors (the engine's as the cause)."""
    try:
        yield
    except EngineError as exc:
        raise http_error(exc) from exc
