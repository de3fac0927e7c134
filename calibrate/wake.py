"""The machine's wake-up: how much longer a step takes when the engine slept before it.

A serving engine sleeps between arrivals, and the step that follows pays for waking: thread-pool
workers parked on a futex, a vCPU the hypervisor descheduled (on the 2-vCPU EPYC VM a step after a
2 ms sleep took up to 1.4x a back-to-back one), a GPU's idle clocks. The sweep times every point
back to back, so its fit never sees this. Measured here: pairs of the same step, one right after
a warm step and one after sleeping `idle_s`, interleaved so the machine's drift falls on both; the
wake-up is the difference of the two medians, never below 0 (`cost_model.wake_overhead_s`, added
by the simulator to the first step after an idle wait).
"""

from __future__ import annotations

import statistics

from calibrate.sweep import Point, PointRunner

WAKE_IDLE_S = 0.02  # the sleep before a woken step: longer than thread pools spin, shorter than most gaps
WAKE_PAIRS = 15


def measure_wake(point_runner: PointRunner, point: Point, pairs: int = WAKE_PAIRS,
                 idle_s: float = WAKE_IDLE_S) -> dict:
    """measurements.wake: the point's median seconds back to back and after idle_s of sleep, and
    their difference (wake_overhead_s)."""
    back_to_back, after_idle = [], []
    point_runner.time_once(point)
    for _ in range(pairs):
        point_runner.time_once(point)  # the step before the back-to-back one
        back_to_back.append(point_runner.time_once(point)[0])
        after_idle.append(point_runner.time_once(point, idle_s=idle_s)[0])
    back_s, woken_s = statistics.median(back_to_back), statistics.median(after_idle)
    return {"point": {"kind": point.kind, "batch": point.batch, "length": point.length},
            "model": point_runner.model_name, "idle_s": idle_s, "pairs": pairs,
            "back_to_back_s": float(f"{back_s:.6g}"), "after_idle_s": float(f"{woken_s:.6g}"),
            "wake_overhead_s": float(f"{max(woken_s - back_s, 0.0):.6g}")}
