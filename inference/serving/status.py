"""GET /health, /ready and /version: whether the process and its engine live, whether the model is
loaded and warm, and what is served."""

from __future__ import annotations

from fastapi.responses import JSONResponse

from .. import __version__
from ..engines.base import Engine
from ..errors import NotReady
from .base import ServerState


class ServingStatus:
    def __init__(self, engine: Engine, state: ServerState) -> None:
        self.engine = engine
        self.state = state

    async def health(self) -> JSONResponse:
        """200 while the process and its engine are alive (also while the model loads)."""
        if self.state.failure:
            return JSONResponse({"status": "failed", "reason": self.state.failure}, status_code=503)
        if self.state.ready and not await self.engine.health():
            return JSONResponse({"status": "engine_dead"}, status_code=503)
        return JSONResponse({"status": "ok"})

    def ready(self) -> JSONResponse:
        """200 only once the model is loaded and warmed up; 503 with Retry-After before."""
        if not self.state.ready:
            failure = self.state.failure
            error = NotReady(f"The model failed to load: {failure}") if failure else NotReady()
            return JSONResponse({"status": "failed" if failure else "loading", "reason": error.message},
                                status_code=503, headers=error.headers)
        return JSONResponse({"status": "ready"})

    def version(self) -> dict[str, object]:
        info = self.engine.info()
        libraries = {"torch": info.torch, "vllm": info.vllm, "transformers": info.transformers}
        return {
            "version": __version__, "engine": info.engine, "model": info.model_name,
            "max_model_len": info.max_model_len, "device": info.device, "dtype": info.dtype,
            "dtype_reason": info.dtype_reason, "cpu": info.cpu, "quantization": info.quantization,
            "max_num_seqs": info.max_num_seqs, **{name: v for name, v in libraries.items() if v},
        }
