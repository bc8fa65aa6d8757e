"""The doctor command: exit code and readable reasons; GPUs and drivers faked at the NVML seam."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from inference import doctor
from inference.engines.runtime import TorchBuild, torch_build
from inference.gpu import GpuMonitor, probe
from inference.memory_plan import GIB, LLAMA_7B_CONFIG
from inference.settings import InferenceSettings

from ..servers import ROOT

W8A8 = {**LLAMA_7B_CONFIG, "architectures": ["LlamaForCausalLM"], "quantization_config": {
    "quant_method": "compressed-tensors", "ignore": ["lm_head"], "config_groups": {"group_0": {
        "targets": ["Linear"], "weights": {"num_bits": 8, "type": "int", "symmetric": True},
        "input_activations": {"num_bits": 8, "type": "int", "symmetric": True, "dynamic": True}}}}}


class FakeNvml:
    """Just the pynvml calls inference/gpu.py makes, answering for one card."""

    NVML_TEMPERATURE_GPU = 0

    def __init__(self, name: str = "Tesla T4", total_gib: float = 15.0, free_gib: float = 14.6,
                 capability: tuple[int, int] = (7, 5), driver: str = "535.104.05", cuda: int = 12020) -> None:
        self.name, self.capability, self.driver, self.cuda = name, capability, driver, cuda
        self.total, self.free = int(total_gib * GIB), int(free_gib * GIB)
        self.open = 0

    def nvmlInit(self) -> None:
        self.open += 1

    def nvmlShutdown(self) -> None:
        self.open -= 1

    def nvmlSystemGetDriverVersion(self) -> bytes:
        return self.driver.encode()  # older pynvml returns bytes

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        return self.cuda

    def nvmlDeviceGetCount(self) -> int:
        return 1

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> types.SimpleNamespace:
        return types.SimpleNamespace(total=self.total, free=self.free, used=self.total - self.free)

    def nvmlDeviceGetCudaComputeCapability(self, handle: int) -> tuple[int, int]:
        return self.capability

    def nvmlDeviceGetName(self, handle: int) -> str:
        return self.name

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> types.SimpleNamespace:
        return types.SimpleNamespace(gpu=37)

    def nvmlDeviceGetTemperature(self, handle: int, sensor: int) -> int:
        return 61


def model_folder(path: Path, config: dict = W8A8) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config))
    (path / "tokenizer.json").write_text("{}")
    (path / "chat_template.jinja").write_text("{{ messages }}")
    (path / "model.safetensors").write_bytes(b"\0" * 16)
    return path


def diagnose(tmp_path: Path, nvml: FakeNvml, torch: TorchBuild | None, **settings: object) -> doctor.Report:
    values = {"model_path": model_folder(tmp_path / "llama-7b-w8a8"), "engine": "vllm", **settings}
    return doctor.run(InferenceSettings(**values), nvml=nvml, torch=torch)


def test_one_probe_for_the_engine_the_doctor_and_the_metrics() -> None:
    nvml = FakeNvml()
    gpus, error = probe(nvml)
    assert error is None and len(gpus) == 1
    t4 = gpus[0]
    assert (t4.name, t4.capability, t4.driver_version, t4.driver_cuda) == ("Tesla T4", (7, 5), "535.104.05", (12, 2))
    assert t4.total_bytes == 15 * GIB and t4.sm == "sm75" and nvml.open == 0  # init and shutdown paired
    monitor = GpuMonitor(nvml)
    reading = monitor.read()[0]
    assert (reading.name, reading.utilization, reading.temperature) == ("Tesla T4", 37.0, 61.0)
    monitor.close()
    assert nvml.open == 0
    assert probe(types.SimpleNamespace()).gpus == ()  # a module without nvmlInit: no GPU, an error, no crash


def test_torch_build_is_read_without_importing_torch() -> None:
    code = ("import sys; from inference.engines.runtime import torch_build; b = torch_build(); "
            "print(b.version, b.cuda, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    version, cuda, imported = out.stdout.split()
    assert version == torch_build().version and imported == "False"  # read from torch/version.py
    assert TorchBuild("2.9.0+cu128", "12.8").cuda_tuple == (12, 8) and TorchBuild("2.13.0+cpu", None).cuda_tuple is None


def test_a_t4_with_a_matching_driver_is_ready_with_the_plan(tmp_path: Path) -> None:
    report = diagnose(tmp_path, FakeNvml(driver="580.82.07", cuda=13000), TorchBuild("2.9.0+cu130", "13.0"))
    text = "\n".join(report.lines)
    assert not report.problems, report.problems
    assert "driver 580.82.07 (supports CUDA 13.0)" in text and "Tesla T4, compute capability 7.5" in text
    assert "max_model_len 4096" in text and "kv_cache_memory_bytes" in text and "TRITON_ATTN" in text


def test_driver_too_old_for_a_cuda_13_build(tmp_path: Path) -> None:
    report = diagnose(tmp_path, FakeNvml(), TorchBuild("2.9.0+cu130", "13.0"))
    [problem] = [p for p in report.problems if "driver" in p]
    assert "driver 535.104.05 supports CUDA 12.2" in problem and "built for CUDA 13.0" in problem
    assert "needs driver >= 580.65.06" in problem and "upgrade the driver" in problem
    assert "cu126" in problem and "560.28.03" in problem  # no wheel variant fits 535: names the oldest's minimum


def test_cuda_12_8_build_on_a_driver_for_12_6_names_570(tmp_path: Path) -> None:
    report = diagnose(tmp_path, FakeNvml(driver="560.35.03", cuda=12060), TorchBuild("2.8.0+cu128", "12.8"))
    [problem] = [p for p in report.problems if "driver" in p]
    assert "driver 560.35.03 supports CUDA 12.6" in problem and "CUDA 12.8, which needs driver >= 570.26" in problem
    assert "install the cu126 wheel variant" in problem  # this driver runs the cu126 build


def test_cpu_build_of_torch_with_a_gpu_is_a_problem_for_the_vllm_engine(tmp_path: Path) -> None:
    report = diagnose(tmp_path, FakeNvml(driver="570.124.06", cuda=12080), TorchBuild("2.13.0+cpu", None))
    assert any("2.13.0+cpu is not a CUDA build" in p and "cu128" in p for p in report.problems)


def test_card_under_8gb(tmp_path: Path) -> None:
    report = diagnose(tmp_path, FakeNvml("GeForce GTX 1660", 5.8, 5.6, (7, 5), "580.82.07", 13000),
                      TorchBuild("2.9.0+cu130", "13.0"))
    assert any("GeForce GTX 1660 has 5.80 GiB" in p and "at least 8 GB" in p for p in report.problems)


def test_8gb_card_with_less_free_names_the_numbers_and_what_fits(tmp_path: Path) -> None:
    # 7.6 GiB reported, 7.3 free (a display or another process): even INT8 KV and lm_head in INT8 stay short
    report = diagnose(tmp_path, FakeNvml("RTX 2080", 7.6, 7.3, (7, 5), "580.82.07", 13000),
                      TorchBuild("2.9.0+cu130", "13.0"))
    [problem] = [p for p in report.problems if "does not fit" in p]
    assert "7.30 GiB free" in problem and "6.53 weights" in problem and "fewer than the 1024 tokens" in problem
    assert "What fits: 4-bit weights" in problem and "3.60 GiB of weights" in problem and "AWQ 5.60" in problem


def test_doctor_smoke_is_routed_to_inference_smoke(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []
    fake = types.ModuleType("inference.smoke")
    fake.main = lambda argv: seen.append(argv) or 3  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "inference.smoke", fake)
    assert doctor.main(["--smoke", "--json", "--streams", "4"]) == 3
    assert seen == [["--smoke", "--json", "--streams", "4"]]


def doctor_cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "inference.doctor", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=60)


def test_plan_json_for_llama_7b_int8_on_8gb_and_16gb_cards() -> None:
    small = doctor_cli("--plan", "--model-config", "llama-7b", "--vram-gib", "7.6", "--method", "w8a8", "--json")
    assert small.returncode == 0, small.stderr
    plan = json.loads(small.stdout)
    assert plan["fits"] and plan["kv_tokens"] == 1456 and plan["max_model_len"] == 1456 and plan["max_num_seqs"] == 16
    assert plan["weight_bytes"] == 7_007_150_080 and set(plan["overhead"]) == {
        "cuda_context", "non_torch", "activations", "sampler", "cuda_graphs", "fragmentation", "total"}
    assert plan["overhead"]["cuda_graphs"] == 0  # eager on a small card
    args = plan["engine_arguments"]
    assert args["kv_cache_memory_bytes"] == plan["kv_tokens"] * plan["kv_bytes_per_token"]
    assert args["kv_cache_dtype"] == "int8_per_token_head" and args["max_num_batched_tokens"] == 512
    assert "= 1456 tokens" in plan["arithmetic"]
    t4 = json.loads(doctor_cli("--plan", "--model-config", "llama-7b", "--vram-gib", "15", "--method", "w8a8",
                               "--json").stdout)
    assert t4["fits"] and t4["max_model_len"] == 4096 and t4["kv_tokens"] == 15520
    assert "kv_cache_dtype" not in t4["engine_arguments"] and not t4["engine_arguments"]["enforce_eager"]


def test_plan_json_when_it_does_not_fit(tmp_path: Path) -> None:
    run = doctor_cli("--plan", "--model-config", "llama-7b", "--vram-gib", "7.6", "--method", "w8a8",
                     "--kv-cache-dtype", "auto", "--json")
    assert run.returncode == 1
    plan = json.loads(run.stdout)
    assert not plan["fits"] and "752 tokens" in plan["reason"] and "1024" in plan["reason"]
    assert plan["alternative"]["options"]["method"] == "w4a16" and plan["alternative"]["max_model_len"] == 4096
    small = json.loads(doctor_cli("--plan", "--model-config", "llama-7b", "--vram-gib", "6", "--json").stdout)
    assert not small["fits"] and "6.00 GiB" in small["reason"] and "at least 8 GB" in small["reason"]
    config = tmp_path / "config.json"
    config.write_text(json.dumps(W8A8))  # the method comes from the checkpoint's quantization_config
    from_file = json.loads(doctor_cli("--plan", "--model-config", str(config), "--vram-gib", "15", "--json").stdout)
    assert from_file["options"]["method"] == "w8a8" and from_file["fits"]
    fp8 = doctor_cli("--plan", "--model-config", "llama-7b", "--vram-gib", "15", "--kv-cache-dtype", "fp8")
    assert fp8.returncode == 2 and "8.9" in fp8.stderr


def test_help_has_no_side_effects(tmp_path: Path) -> None:
    run = doctor_cli("--help", INFERENCE_MODEL_PATH=str(tmp_path / "absent"))
    assert run.returncode == 0 and "--plan" in run.stdout and "--smoke" in run.stdout
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_embedded_model_on_this_machine_is_ready(embedded_model: Path) -> None:
    run = doctor_cli(INFERENCE_MODEL_PATH=str(embedded_model))
    assert run.returncode == 0, run.stdout
    assert "LlamaForCausalLM" in run.stdout and "ready to start" in run.stdout and "Plan" in run.stdout


def test_missing_shard_and_missing_gpu_are_problems(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "hidden_size": 64,
                                                      "num_attention_heads": 4, "num_hidden_layers": 2,
                                                      "intermediate_size": 128, "vocab_size": 100}))
    (tmp_path / "tokenizer.json").write_text("{}")
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({
        "metadata": {"total_size": 10}, "weight_map": {"a": "model-00001-of-00002.safetensors",
                                                       "b": "model-00002-of-00002.safetensors"}}))
    (tmp_path / "model-00001-of-00002.safetensors").write_bytes(b"x" * 5)
    run = doctor_cli(INFERENCE_MODEL_PATH=str(tmp_path), INFERENCE_DEVICE="cuda")
    assert run.returncode == 1
    assert "model-00002-of-00002.safetensors" in run.stdout
    assert "no NVIDIA GPU" in run.stdout
    assert "chat template" in run.stdout  # a warning, named


def test_missing_model_folder() -> None:
    run = doctor_cli(INFERENCE_MODEL_PATH="/nonexistent/model")
    assert run.returncode == 1 and "does not exist" in run.stdout
