"""Prometheus metrics of one app instance (own registry: nothing global at import)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from .gpu import GpuMonitor
from .types import EngineInfo, EngineStats

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0)
ITL_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5)


class _LiveCollector(Collector):
    """Gauges read at scrape time from the engine, the admission controller and the GPUs."""

    def __init__(self, stats: Callable[[], EngineStats], in_flight: Callable[[], int], gpus: GpuMonitor,
                 info: Callable[[], EngineInfo] | None = None) -> None:
        self._stats, self._in_flight, self._gpus, self._info = stats, in_flight, gpus, info

    def collect(self) -> Iterator[object]:
        if self._info is not None:
            info = self._info()
            family = GaugeMetricFamily("llm_engine_info", "The engine and model being served.",
                                       labels=["engine", "model", "device", "dtype", "quantization"])
            family.add_metric([info.engine, info.model_name, info.device, info.dtype, info.quantization or "none"], 1)
            yield family
        stats = self._stats()
        running = stats.running
        waiting = max(self._in_flight() - running, stats.waiting)
        yield GaugeMetricFamily("llm_num_requests_running", "Sequences in the running batch.", value=running)
        yield GaugeMetricFamily("llm_num_requests_waiting", "Sequences admitted but not yet running.", value=waiting)
        yield CounterMetricFamily("llm_engine_steps", "Decode steps run by the engine.", value=stats.steps_total)
        yield CounterMetricFamily("llm_engine_step_sequences", "Sum over decode steps of the sequences each carried.",
                                  value=stats.step_sequences_total)
        yield CounterMetricFamily("llm_engine_prefills", "Prefill steps run by the engine; each admits one or "
                                  "more new sequences into the running batch.", value=stats.prefills_total)
        yield GaugeMetricFamily("llm_engine_max_batch_size", "Largest number of sequences one step carried.",
                                value=stats.max_batch_size)
        yield CounterMetricFamily("llm_engine_aborted", "Sequences cancelled before they finished.",
                                  value=stats.aborted_total)
        yield GaugeMetricFamily("llm_engine_alive", "1 while the engine loop runs.", value=1 if stats.alive else 0)
        readings = self._gpus.read()
        if readings:
            used = GaugeMetricFamily("llm_gpu_memory_used_bytes", "GPU memory in use.", labels=["gpu", "name"])
            total = GaugeMetricFamily("llm_gpu_memory_total_bytes", "GPU memory in all.", labels=["gpu", "name"])
            util = GaugeMetricFamily("llm_gpu_utilization_percent", "GPU utilisation.", labels=["gpu", "name"])
            temp = GaugeMetricFamily("llm_gpu_temperature_celsius", "GPU temperature.", labels=["gpu", "name"])
            for r in readings:
                labels = [str(r.index), r.name]
                used.add_metric(labels, r.memory_used)
                total.add_metric(labels, r.memory_total)
                util.add_metric(labels, r.utilization)
                temp.add_metric(labels, r.temperature)
            yield from (used, total, util, temp)


class Metrics:
    def __init__(self, stats: Callable[[], EngineStats], in_flight: Callable[[], int], gpus: GpuMonitor,
                 info: Callable[[], EngineInfo] | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("llm_requests", "Finished HTTP requests by endpoint and status.",
                                ["endpoint", "status"], registry=r)
        self.ttft = Histogram("llm_time_to_first_token_seconds", "Request arrival to first generated token.",
                              buckets=LATENCY_BUCKETS, registry=r)
        self.itl = Histogram("llm_inter_token_latency_seconds", "Gap between generated tokens.",
                             buckets=ITL_BUCKETS, registry=r)
        self.e2e = Histogram("llm_e2e_request_latency_seconds", "Request arrival to last token.",
                             buckets=LATENCY_BUCKETS, registry=r)
        self.prompt_tokens = Counter("llm_prompt_tokens", "Prompt tokens processed.", registry=r)
        self.generation_tokens = Counter("llm_generation_tokens", "Tokens generated.", registry=r)
        self.finished = Counter("llm_request_finished", "Sequences finished by reason.", ["finish_reason"],
                                registry=r)
        self.auth_failures = Counter("llm_auth_failures", "Refused credentials on the API, by reason (expired, "
                                     "unknown_key, bad_signature, ...).", ["reason"], registry=r)
        self.principal_requests = Counter("llm_requests_by_principal", "Authenticated API requests, by key name "
                                          "(key:<name>) or token subject (jwt:<sub>).", ["principal"], registry=r)
        r.register(_LiveCollector(stats, in_flight, gpus, info))

    def render(self) -> bytes:
        return generate_latest(self.registry)
