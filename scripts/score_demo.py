#!/usr/bin/env python3
"""Score the demo's answers: ask the demo's questions (tests/demo/questions.toml) through the real stack, as a
visitor of `make run` does, and print for each answer whether it is correct (its key facts are there), whether
it repeats itself, and how long it is, then the totals.

    python scripts/score_demo.py                              # the demo's settings (scripts/run_appliance.py)
    python scripts/score_demo.py --model-url http://127.0.0.1:8000/v1 --set CONNECTOR_REPETITION_PENALTY=1.2

The stack: the inference server on the embedded model (started here unless --model-url names a running one),
the DingTalk emulator and the connector with the demo's settings (run_appliance.EMBEDDED_MODEL_SETTINGS and
the knowledge base on the samples; --set overrides any of them). The questions go in their order into one
direct conversation, each after the previous answer's card is final, so the history is the one a user builds.

Repeating: the most repeated block of 8 words (inference/serving/loop_guard.py's words) comes back in the
answer (count > 1). This is how docs/skills.md "The demo's answers" was measured.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import free_port, wait_http
from run_appliance import EMBEDDED_MODEL_SETTINGS, ROOT, demo_knowledge_base

sys.path.insert(0, str(ROOT))
from inference.serving.loop_guard import repeated_blocks

QUESTIONS = ROOT / "tests" / "demo" / "questions.toml"
SOURCES_MARK = "**来源 / Sources**"
BLOCK = 8  # words in the block whose repetition is measured


@dataclass(frozen=True)
class Question:
    id: str
    text: str
    facts: tuple[str, ...]
    max_chars: int


@dataclass(frozen=True)
class Score:
    id: str
    correct: bool
    missing: tuple[str, ...]
    repeats: int  # how often the most repeated block of BLOCK words occurs
    chars: int
    short: bool
    seconds: float
    answer: str

    @property
    def repeating(self) -> bool:
        return self.repeats > 1

    @property
    def good(self) -> bool:
        return self.correct and self.short and not self.repeating


def load_questions(path: Path = QUESTIONS, only: set[str] | None = None) -> list[Question]:
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    return [Question(q["id"], q["text"], tuple(q["facts"]), int(q["max_chars"])) for q in data["question"]
            if not only or q["id"] in only]


def score(question: Question, answer: str, seconds: float) -> Score:
    text = answer.lower()
    missing = tuple(f for f in question.facts if not any(alt.lower() in text for alt in f.split("|")))
    return Score(question.id, not missing, missing, repeated_blocks(answer, BLOCK), len(answer.strip()),
                 len(answer.strip()) <= question.max_chars, round(seconds, 1), answer)


class Stack:
    """The emulator and the connector (and the inference server unless one is given), stopped in `close`."""

    def __init__(self, model_url: str | None, overrides: dict[str, str], workdir: Path) -> None:
        self.procs: list[subprocess.Popen] = []
        self.workdir = workdir
        env = dict(os.environ)
        if model_url is None:
            port = free_port()
            env.update(INFERENCE_PORT=str(port), INFERENCE_LOG_LEVEL="warning")
            inference = self._start("inference", ["-m", "inference"], env)
            wait_http(f"http://127.0.0.1:{port}/ready", timeout=300, proc=inference, what="the inference server")
            model_url = f"http://127.0.0.1:{port}/v1"
        self.emulator = f"http://127.0.0.1:{free_port()}"
        emulator = self._start("emulator", ["-m", "connector.sandbox", "--port", self.emulator.rsplit(":", 1)[1]], env)
        wait_http(self.emulator + "/healthz", timeout=30, proc=emulator, what="the emulator")
        from connector.sandbox import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET

        self.app = DEFAULT_CLIENT_ID
        health_port = free_port()
        self.health = f"http://127.0.0.1:{health_port}"
        env.update(EMBEDDED_MODEL_SETTINGS)
        env.update(CONNECTOR_CLIENT_ID=DEFAULT_CLIENT_ID, CONNECTOR_CLIENT_SECRET=DEFAULT_CLIENT_SECRET,
                   CONNECTOR_OPENAPI_ENDPOINT=self.emulator, CONNECTOR_MODEL_BASE_URL=model_url,
                   CONNECTOR_PLUGINS=demo_knowledge_base(), CONNECTOR_HEALTH_PORT=str(health_port),
                   CONNECTOR_AUDIT_PATH=str(workdir / "audit.sqlite3"),
                   CONNECTOR_AUDIT_SPILL_PATH=str(workdir / "audit-spill.jsonl"))
        env.update(overrides)
        self.settings = {k: v for k, v in env.items() if k in EMBEDDED_MODEL_SETTINGS or k in overrides}
        connector = self._start("connector", ["-m", "connector"], env)
        deadline = time.monotonic() + 180
        while not self._kb_ready():
            if connector.poll() is not None:
                raise RuntimeError(f"the connector exited with code {connector.returncode}; see {workdir}")
            if time.monotonic() > deadline:
                raise TimeoutError("the connector's knowledge base was not ready after 180 s")
            time.sleep(0.5)

    def _start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 (closed with the process)
        proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def _kb_ready(self) -> bool:
        try:
            health = httpx.get(self.health + "/health", timeout=2).json()
            return health["skills"]["knowledge_base"]["state"] == "ready"
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return False

    def ask(self, text: str, user: str, timeout: float) -> tuple[str, float]:
        """Send `text` as `user` in a direct message; the answer of its final card (without the sources)."""
        conversation = httpx.get(self.emulator + "/sandbox/dm-id", params={"user": user, "app": self.app},
                                 timeout=10).json()["conversationId"]
        seen = sum(c["finalized"] for c in self._cards(conversation))
        started = time.monotonic()
        httpx.post(self.emulator + "/sandbox/messages", json={"text": text, "app": self.app, "user": user},
                   timeout=10).raise_for_status()
        while time.monotonic() - started < timeout:
            cards = [c for c in self._cards(conversation) if c["finalized"]]
            if len(cards) > seen:
                content = cards[-1]["texts"].get("msgContent", "")
                return content.partition(SOURCES_MARK)[0].strip(), time.monotonic() - started
            time.sleep(0.3)
        raise TimeoutError(f"no final card after {timeout:.0f} s for: {text}")

    def _cards(self, conversation: str) -> list[dict]:
        cards = httpx.get(self.emulator + "/sandbox/cards", params={"conversation_id": conversation}, timeout=10).json()
        return sorted(cards, key=lambda c: c["created"])

    def close(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()


def run(questions: list[Question], *, model_url: str | None = None, overrides: dict[str, str] | None = None,
        timeout: float = 300.0, user: str = "demo-user") -> tuple[list[Score], dict[str, str]]:
    """Ask every question in one conversation; the scores and the connector settings that applied."""
    logs = Path(tempfile.mkdtemp(prefix="score-demo-"))
    stack = None
    try:
        stack = Stack(model_url, overrides or {}, logs)
        results = []
        for q in questions:
            answer, seconds = stack.ask(q.text, user, timeout)
            results.append(score(q, answer, seconds))
    except BaseException:
        print(f"the servers' logs are kept in {logs}", file=sys.stderr)
        raise
    finally:
        if stack is not None:
            stack.close()
    shutil.rmtree(logs, ignore_errors=True)
    return results, stack.settings


def table(results: list[Score]) -> str:
    lines = ["| question | correct | repeating (max block count) | chars | short | s |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in results:
        missing = ", ".join(m.replace("|", " or ") for m in r.missing)
        lines.append(f"| {r.id} | {'yes' if r.correct else 'no: ' + missing} | "
                     f"{'yes' if r.repeating else 'no'} ({r.repeats}) | {r.chars} | {'yes' if r.short else 'no'} | "
                     f"{r.seconds:.0f} |")
    n = len(results)
    lines.append(f"| **total** | {sum(r.correct for r in results)}/{n} | {sum(r.repeating for r in results)}/{n} | "
                 f"{sum(r.chars for r in results) // max(n, 1)} avg | {sum(r.short for r in results)}/{n} | "
                 f"{sum(r.seconds for r in results):.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-url", help="a running inference server's /v1 (default: start one)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a connector setting over the demo's (repeatable), e.g. CONNECTOR_MAX_TOKENS=128")
    parser.add_argument("--kb", action="append", default=[], metavar="KEY=VALUE",
                        help="a knowledge-base setting over the demo's (repeatable), e.g. extractive=never")
    parser.add_argument("--only", help="question ids, comma-separated")
    parser.add_argument("--questions", type=Path, default=QUESTIONS)
    parser.add_argument("--json", type=Path, help="also write the scores and answers here")
    parser.add_argument("--answers", action="store_true", help="print every answer")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per answer")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # the servers are stopped on the way out
    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key.startswith("CONNECTOR_"):
            parser.error(f"--set takes CONNECTOR_NAME=VALUE, not {item!r}")
        overrides[key] = value
    if args.kb:
        kb = {}
        for item in args.kb:
            key, sep, value = item.partition("=")
            if not sep:
                parser.error(f"--kb takes NAME=VALUE, not {item!r}")
            kb[key] = value
        overrides["CONNECTOR_PLUGINS"] = demo_knowledge_base(**kb)
    questions = load_questions(args.questions, set(args.only.split(",")) if args.only else None)
    if not questions:
        parser.error("no questions selected")
    results, settings = run(questions, model_url=args.model_url, overrides=overrides, timeout=args.timeout)
    print("settings: " + (", ".join(f"{k}={v}" for k, v in sorted(settings.items())) or "(connector defaults)"))
    print(table(results))
    if args.answers:
        for r in results:
            print(f"\n--- {r.id}\n{r.answer}")
    if args.json:
        args.json.write_text(json.dumps({"settings": settings, "scores": [asdict(r) for r in results]},
                                        ensure_ascii=False, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
