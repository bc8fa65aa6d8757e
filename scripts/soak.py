#!/usr/bin/env python3
"""Bounded soak run of the full stack on loopback: emulator + connector (+ Redis) + the inference server.

Mixed load for --duration seconds: DMs and group messages from --users users at --rate messages/s,
some /test commands, pictures, redeliveries of already-answered messages, and one dropped Stream
socket half-way. Then it waits for every reply and reports: sent, answered exactly once, duplicated,
lost; memory (RSS) of the connector and inference processes sampled every --rss-every seconds (the curve
with --rss-plot PATH.png); p50/p99 latencies, and the connector's own processing time (received -> first
card call, from its histogram) apart from queueing.

    python scripts/soak.py --duration 300 --rate 1 --users 20 [--redis redis://127.0.0.1:6379/0]
Exit status 0 only when nothing was lost or duplicated.

Per message it measures the first feedback (its card, queued or thinking, or a busy reply), the first answer
token shown and the final answer; messages answered with the busy notice (shedding) are counted apart.

    python scripts/soak.py --find-capacity [--target-p99 5] [--step-duration 60] [--rates 0.25,0.5,1,1.5,2,3]
ramps the message rate step by step on one running stack (draining between steps) and reports the highest rate
whose p99 time to first token stays under the target, with the knee plot (docs/benchmarks/capacity-knee.png).

    python scripts/soak.py --inference-only --duration 900 --rate 1 --max-tokens 128 --rss-plot PATH.png
runs the inference server alone under mixed prompt lengths (scripts/_soak_inference.py).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import httpx
from _common import free_port, p50_p99, wait_http
from _soak_rss import RssSampler, histogram_quantile, rss_mib

ROOT = Path(__file__).resolve().parent.parent


BUSY_MARK = "预计需要等待约"  # the shedding notice (connector/core/messages.py SHED)


def run_load(emulator: str, client_id: str, rate: float, duration: float, users: int, rng: random.Random, *,
             drop_socket: bool, tag: str = "") -> dict:
    """Send the mixed load at `rate` for `duration` s, wait for every reply, and measure each message."""
    sent: dict[str, list[dict]] = {}  # conversation -> messages in order
    started = time.time()
    dropped = False
    redelivered = n = 0
    group = f"cidSoakGroup{tag}"
    while time.time() - started < duration:
        target = started + n / rate
        time.sleep(max(0.0, target - time.time()))
        user = f"u{tag}{rng.randrange(users):03d}"
        kind = rng.random()
        body: dict = {"user": user, "app": client_id, "text": f"Question {n}: name a colour."}
        if kind < 0.2:
            body.update(group=group, at_bot=True)
        elif kind < 0.25:
            body["text"] = "/test"
        elif kind < 0.28:
            body.update(msgtype="picture", text="")
        r = httpx.post(emulator + "/sandbox/messages", json=body, timeout=30).json()
        sent.setdefault(r["conversationId"], []).append({"msgId": r["msgId"], "t": time.time(), **body})
        n += 1
        if n % 7 == 0:  # DingTalk redelivers a message it thinks was not ACKed
            conv = rng.choice(list(sent))
            httpx.post(emulator + f"/sandbox/pushes/{sent[conv][0]['msgId']}/redeliver", timeout=30)
            redelivered += 1
        if drop_socket and not dropped and time.time() - started > duration / 2:
            httpx.post(emulator + "/sandbox/connections/drop", json={"app": client_id}, timeout=30)
            dropped = True

    def events(conv: str) -> tuple[list[dict], list[dict]]:
        cards = httpx.get(emulator + "/sandbox/cards", params={"conversation_id": conv}, timeout=30).json()
        replies = httpx.get(emulator + "/sandbox/replies", params={"conversation_id": conv}, timeout=30).json()
        return cards, replies

    def answers(conv: str) -> int:
        cards, replies = events(conv)
        return sum(1 for c in cards if c["finalized"]) + len(replies)

    deadline = time.time() + 120 + duration
    while time.time() < deadline:
        if all(answers(conv) >= len(msgs) for conv, msgs in sent.items()):
            break
        time.sleep(2)
    time.sleep(3)  # late duplicates would show up now
    total = sum(len(m) for m in sent.values())
    duplicated = lost = shed = 0
    feedback: list[float] = []
    settled: list[float] = []  # arrival -> its first answer token, or any reply (busy notice, /test, picture)
    first_token: dict[str, list[float]] = {"dm": [], "group": []}
    final: list[float] = []
    for conv, msgs in sent.items():
        cards, replies = events(conv)
        got = sum(1 for c in cards if c["finalized"]) + len(replies)
        duplicated += max(0, got - len(msgs))
        lost += max(0, len(msgs) - got)
        # each message's first sign of life, in order: its card (queued or thinking) or a reply (notice, busy)
        signs = sorted([("card", c["created"], c) for c in cards] + [("reply", r["time"], r) for r in replies],
                       key=lambda e: e[1])
        for message, (what, at, item) in zip(msgs, signs):
            feedback.append(at - message["t"])
            if what == "reply":
                settled.append(at - message["t"])
                shed += BUSY_MARK in json.dumps(item["content"], ensure_ascii=False)
            elif item["firstStreamAt"] or item["finalizedAt"]:
                settled.append((item["firstStreamAt"] or item["finalizedAt"]) - message["t"])
            asked = message["text"] != "/test" and message.get("msgtype") != "picture"
            if what == "card" and asked:
                if item["firstStreamAt"]:
                    first_token["group" if message.get("group") else "dm"].append(item["firstStreamAt"] - message["t"])
                if item["finalizedAt"]:
                    final.append(item["finalizedAt"] - message["t"])
    every_token = first_token["dm"] + first_token["group"]

    return {"sent": total, "lost": lost, "duplicated": duplicated, "shed": shed, "redelivered": redelivered,
            "dropped": dropped, "first_feedback_s": p50_p99(feedback), "first_token_s": p50_p99(every_token),
            "first_token_dm_s": p50_p99(first_token["dm"]), "first_token_group_s": p50_p99(first_token["group"]),
            "final_s": p50_p99(final), "max_feedback_s": round(max(feedback, default=0.0), 3),
            "answer_or_reply_s": p50_p99(settled),
            "answer_or_reply_within_2s": round(sum(v <= 2.0 for v in settled) / max(1, total), 4)}


def find_capacity(args: argparse.Namespace, emulator: str, client_id: str, health: int, rng: random.Random) -> int:
    """Step through the rates; the capacity is the highest whose p99 time to first token is under the target."""
    steps = []
    for n, rate in enumerate(float(r) for r in args.rates.split(",")):
        stats = run_load(emulator, client_id, rate, args.step_duration, args.users, rng, drop_socket=False,
                         tag=f"r{n}")
        steps.append({"rate": rate, **stats})
        print(json.dumps({"rate": rate, "first_token_s": stats["first_token_s"], "shed": stats["shed"],
                          "first_feedback_s": stats["first_feedback_s"]}), flush=True)
    fits = [s["rate"] for s in steps if s["first_token_s"]["n"] and s["first_token_s"]["p99"] <= args.target_p99]
    capacity = max(fits, default=0.0)
    result = {"target_p99_s": args.target_p99, "capacity_messages_per_s": capacity, "steps": steps}
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    plot_knee(steps, args.target_p99, capacity, args.plot)
    return 0


def plot_knee(steps: list[dict], target: float, capacity: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = [s["rate"] for s in steps]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.plot(rates, [s["first_token_s"]["p99"] for s in steps], "o-", label="p99 first token")
    ax.plot(rates, [s["first_token_s"]["p50"] for s in steps], "s--", label="p50 first token")
    ax.plot(rates, [s["first_feedback_s"]["p99"] for s in steps], "^:", label="p99 first feedback")
    ax.axhline(target, color="red", linewidth=0.8, label=f"target {target:g} s")
    if capacity:
        ax.axvline(capacity, color="green", linewidth=0.8, label=f"capacity {capacity:g} msg/s")
    ax.set_yscale("log")
    ax.set_xlabel("messages per second")
    ax.set_ylabel("seconds after the message")
    ax.set_title("Connector + embedded model: time to first token vs load")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=300)
    p.add_argument("--rate", type=float, default=1.0, help="messages per second")
    p.add_argument("--users", type=int, default=20)
    p.add_argument("--max-tokens", type=int, default=24)
    p.add_argument("--redis", default=None, help="a Redis URL for the connector (default: in-process store)")
    p.add_argument("--model-url", default=None, help="an existing inference server (default: start one)")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--rss-every", type=float, default=10.0, help="seconds between RSS samples")
    p.add_argument("--rss-plot", type=Path, default=None, help="write the RSS curve here (PNG)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--find-capacity", action="store_true", help="ramp the rate; report the knee")
    p.add_argument("--rates", default="0.25,0.5,1,1.5,2,3", help="--find-capacity: messages/s per step")
    p.add_argument("--step-duration", type=float, default=60, help="--find-capacity: seconds per step")
    p.add_argument("--target-p99", type=float, default=5.0, help="--find-capacity: p99 time to first token, s")
    p.add_argument("--plot", type=Path, default=ROOT / "docs" / "benchmarks" / "capacity-knee.png")
    p.add_argument("--inference-only", action="store_true",
                   help="the inference server alone: mixed prompt lengths at --rate requests/s (scripts/_soak_inference.py)")
    p.add_argument("--max-prompt-tokens", type=int, default=1500, help="--inference-only: the longest prompt, words")
    p.add_argument("--connector-env", action="append", default=[], metavar="NAME=VALUE",
                   help="extra connector settings, e.g. CONNECTOR_MAX_EXPECTED_WAIT_S=0")
    args = p.parse_args(argv)
    rng = random.Random(args.seed)
    py = sys.executable
    procs: list[subprocess.Popen] = []
    logs = Path(os.environ.get("SOAK_LOG_DIR", "/tmp"))

    def spawn(name: str, cmd: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        log = (logs / f"soak-{name}.log").open("wb")
        proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=log, stderr=subprocess.STDOUT)
        procs.append(proc)
        return proc

    try:
        emulator_port = free_port()
        spawn("emulator", [py, "-m", "connector.sandbox", "--port", str(emulator_port), "--ping-interval", "10"])
        emulator = f"http://127.0.0.1:{emulator_port}"
        inference_proc = None
        model_url = args.model_url
        if model_url is None:
            port = free_port()
            inference_proc = spawn("inference", [py, "-m", "inference", "--port", str(port)])
            model_url = f"http://127.0.0.1:{port}/v1"
            wait_http(f"http://127.0.0.1:{port}/ready", timeout=300)
        if args.inference_only:
            if inference_proc is None:
                raise SystemExit("--inference-only starts its own server (no --model-url)")
            from _soak_inference import run as run_inference

            result = run_inference(model_url, inference_proc.pid, rate=args.rate, duration=args.duration,
                                   max_prompt_tokens=args.max_prompt_tokens, max_tokens=args.max_tokens,
                                   rss_every=args.rss_every, rng=rng, rss_plot=args.rss_plot)
            print(json.dumps(result, indent=2))
            if args.json:
                args.json.write_text(json.dumps(result, indent=2))
            return 0 if result["failed"] == 0 else 1
        wait_http(emulator + "/healthz")
        client_id, secret = "soakapp", "soak-secret-7c1d"
        httpx.post(emulator + "/sandbox/apps", json={"client_id": client_id, "client_secret": secret}).raise_for_status()
        health = free_port()
        env = {"CONNECTOR_CLIENT_ID": client_id, "CONNECTOR_CLIENT_SECRET": secret,
               "CONNECTOR_OPENAPI_ENDPOINT": emulator, "CONNECTOR_MODEL_BASE_URL": model_url,
               "CONNECTOR_MAX_TOKENS": str(args.max_tokens), "CONNECTOR_TEMPERATURE": "0",
               "CONNECTOR_HEALTH_PORT": str(health), "CONNECTOR_USER_RATE_LIMIT": "1000",
               "CONNECTOR_HEARTBEAT_INTERVAL_S": "5"}
        if args.redis:
            env["CONNECTOR_REDIS_URL"] = args.redis
        env.update(item.split("=", 1) for item in args.connector_env)
        connector = spawn("connector", [py, "-m", "connector"], env)
        wait_http(f"http://127.0.0.1:{health}/ready", timeout=60)
        time.sleep(2)
        rss_start = {"connector": rss_mib(connector.pid)}
        if inference_proc:
            rss_start["inference"] = rss_mib(inference_proc.pid)

        if args.find_capacity:
            return find_capacity(args, emulator, client_id, health, rng)
        pids = {"connector": connector.pid, **({"inference": inference_proc.pid} if inference_proc else {})}
        with RssSampler(pids, args.rss_every) as sampler:
            stats = run_load(emulator, client_id, args.rate, args.duration, args.users, rng, drop_socket=True)
            time.sleep(3)  # late duplicates would show up now
        if args.rss_plot:
            sampler.plot(args.rss_plot, f"Soak: {args.duration / 60:g} min at {args.rate:g} msg/s, {args.users} users")
        rss_end = {"connector": rss_mib(connector.pid)}
        if inference_proc:
            rss_end["inference"] = rss_mib(inference_proc.pid)
        total, lost, duplicated = stats["sent"], stats["lost"], stats["duplicated"]
        metrics = httpx.get(f"http://127.0.0.1:{health}/metrics", timeout=10).text
        duplicates_ignored = sum(float(line.split()[-1]) for line in metrics.splitlines()
                                 if line.startswith("connector_duplicates_total"))
        result = {
            "duration_s": args.duration, "rate": args.rate, "users": args.users, "sent": total,
            "answered_once": total - lost - duplicated, "duplicated": duplicated, "lost": lost,
            "redeliveries_injected": stats["redelivered"], "redeliveries_ignored": duplicates_ignored,
            "socket_dropped": stats["dropped"], "shed": stats["shed"],
            "rss_mib": {k: {"start": round(rss_start[k], 1), "end": round(rss_end[k], 1),
                            "growth": round(rss_end[k] - rss_start[k], 1)} for k in rss_start},
            "rss_curve_mib": sampler.summary(), "rss_samples": len(sampler.samples),
            # the connector's own work, apart from queueing in busy conversations (the seeds: P99 < 500 ms)
            "connector_received_to_first_card_call_p99_s": histogram_quantile(
                metrics, "connector_message_to_first_card_call_seconds", 0.99),
            **{k: v for k, v in stats.items() if k.endswith(("_s", "_within_2s"))},
        }
        print(json.dumps(result, indent=2))
        if args.json:
            args.json.write_text(json.dumps(result, indent=2))
        return 0 if lost == 0 and duplicated == 0 else 1
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(40)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    raise SystemExit(main())
