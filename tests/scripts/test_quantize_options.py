"""scripts/quantize.py: --device, --quantize-lm-head, the CPU time estimate and the report's memory and
lm_head fields (fast); one slow run of w8a8 with lm_head in int8 in .venv-w8a8 on the embedded model."""

from __future__ import annotations

import importlib.util
import json
import os
import struct
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from ..servers import ROOT

W8A8_PYTHON = ROOT / ".venv-w8a8" / "bin" / "python"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


quantize = _load("quantize")
resources = _load("_quantize_resources")
w8a8 = _load("_quantize_w8a8")

from inference.memory_plan import LLAMA_7B_CONFIG, shape_from_config  # noqa: E402

LLAMA_7B = shape_from_config(LLAMA_7B_CONFIG)
# the embedded model's shape, as its config.json gives it (so the estimate is checked without the model)
SMOLLM2 = shape_from_config({"hidden_size": 576, "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64,
                             "num_hidden_layers": 30, "intermediate_size": 1536, "vocab_size": 49152,
                             "max_position_embeddings": 8192, "tie_word_embeddings": True})


# --- arguments -----------------------------------------------------------------------------------

def test_lm_head_option_is_refused_for_bitsandbytes(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_:
        quantize.parse_args(["--model", str(tmp_path), "--method", "bnb-int8", "--quantize-lm-head"])
    assert exit_.value.code == 2 and "--quantize-lm-head needs --method w8a8" in capsys.readouterr().err


def test_defaults_and_output_name(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    args = quantize.parse_args(["--model", str(tmp_path / "m"), "--method", "w8a8"])
    assert args.device == "auto" and args.quantize_lm_head is False and args.out == tmp_path / "m-w8a8"
    args = quantize.parse_args(["--model", str(tmp_path / "m"), "--method", "w8a8", "--quantize-lm-head",
                                "--device", "cpu"])
    assert args.quantize_lm_head and args.device == "cpu"


def test_missing_model_and_unknown_device(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        quantize.parse_args(["--model", str(tmp_path / "absent")])
    assert "no model at" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        quantize.parse_args(["--model", str(tmp_path), "--device", "tpu"])


def test_device_resolution() -> None:
    assert quantize.resolve_device("auto", False) == "cpu"
    assert quantize.resolve_device("auto", True) == "cuda"
    assert quantize.resolve_device("cpu", True) == "cpu"
    with pytest.raises(SystemExit, match="no CUDA device"):
        quantize.resolve_device("cuda", False)


def test_dtype_choice() -> None:
    assert quantize.pick_dtype("cuda", LLAMA_7B.params, 64 * 2**30) == "float16"  # T4: no bf16
    assert quantize.pick_dtype("cpu", 135_000_000, 8 * 2**30) == "float32"
    assert quantize.pick_dtype("cpu", LLAMA_7B.params, 24 * 2**30) == "bfloat16"  # 27 GB in fp32 does not fit
    assert quantize.pick_dtype("cpu", LLAMA_7B.params, 64 * 2**30) == "float32"


# --- recipe and lm_head ----------------------------------------------------------------------------

def test_recipe_targets_lm_head_by_name_only_when_asked() -> None:
    # vLLM matches lm_head by layer name (its class, ParallelLMHead, does not contain "Linear")
    assert w8a8.recipe_targets(False) == (["Linear"], ["lm_head"])
    assert w8a8.recipe_targets(True) == (["lm_head", "Linear"], [])


def _fake_checkpoint(folder: Path, tensors: dict[str, str], config: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    header = json.dumps({name: {"dtype": dtype, "shape": [1], "data_offsets": [0, 1]}
                         for name, dtype in tensors.items()}).encode()
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * len(tensors))
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_lm_head_state_reads_the_saved_files(tmp_path: Path) -> None:
    config = {"tie_word_embeddings": False, "quantization_config": {
        "quant_method": "compressed-tensors", "ignore": [],
        "config_groups": {"group_0": {"targets": ["Linear", "lm_head"]}}}}
    state = w8a8.lm_head_state(_fake_checkpoint(tmp_path / "a", {
        "lm_head.weight": "I8", "lm_head.weight_scale": "F32", "model.embed_tokens.weight": "F16"}, config))
    assert state["int8"] and state["has_scale"] and state["targeted_by_name"] and not state["in_ignore"]
    assert state["embedding_dtype"] == "F16" and state["tie_word_embeddings"] is False
    config = {"tie_word_embeddings": True, "quantization_config": {
        "ignore": ["lm_head"], "config_groups": {"group_0": {"targets": ["Linear"]}}}}
    state = w8a8.lm_head_state(_fake_checkpoint(tmp_path / "b", {"model.embed_tokens.weight": "F32"}, config))
    assert not state["int8"] and state["weight_dtype"] is None and state["in_ignore"] and state["tie_word_embeddings"]


def test_tied_note_says_what_it_costs() -> None:
    assert "unties" in w8a8.tied_note(True, 49152, 576) and "+27.0 MiB" in w8a8.tied_note(True, 49152, 576)
    assert "saves 125.0 MiB" in w8a8.tied_note(False, 32000, 4096)


def test_vram_plan_counts_an_int8_lm_head() -> None:
    plain, note = quantize.vram_plan(LLAMA_7B, "w8a8", False)
    head, head_note = quantize.vram_plan(LLAMA_7B, "w8a8", True)
    assert note == ""
    if "lm_head" in head_note and "takes no" in head_note:  # an older memory_plan.summary(): said in the report
        assert head["weight_bytes"] == plain["weight_bytes"]
    else:  # 32000 x 4096 weights at 1 byte instead of 2, plus one fp32 scale per row
        assert plain["weight_bytes"] - head["weight_bytes"] == 32000 * 4096 - 32000 * 4


# --- time estimate ---------------------------------------------------------------------------------

def test_layer_params_of_llama_7b() -> None:
    assert resources.layer_params(LLAMA_7B) == 4 * 4096 * 4096 + 3 * 4096 * 11008  # 202.4 M; x 32 = 6.48 B


def test_estimate_formula_and_scaling() -> None:
    ref = resources.REFERENCE
    per_param = ref["cpu_seconds_per_layer"] / ref["params_per_layer"]
    est = resources.cpu_estimate(LLAMA_7B, ref["tokens"], lm_head=False, threads=2)
    assert est["cpu_seconds"] == pytest.approx(per_param * 32 * resources.layer_params(LLAMA_7B), rel=1e-3)
    assert est["seconds"] == pytest.approx(est["cpu_seconds"] / 2, rel=1e-3)
    assert "params" in est["formula"] and "wall = cpu_s / threads" in est["formula"] and ref["cpu"] in est["formula"]
    with_head = resources.cpu_estimate(LLAMA_7B, ref["tokens"], lm_head=True, threads=2)
    assert with_head["lm_head_seconds"] == pytest.approx(per_param * 32000 * 4096 / 2, rel=1e-2)
    assert resources.cpu_estimate(LLAMA_7B, ref["tokens"], lm_head=False, threads=4)["seconds"] == pytest.approx(
        est["seconds"] / 2, rel=1e-3)
    more_tokens = resources.cpu_estimate(LLAMA_7B, 10 * ref["tokens"], lm_head=False, threads=2)["seconds"]
    assert est["seconds"] < more_tokens < 10 * est["seconds"]  # GPTQ's part does not grow with tokens
    assert resources.human(30) == "30 s" and resources.human(600) == "10 min" and resources.human(9000) == "2.5 h"


def test_estimate_against_the_measurements() -> None:
    """REFERENCE's measurements (CPU seconds per layer): the embedded model's median by construction; a
    Llama-7B-shaped layer not under-estimated (what an operator plans a night around)."""
    smol = resources.cpu_estimate(SMOLLM2, 569, lm_head=False, threads=1)["per_layer_seconds"]
    big = resources.cpu_estimate(LLAMA_7B, 569, lm_head=False, threads=1)["per_layer_seconds"]
    measured = resources.REFERENCE["measured"]
    assert smol == pytest.approx(sorted(measured["smollm2_cpu_seconds_per_layer"])[1], rel=0.01)
    assert max(measured["llama7b_layer_cpu_seconds"]) <= big <= 2.5 * min(measured["llama7b_layer_cpu_seconds"])


@pytest.mark.slow  # counts the calibration tokens with the embedded model's tokenizer
def test_estimate_only_prints_before_loading_anything(embedded_model: Path) -> None:
    assert SMOLLM2 == shape_from_config(json.loads((embedded_model / "config.json").read_text()))
    run = subprocess.run([sys.executable, "scripts/quantize.py", "--model", str(embedded_model), "--method", "w8a8",
                          "--device", "cpu", "--quantize-lm-head", "--estimate-only"], cwd=ROOT, capture_output=True,
                         text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, run.stderr[-2000:]
    assert "CPU only: calibration should take about" in run.stdout and "formula:" in run.stdout
    estimate = json.loads(run.stdout[run.stdout.index("{"):])["estimate"]
    assert estimate["seconds"] > 0 and estimate["lm_head_seconds"] > 0 and estimate["calibration_tokens"] == 569


# --- report ----------------------------------------------------------------------------------------

def test_memory_log_records_peak_rss() -> None:
    memory = resources.MemoryLog(cuda=False)
    memory.mark("loaded")
    blob = bytearray(64 * 2**20)  # the high-water mark can only go up
    memory.mark("allocated")
    report = memory.report()
    del blob
    assert report["peak_rss_bytes"] >= report["phases"][1]["peak_rss_bytes"] >= report["phases"][0]["peak_rss_bytes"]
    assert report["peak_rss_bytes"] > 64 * 2**20 and "ru_maxrss" in report["source"]
    assert "cuda_max_allocated_bytes" not in report


def test_report_fields(tmp_path: Path) -> None:
    model, out = tmp_path / "src", tmp_path / "out"
    for folder, size in ((model, 1000), (out, 400)):
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"\0" * size)
    args = SimpleNamespace(method="w8a8", quantize_lm_head=True, model=model, out=out, question="q?",
                           eval_text=Path("eval.txt"))
    plan, note = quantize.vram_plan(LLAMA_7B, "w8a8", True)
    memory = {"peak_rss_bytes": 3 * 2**30, "peak_rss_gib": 3.0, "phases": [], "cuda_max_allocated_bytes": 2**30}
    extra = {"lm_head": {"quantized": True, "weight_dtype": "I8", "note": "saves 125.0 MiB"},
             "calibration": {"seconds": 12.0, "cpu_seconds": 20.0}}
    report = quantize.build_report(args, "cpu", "float32", 20.0, 20.5, "a", "b", plan, note, memory, 33.3, extra)
    assert report["perplexity"]["change_percent"] == 2.5 and report["perplexity"]["device"] == "cpu"
    assert report["memory"]["peak_rss_bytes"] == 3 * 2**30 and report["quantize_lm_head"] is True
    assert report["lm_head"]["weight_dtype"] == "I8" and report["size_after_bytes"] == 400
    lines = "\n".join(quantize.summary_lines(args, report))
    assert "+2.50 %" in lines and "peak memory: 3.00 GiB RSS, 1.00 GiB CUDA" in lines and "lm_head: I8" in lines


# --- the real thing --------------------------------------------------------------------------------

@pytest.mark.slow
def test_w8a8_with_int8_lm_head_on_the_embedded_model(tmp_path: Path, embedded_model: Path) -> None:
    if not W8A8_PYTHON.exists():
        pytest.skip("no .venv-w8a8 (scripts/setup.sh --w8a8 creates it)")
    calibration = tmp_path / "calibration.txt"  # 8 of the 20 samples: keeps the run short on 2 cores
    lines = [line for line in (ROOT / "scripts/data/calibration.txt").read_text().splitlines() if line.strip()]
    calibration.write_text("\n".join(lines[:8]) + "\n")
    out = tmp_path / "smollm2-w8a8-head"
    run = subprocess.run([str(W8A8_PYTHON), "scripts/quantize.py", "--model", str(embedded_model), "--method", "w8a8",
                          "--quantize-lm-head", "--device", "cpu", "--calibration", str(calibration), "--out", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=1800, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "CPU only: calibration should take about" in run.stdout
    report = json.loads((out / "quantization-report.json").read_text())
    assert report["quantize_lm_head"] and report["device"] == "cpu"
    ppl = report["perplexity"]
    assert ppl["before"] > 1 and ppl["after"] > 1 and abs(ppl["change_percent"]) < 15, ppl
    memory = report["memory"]
    assert 0.3 * 2**30 < memory["peak_rss_bytes"] < 8 * 2**30
    assert [p["phase"] for p in memory["phases"]][:2] == ["loaded", "perplexity before"]
    assert report["calibration"]["tokens"] > 0 and report["calibration"]["estimate"]["seconds"] > 0
    # SmolLM2 ties lm_head to the embedding table: the int8 head is a separate copy, the table stays
    head = report["lm_head"]
    assert head["int8"] and head["has_scale"] and head["targeted_by_name"] and not head["in_ignore"]
    assert head["tied_in_source"] and not head["tie_word_embeddings"] and head["embedding_dtype"] in ("F32", "F16", "BF16")
    assert "unties" in head["note"]
    config = json.loads((out / "config.json").read_text())
    group = config["quantization_config"]["config_groups"]["group_0"]
    assert "lm_head" in group["targets"] and group["weights"]["num_bits"] == 8
    assert "lm_head" not in config["quantization_config"].get("ignore", [])
    assert w8a8.safetensors_dtypes(out)["lm_head.weight"] == "I8"
