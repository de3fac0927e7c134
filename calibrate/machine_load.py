"""How busy the rest of the machine was while we measured.

CPU timings taken beside another busy process are badly skewed (a thread of a parallel GEMM waits
for its descheduled peer: steps of a few ms can take 10x longer), so the sweep watches the CPU time
other processes use during each measurement: Linux /proc/stat (all CPUs, including time stolen by
the hypervisor) minus this process's own CPU time, as a share of wall time x CPUs. Without
/proc/stat (not Linux) the share is unknown (None).
"""

from __future__ import annotations

import os
import time

Mark = tuple[float | None, float, float, float | None]  # busy, own CPU, wall, steal seconds


class ForeignLoad:
    """Share of all CPUs used by other processes between `start()` and `share(mark)`."""

    def __init__(self) -> None:
        self.tick_s = 1.0 / os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 0.01
        self.num_cpus = os.cpu_count() or 1

    def _fields(self) -> list[int] | None:
        try:
            with open("/proc/stat") as fh:
                return [int(v) for v in fh.readline().split()[1:9]]
        except (OSError, ValueError):
            return None

    def _busy_and_steal_s(self) -> tuple[float | None, float | None]:
        """CPU seconds busy (all CPUs, steal included) and stolen, since boot: one read."""
        fields = self._fields()
        if fields is None:
            return None, None
        user, nice, system, _idle, _iowait, irq, softirq, steal = fields
        return (user + nice + system + irq + softirq + steal) * self.tick_s, steal * self.tick_s

    def start(self) -> Mark:
        times = os.times()
        busy, steal = self._busy_and_steal_s()
        return busy, times.user + times.system, time.perf_counter(), steal

    def share(self, mark: Mark) -> float | None:
        busy0, own0, wall0, _ = mark
        busy1 = self._busy_and_steal_s()[0]
        if busy0 is None or busy1 is None:
            return None
        times = os.times()
        foreign = (busy1 - busy0) - (times.user + times.system - own0)
        wall = time.perf_counter() - wall0
        # /proc/stat counts in clock ticks (10 ms): forgive two ticks of rounding and daemons
        return max(0.0, foreign - 2 * self.tick_s) / max(wall * self.num_cpus, 1e-9)

    def steal_share(self, mark: Mark) -> float | None:
        """Share of all CPUs the hypervisor gave to other guests since `start()` (None if unknown):
        a cloud VM's neighbours show up here, not as processes."""
        steal0, steal1 = mark[3], self._busy_and_steal_s()[1]
        if steal0 is None or steal1 is None:
            return None
        wall = time.perf_counter() - mark[2]
        return max(0.0, steal1 - steal0) / max(wall * self.num_cpus, 1e-9)
