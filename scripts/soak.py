#!/usr/bin/env python3
"""Bounded soak run of the full stack on loopback: emulator + connector (+ Redis) + the inference server.

Mixed load for --duration seconds: DMs and group messages from --users users at --rate messages/s,
some /test commands, pictures, redeliveries of already-answered messages, and one dropped Stream
socket half-way. Then it waits for every reply and reports: sent, answered exactly once, duplicated,
lost; memory growth (RSS) of the connector and inference processes; p50/p99 latencies.

    python scripts/soak.py --duration 300 --rate 1 --users 20 [--redis redis://127.0.0.1:6379/0]
Exit status 0 only when nothing was lost or duplicated.
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
from _common import free_port, percentile, wait_http

ROOT = Path(__file__).resolve().parent.parent


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=300)
    p.add_argument("--rate", type=float, default=1.0, help="messages per second")
    p.add_argument("--users", type=int, default=20)
    p.add_argument("--max-tokens", type=int, default=24)
    p.add_argument("--redis", default=None, help="a Redis URL for the connector (default: in-process store)")
    p.add_argument("--model-url", default=None, help="an existing inference server (default: start one)")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--seed", type=int, default=1)
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
        connector = spawn("connector", [py, "-m", "connector"], env)
        wait_http(f"http://127.0.0.1:{health}/ready", timeout=60)
        time.sleep(2)
        rss_start = {"connector": rss_mib(connector.pid)}
        if inference_proc:
            rss_start["inference"] = rss_mib(inference_proc.pid)

        sent: dict[str, list[dict]] = {}  # conversation -> messages in order
        started = time.time()
        dropped = False
        redelivered = 0
        n = 0
        while time.time() - started < args.duration:
            target = started + n / args.rate
            time.sleep(max(0.0, target - time.time()))
            user = f"u{rng.randrange(args.users):03d}"
            kind = rng.random()
            body: dict = {"user": user, "app": client_id, "text": f"Question {n}: name a colour."}
            if kind < 0.2:
                body.update(group="cidSoakGroup", at_bot=True)
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
            if not dropped and time.time() - started > args.duration / 2:
                httpx.post(emulator + "/sandbox/connections/drop", json={"app": client_id}, timeout=30)
                dropped = True

        def answers(conv: str) -> int:
            cards = httpx.get(emulator + "/sandbox/cards", params={"conversation_id": conv}, timeout=30).json()
            replies = httpx.get(emulator + "/sandbox/replies", params={"conversation_id": conv}, timeout=30).json()
            return sum(1 for c in cards if c["finalized"]) + len(replies)

        deadline = time.time() + 120 + args.duration
        while time.time() < deadline:
            if all(answers(conv) >= len(msgs) for conv, msgs in sent.items()):
                break
            time.sleep(2)
        time.sleep(3)  # late duplicates would show up now
        rss_end = {"connector": rss_mib(connector.pid)}
        if inference_proc:
            rss_end["inference"] = rss_mib(inference_proc.pid)
        total = sum(len(m) for m in sent.values())
        duplicated = lost = 0
        for conv, msgs in sent.items():
            got = answers(conv)
            duplicated += max(0, got - len(msgs))
            lost += max(0, len(msgs) - got)
        cards = httpx.get(emulator + "/sandbox/cards", timeout=30).json()
        first_token, final = [], []
        by_conv: dict[str, list[dict]] = {}
        for c in sorted(cards, key=lambda c: c["created"]):
            by_conv.setdefault(c["conversationId"], []).append(c)
        for conv, conv_cards in by_conv.items():
            asked = [m for m in sent.get(conv, []) if m["text"] != "/test" and m.get("msgtype") != "picture"]
            for message, card in zip(asked, conv_cards):
                if card["firstStreamAt"]:
                    first_token.append(card["firstStreamAt"] - message["t"])
                if card["finalizedAt"]:
                    final.append(card["finalizedAt"] - message["t"])
        metrics = httpx.get(f"http://127.0.0.1:{health}/metrics", timeout=10).text
        duplicates_ignored = sum(float(line.split()[-1]) for line in metrics.splitlines()
                                 if line.startswith("connector_duplicates_total"))
        result = {
            "duration_s": args.duration, "rate": args.rate, "users": args.users, "sent": total,
            "answered_once": total - lost - duplicated, "duplicated": duplicated, "lost": lost,
            "redeliveries_injected": redelivered, "redeliveries_ignored": duplicates_ignored,
            "socket_dropped": dropped,
            "rss_mib": {k: {"start": round(rss_start[k], 1), "end": round(rss_end[k], 1),
                            "growth": round(rss_end[k] - rss_start[k], 1)} for k in rss_start},
            "first_token_s": {"p50": round(percentile(first_token, 50), 3), "p99": round(percentile(first_token, 99), 3)},
            "final_s": {"p50": round(percentile(final, 50), 3), "p99": round(percentile(final, 99), 3)},
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
