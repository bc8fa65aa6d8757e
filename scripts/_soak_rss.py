"""The soak's memory curve: RSS of the stack's processes sampled every few seconds in a thread, and its plot,
and the connector's own processing time (message received -> first card call) read from its histogram."""

from __future__ import annotations

import threading
import time
from pathlib import Path


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class RssSampler:
    """Samples {name: pid} every `every_s` seconds until stopped: [(seconds since start, {name: MiB})]."""

    def __init__(self, pids: dict[str, int], every_s: float) -> None:
        self.pids, self.every_s = pids, every_s
        self.samples: list[tuple[float, dict[str, float]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="rss-sampler")
        self._started = time.monotonic()

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while True:
            try:
                self.samples.append((time.monotonic() - self._started,
                                     {name: rss_mib(pid) for name, pid in self.pids.items()}))
            except OSError:  # a process ended
                return
            if self._stop.wait(self.every_s):
                return

    def summary(self) -> dict[str, dict[str, float]]:
        """Per process: first, peak, last, and the growth over the last quarter (levelled off: near 0)."""
        out = {}
        for name in self.pids:
            series = [(t, s[name]) for t, s in self.samples if name in s]
            if not series:
                continue
            quarter = series[-max(2, len(series) // 4):]
            out[name] = {"first": round(series[0][1], 1), "peak": round(max(v for _, v in series), 1),
                         "last": round(series[-1][1], 1),
                         "last_quarter_growth": round(quarter[-1][1] - quarter[0][1], 1)}
        return out

    def plot(self, path: Path, title: str) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 4.2))
        for name in self.pids:
            series = [(t / 60, s[name]) for t, s in self.samples if name in s]
            ax.plot([t for t, _ in series], [v for _, v in series], label=name)
        ax.set_xlabel("minutes")
        ax.set_ylabel("RSS, MiB")
        ax.set_title(title)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)


def histogram_quantile(metrics_text: str, name: str, q: float) -> float | None:
    """The q-quantile of a Prometheus histogram from its cumulative buckets (linear within a bucket, as
    PromQL's histogram_quantile does)."""
    buckets: list[tuple[float, float]] = []
    for line in metrics_text.splitlines():
        if line.startswith(name + "_bucket{"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float("inf") if le == "+Inf" else float(le), float(line.rsplit(" ", 1)[1])))
    buckets.sort()
    if not buckets or buckets[-1][1] == 0:
        return None
    rank, lower, below = q * buckets[-1][1], 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            if upper == float("inf"):
                return lower
            return lower + (upper - lower) * ((rank - below) / (count - below) if count > below else 1.0)
        lower, below = upper, count
    return None
