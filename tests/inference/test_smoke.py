"""The GPU self-check (inference/smoke.py) and its synthetic models (inference/engines/synthetic.py).

Unit tests need no model: the verdict rule, the table, the plan adapter (against the real memory plan
and against other plan signatures), the synthetic shapes and folders, and the whole run with the fake
engine. The two slow tests run `python -m inference.smoke --json` on this CPU as a subprocess: on the
embedded model and on a synthetic tiny fp16 model.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from inference import memory_plan, smoke
from inference.engines.synthetic import SHAPES, build_synthetic, parameter_layout, synthetic_config

from ..conftest import DEFAULT_MODEL
from ..servers import ROOT
from .fakes import FakeEngine

GIB = 1024**3


def passing_result(**changes: object) -> dict:
    result = {"engine": "transformers", "model": "m", "device": "cpu", "dtype": "float32", "quantization": None,
              "ran_on_cpu": True, "load_s": 1.25, "empty_streams": 0,
              "single_stream": {"tokens_per_s": 17.5, "tokens": 8},
              "concurrent": {"streams": 16, "aggregate_tokens_per_s": 88.25},
              "long_prompt": {"prompt_tokens": 512, "ttft_s": 0.9123},
              "memory": {"kind": "rss", "label": "peak RSS (CPU run, not VRAM)", "used_bytes": 1 * GIB},
              "plan": {"method": "fp32", "limit_bytes": 2 * GIB, "basis": "weights + runtime + KV"}}
    result.update(changes)
    return result


# ---- verdict and table ----------------------------------------------------------------------------

def test_verdict_passes_within_the_plan() -> None:
    assert smoke.decide(passing_result()) == ("PASS", [])


def test_verdict_fails_when_memory_exceeds_the_plan() -> None:
    verdict, reasons = smoke.decide(passing_result(memory={"label": "peak VRAM (pynvml, all GPUs)",
                                                           "used_bytes": int(2.5 * GIB)}))
    assert verdict == "FAIL" and "2.50 GiB used, more than the plan's 2.00 GiB" in reasons[0]


def test_verdict_fails_on_engine_failure_empty_output_or_no_plan() -> None:
    verdict, reasons = smoke.decide(passing_result(error="RuntimeError: CUDA out of memory"))
    assert verdict == "FAIL" and "the engine failed: RuntimeError: CUDA out of memory" in reasons[0]
    verdict, reasons = smoke.decide(passing_result(empty_streams=2))
    assert verdict == "FAIL" and reasons == ["2 stream(s) produced no output"]
    verdict, reasons = smoke.decide(passing_result(plan={"error": "KeyError: 'hidden_size'", "limit_bytes": None}))
    assert verdict == "FAIL" and "no memory plan" in reasons[0] and "hidden_size" in reasons[0]


def test_table_shows_the_figures_the_cpu_note_and_the_verdict() -> None:
    result = passing_result()
    result["verdict"], result["reasons"] = smoke.decide(result)
    table = smoke.format_table(result)
    assert "NOTE: ran on the CPU" in table and "not VRAM" in table
    for text in ("tokens/s, 1 stream", "17.5", "aggregate at 16 streams", "88.25", "TTFT, 512-token prompt",
                 "0.912 s", "1.00 GiB", "2.00 GiB", "RESULT: PASS"):
        assert text in table
    gpu = smoke.format_table({**result, "ran_on_cpu": False, "verdict": "FAIL", "reasons": ["too much"]})
    assert "NOTE" not in gpu and "RESULT: FAIL" in gpu and "  - too much" in gpu
    assert "n/a" in smoke.format_table({"verdict": "FAIL", "reasons": []})  # an engine that never started


# ---- the memory plan, through the adapter ---------------------------------------------------------

def test_plan_limits_follow_the_engine() -> None:
    config = synthetic_config("llama-7b")
    grows = smoke.plan_prediction(config, 15 * GIB, "bnb-int8", total_bytes=15 * GIB, run_tokens=1000, eager=True)
    assert grows["method"] == "bnb-int8" and 6 * GIB < grows["weight_bytes"] < 7 * GIB
    assert grows["kv_bytes_per_token"] == 512 * 1024
    assert grows["limit_bytes"] == grows["run_bytes"] == (grows["weight_bytes"] + grows["overhead_bytes"]
                                                          + 1000 * 512 * 1024)
    whole = smoke.plan_prediction(config, 15 * GIB, "fp16", total_bytes=15 * GIB, preallocated_kv_bytes=-1)
    assert whole["limit_bytes"] == whole["total_bytes"] and whole["total_bytes"] <= 15 * GIB
    reserved = smoke.plan_prediction(config, 15 * GIB, "fp16", preallocated_kv_bytes=2 * GIB)
    assert reserved["limit_bytes"] == reserved["weight_bytes"] + reserved["overhead_bytes"] + 2 * GIB
    fp32 = smoke.plan_prediction(synthetic_config("tiny"), 8 * GIB, "fp32", kv_dtype_bytes=4, run_tokens=10)
    assert fp32["kv_bytes_per_token"] == 2 * 4 * 4 * 64 * 4  # K and V, 4 layers, 4 heads of 64, float32


def test_plan_prediction_limits_by_how_the_engine_holds_its_kv_cache() -> None:
    config, free = synthetic_config("llama-7b"), int(15 * memory_plan.GIB)
    grows = smoke.plan_prediction(config, free, "fp16", total_bytes=free, run_tokens=2560)
    allocates = smoke.plan_prediction(config, free, "fp16", total_bytes=free, preallocated_kv_bytes=-1)
    assert grows["limit_bytes"] == grows["weight_bytes"] + grows["overhead_bytes"] + 2560 * 512 * 1024
    assert allocates["limit_bytes"] == allocates["total_bytes"] > grows["limit_bytes"]
    assert allocates["fits"] and "allocated at start" in allocates["basis"]


def test_weight_method_names() -> None:
    assert smoke.weight_method("float32", None) == "fp32"
    assert smoke.weight_method("float16", None) == "fp16"
    assert smoke.weight_method("bfloat16", None) == "bf16"
    assert smoke.weight_method("float32", "bnb-int8") == "bnb-int8"
    assert smoke.weight_method("float16", "bitsandbytes") == "bnb-int8"
    assert smoke.weight_method("float16", "compressed-tensors") == "w8a8"


# ---- synthetic shapes and folders -----------------------------------------------------------------

def test_llama_7b_shape_is_llama_7b() -> None:
    shape = memory_plan.shape_from_config(synthetic_config("llama-7b"))
    assert (shape.layers, shape.hidden, shape.heads, shape.kv_heads, shape.intermediate, shape.vocab) == (
        32, 4096, 32, 32, 11008, 32000)
    assert abs(shape.params - 6.74e9) < 0.01e9
    assert memory_plan.kv_bytes_per_token(shape, 2) == 512 * 1024


def test_tiny_shape_is_small() -> None:
    shape = memory_plan.shape_from_config(synthetic_config("tiny"))
    assert shape.hidden == 256 and shape.layers <= 4 and shape.params < 30_000_000


def test_w8a8_config_is_what_llm_compressor_writes() -> None:
    quant = synthetic_config("tiny", "w8a8")["quantization_config"]
    assert quant["quant_method"] == "compressed-tensors" and quant["format"] == "int-quantized"
    assert quant["quantization_status"] == "compressed" and quant["ignore"] == ["lm_head"]
    group = quant["config_groups"]["group_0"]
    assert group["targets"] == ["Linear"]
    assert group["weights"].items() >= {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "channel",
                                        "dynamic": False}.items()
    assert group["input_activations"].items() >= {"num_bits": 8, "type": "int", "strategy": "token",
                                                  "dynamic": True}.items()
    for fmt in ("fp16", "bnb-int8"):
        assert "quantization_config" not in synthetic_config("llama-7b", fmt)
    with pytest.raises(ValueError, match="unknown synthetic shape"):
        synthetic_config("llama-70b")
    with pytest.raises(ValueError, match="unknown synthetic format"):
        synthetic_config("tiny", "fp8")


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_saved_tensors_match_the_plan_arithmetic(name: str) -> None:
    config = synthetic_config(name)
    layout, linears = parameter_layout(config)  # a meta-device model: no memory
    assert sum(math.prod(shape) for _, shape in layout) == memory_plan.shape_from_config(config).params
    assert len(linears) == 7 * config["num_hidden_layers"] and "lm_head" not in linears


def fake_tokenizer(folder: Path) -> Path:
    folder.mkdir()
    (folder / "tokenizer.json").write_text("{}")
    (folder / "tokenizer_config.json").write_text("{}")
    return folder


def test_w8a8_folder_holds_int8_weights_and_channel_scales(tmp_path: Path) -> None:
    from safetensors import safe_open

    out = build_synthetic("tiny", "w8a8", tmp_path / "model", fake_tokenizer(tmp_path / "tok"))
    assert json.loads((out / "config.json").read_text())["quantization_config"]["format"] == "int-quantized"
    assert (out / "tokenizer.json").exists() and (out / "generation_config.json").exists()
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
        for name in ("model.layers.0.self_attn.q_proj", "model.layers.3.mlp.down_proj"):
            weight, scale = f.get_tensor(f"{name}.weight"), f.get_tensor(f"{name}.weight_scale")
            assert str(weight.dtype) == "torch.int8" and str(scale.dtype) == "torch.float16"
            assert tuple(scale.shape) == (weight.shape[0], 1) and int(weight.abs().max()) <= 127
        assert str(f.get_tensor("lm_head.weight").dtype) == "torch.float16"
        assert str(f.get_tensor("model.norm.weight").dtype) == "torch.float16"
    assert "lm_head.weight_scale" not in keys and not any("zero_point" in k for k in keys)


def test_fp16_folder_is_sharded_with_an_index(tmp_path: Path) -> None:
    out = build_synthetic("tiny", "fp16", tmp_path / "model", fake_tokenizer(tmp_path / "tok"), shard_bytes=10 << 20)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    files = sorted(set(index["weight_map"].values()))
    assert len(files) > 1 and files[0] == f"model-00001-of-{len(files):05d}.safetensors"
    assert all((out / f).exists() for f in files) and not (out / "model.safetensors").exists()
    layout, _ = parameter_layout(synthetic_config("tiny"))
    assert set(index["weight_map"]) == {name for name, _ in layout}
    assert index["metadata"]["total_size"] == 2 * memory_plan.shape_from_config(synthetic_config("tiny")).params


def test_missing_tokenizer_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="fetch_default_model"):
        build_synthetic("tiny", "fp16", tmp_path / "model", tmp_path)


# ---- arguments, prompts, the run with the fake engine ---------------------------------------------

def test_arguments() -> None:
    args = smoke.parse_args(["--smoke"])
    assert (args.streams, args.prompt_tokens, args.synthetic, args.fmt, args.json) == (16, 512, None, "fp16", False)
    args = smoke.parse_args(["--smoke", "--synthetic", "llama-7b", "--format", "w8a8", "--json", "--streams", "4"])
    assert (args.synthetic, args.fmt, args.json, args.streams) == ("llama-7b", "w8a8", True, 4)
    for bad in (["--format", "w8a8"], ["--streams", "0"]):
        with pytest.raises(SystemExit):
            smoke.parse_args(bad)


def test_prompt_has_the_length_asked_and_stays_in_the_vocabulary() -> None:
    prompt = smoke.make_prompt(FakeEngine(), 512, 6, "Long prompt")  # the fake's ids are word lengths
    assert len(prompt) == 512 and max(prompt) < 6


async def test_workload_counts_every_stream() -> None:
    result = await smoke.run_workload(FakeEngine(), streams=3, prompt_tokens=20, max_tokens=5, vocab=100)
    assert result["concurrent"]["tokens"] == 15 and result["concurrent"]["aggregate_tokens_per_s"] > 0
    assert result["single_stream"]["tokens"] == 5 and result["long_prompt"]["prompt_tokens"] == 20
    assert result["empty_streams"] == 0


class FakeGpus:
    used = [1000, 5000, 3000]

    def __init__(self) -> None:
        self.calls = 0

    def read(self) -> list:
        value = self.used[min(self.calls, len(self.used) - 1)]
        self.calls += 1
        return [SimpleNamespace(memory_used=value, memory_total=16000, name="Tesla T4")]

    def close(self) -> None:
        pass


def test_sampler_reports_vram_above_the_baseline(monkeypatch: pytest.MonkeyPatch) -> None:
    import inference.gpu

    monkeypatch.setattr(inference.gpu, "GpuMonitor", FakeGpus)
    with smoke.MemorySampler(interval_s=0.001) as sampler:
        pass
    assert sampler.gpu_free == 15000 and sampler.gpu_name == "Tesla T4"
    vram = sampler.result(on_gpu=True)
    assert vram["kind"] == "vram" and vram["used_bytes"] == 4000 and vram["baseline_bytes"] == 1000
    assert sampler.result(on_gpu=False)["kind"] == "rss"


def run_main_with(engine: FakeEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                  capfd: pytest.CaptureFixture) -> tuple[int, dict]:
    import inference.engines

    (tmp_path / "config.json").write_text(json.dumps(synthetic_config("tiny")))
    # main() sets the HF_* variables too: set here, they are restored after the test
    for name, value in {"INFERENCE_MODEL_PATH": str(tmp_path), "HF_HUB_OFFLINE": "1",
                        "TRANSFORMERS_OFFLINE": "1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(inference.engines, "build_engine", lambda settings: engine)
    code = smoke.main(["--smoke", "--json", "--streams", "2", "--prompt-tokens", "16", "--max-tokens", "4"])
    return code, json.loads(capfd.readouterr().out.splitlines()[-1])


def test_main_with_the_fake_engine_passes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capfd: pytest.CaptureFixture) -> None:
    engine = FakeEngine(max_model_len=256)
    code, result = run_main_with(engine, tmp_path, monkeypatch, capfd)
    assert (code, result["verdict"]) == (0, "PASS") and engine.closed
    assert result["ran_on_cpu"] and "ran on the CPU" in result["note"] and result["memory"]["kind"] == "rss"
    assert result["concurrent"]["tokens"] == 8 and result["plan"]["limit_bytes"] > 0


def test_main_with_a_failing_engine_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capfd: pytest.CaptureFixture) -> None:
    engine = FakeEngine(max_model_len=256, fail_after=0)
    code, result = run_main_with(engine, tmp_path, monkeypatch, capfd)
    assert (code, result["verdict"]) == (1, "FAIL") and engine.closed
    assert "the engine failed" in result["reasons"][0]


def test_llama_7b_without_a_gpu_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    import inference.gpu

    monkeypatch.setattr(inference.gpu, "GpuMonitor", lambda: SimpleNamespace(available=False))
    assert smoke.main(["--synthetic", "llama-7b"]) == 2


def test_w8a8_without_vllm_is_skipped(capfd: pytest.CaptureFixture) -> None:
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here: w8a8 would run")
    assert smoke.main(["--synthetic", "tiny", "--format", "w8a8", "--json"]) == 3
    result = json.loads(capfd.readouterr().out.splitlines()[-1])
    assert result["verdict"] == "SKIP" and "vLLM" in result["reasons"][0]


# ---- the real thing on this CPU (slow) ------------------------------------------------------------

def run_smoke(*args: str, timeout: float = 300) -> dict:
    """`python -m inference.smoke --json ...` on the CPU; the process (and any child) is always stopped."""
    env = {**os.environ, "INFERENCE_DEVICE": "cpu", "INFERENCE_ENGINE": "transformers",
           "INFERENCE_MODEL_PATH": str(DEFAULT_MODEL), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "inference.smoke", "--json", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    lines = out.strip().splitlines()
    assert lines, f"no output (exit {proc.returncode}):\n{err[-3000:]}"
    result = json.loads(lines[-1])
    assert proc.returncode == (0 if result["verdict"] == "PASS" else 1), err[-3000:]
    return result


def check_cpu_result(result: dict) -> None:
    assert result["device"] == "cpu" and result["ran_on_cpu"] is True and "ran on the CPU" in result["note"]
    assert result["memory"]["kind"] == "rss" and result["memory"]["used_bytes"] > 0
    assert result["single_stream"]["tokens_per_s"] > 0 and result["concurrent"]["aggregate_tokens_per_s"] > 0
    assert result["concurrent"]["streams"] == 4 and result["concurrent"]["tokens"] == 4 * 8
    assert result["long_prompt"]["prompt_tokens"] == 128 and result["long_prompt"]["ttft_s"] > 0
    assert "error" not in result and result["empty_streams"] == 0
    assert result["plan"]["limit_bytes"] > 0
    assert result["verdict"] in ("PASS", "FAIL") and bool(result["reasons"]) == (result["verdict"] == "FAIL")


@pytest.mark.slow
def test_smoke_on_the_embedded_model_on_the_cpu() -> None:
    if not (DEFAULT_MODEL / "model.safetensors").exists():
        pytest.fail("the embedded model is missing: run `python scripts/fetch_default_model.py`")
    result = run_smoke("--streams", "4", "--prompt-tokens", "128", "--max-tokens", "8")
    check_cpu_result(result)
    assert result["model"] == DEFAULT_MODEL.name and result["synthetic"] is None


@pytest.mark.slow
def test_smoke_on_a_synthetic_tiny_fp16_model_on_the_cpu() -> None:
    result = run_smoke("--synthetic", "tiny", "--format", "fp16", "--streams", "4", "--prompt-tokens", "128",
                       "--max-tokens", "8")
    check_cpu_result(result)
    assert result["model"] == "synthetic-tiny-fp16" and result["synthetic"]["shape"] == "tiny"
    assert not Path(result["settings"]["model_path"]).exists()  # the temporary folder is gone
