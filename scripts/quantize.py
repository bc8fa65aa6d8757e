#!/usr/bin/env python3
"""Prepare an INT8 model from a local Hugging Face folder or GGUF file, offline.

Methods:
  bnb-int8  bitsandbytes LLM.int8 weights, serialised; loads in the transformers engine on GPU and CPU.
  w8a8      SmoothQuant + GPTQ INT8 weights and activations (compressed-tensors, via llm-compressor);
            vLLM runs it with INT8 kernels on Turing (T4) and newer. Needs `pip install llmcompressor`.
  int8      the transformers engine's CPU mode (INFERENCE_QUANTIZATION=int8: per-channel int8 weights, per-token
            int8 activations, inference/engines/cpu_int8.py). It is applied at load, so nothing is saved:
            --out gets only the report (perplexity before and after on this very code).

w8a8 keeps the model in CPU RAM: on a GPU llm-compressor copies one decoder layer at a time to it, so
the GPU holds one layer, not the 13.5 GB of a 7B model (not yet run on a T4); with --device cpu (or
no GPU) it runs on the CPU alone and prints a time estimate first. --quantize-lm-head puts lm_head in
int8 too (see scripts/_quantize_w8a8.py).

Beside the model it writes quantization-report.json and QUANTIZATION.md: method, size on disk before
and after, perplexity before and after on an evaluation text, peak memory (RSS, and CUDA when used),
calibration time, lm_head's format, and the VRAM plan (weight bytes, KV bytes per token, what
context x sequences fit in 8 GB and 16 GB).

    python scripts/quantize.py --model models/SmolLM2-135M-Instruct --method bnb-int8 \\
        --out models/SmolLM2-135M-Instruct-bnb-int8 [--eval-text my.txt] [--calibration my.jsonl]
    .venv-w8a8/bin/python scripts/quantize.py --model models/Llama-2-7b-chat-hf --method w8a8 \\
        [--device auto|cpu|cuda] [--quantize-lm-head] [--estimate-only]
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import shutil
import sys
import time
import weakref
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # scripts/_quantize_*.py
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

    from inference.engines.loading import model_location

    location, extra = model_location(model)
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


def quantize_w8a8(args, source_model, tokenizer, calibration: list[str]) -> int:
    """SmoothQuant + GPTQ on a model kept in CPU RAM (llm-compressor onloads one decoder layer at a
    time to the GPU when there is one: see scripts/_quantize_w8a8.py); returns calibration tokens."""
    try:
        import llmcompressor  # noqa: F401
        from _quantize_w8a8 import calibrate, release_traced_namespaces
    except ImportError:
        sys.exit("w8a8 needs llm-compressor: pip install llmcompressor (it is not in the default install)")

    log(f"SmoothQuant + GPTQ W8A8 with {len(calibration)} calibration samples"
        f"{' (lm_head in int8 too)' if args.quantize_lm_head else ''}")
    tokens = calibrate(source_model, tokenizer, calibration, quantize_lm_head=args.quantize_lm_head)
    if args.out.exists():
        shutil.rmtree(args.out)
    source_model.save_pretrained(args.out, save_compressed=True)
    tokenizer.save_pretrained(args.out)
    from llmcompressor.core import reset_session
    reset_session()  # the session and torch.fx's registry hold the model: free it before the reload
    release_traced_namespaces(source_model)
    return tokens


def resolve_device(choice: str, cuda_available: bool) -> str:
    if choice == "cuda" and not cuda_available:
        sys.exit("--device cuda: torch sees no CUDA device (driver, CUDA_VISIBLE_DEVICES, or a CPU-only torch)")
    return "cuda" if choice == "cuda" or (choice == "auto" and cuda_available) else "cpu"


def pick_dtype(device: str, params: int, available: int | None) -> str:
    """fp16 on a GPU (a T4 has no bf16); on the CPU float32 when the model fits 1.5x over in the
    memory available now, else bfloat16 (Llama-7B: 27 GB in float32, 13.5 GB in bfloat16)."""
    if device == "cuda":
        return "float16"
    return "float32" if available is None or params * 4 * 1.5 <= available else "bfloat16"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="a Hugging Face folder or a .gguf file")
    p.add_argument("--method", choices=["bnb-int8", "w8a8", "int8"], default="bnb-int8")
    p.add_argument("--out", type=Path, default=None, help="default: <model>-<method>")
    p.add_argument("--eval-text", type=Path, default=DATA / "eval.txt")
    p.add_argument("--calibration", type=Path, default=DATA / "calibration.txt", help="text or JSONL (w8a8)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="auto: cuda when torch sees a GPU. w8a8 keeps the model in CPU RAM on both and, on cuda, "
                        "copies one decoder layer at a time to the GPU (the GPU never holds the whole model); "
                        "cpu hides the GPUs and prints a time estimate before calibrating")
    p.add_argument("--quantize-lm-head", action="store_true",
                   help="w8a8: quantise lm_head to int8 too (vLLM 0.32 serves it: compressed-tensors "
                        "ParallelLMHead). Saves vocab x hidden bytes on untied models (Llama-7B: 125 MiB); on "
                        "models with tied embeddings it unties them and adds an int8 copy instead")
    p.add_argument("--estimate-only", action="store_true", help="print the CPU time estimate and exit")
    p.add_argument("--question", default="What is the capital of France?", help="a smoke-test question")
    args = p.parse_args(argv)
    if args.quantize_lm_head and args.method != "w8a8":
        p.error("--quantize-lm-head needs --method w8a8 (bitsandbytes keeps lm_head in 16 bit)")
    if not args.model.exists():
        p.error(f"no model at {args.model}")
    if args.method == "int8":
        if args.device == "cuda":
            p.error("--method int8 is the CPU int8 mode (on a GPU: bnb-int8 or w8a8)")
        args.device = "cpu"
    suffix = "int8-report" if args.method == "int8" else args.method  # int8: a report, not a model folder
    args.out = args.out or args.model.with_name(f"{args.model.name.removesuffix('.gguf')}-{suffix}")
    return args


def config_of(model: Path) -> dict:
    folder = model.parent if model.is_file() else model
    path = folder / "config.json"
    return json.loads(path.read_text()) if path.exists() else {}


def calibration_tokens(model: Path, texts: list[str]) -> int:
    from transformers import AutoTokenizer

    from inference.engines.loading import model_location

    location, extra = model_location(model)
    tokenizer = AutoTokenizer.from_pretrained(location, local_files_only=True, **extra)
    return sum(len(tokenizer(t, truncation=True, max_length=512)["input_ids"]) for t in texts)


def vram_plan(shape, method: str, lm_head: bool) -> tuple[dict, str]:
    """memory_plan.summary() for this checkpoint, lm_head in int8 when it was quantised."""
    from inference.memory_plan import summary

    return summary(shape, method, lm_head_quantized=lm_head), "weight_bytes count lm_head in int8" if lm_head else ""


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # llm-compressor onloads to any visible accelerator
    import torch

    from _quantize_resources import MemoryLog, available_bytes, cpu_estimate, cpu_seconds, human
    from inference.memory_plan import shape_from_config

    device = resolve_device(args.device, torch.cuda.is_available())
    source_shape = shape_from_config(config_of(args.model)) if config_of(args.model) else None
    estimate = None
    if args.method == "w8a8" and device == "cpu" and source_shape is not None:
        tokens = calibration_tokens(args.model, read_texts(args.calibration))
        estimate = cpu_estimate(source_shape, tokens, lm_head=args.quantize_lm_head, threads=torch.get_num_threads())
        head = f" + lm_head {estimate['lm_head_seconds']} s" if args.quantize_lm_head else ""
        log(f"CPU only: calibration should take about {human(estimate['seconds'])} with {estimate['threads']} "
            f"threads on otherwise idle cores ({human(estimate['cpu_seconds'])} of CPU time: "
            f"{estimate['per_layer_seconds']} s per layer x {source_shape.layers} layers{head}, {tokens} calibration "
            f"tokens); a rough figure, formula: {estimate['formula']}")
    if args.estimate_only:
        print(json.dumps({"device": device, "estimate": estimate}, indent=2))
        return 0

    memory = MemoryLog(cuda=device == "cuda")
    started = time.perf_counter()
    eval_text = args.eval_text.read_text(encoding="utf-8")
    params = source_shape.params if source_shape else 0
    dtype_name = pick_dtype(device, params, available_bytes())
    base_dtype = getattr(torch, dtype_name)
    # w8a8: the weights stay in CPU RAM; on cuda each module is copied to the GPU for its forward
    load_device = "cpu" if args.method == "w8a8" else device
    log(f"loading {args.model} in {dtype_name} on {load_device}")
    model, tokenizer = load_source(args.model, dtype=base_dtype, device=load_device)
    if args.method == "w8a8":
        from _quantize_w8a8 import onload_for_forward
        onload_for_forward(model, device)
    shape = shape_from_config(model.config.to_dict())
    memory.mark("loaded")
    ppl_before = perplexity(model, tokenizer, eval_text, label="before")
    answer_before = answer(model, tokenizer, args.question)
    memory.mark("perplexity before")
    log(f"perplexity before: {ppl_before:.3f}")

    extra: dict = {}
    if args.method == "int8":
        from _quantize_cpu_int8 import cpu_int8
        ppl_after, answer_after, extra["int8"] = cpu_int8(args, model, tokenizer, eval_text, perplexity, answer)
    elif args.method == "bnb-int8":
        quantized = quantize_bnb(args, model, tokenizer, device)
        del model
        memory.mark("quantised")
        ppl_after = perplexity(quantized, tokenizer, eval_text, label="after")
        answer_after = answer(quantized, tokenizer, args.question)
    else:
        from _quantize_w8a8 import lm_head_state, onload_for_forward, tied_note

        memory.reset_cuda_peak()
        calibration_started, cpu_started = time.perf_counter(), cpu_seconds()
        tokens = quantize_w8a8(args, model, tokenizer, read_texts(args.calibration))
        seconds, cpu_used = time.perf_counter() - calibration_started, cpu_seconds() - cpu_started
        memory.mark("calibrated and saved")
        source_ref = weakref.ref(model)
        del model
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()
        memory.mark("source model freed")["freed"] = source_ref() is None  # RSS may not drop: malloc keeps it
        reloaded, _ = load_source(args.out, dtype=base_dtype, device="cpu")
        onload_for_forward(reloaded, device)
        memory.reset_cuda_peak()
        ppl_after = perplexity(reloaded, tokenizer, eval_text, label="after")
        answer_after = answer(reloaded, tokenizer, args.question)
        memory.mark("perplexity after")
        shape = shape_from_config(json.loads((args.out / "config.json").read_text()))  # untied when lm_head is int8
        extra["calibration"] = {"seconds": round(seconds, 1), "cpu_seconds": round(cpu_used, 1), "tokens": tokens,
                                "seconds_per_layer": round(seconds / shape.layers, 2),
                                "cpu_seconds_per_layer": round(cpu_used / shape.layers, 2),
                                "threads": torch.get_num_threads(), "load_average": os.getloadavg()[0],
                                "pipeline": "independent (one sequential pipeline per modifier)",
                                "onload_device": "cuda:0" if device == "cuda" else "cpu", "weights_in": "cpu RAM",
                                "estimate": estimate}
        extra["lm_head"] = {"quantized": args.quantize_lm_head, **lm_head_state(args.out),
                            "tied_in_source": bool(source_shape and source_shape.tied_embeddings)}
        if args.quantize_lm_head:
            extra["lm_head"]["note"] = tied_note(extra["lm_head"]["tied_in_source"], shape.vocab, shape.hidden)
    log(f"perplexity after: {ppl_after:.3f} ({(ppl_after / ppl_before - 1) * 100:+.2f} %)")

    plan, plan_note = vram_plan(shape, "bnb-int8" if args.method == "int8" else args.method, args.quantize_lm_head)
    report = build_report(args, device, dtype_name, ppl_before, ppl_after, answer_before, answer_after, plan,
                          plan_note, memory.report(), time.perf_counter() - started, extra)
    (args.out / "quantization-report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
    lines = summary_lines(args, report)
    (args.out / "QUANTIZATION.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)
    return 0


def build_report(args, device: str, dtype: str, ppl_before: float, ppl_after: float, answer_before: str,
                 answer_after: str, plan: dict, plan_note: str, memory: dict, seconds: float, extra: dict) -> dict:
    change = round((ppl_after / ppl_before - 1) * 100, 3)
    report = {
        "method": args.method, "quantize_lm_head": bool(getattr(args, "quantize_lm_head", False)),
        "source": str(args.model), "output": str(args.out), "device": device, "dtype": dtype,
        "size_before_bytes": folder_size(args.model), "size_after_bytes": folder_size(args.out),
        "perplexity": {"before": round(ppl_before, 4), "after": round(ppl_after, 4), "change_percent": change,
                       "device": device, "dtype": dtype,
                       "protocol": "non-overlapping 256-token windows over the first 4096 tokens",
                       "eval_text": str(args.eval_text)},
        "smoke_test": {"question": args.question, "before": answer_before, "after": answer_after},
        "memory": memory,
        "vram_plan": plan,
        "seconds": round(seconds, 1),
        **extra,
    }
    if plan_note:
        report["vram_plan_note"] = plan_note
    return report


def summary_lines(args, report: dict) -> list[str]:
    plan, ppl, memory = report["vram_plan"], report["perplexity"], report["memory"]
    lines = [
        f"# {args.out.name}", "",
        f"- method: {args.method}{' with lm_head in int8' if report['quantize_lm_head'] else ''}; source: {args.model}",
        f"- size on disk: {report['size_before_bytes'] / 2**20:.1f} MiB -> {report['size_after_bytes'] / 2**20:.1f} MiB",
        f"- perplexity ({ppl['protocol']}, {ppl['device']} {ppl['dtype']}): {ppl['before']:.3f} -> "
        f"{ppl['after']:.3f} ({ppl['change_percent']:+.2f} %)",
        f"- smoke test: {args.question!r} -> {report['smoke_test']['after']!r}",
        f"- peak memory: {memory['peak_rss_gib']:.2f} GiB RSS"
        + (f", {memory['cuda_max_allocated_bytes'] / 2**30:.2f} GiB CUDA" if "cuda_max_allocated_bytes" in memory else "")
        + f"; {report['seconds']:.0f} s in all",
        f"- parameters: {plan['params'] / 1e9:.3f} B; weights at this precision: {plan['weight_bytes'] / 2**30:.2f} GiB; "
        f"KV cache (fp16): {plan['kv_bytes_per_token_fp16'] / 1024:.1f} KiB per token",
    ]
    if "lm_head" in report and report["quantize_lm_head"]:
        lines.append(f"- lm_head: {report['lm_head']['weight_dtype']}; {report['lm_head'].get('note', '')}")
    if report.get("vram_plan_note"):
        lines.append(f"- note: {report['vram_plan_note']}")
    for label in ("8GB", "16GB"):
        fit = plan[label]
        lines.append(f"- {label} card: {fit['kv_tokens']} tokens of KV cache -> max_model_len {fit['max_model_len']}, "
                     f"max_num_seqs {fit['max_num_seqs']}" if fit["fits"] else f"- {label} card: does not fit")
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
