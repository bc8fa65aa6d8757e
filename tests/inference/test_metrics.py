"""The inference server's Prometheus exposition: what the live collector reads from the engine at scrape time."""

from __future__ import annotations

from inference.metrics import Metrics
from inference.types import EngineStats

from ..servers import metric


class _NoGpus:
    def read(self) -> list:
        return []


def _samples(metrics: Metrics) -> dict[str, float]:
    lines = metrics.render().decode().splitlines()
    return {line.split(" ")[0]: float(line.split(" ")[1]) for line in lines if line and not line.startswith("#")}


def test_engine_counters_are_exported_from_the_stats() -> None:
    stats = EngineStats(running=2, waiting=1, steps_total=40, step_sequences_total=70, max_batch_size=4,
                        prefills_total=5, aborted_total=1)
    samples = _samples(Metrics(lambda: stats, lambda: 5, _NoGpus()))  # type: ignore[arg-type]
    assert samples["llm_engine_steps_total"] == 40 and samples["llm_engine_step_sequences_total"] == 70
    assert samples["llm_engine_prefills_total"] == 5 and samples["llm_engine_aborted_total"] == 1
    assert metric(samples, "vllm:num_requests_running") == 2
    assert metric(samples, "vllm:num_requests_waiting") == 3  # admitted but not running: in flight minus running
    assert metric(samples, "vllm:request_success_total", finished_reason="abort") == 1
