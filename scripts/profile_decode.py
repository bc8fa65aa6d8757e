#!/usr/bin/env python3
"""Where a decode step of the transformers engine goes: torch profiler breakdown at batch 1 and 8.

Runs the engine in-process on the embedded model (fp32), B greedy requests of --input-len prompt tokens
and --output-len output tokens (EOS ignored) started together, and profiles the engine thread's decode
steps. Prints, per batch size: the median decode step wall time (measured without the profiler), the
share of a profiled step spent in matrix products and attention, in other torch ops, in cache copies
(cat / index_select / pad / copy), in sampling and detokenisation, and the rest (Python and the
framework between ops), and the top ops by self CPU time. docs/benchmarks.md "Decode step profile".

    .venv/bin/python scripts/profile_decode.py --batch-sizes 1,8 [--top 12] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ARITHMETIC = ("aten::addmm", "aten::mm", "aten::bmm", "aten::matmul", "aten::linear",
              "aten::_scaled_dot_product_flash_attention_for_cpu", "aten::_scaled_dot_product_attention_math",
              "aten::scaled_dot_product_attention", "aten::baddbmm", "mkldnn::_linear_pointwise",
              "aten::_int_mm", "quantized::linear_dynamic")
CACHE = ("aten::cat", "aten::index_select", "aten::constant_pad_nd", "aten::copy_", "aten::clone",
         "aten::contiguous", "aten::index_copy_", "aten::slice_scatter", "aten::index_put_", "aten::expand",
         "aten::reshape", "aten::_unsafe_view", "aten::empty", "aten::resize_", "aten::narrow_copy")
REGIONS = ("decode_step", "sample", "detokenize")


class _Probe:
    """Wraps the engine's decode step, sampling and detokeniser push in profiler ranges and times the steps.
    The profiler runs in the engine thread (torch profiles the thread that starts it): it starts at the
    first decode step after `want` is set and stops when the batch has emptied."""

    def __init__(self, engine) -> None:
        import torch
        from torch.profiler import ProfilerActivity, profile

        from inference.engines import detokenizer

        self.walls: list[float] = []
        self.detok_s: list[float] = []
        self.want = False
        self.prof = None
        self.done = None
        step, sample, push = engine._decode_step, engine._sample, detokenizer.IncrementalDetokenizer.push

        def timed_step(*args, **kwargs):
            if self.want and self.prof is None:
                self.prof = profile(activities=[ProfilerActivity.CPU])
                self.prof.start()
            started = time.perf_counter()
            with torch.profiler.record_function("decode_step"):
                out = step(*args, **kwargs)
            self.walls.append(time.perf_counter() - started)
            if self.prof is not None and not engine._batch.rows:
                self.prof.stop()
                self.done, self.prof, self.want = self.prof, None, False
            return out

        def timed_sample(*args, **kwargs):
            with torch.profiler.record_function("sample"):
                return sample(*args, **kwargs)

        def timed_push(detok, token):
            started = time.perf_counter()
            with torch.profiler.record_function("detokenize"):
                out = push(detok, token)
            self.detok_s.append(time.perf_counter() - started)
            return out

        engine._decode_step, engine._sample = timed_step, timed_sample
        detokenizer.IncrementalDetokenizer.push = timed_push


async def _run_batch(engine, ids: tuple[int, ...], batch: int, output_len: int) -> None:
    from inference.types import GenerationRequest, SamplingParams

    async def one(i: int) -> None:
        params = SamplingParams(max_tokens=output_len, temperature=0.0, ignore_eos=True)
        async for _ in engine.generate(GenerationRequest(f"p{i}", ids, params)):
            pass

    await asyncio.gather(*(one(i) for i in range(batch)))


def _breakdown(prof, steps: int) -> dict:
    events = prof.events()
    spans = sorted((e.time_range.start, e.time_range.end) for e in events if e.name == "decode_step")
    starts = [s for s, _ in spans]

    def in_step(e) -> bool:
        i = bisect.bisect_right(starts, e.time_range.start) - 1
        return i >= 0 and e.time_range.end <= spans[i][1]

    regions: dict[str, float] = {}
    self_ms: dict[str, float] = {}
    calls: dict[str, int] = {}
    for e in events:
        if e.name in REGIONS:
            regions[e.name] = regions.get(e.name, 0.0) + e.cpu_time_total / 1e3
        elif e.name.startswith(("aten::", "mkldnn::", "quantized::")) and in_step(e):
            self_ms[e.name] = self_ms.get(e.name, 0.0) + e.self_cpu_time_total / 1e3
            calls[e.name] = calls.get(e.name, 0) + 1
    step_ms = regions.get("decode_step", 0.0)
    arithmetic = sum(v for k, v in self_ms.items() if k in ARITHMETIC)
    cache = sum(v for k, v in self_ms.items() if k in CACHE)
    other = sum(v for k, v in self_ms.items() if k not in ARITHMETIC and k not in CACHE)
    per = (lambda v: v / steps) if steps else (lambda v: 0.0)
    share = {
        "matmul+attention": arithmetic, "other torch ops": other, "cache copies / views": cache,
        "python + framework (rest)": max(0.0, step_ms - arithmetic - other - cache),
    }
    top = sorted(self_ms, key=self_ms.__getitem__, reverse=True)
    return {
        "profiled_step_ms": per(step_ms),
        "sample_ms": per(regions.get("sample", 0.0)),
        "detokenize_ms": per(regions.get("detokenize", 0.0)),
        "shares": {k: {"ms": per(v), "pct": 100 * v / step_ms if step_ms else 0.0} for k, v in share.items()},
        "top_ops": [{"op": k, "self_ms": per(self_ms[k]), "calls": calls[k] / max(1, steps)} for k in top],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-path", type=Path, default=ROOT / "models" / "SmolLM2-135M-Instruct")
    p.add_argument("--batch-sizes", default="1,8")
    p.add_argument("--input-len", type=int, default=64)
    p.add_argument("--output-len", type=int, default=64)
    p.add_argument("--repeat", type=int, default=3, help="timed runs per batch size (median step)")
    p.add_argument("--top", type=int, default=12)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()

    import torch

    from inference.cpu import cpu_info
    from inference.engines.transformers_engine import TransformersEngine
    from inference.settings import InferenceSettings

    engine = TransformersEngine(InferenceSettings(model_path=args.model_path, max_num_seqs=16, max_model_len=1024))
    probe = _Probe(engine)

    async def session() -> dict:
        await engine.start()
        try:
            words = "the quick brown fox jumps over the lazy dog " * 40
            ids = tuple(engine._tokenizer(words, add_special_tokens=False)["input_ids"][:args.input_len])
            await _run_batch(engine, ids, 2, 8)  # warm-up
            out = {}
            for batch in (int(b) for b in args.batch_sizes.split(",")):
                medians = []
                for _ in range(args.repeat):
                    probe.walls.clear()
                    probe.detok_s.clear()
                    await _run_batch(engine, ids, batch, args.output_len)
                    medians.append(statistics.median(probe.walls))
                detok_ms = 1e3 * sum(probe.detok_s) / max(1, len(probe.walls))
                probe.walls.clear()
                probe.want = True
                await _run_batch(engine, ids, batch, args.output_len)
                steps = len(probe.walls)
                result = _breakdown(probe.done, steps)
                result.update(step_ms_median=1e3 * statistics.median(medians), detokenize_ms_unprofiled=detok_ms,
                              steps=steps, tok_s=batch / statistics.median(medians))
                out[str(batch)] = result
            return out
        finally:
            await engine.close()

    results = asyncio.run(session())
    print(f"CPU: {cpu_info().describe()}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    for batch, r in results.items():
        print(f"\nbatch {batch}: decode step {r['step_ms_median']:.1f} ms median ({r['tok_s']:.1f} tok/s of decode), "
              f"profiled {r['profiled_step_ms']:.1f} ms; sampling {r['sample_ms']:.2f} ms, "
              f"detokenising {r['detokenize_ms']:.2f} ms a step (unprofiled {r['detokenize_ms_unprofiled']:.2f})")
        for name, v in r["shares"].items():
            print(f"  {name:28s} {v['ms']:7.2f} ms  {v['pct']:5.1f} %")
        print(f"  {'top ops (self CPU)':28s} {'ms/step':>7s}  calls/step")
        for op in r["top_ops"][:args.top]:
            print(f"  {op['op']:40s} {op['self_ms']:7.2f}  {op['calls']:.0f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"cpu": cpu_info().describe(), "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
