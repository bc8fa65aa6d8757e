"""GPU telemetry through pynvml (nvidia-ml-py), when a GPU and its driver are present."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("inference.gpu")


@dataclass(frozen=True, slots=True)
class GpuReading:
    index: int
    name: str
    memory_used: int
    memory_total: int
    utilization: float  # percent
    temperature: float  # Celsius


class GpuMonitor:
    """Reads every NVIDIA GPU; empty when pynvml or a driver is missing (CPU machines)."""

    def __init__(self) -> None:
        self._nvml: Any = None
        self._handles: list[Any] = []
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml = pynvml
            self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        except Exception as exc:  # ImportError, NVMLError_LibraryNotFound, driver errors
            log.debug("no GPU telemetry: %s", exc)
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
                name = nvml.nvmlDeviceGetName(handle)
                readings.append(GpuReading(index, name if isinstance(name, str) else name.decode(),
                                           int(mem.used), int(mem.total), float(util.gpu), float(temp)))
            except Exception as exc:
                log.warning("GPU %d telemetry failed: %s", index, exc)
        return readings

    def close(self) -> None:
        if self._nvml:
            try:
                self._nvml.nvmlShutdown()
            except Exception:
                pass
            self._nvml = None
