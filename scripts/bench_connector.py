#!/usr/bin/env python3
"""Connector benchmark: the emulator, the real connector process, and a model endpoint.

  --model fake   an instant OpenAI-compatible stream (measures the connector's own overhead)
  --model URL    a real server, e.g. http://127.0.0.1:8000/v1 (message to first token shown)

Reports, from the emulator's timestamps: message sent -> first card call (createAndDeliver),
message -> first streamed text, message -> finalized card (p50 / p99); messages per second with
N conversations at once; the busiest one-second window of card calls.

    python scripts/bench_connector.py --model fake --conversations 200 --messages 1000 --card-qps 5000
    python scripts/bench_connector.py --model fake --conversations 50 --messages 100 --card-qps 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from _common import free_port, percentile, wait_http

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def fake_model(port: int, tokens: int) -> None:
    """An OpenAI-compatible endpoint that streams `tokens` chunks at once."""
    import uvicorn
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse, StreamingResponse

    app = FastAPI()

    @app.get("/v1/models")
    async def models() -> JSONResponse:
        return JSONResponse({"object": "list", "data": [{"id": "fake", "object": "model", "created": 0,
                                                         "owned_by": "bench", "max_model_len": 4096}]})

    @app.post("/v1/chat/completions")
    async def chat() -> StreamingResponse:
        async def gen():
            for i in range(tokens):
                chunk = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "fake",
                         "choices": [{"index": 0, "delta": {"content": f"word{i} "}, "finish_reason": None}]}
                yield f"data: {json.dumps(chunk)}\n\n"
            done = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "fake",
                    "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
            yield f"data: {json.dumps(done)}\n\ndata: [DONE]\n\n"

        return StreamingResponse(gen(), media_type="text/event-stream")

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="fake", help="'fake' or an OpenAI base URL")
    p.add_argument("--conversations", type=int, default=200)
    p.add_argument("--messages", type=int, default=1000)
    p.add_argument("--card-qps", type=float, default=5000, help="emulator limit and connector budget")
    p.add_argument("--fake-tokens", type=int, default=8)
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--timeout", type=float, default=600)
    p.add_argument("--rate", type=float, default=None, help="messages per second (paced); default: all at once")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--serve-fake", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve_fake:
        fake_model(args.serve_fake, args.fake_tokens)
        return 0

    import httpx

    # each party in its own process, as deployed: the emulator, the fake model, the connector
    helpers: list[subprocess.Popen] = []
    emulator_port = free_port()
    helpers.append(subprocess.Popen([sys.executable, "-m", "connector.sandbox", "--port", str(emulator_port),
                                     "--ping-interval", "0"], cwd=ROOT, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL))

    class _Emulator:
        url = f"http://127.0.0.1:{emulator_port}"

    emulator = _Emulator()
    if args.model == "fake":
        port = free_port()
        helpers.append(subprocess.Popen([sys.executable, __file__, "--serve-fake", str(port), "--fake-tokens",
                                         str(args.fake_tokens)], cwd=ROOT))
        model_url = f"http://127.0.0.1:{port}/v1"
    else:
        model_url = args.model
    for url in (emulator.url + "/healthz", model_url + "/models"):
        wait_http(url, timeout=10)
    client_id, secret = "benchapp", "bench-secret-0123"
    httpx.post(emulator.url + "/sandbox/apps", json={"client_id": client_id, "client_secret": secret,
                                                     "qps_limit": max(1, int(args.card_qps))}).raise_for_status()
    health = free_port()
    env = {**os.environ, "CONNECTOR_CLIENT_ID": client_id, "CONNECTOR_CLIENT_SECRET": secret,
           "CONNECTOR_OPENAPI_ENDPOINT": emulator.url, "CONNECTOR_MODEL_BASE_URL": model_url,
           "CONNECTOR_CARD_QPS": str(args.card_qps), "CONNECTOR_MAX_IN_FLIGHT": str(max(32, args.conversations)),
           "CONNECTOR_MAX_TOKENS": str(args.max_tokens), "CONNECTOR_HEALTH_PORT": str(health),
           "CONNECTOR_LOG_LEVEL": "warning", "CONNECTOR_USER_RATE_LIMIT": "100000", "CONNECTOR_TEMPERATURE": "0",
           "CONNECTOR_MAX_BACKLOG": str(args.messages + 10)}
    connector = subprocess.Popen([sys.executable, "-m", "connector"], cwd=ROOT, env=env)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{health}/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        else:
            raise SystemExit("connector not ready")

        async def produce() -> tuple[dict[str, float], float]:
            sent_at: dict[str, float] = {}
            async with httpx.AsyncClient(timeout=30) as http:
                started = time.time()
                sem = asyncio.Semaphore(32)

                async def one(i: int) -> None:
                    if args.rate:
                        await asyncio.sleep(max(0.0, started + i / args.rate - time.time()))
                    async with sem:
                        t = time.time()
                        r = await http.post(emulator.url + "/sandbox/messages", json={
                            "text": f"question {i}", "user": f"user{i % args.conversations:04d}", "app": client_id})
                        sent_at[r.json()["conversationId"] + f"#{i // args.conversations}"] = t

                await asyncio.gather(*(one(i) for i in range(args.messages)))
            return sent_at, started

        sent_at, started = asyncio.run(produce())
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            cards = httpx.get(emulator.url + "/sandbox/cards", timeout=30).json()
            done = [c for c in cards if c["finalized"]]
            if len(done) >= args.messages:
                break
            time.sleep(1.0)
        elapsed = max(c["finalizedAt"] for c in done) - started
        calls = httpx.get(emulator.url + "/sandbox/calls", params={"since": started}).json()
    finally:
        connector.terminate()
        connector.wait(30)
        for helper in helpers:
            helper.terminate()
            helper.wait(10)

    # match each card to its message: per conversation, in order
    by_conv: dict[str, list[dict]] = {}
    for c in sorted(cards, key=lambda c: c["created"]):
        by_conv.setdefault(c["conversationId"], []).append(c)
    first_call, first_text, final = [], [], []
    for key, t in sent_at.items():
        conv, n = key.rsplit("#", 1)
        conv_cards = by_conv.get(conv, [])
        if int(n) < len(conv_cards):
            c = conv_cards[int(n)]
            first_call.append(c["created"] - t)
            if c["firstStreamAt"]:
                first_text.append(c["firstStreamAt"] - t)
            if c["finalizedAt"]:
                final.append(c["finalizedAt"] - t)
    times = sorted(c["time"] for c in calls if c["path"].startswith("/v1.0/card"))
    busiest = max((sum(1 for x in times if s <= x < s + 1) for s in times), default=0)
    errors = [c for c in calls if c["status"] != 200]
    result = {
        "model": args.model, "messages": args.messages, "rate": args.rate, "conversations": args.conversations,
        "card_qps_budget": args.card_qps, "finalized": len(done), "elapsed_s": round(elapsed, 2),
        "messages_per_s": round(len(done) / elapsed, 1),
        "to_first_card_call_ms": {"p50": round(percentile(first_call, 50) * 1000, 1), "p99": round(percentile(first_call, 99) * 1000, 1)},
        "to_first_text_ms": {"p50": round(percentile(first_text, 50) * 1000, 1), "p99": round(percentile(first_text, 99) * 1000, 1)},
        "to_final_ms": {"p50": round(percentile(final, 50) * 1000, 1), "p99": round(percentile(final, 99) * 1000, 1)},
        "card_calls": len(times), "busiest_second_card_calls": busiest, "non_200_calls": len(errors),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0 if len(done) >= args.messages else 1


if __name__ == "__main__":
    raise SystemExit(main())
