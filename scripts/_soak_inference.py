"""The inference server alone under mixed prompt lengths (soak.py --inference-only): Poisson arrivals at --rate,
each request a chat prompt of a random length (a few words to about --max-prompt-tokens) and a random
max_tokens (8 to --max-tokens), streamed through the official openai client; the server's RSS sampled every
--rss-every seconds. It reports requests sent / ok / failed, TTFT and end-to-end p50/p99, and the RSS curve
(first, peak, last, growth over the last quarter: near 0 once it has levelled off)."""

from __future__ import annotations

import math
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from _common import p50_p99
from _soak_rss import RssSampler

WORDS = ("the press gauge shift report travel hotel budget quarter safety valve printer shuttle canteen policy "
         "maintenance invoice supplier contract schedule pressure calibration operator line").split()


def prompt(rng: random.Random, max_words: int) -> str:
    # lengths spread over orders of magnitude (log-uniform from 4 words): most short, some long
    n = int(math.exp(rng.uniform(math.log(4), math.log(max(5, max_words)))))
    return "Summarise: " + " ".join(rng.choice(WORDS) for _ in range(n))


def run(base_url: str, pid: int, *, rate: float, duration: float, max_prompt_tokens: int, max_tokens: int,
        rss_every: float, rng: random.Random, rss_plot=None) -> dict:
    import openai

    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=300)
    model = client.models.list().data[0].id
    ttft: list[float] = []
    e2e: list[float] = []
    failed: list[str] = []
    lock = threading.Lock()

    def one(text: str, limit: int) -> None:
        start = time.perf_counter()
        first = None
        try:
            stream = client.chat.completions.create(model=model, messages=[{"role": "user", "content": text}],
                                                    max_tokens=limit, temperature=0.7, stream=True)
            for chunk in stream:
                if first is None and chunk.choices and chunk.choices[0].delta.content:
                    first = time.perf_counter() - start
        except Exception as exc:  # counted, reported by kind
            with lock:
                failed.append(type(exc).__name__)
            return
        with lock:
            if first is not None:
                ttft.append(first)
            e2e.append(time.perf_counter() - start)

    sent = 0
    with RssSampler({"inference": pid}, rss_every) as sampler, ThreadPoolExecutor(64) as pool:
        started = time.monotonic()
        next_at = started
        while next_at - started < duration:
            time.sleep(max(0.0, next_at - time.monotonic()))
            pool.submit(one, prompt(rng, max_prompt_tokens), rng.randint(8, max_tokens))
            sent += 1
            next_at += rng.expovariate(rate)
        pool.shutdown(wait=True)
        time.sleep(rss_every)  # one sample after the last answer
    if rss_plot is not None:
        sampler.plot(rss_plot, f"Inference server alone: {duration / 60:g} min, {rate:g} req/s, mixed prompt lengths")

    return {"mode": "inference-only", "duration_s": duration, "rate": rate, "sent": sent, "ok": len(e2e),
            "failed": len(failed), "failed_kinds": sorted(set(failed)), "ttft_s": p50_p99(ttft), "e2e_s": p50_p99(e2e),
            "rss_curve_mib": sampler.summary(), "rss_samples": len(sampler.samples)}
