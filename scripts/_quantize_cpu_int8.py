"""scripts/quantize.py --method int8: the transformers engine's CPU int8 mode (inference/engines/cpu_int8.py,
INFERENCE_QUANTIZATION=int8) applied to the loaded float model, as the engine applies it at load, so the
perplexity after is that of the very code that serves. Nothing is saved: the mode needs no folder."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def cpu_int8(args, model, tokenizer, eval_text: str, perplexity: Callable, answer: Callable) -> tuple[float, str, dict]:
    """Quantise `model` in place; (perplexity after, smoke-test answer after, the report's "int8" entry)."""
    from inference.engines.cpu_int8 import quantize_decoder

    started = time.perf_counter()
    report = quantize_decoder(model, head_bf16=True)  # as the server does (rotation: INFERENCE_INT8_ROTATION)
    seconds = time.perf_counter() - started
    ppl_after = perplexity(model, tokenizer, eval_text, label="after")
    answer_after = answer(model, tokenizer, args.question)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "README.md").write_text(
        f"# {args.out.name}\n\nA report only: the CPU int8 mode is applied when the server loads the float model "
        f"(`INFERENCE_QUANTIZATION=int8 INFERENCE_MODEL_PATH={args.model}`); see QUANTIZATION.md.\n")
    extra: dict[str, Any] = {
        "applied_at": "load (INFERENCE_QUANTIZATION=int8); no model is saved",
        "linear_layers": report.layers, "kernel": report.kernel, "rotation": report.rotation,
        "quantize_seconds": round(seconds, 2),
        "weights": "int8, symmetric, one scale per output channel; lm_head " + (report.head or "float32"),
        "activations": "int8, symmetric, one scale per token, computed at run time",
        "linear_weight_bytes": {"float": report.float_bytes, "int8": report.int8_bytes}}
    return ppl_after, answer_after, extra
