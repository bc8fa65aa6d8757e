"""Engines behind the narrow `Engine` protocol. Heavy imports live in each engine module."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Engine

if TYPE_CHECKING:
    from ..settings import InferenceSettings


def build_engine(settings: InferenceSettings) -> Engine:
    """The engine named by the settings (imported lazily: torch/vLLM only when used)."""
    if settings.engine == "transformers":
        from .transformers_engine import TransformersEngine

        return TransformersEngine(settings)
    if settings.engine == "vllm":
        from .vllm_engine import VLLMEngine  # type: ignore[import-not-found]

        return VLLMEngine(settings)
    raise ValueError(f"unknown engine {settings.engine!r}")


__all__ = ["Engine", "build_engine"]
