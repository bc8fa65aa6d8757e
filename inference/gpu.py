"""NVIDIA GPUs through pynvml (nvidia-ml-py): the one probe and the telemetry, when a driver is present.

`probe()` / `first_gpu()` describe the cards (used by the vLLM engine's start-up sizing
and by the doctor); `GpuMonitor` reads them again at every /metrics scrape. Both open NVML through
`open_nvml()`, the seam where unit tests inject a fake pynvml module. NVML's init is reference-counted,
so a probe's init/shutdown pair never closes the monitor's handle.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, NamedTuple

log = logging.getLogger("inference.gpu")


@dataclass(frozen=True, slots=True)
class GpuInfo:
    """One card as NVML reports it."""

    index: int
    name: str
    total_bytes: int
    free_bytes: int
    capability: tuple[int, int]  # CUDA compute capability, (7, 5) on a T4
    driver_version: str  # "535.104.05"
    driver_cuda: tuple[int, int] | None  # the newest CUDA the driver supports (nvmlSystemGetCudaDriverVersion)

    @property
    def sm(self) -> str:
        return f"sm{self.capability[0]}{self.capability[1]}"

    @property
    def driver_cuda_text(self) -> str:
        return f"{self.driver_cuda[0]}.{self.driver_cuda[1]}" if self.driver_cuda else "unknown"


class GpuProbe(NamedTuple):
    gpus: tuple[GpuInfo, ...]
    error: str | None  # why there are none (no pynvml, no driver), or a card that failed to answer


@dataclass(frozen=True, slots=True)
class GpuReading:
    index: int
    name: str
    memory_used: int
    memory_total: int
    utilization: float  # percent
    temperature: float  # Celsius


def _text(value: Any) -> str:
    return value if isinstance(value, str) else bytes(value).decode()


def open_nvml(nvml: Any = None) -> tuple[Any, str | None]:
    """(the initialised pynvml module, None), or (None, why not). `nvml` replaces pynvml in tests."""
    try:
        if nvml is None:
            import pynvml as nvml
        nvml.nvmlInit()
        return nvml, None
    except Exception as exc:  # ImportError, NVMLError_LibraryNotFound, NVMLError_DriverNotLoaded, ...
        return None, f"{type(exc).__name__}: {exc}".rstrip(": ")


def _close(nvml: Any) -> None:
    try:
        nvml.nvmlShutdown()
    except Exception:
        pass


def _cuda_version(code: int) -> tuple[int, int] | None:
    """NVML's integer CUDA version (12020) as (12, 2); None for 0 or garbage."""
    code = int(code)
    return (code // 1000, code % 1000 // 10) if code > 0 else None


def probe(nvml: Any = None) -> GpuProbe:
    """Every visible NVIDIA GPU: name, memory total and free, compute capability, driver and its CUDA."""
    lib, error = open_nvml(nvml)
    if lib is None:
        return GpuProbe((), error)
    gpus: list[GpuInfo] = []
    try:
        driver = _text(lib.nvmlSystemGetDriverVersion())
        try:
            driver_cuda = _cuda_version(lib.nvmlSystemGetCudaDriverVersion())
        except Exception:
            driver_cuda = None
        for index in range(int(lib.nvmlDeviceGetCount())):
            try:
                handle = lib.nvmlDeviceGetHandleByIndex(index)
                mem = lib.nvmlDeviceGetMemoryInfo(handle)
                major, minor = lib.nvmlDeviceGetCudaComputeCapability(handle)
                gpus.append(GpuInfo(index, _text(lib.nvmlDeviceGetName(handle)), int(mem.total), int(mem.free),
                                    (int(major), int(minor)), driver, driver_cuda))
            except Exception as exc:  # a card that fell off the bus: report it, keep the others
                error = f"GPU {index} did not answer: {type(exc).__name__}"
                log.warning("%s", error)
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
    finally:
        _close(lib)
    return GpuProbe(tuple(gpus), error)


def first_gpu(nvml: Any = None) -> GpuInfo | None:
    """GPU 0 (the one vLLM uses without CUDA_VISIBLE_DEVICES tricks), or None without a GPU."""
    gpus = probe(nvml).gpus
    return gpus[0] if gpus else None


class GpuMonitor:
    """Reads every NVIDIA GPU; empty when pynvml or a driver is missing (CPU machines)."""

    def __init__(self, nvml: Any = None) -> None:
        self._nvml, error = open_nvml(nvml)
        self._handles: list[Any] = []
        if self._nvml is None:
            log.debug("no GPU telemetry: %s", error)
            return
        try:
            self._handles = [self._nvml.nvmlDeviceGetHandleByIndex(i) for i in range(self._nvml.nvmlDeviceGetCount())]
        except Exception as exc:
            log.debug("no GPU telemetry: %s", exc)
            _close(self._nvml)
            self._nvml = None

    @property
    def available(self) -> bool:
        return bool(self._handles)

    def read(self) -> list[GpuReading]:
        if not self._nvml:
            return []
        nvml, readings = self._nvml, []
        for index, handle in enumerate(self._handles):
            try:
                mem = nvml.nvmlDeviceGetMemoryInfo(handle)
                util = nvml.nvmlDeviceGetUtilizationRates(handle)
                temp = nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)
                readings.append(GpuReading(index, _text(nvml.nvmlDeviceGetName(handle)), int(mem.used),
                                           int(mem.total), float(util.gpu), float(temp)))
            except Exception as exc:
                log.warning("GPU %d telemetry failed: %s", index, exc)
        return readings

    def close(self) -> None:
        if self._nvml:
            _close(self._nvml)
            self._nvml = None
