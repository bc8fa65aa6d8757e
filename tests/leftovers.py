"""Processes the tests started and left running, found by the variable they all inherit.

tests/conftest.py sets ``APPLIANCE_TEST_SESSION=<pytest's pid>`` before any test runs, so every process a
test starts, directly or through another (a server's children, vLLM's engine core, Chromium), carries it
in its environment. At the end of each pytest session the conftest stops and reports that session's
survivors; ``python -m tests.leftovers`` (the last step of ``make test``) reports, and kills, any whose
pytest session is gone. Linux only (/proc).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

MARKER = "APPLIANCE_TEST_SESSION"


@dataclass(frozen=True)
class Leftover:
    pid: int
    session: int
    command: str

    def __str__(self) -> str:
        return f"pid {self.pid} (test session {self.session}): {self.command[:200]}"


def marked_processes(session: int | None = None) -> list[Leftover]:
    """Live processes whose environment holds MARKER (of `session` only, when given)."""
    found = []
    prefix = f"{MARKER}=".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        value = next((item[len(prefix):] for item in environ if item.startswith(prefix)), None)
        if value is None or not value.isdigit() or not command:  # not marked, or a zombie
            continue
        if session is None or int(value) == session:
            found.append(Leftover(int(entry.name), int(value), command))
    return found


def settle(session: int | None, wait_s: float = 5.0) -> list[Leftover]:
    """Give exiting processes `wait_s` to go; kill and return those still there."""
    deadline = time.monotonic() + wait_s
    while (left := marked_processes(session)) and time.monotonic() < deadline:
        time.sleep(0.2)
    for process in left:
        try:
            os.kill(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return left


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def main() -> int:
    orphans = [p for p in marked_processes() if not _alive(p.session)]
    if orphans:
        orphans = [p for p in settle(None) if not _alive(p.session)]
    if orphans:
        print(f"leftovers: {len(orphans)} process(es) started by the tests were still running (now killed):")
        for process in orphans:
            print(f"  {process}")
        return 1
    print("leftovers: no process started by the tests is still running")
    return 0


if __name__ == "__main__":
    sys.exit(main())
