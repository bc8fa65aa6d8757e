"""Internal values, parsed once at the edge (frozen dataclasses, no wire concerns)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

FinishReason = Literal["stop", "length", "abort"]


@dataclass(frozen=True, slots=True)
class ChatTurn:
    role: str
    content: str


@dataclass(frozen=True, slots=True)
class SamplingParams:
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 or -1: disabled
    seed: int | None = None
    stop: tuple[str, ...] = ()
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    ignore_eos: bool = False

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @property
    def has_penalties(self) -> bool:
        return self.presence_penalty != 0.0 or self.frequency_penalty != 0.0


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    request_id: str
    prompt_token_ids: tuple[int, ...]
    params: SamplingParams


@dataclass(frozen=True, slots=True)
class GenerationDelta:
    """New text of one sequence since its previous delta."""

    text: str
    prompt_tokens: int
    completion_tokens: int  # generated so far, this delta included
    new_tokens: int = 1
    finish_reason: FinishReason | None = None


@dataclass(frozen=True, slots=True)
class EngineInfo:
    engine: str
    model_name: str
    model_path: str
    max_model_len: int
    device: str
    dtype: str
    quantization: str | None = None
    max_num_seqs: int = 1
    dtype_reason: str = ""  # why this dtype (the CPU's features, the quantisation, a setting)
    cpu: str | None = None  # CPU model and the flags that matter, when the model runs on the CPU
    vocab_size: int | None = None  # token ids at or above it are refused
    threads: int | None = None  # CPU threads torch uses (the transformers engine)
    gpu: str | None = None  # the card's name, when the model runs on one
    torch: str | None = None  # library versions, shown by /version
    transformers: str | None = None
    vllm: str | None = None


@dataclass(frozen=True, slots=True)
class EngineStats:
    running: int = 0
    waiting: int = 0
    steps_total: int = 0
    step_sequences_total: int = 0  # sum over decode steps of the sequences each carried
    max_batch_size: int = 0
    prefills_total: int = 0
    aborted_total: int = 0
    alive: bool = True
