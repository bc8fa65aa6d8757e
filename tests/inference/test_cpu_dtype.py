"""The dtype the vLLM engine picks on the CPU, decided from the quantisation scheme and the CPU's flags
(faked here: the AMX branch cannot be reached on an AMD machine), and cancellation aborting exactly
one vLLM request (a fake AsyncLLM at the seam; vLLM itself runs in the test-vllm and test-w8a8 stages)."""

from __future__ import annotations

import asyncio
import json
import sys
import types
from pathlib import Path

import pytest

from inference.cpu import CpuInfo, cpu_info, parse_cpuinfo
from inference.engines.errors import StartupError
from inference.engines.loading import cpu_dtype, folder_quantization, scheme_from_config
from inference.engines.vllm_engine import VLLMEngine, engine_arguments
from inference.settings import InferenceSettings
from inference.types import GenerationRequest, SamplingParams

EPYC = CpuInfo("AMD EPYC", frozenset({"avx2", "avx512f", "avx512_vnni", "avx512_bf16"}), 2)
XEON_AMX = CpuInfo("Intel(R) Xeon(R) Platinum 8480+", frozenset({"avx2", "avx512f", "avx512_vnni", "avx512_bf16",
                                                                   "amx_tile", "amx_int8", "amx_bf16"}), 2)
OLD = CpuInfo("Intel(R) Xeon(R) CPU E5-2680 v4", frozenset({"avx2"}), 2)

# what llm-compressor writes for scripts/quantize.py --method w8a8 (tests/scripts/test_quantize_w8a8.py)
W8A8_CONFIG = {"quantization_config": {"quant_method": "compressed-tensors", "config_groups": {"group_0": {
    "weights": {"num_bits": 8, "type": "int", "symmetric": True, "dynamic": False, "strategy": "channel"},
    "input_activations": {"num_bits": 8, "type": "int", "symmetric": True, "dynamic": True, "strategy": "token"},
    "targets": ["Linear"]}}}}
W8A8 = scheme_from_config(W8A8_CONFIG)


def test_w8a8_on_amx_runs_in_bfloat16_and_elsewhere_in_float32() -> None:
    assert W8A8 is not None and W8A8.int8_activations and W8A8.name == "w8a8"
    amx = cpu_dtype("auto", W8A8, XEON_AMX)
    assert amx.dtype == "bfloat16" and "AMX" in amx.reason
    assert cpu_dtype("auto", W8A8, EPYC).dtype == "float32"
    assert cpu_dtype("auto", W8A8, OLD).dtype == "float32"


def test_unquantised_models_stay_float32_on_every_cpu() -> None:
    for cpu in (EPYC, XEON_AMX, OLD):
        assert cpu_dtype("auto", None, cpu).dtype == "float32"
    bnb = scheme_from_config({"quantization_config": {"quant_method": "bitsandbytes", "load_in_8bit": True}})
    assert bnb is not None and bnb.name == "bnb-int8" and not bnb.int8_activations
    assert cpu_dtype("auto", bnb, XEON_AMX).dtype == "float32"


def test_asymmetric_activations_take_the_onednn_kernel_even_with_amx() -> None:
    groups = json.loads(json.dumps(W8A8_CONFIG))
    groups["quantization_config"]["config_groups"]["group_0"]["input_activations"]["symmetric"] = False
    assert cpu_dtype("auto", scheme_from_config(groups), XEON_AMX).dtype == "float32"


def test_an_explicit_dtype_wins_unless_it_cannot_run() -> None:
    assert cpu_dtype("bfloat16", None, EPYC).dtype == "bfloat16"
    assert cpu_dtype("float32", W8A8, EPYC).reason == "set by INFERENCE_DTYPE"
    with pytest.raises(StartupError, match="AMX.*bfloat16"):
        cpu_dtype("float32", W8A8, XEON_AMX)


def test_engine_arguments_use_the_choice(tmp_path: Path) -> None:
    settings = InferenceSettings(model_path=tmp_path, engine="vllm", device="cpu")
    args = engine_arguments(settings, None, "compressed-tensors", cpu_choice=cpu_dtype("auto", W8A8, XEON_AMX))
    assert args["dtype"] == "bfloat16" and args["enforce_eager"] is True
    assert engine_arguments(settings, None, None)["dtype"] == "float32"


def test_folder_quantization_reads_config_json(tmp_path: Path) -> None:
    assert folder_quantization(tmp_path) is None  # no config.json
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 8}))
    assert folder_quantization(tmp_path) is None  # not quantised
    (tmp_path / "config.json").write_text(json.dumps(W8A8_CONFIG))
    assert folder_quantization(tmp_path) == W8A8
    (tmp_path / "config.json").write_text("{not json")
    assert folder_quantization(tmp_path) is None


def test_cpuinfo_parsing_and_this_machine() -> None:
    text = ("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\nflags\t\t: fpu avx2 avx512f amx_tile "
            "amx_int8 amx_bf16 avx512_bf16\n\nprocessor\t: 1\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\n"
            "flags\t\t: fpu avx2\n")
    cpu = parse_cpuinfo(text)
    assert cpu.model == "Intel(R) Xeon(R) Platinum 8480+" and cpu.cores == 2 and cpu.amx and cpu.bf16
    assert cpu.describe() == "Intel(R) Xeon(R) Platinum 8480+ (avx2 avx512f avx512_bf16 amx_tile amx_int8 amx_bf16)"
    here = cpu_info()
    assert here.model and here.cores >= 1 and here.as_dict()["amx"] == here.amx


class _FakeAsyncLLM:
    """vLLM's AsyncLLM at the seam: streams one token per step until aborted."""

    def __init__(self) -> None:
        self.aborted: list[str] = []
        self.live: set[str] = set()

    async def generate(self, prompt, params, request_id):
        self.live.add(request_id)
        try:
            for _ in range(100):
                await asyncio.sleep(0)
                if request_id in self.aborted:
                    return
                yield types.SimpleNamespace(outputs=[types.SimpleNamespace(text="x", token_ids=[1],
                                                                           finish_reason=None)])
        finally:
            self.live.discard(request_id)

    async def abort(self, request_ids) -> None:
        self.aborted.extend([request_ids] if isinstance(request_ids, str) else request_ids)


@pytest.fixture
def fake_vllm(monkeypatch: pytest.MonkeyPatch):
    vllm = types.ModuleType("vllm")
    vllm.SamplingParams = lambda **kwargs: kwargs
    sampling = types.ModuleType("vllm.sampling_params")
    sampling.RequestOutputKind = types.SimpleNamespace(DELTA="delta")
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    monkeypatch.setitem(sys.modules, "vllm.sampling_params", sampling)


def test_cancelling_one_request_aborts_only_that_one(fake_vllm, tmp_path: Path) -> None:
    """'req-1' must not abort 'req-10' (the old abort matched request ids by prefix)."""
    engine = VLLMEngine(InferenceSettings(model_path=tmp_path, engine="vllm"))
    engine._engine = fake = _FakeAsyncLLM()

    async def run() -> None:
        one = engine.generate(GenerationRequest("req-1", (1, 2), SamplingParams(max_tokens=50)))
        ten = engine.generate(GenerationRequest("req-10", (1, 2), SamplingParams(max_tokens=50)))
        await one.__anext__()
        await ten.__anext__()
        await one.aclose()
        assert len(fake.aborted) == 1 and fake.aborted[0].startswith("req-1-")
        assert any(r.startswith("req-10-") for r in fake.live)  # still streaming
        await ten.__anext__()
        await ten.aclose()

    asyncio.run(run())
    assert [r.rsplit("-", 1)[0] for r in fake.aborted] == ["req-1", "req-10"]
    assert engine.stats().aborted_total == 2 and engine.stats().running == 0
