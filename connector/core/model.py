"""The model, over the OpenAI wire format only (official openai client on the process's one HTTP client)."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jwt
import openai

from ..skills.base import ModelError
from .retry import RetryPolicy, parse_retry_after
from .trail import note_usage

log = logging.getLogger("connector.model")

RETRYABLE = (openai.RateLimitError, openai.APIConnectionError, openai.InternalServerError)  # full, not up, 5xx


def model_error(exc: openai.OpenAIError) -> ModelError:
    """The client's error as a ModelError: retryable when the server is full, not up yet or failing (5xx)."""
    response = getattr(exc, "response", None)
    return ModelError(_describe_error(exc), retryable=isinstance(exc, RETRYABLE),
                      retry_after=parse_retry_after(response.headers.get("retry-after")) if response is not None
                      else None)


class TokenMinter:
    """Short-lived HS256 bearer tokens for the model server, minted from its shared jwt_secret (PyJWT) and
    renewed when less than a third of the lifetime is left: a leaked token is worth minutes, not forever."""

    def __init__(self, secret: str, *, ttl_s: int, subject: str = "connector") -> None:
        self._secret, self.ttl_s, self.subject = secret, ttl_s, subject
        self._token, self._expires = "", 0.0

    def token(self) -> str:
        now = time.time()
        if now > self._expires - self.ttl_s / 3:
            issued = int(now)
            self._token = jwt.encode({"sub": self.subject, "iat": issued, "nbf": issued, "exp": issued + self.ttl_s},
                                     self._secret, algorithm="HS256")
            self._expires = issued + self.ttl_s
        return self._token


class ModelClient:
    def __init__(self, base_url: str, api_key: str, http: httpx.AsyncClient, *, model: str | None,
                 temperature: float, max_tokens: int, timeout_s: float, connect_timeout_s: float,
                 retry: RetryPolicy, minter: TokenMinter | None = None, extra_body: dict[str, Any] | None = None
                 ) -> None:
        self.base_url = base_url.rstrip("/")
        self.root_url = self.base_url.removesuffix("/v1")
        self._http = http
        self._client = openai.AsyncOpenAI(base_url=self.base_url, api_key=api_key, http_client=http, max_retries=0,
                                          timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s))
        self._model = model
        self._window: int | None = None
        self._window_checked = 0.0
        self.temperature, self.max_tokens = temperature, max_tokens
        self._api_key, self._minter = api_key, minter
        self.retry = retry
        self.extra_body = dict(extra_body or {})  # sampling extensions (repetition_penalty, loop_guard)

    def _credential(self) -> str:
        return self._minter.token() if self._minter is not None else self._api_key

    def _api(self) -> openai.AsyncOpenAI:
        """The OpenAI client with the current credential (a fresh token when tokens are minted)."""
        return self._client if self._minter is None else self._client.with_options(api_key=self._credential())

    async def _describe(self) -> None:
        models = await self._api().models.list()
        first = models.data[0]
        if self._model is None:
            self._model = first.id
        card = next((m for m in models.data if m.id == self._model), first)
        extra = card.model_extra or {}
        self._window = extra.get("max_model_len")
        self._window_checked = time.monotonic()

    async def served_models(self) -> list[str]:
        """The model ids the server lists (with this client's credential); the OpenAI client's errors pass."""
        return [m.id for m in (await self._api().models.list()).data]

    async def model_id(self) -> str:
        if self._model is None:
            try:
                await self._describe()
            except (openai.OpenAIError, IndexError) as exc:
                raise ModelError(f"cannot list models: {type(exc).__name__}") from exc
        assert self._model is not None
        return self._model

    async def context_window(self) -> int | None:
        if self._window is None and time.monotonic() - self._window_checked > 60:
            try:
                await self._describe()
            except (openai.OpenAIError, IndexError):
                self._window_checked = time.monotonic()
        return self._window

    async def count_tokens(self, messages: list[dict[str, str]]) -> int | None:
        """Exact prompt size from the server's /tokenize when it has one (ours and vLLM's do)."""
        try:
            r = await self._http.post(self.root_url + "/tokenize", headers={"Authorization": f"Bearer {self._credential()}"}, timeout=5.0,
                                      json={"model": await self.model_id(), "messages": messages})
            if r.status_code == 200:
                return int(r.json()["count"])
        except (httpx.HTTPError, ValueError, KeyError, ModelError):
            pass
        return None

    async def stream_chat(self, messages: list[dict[str, str]], max_tokens: int | None = None) -> AsyncIterator[str]:
        """Content deltas. Closing the iterator closes the HTTP stream, which cancels the generation."""
        model = await self.model_id()

        async def open_stream() -> Any:
            try:
                return await self._api().chat.completions.create(
                    model=model, messages=messages, stream=True, temperature=self.temperature,  # type: ignore[arg-type]
                    max_tokens=max_tokens or self.max_tokens, stream_options={"include_usage": True},
                    extra_body=self.extra_body or None)
            except openai.OpenAIError as exc:
                raise model_error(exc) from exc

        stream = await self.retry.run(open_stream)  # full (429), not up yet, or 5xx: retried by the policy
        try:
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    yield chunk.choices[0].delta.content
                if chunk.usage is not None:  # the last chunk (stream_options.include_usage)
                    note_usage(model, chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
                error = getattr(chunk, "error", None) or (chunk.model_extra or {}).get("error")
                if error:
                    raise ModelError(f"error in stream: {error}")
        except openai.OpenAIError as exc:
            raise ModelError(_describe_error(exc)) from exc
        except (httpx.HTTPError, ValueError) as exc:
            raise ModelError(f"stream broke: {type(exc).__name__}") from exc
        finally:
            await stream.close()

    async def health(self) -> dict[str, Any]:
        """What /test reports: reachable, ready, version."""
        report: dict[str, Any] = {"url": self.base_url}
        try:
            r = await self._http.get(self.root_url + "/health", timeout=3.0)
            report["health"] = "ok" if r.status_code == 200 else f"HTTP {r.status_code}"
            v = await self._http.get(self.root_url + "/version", timeout=3.0)
            if v.status_code == 200:
                report["version"] = v.json()
        except httpx.HTTPError as exc:
            report["health"] = f"unreachable ({type(exc).__name__})"
        return report


def _describe_error(exc: Exception) -> str:
    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code}"
    return type(exc).__name__
