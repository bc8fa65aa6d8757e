"""Our /metrics under vLLM's names: the list we match (vllm_metric_names.txt) against vLLM's own source, and
what inference.metrics exports against that list (names, types, labels)."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.parser import text_string_to_metric_families

from inference.gpu import GpuReading
from inference.metrics import Metrics
from inference.types import EngineInfo, EngineStats

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = Path(__file__).with_name("vllm_metric_names.txt")
CLASSES = {"_gauge_cls": "gauge", "_counter_cls": "counter", "_histogram_cls": "histogram"}


@dataclass(frozen=True)
class Series:
    name: str
    type: str
    labels: tuple[str, ...]
    engines: str  # "both" or "vllm"


def vllm_series() -> dict[str, Series]:
    out = {}
    for line in FIXTURE.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, kind, labels, engines = line.split()
            out[name] = Series(name, kind, tuple(labels.split(",")), engines)
    return out


class _Gpus:
    def read(self) -> list[GpuReading]:
        return [GpuReading(0, "T4", 3 * 2**30, 16 * 2**30, 42.0, 55.0)]


def _metrics(engine: str = "transformers", registry: CollectorRegistry | None = None,
             stats: EngineStats | None = None) -> Metrics:
    info = EngineInfo(engine, "SmolLM2-135M-Instruct", "/m", 2048, "cpu", "float32")
    return Metrics(lambda: stats or EngineStats(running=1, aborted_total=2), lambda: 3, _Gpus(),  # type: ignore[arg-type]
                   lambda: info, engine_registry=registry or CollectorRegistry())


def _exercised(metrics: Metrics) -> dict:
    metrics.prompt_tokens.inc(12)
    metrics.ttft.observe(0.05)
    metrics.itl.observe(0.02)
    metrics.generation_tokens.inc(5)
    metrics.finish("stop", e2e=0.4, decode=0.1, prompt_tokens=12, generation_tokens=5)
    return {f.name: f for f in text_string_to_metric_families(metrics.render().decode())}


def test_our_vllm_series_match_vllms_names_types_and_labels() -> None:
    expected = vllm_series()
    families = _exercised(_metrics())
    ours = {name: f for name, f in families.items() if name.startswith("vllm:") and not name.endswith("_created")}
    for name, family in ours.items():
        assert name in expected, f"{name} is not one of vLLM's series"
        assert family.type == expected[name].type, name
        for sample in family.samples:
            assert set(sample.labels) - {"le"} == set(expected[name].labels), (name, sample)
            assert sample.labels["model_name"] == "SmolLM2-135M-Instruct" and sample.labels["engine"] == "0"
    assert set(ours) == {n for n, s in expected.items() if s.engines == "both"}


def test_values_read_like_vllms() -> None:
    families = _exercised(_metrics())

    def value(name: str, **labels: str) -> float:
        return next(s.value for s in families[name.split("{")[0]].samples
                    if s.name == name.split("{")[0] + ("" if families[name].type == "gauge" else "_total")
                    and labels.items() <= s.labels.items())

    assert value("vllm:num_requests_running") == 1 and value("vllm:num_requests_waiting") == 2
    assert value("vllm:request_success", finished_reason="stop") == 1
    assert value("vllm:request_success", finished_reason="abort") == 2  # the engine's cancelled sequences
    assert value("vllm:request_success", finished_reason="length") == 0  # every reason exported, as vLLM does
    assert value("vllm:prompt_tokens") == 12 and value("vllm:generation_tokens") == 5
    ratio = {s.name: s.value for s in families["llm_gpu_utilization_ratio"].samples}
    assert ratio["llm_gpu_utilization_ratio"] == pytest.approx(0.42)
    assert next(iter(families["llm_gpu_memory_used_ratio"].samples)).value == pytest.approx(3 / 16)
    assert "llm_gpu_utilization_percent" not in families


def test_on_the_vllm_engine_vllms_own_series_replace_ours() -> None:
    registry = CollectorRegistry()
    running = Gauge("vllm:num_requests_running", "vLLM's", ["model_name", "engine"], registry=registry)
    running.labels("SmolLM2-135M-Instruct", "0").set(7)
    Gauge("python_unrelated", "not vLLM's", registry=registry).set(1)
    text = _metrics("vllm", registry).render().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert text.count("# TYPE vllm:num_requests_running ") == 1
    assert [s.value for s in families["vllm:num_requests_running"].samples] == [7]
    assert "python_unrelated" not in families
    assert "vllm:prompt_tokens" in families  # ours where vLLM has not registered one
    # the transformers engine never reads the global registry
    assert "python_unrelated" not in _metrics("transformers", registry).render().decode()


def _installed_loggers() -> Path:
    found = sorted(ROOT.glob(".venv-vllm/lib/python3*/site-packages/vllm/v1/metrics/loggers.py"))
    if not found:
        pytest.skip("vLLM is not installed in .venv-vllm (make venv-vllm)")
    return found[0]


def _declared(source: str) -> dict[str, Series]:
    """Every `self._<kind>_cls(name="vllm:...", labelnames=...)` in vLLM's PrometheusStatLogger."""
    out = {}
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in CLASSES):
            continue
        keywords = {k.arg: k.value for k in node.keywords}
        name = keywords.get("name")
        if not (isinstance(name, ast.Constant) and str(name.value).startswith("vllm:")):
            continue
        labels = keywords.get("labelnames")
        extra: list[str] = []
        if isinstance(labels, ast.BinOp) and isinstance(labels.right, ast.List):
            extra = [str(e.value) for e in labels.right.elts if isinstance(e, ast.Constant)]
            labels = labels.left
        if isinstance(labels, ast.Name) and labels.id == "labelnames":
            names = ("model_name", "engine", *extra)
        elif isinstance(labels, ast.List):
            names = tuple(str(e.value) for e in labels.elts if isinstance(e, ast.Constant))
        else:
            continue
        out[str(name.value)] = Series(str(name.value), CLASSES[node.func.attr], names, "vllm")
    return out


def test_the_list_is_what_the_installed_vllm_declares() -> None:
    loggers = _installed_loggers()
    version = re.search(r"__version__ = version = '([^']+)'", (loggers.parents[2] / "_version.py").read_text())[1]
    assert f"vLLM {version}," in FIXTURE.read_text(), f"the fixture names another vLLM than the installed {version}"
    declared = _declared(loggers.read_text())
    assert "vllm:num_requests_running" in declared  # the parse found vLLM's declarations
    for name, series in vllm_series().items():
        assert name in declared, f"vLLM {version} declares no {name}"
        assert declared[name].type == series.type, name
        assert set(declared[name].labels) == set(series.labels), name
