"""Prometheus metrics of one app instance, under vLLM's names where vLLM has the series.

Dashboards and alert rules written for vLLM work unchanged: what vLLM's `PrometheusStatLogger` exports
(vllm/v1/metrics/loggers.py, listed on vLLM's "Production Metrics" page) is exported here under the same
name, type and labels (`vllm:` prefix, `model_name` and `engine` = the engine index "0", `finished_reason`,
0-1 ratios, vLLM's default histogram buckets); tests/inference/vllm_metric_names.txt is the list we match,
checked by tests/inference/test_vllm_metric_names.py. Ours, `llm_*`, only where vLLM has no such series: HTTP
status counts per endpoint, refused credentials, requests per principal, the transformers engine's batching
counters, cancelled sequences, the engine info, and GPU telemetry (used / total bytes, memory and utilisation
as 0-1 ratios, temperature).

One rule decides who exports a `vllm:` name: **the engine's own series win.** On the vLLM engine, vLLM's
stat logger registers its series in prometheus_client's global REGISTRY (`disable_log_stats=False`); at
scrape time its `vllm:*` families are rendered here and our own families of the same name are left out, so
every name appears once and vLLM's are the truth (its running / waiting / KV-cache usage / preemptions come
from its scheduler; ours could not see vLLM's internal queue). On the transformers engine no one registers
`vllm:*` globally, so our own are rendered: the serving layer's TTFT / ITL / E2E / token histograms and
counters, and the scheduler gauges read from the engine at scrape time. That engine has no paged KV cache
and never preempts: `vllm:kv_cache_usage_perc`, `vllm:num_preemptions` and the queue / prefill-time
histograms are vLLM-engine only. Our own registry is per app (nothing global at import).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .gpu import GpuMonitor
from .types import EngineInfo, EngineStats

VLLM_PREFIX = "vllm:"
ENGINE_INDEX = "0"  # vLLM's `engine` label: the engine core's index (one engine here)
VLLM_LABELS = ("model_name", "engine")
# vLLM's default buckets (vllm/v1/metrics/buckets.py), so quantiles read the same on both engines
TIME_TO_FIRST_TOKEN_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
                               7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
INTER_TOKEN_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
                               10.0, 20.0, 40.0, 80.0)
REQUEST_LATENCY_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0,
                           240.0, 480.0, 960.0, 1920.0, 7680.0)
REQUEST_TOKENS_BUCKETS = tuple(float(m * 10 ** e) for e in range(6) for m in (1, 2, 5))  # vLLM's 1-2-5 series
FINISHED_REASONS = ("stop", "length", "abort", "error", "repetition")  # vLLM's FinishReason, all exported at 0


class _LiveCollector(Collector):
    """Gauges read at scrape time from the engine, the admission controller and the GPUs."""

    def __init__(self, stats: Callable[[], EngineStats], in_flight: Callable[[], int], gpus: GpuMonitor,
                 info: Callable[[], EngineInfo] | None, labels: list[str], finished: Callable[[], dict[str, float]]
                 ) -> None:
        self._stats, self._in_flight, self._gpus, self._info = stats, in_flight, gpus, info
        self._labels, self._finished = labels, finished

    def collect(self) -> Iterator[Metric]:
        if self._info is not None:
            info = self._info()
            family = GaugeMetricFamily("llm_engine_info", "The engine and model being served.",
                                       labels=["engine", "model", "device", "dtype", "quantization"])
            family.add_metric([info.engine, info.model_name, info.device, info.dtype, info.quantization or "none"], 1)
            yield family
        stats = self._stats()
        running = stats.running
        waiting = max(self._in_flight() - running, stats.waiting)
        yield _gauge("vllm:num_requests_running", "Number of requests in model execution batches.",
                     self._labels, running)
        yield _gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.", self._labels, waiting)
        success = CounterMetricFamily("vllm:request_success", "Count of successfully processed requests.",
                                      labels=[*VLLM_LABELS, "finished_reason"])
        counts = {**self._finished(), "abort": float(stats.aborted_total)}
        for reason in FINISHED_REASONS:
            success.add_metric([*self._labels, reason], counts.get(reason, 0.0))
        yield success
        # the transformers engine's prefix cache (on the vLLM engine, vLLM's own series replace these)
        queries = CounterMetricFamily("vllm:prefix_cache_queries", "Prefix cache queries, in terms of number "
                                      "of queried tokens.", labels=VLLM_LABELS)
        queries.add_metric(self._labels, stats.prefix_cache_queries_total)
        yield queries
        hits = CounterMetricFamily("vllm:prefix_cache_hits", "Prefix cache hits, in terms of number of "
                                   "cached tokens.", labels=VLLM_LABELS)
        hits.add_metric(self._labels, stats.prefix_cache_hits_total)
        yield hits
        yield CounterMetricFamily("llm_engine_steps", "Decode steps run by the engine.", value=stats.steps_total)
        yield CounterMetricFamily("llm_engine_step_sequences", "Sum over decode steps of the sequences each carried.",
                                  value=stats.step_sequences_total)
        yield CounterMetricFamily("llm_engine_prefills", "Prefill steps run by the engine; each admits one or "
                                  "more new sequences into the running batch.", value=stats.prefills_total)
        yield GaugeMetricFamily("llm_engine_max_batch_size", "Largest number of sequences one step carried.",
                                value=stats.max_batch_size)
        yield CounterMetricFamily("llm_engine_aborted", "Sequences our serving layer cancelled before they finished "
                                  "(the client went away).", value=stats.aborted_total)
        yield GaugeMetricFamily("llm_engine_alive", "1 while the engine loop runs.", value=1 if stats.alive else 0)
        yield from self._gpu_families()

    def _gpu_families(self) -> Iterator[Metric]:
        readings = self._gpus.read()
        if not readings:
            return
        labels = ["gpu", "name"]
        used = GaugeMetricFamily("llm_gpu_memory_used_bytes", "GPU memory in use.", labels=labels)
        total = GaugeMetricFamily("llm_gpu_memory_total_bytes", "GPU memory in all.", labels=labels)
        share = GaugeMetricFamily("llm_gpu_memory_used_ratio", "GPU memory in use, 0-1 (1 = full).", labels=labels)
        util = GaugeMetricFamily("llm_gpu_utilization_ratio", "GPU utilisation, 0-1 (1 = busy all the last "
                                 "sample period).", labels=labels)
        temp = GaugeMetricFamily("llm_gpu_temperature_celsius", "GPU temperature.", labels=labels)
        for r in readings:
            values = [str(r.index), r.name]
            used.add_metric(values, r.memory_used)
            total.add_metric(values, r.memory_total)
            share.add_metric(values, r.memory_used / r.memory_total if r.memory_total else 0.0)
            util.add_metric(values, r.utilization / 100)
            temp.add_metric(values, r.temperature)
        yield from (used, total, share, util, temp)


def _gauge(name: str, documentation: str, labels: list[str], value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=list(VLLM_LABELS))
    family.add_metric(labels, value)
    return family


class _Families:
    """What generate_latest renders: a fixed list of families (it only calls collect())."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self._families


class Metrics:
    """Our registry plus, on the vLLM engine, vLLM's own series (see the module docstring for the rule).

    The serving layer records through bound children: `ttft`, `itl`, `prompt_tokens`, `generation_tokens`
    (already labelled with model_name and engine), `finish(...)` at the end of each sequence.
    """

    def __init__(self, stats: Callable[[], EngineStats], in_flight: Callable[[], int], gpus: GpuMonitor,
                 info: Callable[[], EngineInfo] | None = None, *, engine_registry: CollectorRegistry = REGISTRY
                 ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._info, self._engine_registry = info, engine_registry
        labels = [info().model_name if info is not None else "unknown", ENGINE_INDEX]
        r, names = self.registry, list(VLLM_LABELS)
        self.requests = Counter("llm_requests", "Finished HTTP requests by endpoint and status.",
                                ["endpoint", "status"], registry=r)
        self.ttft = Histogram("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.",
                              names, buckets=TIME_TO_FIRST_TOKEN_BUCKETS, registry=r).labels(*labels)
        self.itl = Histogram("vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.",
                             names, buckets=INTER_TOKEN_LATENCY_BUCKETS, registry=r).labels(*labels)
        self.e2e = Histogram("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.",
                             names, buckets=REQUEST_LATENCY_BUCKETS, registry=r).labels(*labels)
        self.decode_time = Histogram("vllm:request_decode_time_seconds", "Histogram of time spent in DECODE phase "
                                     "for request.", names, buckets=REQUEST_LATENCY_BUCKETS, registry=r).labels(*labels)
        self.time_per_output_token = Histogram(
            "vllm:request_time_per_output_token_seconds", "Histogram of time_per_output_token_seconds per request.",
            names, buckets=INTER_TOKEN_LATENCY_BUCKETS, registry=r).labels(*labels)
        self.request_prompt_tokens = Histogram(
            "vllm:request_prompt_tokens", "Number of prefill tokens processed.", names,
            buckets=REQUEST_TOKENS_BUCKETS, registry=r).labels(*labels)
        self.request_generation_tokens = Histogram(
            "vllm:request_generation_tokens", "Number of generation tokens processed.", names,
            buckets=REQUEST_TOKENS_BUCKETS, registry=r).labels(*labels)
        self.prompt_tokens = Counter("vllm:prompt_tokens", "Number of prefill tokens processed.", names,
                                     registry=r).labels(*labels)
        self.generation_tokens = Counter("vllm:generation_tokens", "Number of generation tokens processed.", names,
                                         registry=r).labels(*labels)
        self._finished: dict[str, float] = {}
        self.auth_failures = Counter("llm_auth_failures", "Refused credentials on the API, by reason (expired, "
                                     "unknown_key, bad_signature, ...).", ["reason"], registry=r)
        self.principal_requests = Counter("llm_requests_by_principal", "Authenticated API requests, by key name "
                                          "(key:<name>) or token subject (jwt:<sub>).", ["principal"], registry=r)
        r.register(_LiveCollector(stats, in_flight, gpus, info, labels, lambda: dict(self._finished)))

    def finish(self, reason: str, *, e2e: float, decode: float, prompt_tokens: int, generation_tokens: int) -> None:
        """One sequence finished (stop or length): its latency, decode time and token counts, as vLLM records."""
        self._finished[reason] = self._finished.get(reason, 0.0) + 1
        self.e2e.observe(e2e)
        self.decode_time.observe(decode)
        if generation_tokens > 1:
            self.time_per_output_token.observe(decode / (generation_tokens - 1))
        self.request_prompt_tokens.observe(prompt_tokens)
        self.request_generation_tokens.observe(generation_tokens)

    def engine_families(self) -> list[Metric]:
        """vLLM's own `vllm:*` series, on the vLLM engine (its stat logger fills the global registry)."""
        if self._info is None or self._info().engine != "vllm":
            return []
        return [f for f in self._engine_registry.collect() if f.name.startswith(VLLM_PREFIX)]

    def render(self) -> bytes:
        engine = self.engine_families()
        theirs = {f.name for f in engine}
        ours = [f for f in self.registry.collect() if f.name not in theirs]
        families: Any = _Families(ours + engine)
        return generate_latest(families)
