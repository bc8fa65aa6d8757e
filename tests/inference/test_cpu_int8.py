"""The CPU int8 mode's pieces (inference/engines/cpu_int8.py, loading.check_cpu_int8): int8 layers against
their float originals on random weights, what gets replaced, and the refusals. No model here."""

from __future__ import annotations

import pytest
import torch

from inference.engines.cpu_int8 import Int8Linear, quantize_decoder
from inference.engines.errors import StartupError
from inference.engines.loading import QuantScheme, check_cpu_int8
from inference.settings import InferenceSettings


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("rows", [1, 2, 7, 64])  # 1: fbgemm's fused kernel; more: per-token + torch._int_mm
@pytest.mark.parametrize("bias", [False, True])
def test_int8_linear_is_close_to_float(rows: int, bias: bool) -> None:
    torch.manual_seed(rows)
    linear = torch.nn.Linear(96, 40, bias=bias)
    layer = Int8Linear(linear)
    x = torch.randn(rows, 96) * torch.linspace(0.1, 3.0, rows)[:, None]  # rows of different scales
    with torch.inference_mode():
        assert relative_error(layer(x), linear(x)) < 0.02


def test_int8_linear_keeps_leading_dimensions_and_dtype() -> None:
    linear = torch.nn.Linear(32, 16)
    layer = Int8Linear(linear)
    with torch.inference_mode():
        out = layer(torch.randn(2, 3, 32))
        assert out.shape == (2, 3, 16) and out.dtype == torch.float32
        assert layer(torch.randn(1, 1, 32, dtype=torch.bfloat16)).dtype == torch.bfloat16
    assert layer.weight_t.dtype == torch.int8 and layer.weight_t.shape == (32, 16)


def test_rows_are_quantised_independently() -> None:
    """Per-token scales: a row with an outlier does not coarsen its neighbour (per-tensor scales would)."""
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 32, bias=False)
    layer = Int8Linear(linear)
    quiet = torch.randn(1, 64) * 0.01
    loud = torch.randn(1, 64) * 100.0
    with torch.inference_mode():
        alone = layer(torch.cat([quiet, quiet]))[0]
        beside_loud = layer(torch.cat([quiet, loud]))[0]
    assert torch.equal(alone, beside_loud)


class Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 8))
        self.lm_head = torch.nn.Linear(8, 4, bias=False)


def test_quantize_decoder_replaces_the_decoder_linears_not_lm_head() -> None:
    model = Tiny()
    report = quantize_decoder(model)
    assert report.layers == 2 and report.int8_bytes < report.float_bytes
    assert [type(m).__name__ for m in model.model] == ["Int8Linear", "ReLU", "Int8Linear"]
    assert type(model.lm_head) is torch.nn.Linear
    assert "torch._int_mm" in report.kernel
    with pytest.raises(ValueError, match="no nn.Linear"):
        quantize_decoder(torch.nn.Sequential(torch.nn.ReLU()))


def test_check_cpu_int8_refuses_a_gpu_and_quantised_folders() -> None:
    check_cpu_int8("int8", "cpu", None)
    check_cpu_int8("none", "cuda", None)
    with pytest.raises(StartupError, match="CPU int8 mode"):
        check_cpu_int8("int8", "cuda", None)
    w8a8 = QuantScheme("compressed-tensors", 8, "int", 8, "int")
    with pytest.raises(StartupError, match="quantised already \\(w8a8\\)"):
        check_cpu_int8("int8", "cpu", w8a8)


def test_the_setting_accepts_int8(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFERENCE_QUANTIZATION", "int8")
    assert InferenceSettings().quantization == "int8"
