"""oneDNN prepacked float linears (inference/engines/cpu_linear.py, INFERENCE_CPU_GEMM): the packed layer
against F.linear, what each mode replaces, and on the embedded model the same logits and greedy text as
torch's default kernels. No timings are asserted (the speed is in docs/benchmarks.md)."""

from __future__ import annotations

import pytest
import torch

from inference.engines import cpu_linear
from inference.engines.cpu_linear import PackedLinear, choose_and_pack
from inference.settings import InferenceSettings

pytestmark = pytest.mark.skipif(not cpu_linear.onednn_available(), reason="this torch has no oneDNN linear ops")


@pytest.mark.parametrize("shape", [(1, 1, 96), (8, 1, 96), (3, 17, 96), (64, 96)])
@pytest.mark.parametrize("bias", [False, True])
def test_packed_linear_equals_f_linear(shape: tuple[int, ...], bias: bool) -> None:
    torch.manual_seed(len(shape))
    linear = torch.nn.Linear(96, 40, bias=bias)
    packed = PackedLinear(linear)
    x = torch.randn(*shape)
    with torch.inference_mode():
        got, expected = packed(x), linear(x)
    assert got.shape == expected.shape and got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def _bf16_works() -> bool:
    try:
        PackedLinear(torch.nn.Linear(8, 8), torch.bfloat16)(torch.randn(1, 8))
        return True
    except RuntimeError:
        return False


@pytest.mark.skipif(not _bf16_works(), reason="no bfloat16 oneDNN linear on this CPU")
def test_a_bfloat16_packed_layer_takes_and_gives_float32() -> None:
    torch.manual_seed(0)
    linear = torch.nn.Linear(96, 40)
    packed = PackedLinear(linear, torch.bfloat16)
    x = torch.randn(3, 1, 96)
    with torch.inference_mode():
        got, expected = packed(x), linear(x)
    assert got.dtype == torch.float32 and "bfloat16" in repr(packed)
    torch.testing.assert_close(got, expected, rtol=0.05, atol=0.05)


def test_the_int8_mode_s_head_is_bfloat16_only_where_that_is_faster_and_close() -> None:
    torch.manual_seed(0)
    model = Tiny()
    model.lm_head = torch.nn.Linear(576, 4096, bias=False)
    model.model = torch.nn.Sequential(torch.nn.Linear(16, 576))
    x = torch.randn(2, 16)
    with torch.inference_mode():
        expected = model(x)
        said = cpu_linear.bf16_head(model)
        got = model(x)
    if said is None:  # bfloat16 not faster (or absent) on this CPU: the head is as it was
        assert type(model.lm_head) is torch.nn.Linear
        torch.testing.assert_close(got, expected)
    else:
        assert "bfloat16" in said and model.lm_head.dtype == torch.bfloat16
        torch.testing.assert_close(got, expected, rtol=0.05, atol=0.05)
    model.lm_head = torch.nn.Linear(576, 64, bias=False).to(torch.bfloat16)
    assert cpu_linear.bf16_head(model) is None  # only a float32 head is touched


class Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 16))
        self.lm_head = torch.nn.Linear(16, 50, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.model(x))


def kinds(model: torch.nn.Module) -> list[str]:
    return [type(m).__name__ for m in (model.model[0], model.model[2], model.lm_head)]


def test_onednn_packs_every_float_linear_lm_head_included() -> None:
    model = Tiny()
    x = torch.randn(2, 3, 16)
    with torch.inference_mode():
        expected = model(x)
        choice = choose_and_pack(model, "onednn")
        got = model(x)
    assert choice.kernel == "onednn" and choice.layers == 3 and "oneDNN prepacked" in choice.reason
    assert kinds(model) == ["PackedLinear"] * 3 and model.lm_head.out_features == 50
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_native_leaves_the_model_alone() -> None:
    model = Tiny()
    choice = choose_and_pack(model, "native")
    assert choice.kernel == "native" and "INFERENCE_CPU_GEMM=native" in choice.reason
    assert kinds(model) == ["Linear"] * 3


def test_auto_times_both_and_says_which_it_kept() -> None:
    model = Tiny()
    choice = choose_and_pack(model, "auto")
    assert choice.kernel in ("onednn", "native")
    assert kinds(model) == (["PackedLinear"] * 3 if choice.kernel == "onednn" else ["Linear"] * 3)
    assert "x torch's default" in choice.reason or "its time" in choice.reason


def test_without_onednn_or_float_layers_nothing_changes(monkeypatch) -> None:
    model = Tiny().to(torch.bfloat16)
    assert choose_and_pack(model, "onednn").kernel == "native" and kinds(model) == ["Linear"] * 3
    model = Tiny()
    monkeypatch.setattr(cpu_linear, "onednn_available", lambda: False)
    choice = choose_and_pack(model, "onednn")
    assert choice.kernel == "native" and "no oneDNN" in choice.reason and kinds(model) == ["Linear"] * 3


def test_a_mismatch_keeps_torchs_default(monkeypatch) -> None:
    monkeypatch.setattr(cpu_linear, "_matches", lambda layer: False)
    model = Tiny()
    choice = choose_and_pack(model, "onednn")
    assert choice.kernel == "native" and "did not match" in choice.reason and kinds(model) == ["Linear"] * 3


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown CPU GEMM mode"):
        choose_and_pack(Tiny(), "fast")
    with pytest.raises(ValueError):
        InferenceSettings(cpu_gemm="fast")


@pytest.mark.slow
def test_the_embedded_model_gives_the_same_logits_and_greedy_text() -> None:
    from inference.engines.loading import load_transformers

    native = load_transformers(InferenceSettings(cpu_gemm="native", warmup=False))
    packed = load_transformers(InferenceSettings(cpu_gemm="onednn", warmup=False))
    assert "oneDNN prepacked" in packed.info.dtype_reason and "MKL" in native.info.dtype_reason
    assert type(packed.model.lm_head).__name__ == "PackedLinear"
    assert packed.model.get_input_embeddings().weight.shape[0] == packed.model.lm_head.out_features  # tied: kept
    ids = native.tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.inference_mode():
        a, b = native.model(input_ids=ids).logits, packed.model(input_ids=ids).logits
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-3)
        texts = [m.tokenizer.decode(m.model.generate(ids, max_new_tokens=16, do_sample=False)[0])
                 for m in (native, packed)]
    assert texts[0] == texts[1] and "Paris" in texts[1]
