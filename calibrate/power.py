"""Power and energy meters for calibration: NVML on NVIDIA GPUs, RAPL on CPUs, else a TDP estimate.

Every meter measures a timed region the same way::

    with meter.measure() as reading:
        run_steps()
    reading.joules, reading.seconds, reading.watts

* `nvml`: the GPU's total-energy counter (`nvmlDeviceGetTotalEnergyConsumption`, mJ, Volta and
  later); on GPUs without it, board power (`nvmlDeviceGetPowerUsage`) sampled every 10 ms by a
  background thread and integrated (trapezoids). nvidia-ml-py is imported lazily.
* `rapl`: the package energy counters under /sys/class/powercap (intel-rapl:N, one per socket;
  AMD exposes the same interface), with wrap-around handled via max_energy_range_uj.
* `estimated-from-tdp`: no counter is readable (a VM, a container without /sys/class/powercap
  access, a laptop without RAPL). Power is *estimated* as idle + (TDP - idle) x utilisation, where
  utilisation is this process's CPU time over the region divided by wall time x usable CPUs. TDP is
  `--tdp-w` when given, else DEFAULT_TDP_W_PER_CPU per usable CPU. Such readings carry
  `is_estimated = True` and the profile says so; they are never reported as measured.

Idle power is measured (meter over a sleep) for `nvml` and `rapl`; for the estimate it is
DEFAULT_IDLE_FRACTION x TDP.
"""

from __future__ import annotations

import glob
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

# Server CPUs of 2023-25 draw about 2.6-10 W per core at TDP (AMD EPYC 9554: 360 W / 64 cores =
# 5.6 W; EPYC 9965: 500 W / 192 = 2.6 W; Xeon 8480+: 350 W / 56 = 6.3 W). A cloud vCPU is usually
# one SMT thread, half a core; 5 W per usable CPU is a round middle figure for a busy vCPU's share
# of package power. Idle package power is taken as 30 % of TDP (typical of server parts).
DEFAULT_TDP_W_PER_CPU = 5.0
DEFAULT_IDLE_FRACTION = 0.3
# A GPU whose NVML cannot be read and no --tdp-w: a mid-range data-centre card's board power.
DEFAULT_ACCELERATOR_TDP_W = 300.0
POWERCAP_ROOT = Path("/sys/class/powercap")


@dataclass
class Reading:
    """Energy over one measured region; filled in when the `with` block exits."""

    seconds: float = 0.0
    joules: float | None = None
    is_estimated: bool = False
    utilisation: float | None = None  # estimated meters only: CPU busy fraction

    @property
    def watts(self) -> float | None:
        if self.joules is None or self.seconds <= 0:
            return None
        return self.joules / self.seconds


@dataclass
class EnergyMeter:
    """Base meter: `measure()` times a region; subclasses add the joules."""

    method: str = "none"
    is_estimated: bool = True
    details: dict = field(default_factory=dict)

    @contextmanager
    def measure(self) -> Iterator[Reading]:
        reading = Reading(is_estimated=self.is_estimated)
        start = time.perf_counter()
        try:
            yield reading
        finally:
            reading.seconds = time.perf_counter() - start

    def idle_w(self, seconds: float = 1.0) -> float:
        """Power with nothing running, measured over `seconds` where a counter exists."""
        with self.measure() as reading:
            time.sleep(seconds)
        return reading.watts or 0.0

    def close(self) -> None:
        pass


class NvmlMeter(EnergyMeter):
    """NVIDIA GPU energy: the total-energy counter, or sampled board power."""

    def __init__(self, device_index: int = 0) -> None:
        import pynvml  # lazy: nvidia-ml-py is only needed on NVIDIA machines

        pynvml.nvmlInit()
        self._nvml = pynvml
        self._handle = pynvml.nvmlDeviceGetHandleByIndex(device_index)
        try:
            pynvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)
            self._has_counter = True
        except pynvml.NVMLError:
            self._has_counter = False
        source = "total-energy-counter" if self._has_counter else "power-sampling-10ms"
        super().__init__(method="nvml", is_estimated=False,
                         details={"device_index": device_index, "source": source})

    def _power_w(self) -> float:
        return self._nvml.nvmlDeviceGetPowerUsage(self._handle) / 1000.0

    @contextmanager
    def measure(self) -> Iterator[Reading]:
        reading = Reading(is_estimated=False)
        if self._has_counter:
            start_mj = self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)
            start = time.perf_counter()
            try:
                yield reading
            finally:
                reading.seconds = time.perf_counter() - start
                end_mj = self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)
                reading.joules = (end_mj - start_mj) / 1000.0
            return
        samples: list[tuple[float, float]] = [(time.perf_counter(), self._power_w())]
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.01):
                samples.append((time.perf_counter(), self._power_w()))

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        start = samples[0][0]
        try:
            yield reading
        finally:
            stop.set()
            thread.join()
            samples.append((time.perf_counter(), self._power_w()))
            reading.seconds = samples[-1][0] - start
            reading.joules = sum((t1 - t0) * (p0 + p1) / 2.0
                                 for (t0, p0), (t1, p1) in zip(samples, samples[1:]))

    def close(self) -> None:
        try:
            self._nvml.nvmlShutdown()
        except self._nvml.NVMLError:
            pass


class RaplMeter(EnergyMeter):
    """CPU package energy from the powercap (RAPL) counters of every socket."""

    def __init__(self, zones: list[Path]) -> None:
        self._zones = zones
        self._max_uj = [int((zone / "max_energy_range_uj").read_text()) for zone in zones]
        super().__init__(method="rapl", is_estimated=False,
                         details={"zones": [str(z) for z in zones]})

    def _read_uj(self) -> list[int]:
        return [int((zone / "energy_uj").read_text()) for zone in self._zones]

    @contextmanager
    def measure(self) -> Iterator[Reading]:
        reading = Reading(is_estimated=False)
        before = self._read_uj()
        start = time.perf_counter()
        try:
            yield reading
        finally:
            reading.seconds = time.perf_counter() - start
            after = self._read_uj()
            total = 0
            for b, a, wrap in zip(before, after, self._max_uj):
                total += a - b if a >= b else a + wrap - b
            reading.joules = total / 1e6


class TdpEstimateMeter(EnergyMeter):
    """Estimated CPU power: idle + (TDP - idle) x this process's CPU utilisation. Not a measurement."""

    def __init__(self, tdp_w: float, num_cpus: int, tdp_source: str) -> None:
        self.tdp_w = tdp_w
        self.num_cpus = max(num_cpus, 1)
        self.estimated_idle_w = DEFAULT_IDLE_FRACTION * tdp_w
        super().__init__(method="estimated-from-tdp", is_estimated=True,
                         details={"tdp_w": tdp_w, "tdp_source": tdp_source, "num_cpus": self.num_cpus,
                                  "idle_fraction": DEFAULT_IDLE_FRACTION,
                                  "formula": "idle_w + (tdp_w - idle_w) * process_cpu_s / (wall_s * num_cpus)"})

    @contextmanager
    def measure(self) -> Iterator[Reading]:
        reading = Reading(is_estimated=True)
        cpu0 = _process_cpu_s()
        start = time.perf_counter()
        try:
            yield reading
        finally:
            reading.seconds = time.perf_counter() - start
            busy = (_process_cpu_s() - cpu0) / max(reading.seconds * self.num_cpus, 1e-9)
            reading.utilisation = min(max(busy, 0.0), 1.0)
            watts = self.estimated_idle_w + (self.tdp_w - self.estimated_idle_w) * reading.utilisation
            reading.joules = watts * reading.seconds

    def idle_w(self, seconds: float = 0.0) -> float:
        return self.estimated_idle_w


def _process_cpu_s() -> float:
    times = os.times()
    return times.user + times.system


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def readable_rapl_zones(root: Path = POWERCAP_ROOT) -> list[Path]:
    """Top-level package zones (intel-rapl:N, not their sub-zones) whose counter can be read."""
    zones = []
    for path in sorted(glob.glob(str(root / "intel-rapl:*"))):
        zone = Path(path)
        if zone.name.count(":") != 1:
            continue
        try:
            int((zone / "energy_uj").read_text())
            int((zone / "max_energy_range_uj").read_text())
        except (OSError, ValueError):
            continue
        zones.append(zone)
    return zones


def make_meter(device_type: str, device_index: int = 0, tdp_w: float | None = None) -> EnergyMeter:
    """The best meter this machine offers for the device: nvml > rapl > estimate from TDP."""
    if device_type == "cuda":
        try:
            return NvmlMeter(device_index)
        except Exception:  # no nvidia-ml-py, no driver, not an NVIDIA device: fall through
            pass
    if device_type == "cpu":
        zones = readable_rapl_zones()
        if zones:
            return RaplMeter(zones)
        cpus = usable_cpus()
        if tdp_w is not None:
            return TdpEstimateMeter(tdp_w, cpus, "--tdp-w")
        return TdpEstimateMeter(DEFAULT_TDP_W_PER_CPU * cpus, cpus,
                                f"default {DEFAULT_TDP_W_PER_CPU} W per usable CPU x {cpus}")
    # a GPU without NVML: its utilisation is taken as the host process's (which waits on it)
    if tdp_w is not None:
        return TdpEstimateMeter(tdp_w, 1, "--tdp-w; device busy fraction = host process's")
    return TdpEstimateMeter(DEFAULT_ACCELERATOR_TDP_W, 1,
                            f"default {DEFAULT_ACCELERATOR_TDP_W} W accelerator; no meter readable")
