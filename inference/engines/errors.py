"""What engines raise. They know nothing of HTTP: the serving layer maps each class to an HTTP error
(inference/serving/errors.py), and only it words advice about routes ("use /v1/completions")."""

from __future__ import annotations


class EngineError(Exception):
    """Base of every error an engine raises."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class StartupError(EngineError):
    """The model cannot be served on this machine or with these settings; the message names the numbers."""


class EngineNotRunning(EngineError):
    """The engine cannot take a request: not started yet, shut down, or its loop has died."""


class GenerationFailed(EngineError):
    """A generation failed inside the engine (a prefill or decode step raised)."""


class RequestInvalidForModel(EngineError):
    """The request cannot be served by this model; `param` names the request field at fault."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class ModelHasNoChatTemplate(RequestInvalidForModel):
    """Chat messages need the model's chat template, and this model has none."""

    def __init__(self, message: str = "This model has no chat template.") -> None:
        super().__init__(message, param="messages")


class PromptEmpty(RequestInvalidForModel):
    """A generation was asked for with no prompt tokens."""

    def __init__(self, message: str = "The prompt is empty.") -> None:
        super().__init__(message, param="prompt")


class ToolsNotSupported(RequestInvalidForModel):
    """The request has tools and the model's chat template does not render them (they would be dropped)."""

    def __init__(self) -> None:
        super().__init__("This model's chat template does not support tools: they would be dropped, so the "
                         "request is refused. Leave out `tools`, or serve a model whose template renders them.",
                         param="tools")


class SchemaNotUsable(RequestInvalidForModel):
    """The JSON schema of a constraint (response_format, a tool's parameters) cannot become a grammar."""

    def __init__(self, detail: str, *, param: str = "response_format") -> None:
        super().__init__(f"The JSON schema cannot be used to constrain the output: {detail}", param=param)
