"""Internal values, parsed once at the edge (frozen dataclasses, no wire concerns)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# What an engine ends a sequence with; the API adds "tool_calls" (serving/tools.py). A sequence the engine
# itself aborted is an error (GenerationFailed), never a finish reason: OpenAI's values are the only ones sent.
FinishReason = Literal["stop", "length"]


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One function call of the model: its name and its arguments as JSON text."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ParsedToolCalls:
    """A model's output split into its text (None when it said only calls) and its tool calls."""

    content: str | None
    calls: tuple[ToolCall, ...] = ()


@dataclass(frozen=True, slots=True)
class ChatTurn:
    role: str
    content: str
    tool_calls: tuple[ToolCall, ...] = ()  # an assistant turn that called tools
    tool_call_id: str | None = None  # a "tool" turn: the call it answers


@dataclass(frozen=True, slots=True)
class StructuredOutput:
    """A constraint on the output: a JSON Schema (as JSON text), or any JSON object."""

    json_schema: str | None = None
    json_object: bool = False


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """One generated token: its text, log-probability and the `top` most likely alternatives."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True, slots=True)
class LoopGuardParams:
    """The loop guard (serving/loop_guard.py): stop once the same `ngram` words have come `repeats` times."""

    ngram: int = 8
    repeats: int = 3


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
    repetition_penalty: float = 1.0
    logprobs: int | None = None  # None: none; k >= 0: the sampled token's and the k most likely
    structured: StructuredOutput | None = None
    loop_guard: LoopGuardParams | None = None  # applied by the serving layer, the same on every engine

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @property
    def has_penalties(self) -> bool:
        return (self.presence_penalty != 0.0 or self.frequency_penalty != 0.0
                or self.repetition_penalty != 1.0)


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
    logprobs: tuple[TokenLogprob, ...] = ()  # one per new token, when the request asked for them


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
    prefix_cache_queries_total: int = 0  # prompt tokens looked up in the prefix cache
    prefix_cache_hits_total: int = 0  # of them, tokens found there (not prefilled again)
    alive: bool = True
