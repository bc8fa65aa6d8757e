#!/usr/bin/env python3
"""Start the whole appliance: the inference server, the connector and, when no DingTalk credentials are
configured (CONNECTOR_CLIENT_ID / CONNECTOR_CLIENT_SECRET), the local DingTalk emulator with its chat page.

    python scripts/run_appliance.py        (what `make run` does)

Ctrl-C or SIGTERM stops all three, connector first, so that it finishes its open cards.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from _common import wait_http

ROOT = Path(__file__).resolve().parent.parent

# The connector's settings for the embedded 135M model, chosen by measurement on the demo's questions
# (tests/demo/questions.toml, scripts/score_demo.py; docs/skills.md "The demo's answers"). A real model
# (INFERENCE_MODEL_PATH set) keeps the connector's own defaults.
EMBEDDED_MODEL_SETTINGS = {
    "CONNECTOR_TEMPERATURE": "0",  # 0.7 wanders; 0.2 copied fewer facts from the documents than greedy
    "CONNECTOR_MAX_TOKENS": "160",  # a short answer; 512 let a loop fill the card
    "CONNECTOR_LOOP_GUARD": "true",  # stop an answer once a block of words comes back, show it without the repeat
    "CONNECTOR_CONTEXT_TURNS_WITH_DOCUMENTS": "0",  # with history the model repeated its previous answer
    # no CONNECTOR_REPETITION_PENALTY: 1.1 and 1.2 also penalise copying from the documents (fewer right answers)
}
# the knowledge base's instructions for the demo: a short answer that copies the fact (more right answers)
DEMO_INSTRUCTIONS = ("Answer the question in one short sentence, copying the exact fact (number, name, time) from "
                     "the documents below.\n用一句话回答问题，直接引用下列文档中的数字、名称或时间。")


def demo_knowledge_base(**overrides: object) -> str:
    """CONNECTOR_PLUGINS for the demo: the knowledge base on the sample documents, its questions answered with the
    documents' own sentence (extractive "always": 10 of the 10 demo questions right, against 9 with "cjk", where
    the embedded 135M model answers the English ones and makes up details, and 4 with "never"; docs/skills.md)."""
    from connector.skills.knowledge_base import SAMPLES

    return json.dumps({"knowledge_base": {"enabled": True, "folder": str(SAMPLES), "instructions": DEMO_INSTRUCTIONS,
                                          "index_dir": str(ROOT / ".cache" / "kb-index-demo"), "extractive": "always",
                                          **overrides}}, ensure_ascii=False)


def wait_ready(url: str, proc: subprocess.Popen, what: str, timeout: float = 300.0) -> None:
    try:
        wait_http(url, timeout=timeout, proc=proc, what=what)
    except RuntimeError as exc:
        sys.exit(f"{exc}; see its log above")
    except TimeoutError as exc:
        sys.exit(str(exc))


def main(argv: list[str] | None = None) -> int:
    import argparse

    argparse.ArgumentParser(description=__doc__.split("\n\n")[0] + " Settings: INFERENCE_* and CONNECTOR_* "
                            "environment variables (README: Configuration).").parse_args(argv)
    env = dict(os.environ)
    host = env.get("INFERENCE_HOST", "127.0.0.1")
    port = int(env.get("INFERENCE_PORT", "8000"))
    env.setdefault("CONNECTOR_MODEL_BASE_URL", f"http://{host}:{port}/v1")
    if "INFERENCE_MODEL_PATH" not in env:
        for key, value in EMBEDDED_MODEL_SETTINGS.items():
            env.setdefault(key, value)
    if env.get("INFERENCE_API_KEY"):
        env.setdefault("CONNECTOR_MODEL_API_KEY", env["INFERENCE_API_KEY"])
    children: list[tuple[str, subprocess.Popen]] = []

    def start(name: str, args: list[str]) -> subprocess.Popen:
        # own session: a Ctrl-C in the terminal reaches only this launcher, which stops the children in order
        proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, start_new_session=True)
        children.append((name, proc))
        return proc

    def stop_all(*_: object) -> None:
        for name, proc in reversed(children):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(40)
                except subprocess.TimeoutExpired:
                    proc.kill()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop_all)
    signal.signal(signal.SIGINT, stop_all)

    inference = start("inference", ["-m", "inference"])
    demo = not (env.get("CONNECTOR_CLIENT_ID") and env.get("CONNECTOR_CLIENT_SECRET"))
    page = None
    kb_demo = False
    if demo:
        emulator_port = int(env.get("SANDBOX_PORT", "9000"))
        emulator = start("emulator", ["-m", "connector.sandbox", "--port", str(emulator_port)])
        wait_ready(f"http://127.0.0.1:{emulator_port}/healthz", emulator, "the DingTalk emulator", 30)
        from connector.sandbox import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET

        env.update(CONNECTOR_CLIENT_ID=DEFAULT_CLIENT_ID, CONNECTOR_CLIENT_SECRET=DEFAULT_CLIENT_SECRET,
                   CONNECTOR_OPENAPI_ENDPOINT=f"http://127.0.0.1:{emulator_port}")
        page = f"http://127.0.0.1:{emulator_port}/"
        from connector.config_file import config_path

        if config_path() is None and "CONNECTOR_PLUGINS" not in env:  # the demo answers from the sample documents
            env["CONNECTOR_PLUGINS"] = demo_knowledge_base()
            kb_demo = True
    wait_ready(f"http://{host}:{port}/ready", inference, "the inference server")
    start("connector", ["-m", "connector"])
    print("\n" + "=" * 72, flush=True)
    print(f"  Inference server (OpenAI API): http://{host}:{port}/v1", flush=True)
    if page:
        print(f"  No DingTalk credentials set: chat with the bot in your browser at {page}", flush=True)
        if kb_demo:
            print("  Knowledge base: the sample documents (try: How often must the HP-400 hydraulic press be "
                  "recalibrated?  or  /kb)", flush=True)
    else:
        print("  Connected to DingTalk: message the bot in DingTalk (try /test)", flush=True)
    print("  Stop with Ctrl-C", flush=True)
    print("=" * 72 + "\n", flush=True)
    while True:
        for name, proc in children:
            if proc.poll() is not None:
                print(f"{name} exited with code {proc.returncode}; stopping the appliance", flush=True)
                stop_all()
        time.sleep(1)


if __name__ == "__main__":
    raise SystemExit(main())
