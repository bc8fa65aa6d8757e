"""Injected faults and security checks across the full stack (real processes, real Redis, the emulator)."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from ..servers import ServerProcess, free_port, inference_server, scrape
from .conftest import RedisServer, connector_process, start_connector
from .helpers import cards_of, finalized, replies_of, shown_texts
from .sandbox.helpers import new_app, send, wait_for

pytestmark = pytest.mark.slow


def test_storm_of_5xx_and_qps_errors(emulator, inference: ServerProcess, log_dir: Path) -> None:
    """Backoff, no retry storm, and every message still gets exactly one final reply."""
    client_id, secret = new_app(emulator)
    proc = start_connector(connector_process("connector-storm", emulator=emulator, client_id=client_id,
                                             secret=secret, model_url=inference.url + "/v1", card_cooloff_s=3),
                           log_dir, emulator, client_id)
    try:
        httpx.post(emulator.url + "/sandbox/faults", json={"api": "/v1.0/card/instances/createAndDeliver",
                                                           "status": 503, "code": "ServiceUnavailable", "count": -1})
        started = time.time()
        sent = [send(emulator, client_id, f"Storm question {i}?", user=f"storm{i}") for i in range(6)]
        for message in sent:  # every message answered once, by markdown while cards fail
            wait_for(lambda m=message: replies_of(emulator, m["conversationId"]), timeout=90)
        calls = [c for c in httpx.get(emulator.url + "/sandbox/calls", params={"since": started}).json()
                 if c["app"] == client_id and c["path"] == "/v1.0/card/instances/createAndDeliver"]
        assert len(calls) <= 3 * len(sent), f"retry storm: {len(calls)} card creations for {len(sent)} messages"
        times = sorted(c["time"] for c in calls)
        assert all(b - a >= 0.0 for a, b in zip(times, times[1:]))
        httpx.delete(emulator.url + "/sandbox/faults")

        # QPS-limit errors on streaming updates are retried; the cards still finish
        time.sleep(3.5)  # the card cool-off ends
        httpx.post(emulator.url + "/sandbox/faults", json={
            "api": "/v1.0/card/streaming", "status": 403, "code": "Forbidden.AccessDenied.QpsLimitForAppkeyAndApi",
            "count": 4})
        again = send(emulator, client_id, "After the storm?", user="storm0")
        card = finalized(emulator, again["conversationId"], 1, timeout=90)[0]
        assert card["flowStatus"] == "3"
        for message in sent:
            assert len(replies_of(emulator, message["conversationId"])) == 1
        metrics = scrape(proc.url)
        assert metrics.get('connector_api_calls_total{api="/v1.0/card/streaming",outcome="qps"}', 0) >= 1
    finally:
        httpx.delete(emulator.url + "/sandbox/faults")
        proc.stop()


def test_inference_sigterm_ends_streams_cleanly(log_dir: Path) -> None:
    server = inference_server("inference-term", max_model_len=512)
    server.start(log_dir).wait_ready()
    results: list[list[str]] = [[], []]

    def stream(index: int) -> None:
        body = {"messages": [{"role": "user", "content": "Count slowly."}], "max_tokens": 120, "stream": True,
                "ignore_eos": True}
        with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, timeout=60) as response:
            for line in response.iter_lines():
                if line.startswith("data:"):
                    results[index].append(line[5:].strip())

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    wait_for(lambda: all(len(r) > 3 for r in results), timeout=60)
    code = server.stop(signal.SIGTERM, timeout=60)
    for thread in threads:
        thread.join(60)
    assert code in (0, -signal.SIGTERM)  # uvicorn re-raises the SIGTERM it handled: a clean stop for systemd
    for events in results:
        assert events[-1] == "[DONE]"  # finished, or an error chunk then [DONE]: never cut off
        last = json.loads(events[-2])
        assert "error" in last or last["choices"][0]["finish_reason"] in ("length", "stop")


def test_allowlist_and_message_length(emulator, inference: ServerProcess, log_dir: Path) -> None:
    client_id, secret = new_app(emulator)
    proc = start_connector(connector_process("connector-allow", emulator=emulator, client_id=client_id,
                                             secret=secret, model_url=inference.url + "/v1",
                                             allow_users='["alice"]', max_message_chars=50),
                           log_dir, emulator, client_id)
    try:
        denied = send(emulator, client_id, "Hello?", user="mallory")
        text = wait_for(lambda: replies_of(emulator, denied["conversationId"]))[0]["content"]["text"]
        assert "not enabled for you" in text
        allowed = send(emulator, client_id, "Hello?", user="alice")
        finalized(emulator, allowed["conversationId"], 1)
        send(emulator, client_id, "x" * 51, user="alice")
        assert "too long" in shown_texts(emulator, allowed["conversationId"], 2)[1]  # markdown or the queued card
        time.sleep(0.5)
        assert cards_of(emulator, denied["conversationId"]) == []
        assert len(shown_texts(emulator, allowed["conversationId"], 2)) == 2  # no model answer for the long one
    finally:
        proc.stop()


def test_no_secret_in_any_log(emulator, log_dir: Path, tmp_path: Path) -> None:
    """A full run with every secret configured, failures included: none of them appears in a log."""
    api_key = "sk-inference-key-7f3a9c"
    redis_password = "redis-pass-51b2e8"
    app_secret = "app-secret-0d4c6a"
    client_id, _ = new_app(emulator)
    httpx.post(emulator.url + "/sandbox/apps", json={"client_id": client_id, "client_secret": app_secret})
    redis = RedisServer(free_port(), tmp_path)
    redis.start()
    subprocess.run(["redis-cli", "-p", str(redis.port), "config", "set", "requirepass", redis_password],
                   capture_output=True, check=True)
    server = inference_server("inference-secrets", api_key=api_key, max_model_len=512, log_level="debug")
    server.start(log_dir).wait_ready()
    proc = start_connector(connector_process(
        "connector-secrets", emulator=emulator, client_id=client_id, secret=app_secret,
        model_url=server.url + "/v1", model_api_key=api_key, log_level="debug",
        redis_url=f"redis://:{redis_password}@127.0.0.1:{redis.port}/0"), log_dir, emulator, client_id)
    wrong = None
    try:
        sent = send(emulator, client_id, "Hello there!", user="sec")
        finalized(emulator, sent["conversationId"], 1)
        send(emulator, client_id, "/test", user="sec")
        shown_texts(emulator, sent["conversationId"], 2)
        httpx.get(server.url + "/v1/models", headers={"Authorization": f"Bearer {api_key}x"})  # a wrong key
        redis.stop()  # an outage while secrets are in use
        send(emulator, client_id, "Still there?", user="sec")
        shown_texts(emulator, sent["conversationId"], 3)
        # a connector with a wrong model key: its failures are logged too
        wrong = start_connector(connector_process(
            "connector-wrongkey", emulator=emulator, client_id=client_id, secret=app_secret,
            model_url=server.url + "/v1", model_api_key=api_key + "-wrong", log_level="debug"),
            log_dir, emulator, client_id)
    finally:
        for p in (wrong, proc, server):
            if p is not None:
                p.stop()
        redis.stop()
    logs = {p.name: p.log() for p in (proc, server) + ((wrong,) if wrong else ())}
    calls = json.dumps(httpx.get(emulator.url + "/sandbox/calls").json())
    for name, text in {**logs, "emulator call log": calls}.items():
        assert text, name
        for secret in (api_key, redis_password, app_secret):
            assert secret not in text, f"{secret} leaked into {name}"
