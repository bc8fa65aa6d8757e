#!/usr/bin/env python3
"""Prepare an INT8 model from a local Hugging Face folder or GGUF file, offline.

Methods:
  bnb-int8  bitsandbytes LLM.int8 weights, serialised; loads in the transformers engine on GPU and CPU.
  w8a8      SmoothQuant + GPTQ INT8 weights and activations (compressed-tensors, via llm-compressor);
            vLLM runs it with INT8 kernels on Turing (T4) and newer. Needs `pip install llmcompressor`.

Beside the model it writes quantization-report.json and QUANTIZATION.md: method, size on disk before
and after, perplexity before and after on an evaluation text, and the VRAM plan (weight bytes, KV
bytes per token, what context x sequences fit in 8 GB and 16 GB).

    python scripts/quantize.py --model models/SmolLM2-135M-Instruct --method bnb-int8 \\
        --out models/SmolLM2-135M-Instruct-bnb-int8 [--eval-text my.txt] [--calibration my.jsonl]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = Path(__file__).resolve().parent / "data"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def log(message: str) -> None:
    print(f"[quantize] {message}", flush=True)


def folder_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def read_texts(path: Path) -> list[str]:
    """Plain text (one sample per paragraph) or JSONL with a "text" field (or "messages")."""
    raw = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        texts = []
        for line in raw.splitlines():
            if line.strip():
                row = json.loads(line)
                if "text" in row:
                    texts.append(str(row["text"]))
                elif "messages" in row:
                    texts.append("\n".join(str(m.get("content", "")) for m in row["messages"]))
        return texts
    return [p.strip() for p in raw.split("\n") if p.strip()]


def load_source(model: Path, *, dtype, device: str, quantization_config=None):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if model.is_file() and model.suffix == ".gguf":
        location, extra = str(model.parent), {"gguf_file": model.name}
    else:
        location, extra = str(model), {}
    tokenizer = AutoTokenizer.from_pretrained(location, local_files_only=True, **extra)
    kwargs = {"dtype": dtype, "local_files_only": True, **extra}
    if quantization_config is not None:
        kwargs["quantization_config"] = quantization_config
        kwargs["device_map"] = {"": 0 if device == "cuda" else "cpu"}
    loaded = AutoModelForCausalLM.from_pretrained(location, **kwargs)
    if extra:  # GGUF: the weights are dequantised now; drop the GGUF quantizer so the model can be saved
        loaded.hf_quantizer = None
        if hasattr(loaded.config, "quantization_config"):
            del loaded.config.quantization_config
    if quantization_config is None:
        loaded.to(device)
    return loaded.eval(), tokenizer


def perplexity(model, tokenizer, text: str, *, window: int = 256, max_tokens: int = 4096, label: str = "") -> float:
    """Non-overlapping windows of `window` tokens over the first `max_tokens` tokens (a pinned protocol)."""
    import torch
    from tqdm import tqdm

    ids = tokenizer(text, return_tensors="pt")["input_ids"][:, :max_tokens]
    device = next(model.parameters()).device
    nll, count = 0.0, 0
    with torch.inference_mode():
        for start in tqdm(range(0, ids.shape[1] - 1, window), desc=f"perplexity {label}", leave=False):
            chunk = ids[:, start:start + window].to(device)
            if chunk.shape[1] < 2:
                break
            out = model(input_ids=chunk, labels=chunk)
            tokens = chunk.shape[1] - 1
            nll += float(out.loss) * tokens
            count += tokens
    return math.exp(nll / count)


def answer(model, tokenizer, question: str) -> str:
    import torch

    inputs = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)
    device = next(model.parameters()).device
    inputs = {k: v.to(device) for k, v in inputs.items()}
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=24, do_sample=False)
    return tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


def quantize_bnb(args, source_model, tokenizer, device: str) -> None:
    import torch
    from transformers import BitsAndBytesConfig

    log("loading with bitsandbytes LLM.int8 (8-bit linear weights, outliers in fp16)")
    dtype = torch.float16 if device == "cuda" else torch.float32
    source = args.model
    if args.model.suffix == ".gguf":  # bitsandbytes quantises on load: give it a plain folder first
        tmp = args.out.parent / f".{args.out.name}.fp"
        source_model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        source = tmp
    quantized, _ = load_source(source, dtype=dtype, device=device,
                               quantization_config=BitsAndBytesConfig(load_in_8bit=True))
    if args.out.exists():
        shutil.rmtree(args.out)
    quantized.save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    if source != args.model:
        shutil.rmtree(source, ignore_errors=True)
    return quantized


def quantize_w8a8(args, source_model, tokenizer, calibration: list[str]) -> None:
    try:
        from llmcompressor import oneshot
        from llmcompressor.modifiers.quantization import GPTQModifier
        from llmcompressor.modifiers.smoothquant import SmoothQuantModifier
    except ImportError:
        sys.exit("w8a8 needs llm-compressor: pip install llmcompressor (it is not in the default install)")
    from datasets import Dataset

    log(f"SmoothQuant + GPTQ W8A8 with {len(calibration)} calibration samples")
    rows = [tokenizer(t, truncation=True, max_length=512) for t in calibration]
    dataset = Dataset.from_list([{"input_ids": r["input_ids"], "attention_mask": r["attention_mask"]} for r in rows])
    recipe = [SmoothQuantModifier(smoothing_strength=0.8),
              GPTQModifier(targets="Linear", scheme="W8A8", ignore=["lm_head"])]
    oneshot(model=source_model, dataset=dataset, recipe=recipe, max_seq_length=512,
            num_calibration_samples=len(rows))
    if args.out.exists():
        shutil.rmtree(args.out)
    source_model.save_pretrained(args.out, save_compressed=True)
    tokenizer.save_pretrained(args.out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="a Hugging Face folder or a .gguf file")
    p.add_argument("--method", choices=["bnb-int8", "w8a8"], default="bnb-int8")
    p.add_argument("--out", type=Path, default=None, help="default: <model>-<method>")
    p.add_argument("--eval-text", type=Path, default=DATA / "eval.txt")
    p.add_argument("--calibration", type=Path, default=DATA / "calibration.txt", help="text or JSONL (w8a8)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--question", default="What is the capital of France?", help="a smoke-test question")
    args = p.parse_args(argv)

    import torch

    from inference.memory_plan import shape_from_config, summary

    if not args.model.exists():
        sys.exit(f"no model at {args.model}")
    args.out = args.out or args.model.with_name(f"{args.model.name.removesuffix('.gguf')}-{args.method}")
    device = "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
    started = time.perf_counter()
    eval_text = args.eval_text.read_text(encoding="utf-8")

    log(f"loading {args.model} on {device}")
    base_dtype = torch.float16 if device == "cuda" else torch.float32
    model, tokenizer = load_source(args.model, dtype=base_dtype, device=device)
    shape = shape_from_config(model.config.to_dict())
    ppl_before = perplexity(model, tokenizer, eval_text, label="before")
    answer_before = answer(model, tokenizer, args.question)
    log(f"perplexity before: {ppl_before:.3f}")

    if args.method == "bnb-int8":
        quantized = quantize_bnb(args, model, tokenizer, device)
        del model
        ppl_after = perplexity(quantized, tokenizer, eval_text, label="after")
        answer_after = answer(quantized, tokenizer, args.question)
    else:
        quantize_w8a8(args, model, tokenizer, read_texts(args.calibration))
        reloaded, _ = load_source(args.out, dtype=base_dtype, device=device)
        ppl_after = perplexity(reloaded, tokenizer, eval_text, label="after")
        answer_after = answer(reloaded, tokenizer, args.question)
    log(f"perplexity after: {ppl_after:.3f} ({(ppl_after / ppl_before - 1) * 100:+.2f} %)")

    report = {
        "method": args.method, "source": str(args.model), "output": str(args.out), "device": device,
        "size_before_bytes": folder_size(args.model), "size_after_bytes": folder_size(args.out),
        "perplexity": {"before": round(ppl_before, 4), "after": round(ppl_after, 4),
                       "change_percent": round((ppl_after / ppl_before - 1) * 100, 3),
                       "protocol": "non-overlapping 256-token windows over the first 4096 tokens",
                       "eval_text": str(args.eval_text)},
        "smoke_test": {"question": args.question, "before": answer_before, "after": answer_after},
        "vram_plan": summary(shape, args.method),
        "seconds": round(time.perf_counter() - started, 1),
    }
    (args.out / "quantization-report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
    plan = report["vram_plan"]
    lines = [
        f"# {args.out.name}", "",
        f"- method: {args.method}; source: {args.model}",
        f"- size on disk: {report['size_before_bytes'] / 2**20:.1f} MiB -> {report['size_after_bytes'] / 2**20:.1f} MiB",
        f"- perplexity ({report['perplexity']['protocol']}): {ppl_before:.3f} -> {ppl_after:.3f} "
        f"({report['perplexity']['change_percent']:+.2f} %)",
        f"- smoke test: {args.question!r} -> {answer_after!r}",
        f"- parameters: {plan['params'] / 1e9:.3f} B; weights at this precision: {plan['weight_bytes'] / 2**30:.2f} GiB; "
        f"KV cache (fp16): {plan['kv_bytes_per_token_fp16'] / 1024:.1f} KiB per token",
    ]
    for label in ("8GB", "16GB"):
        fit = plan[label]
        lines.append(f"- {label} card: {fit['kv_tokens']} tokens of KV cache -> max_model_len {fit['max_model_len']}, "
                     f"max_num_seqs {fit['max_num_seqs']}" if fit["fits"] else f"- {label} card: does not fit")
    (args.out / "QUANTIZATION.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
