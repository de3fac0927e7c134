"""The machine's wake-up: how much longer a step takes when the engine slept before it.

A serving engine sleeps between arrivals, and the step that wakes it runs slower: thread-pool
workers are parked, the hypervisor has descheduled a vCPU, a GPU has lowered its clocks; more so
the longer it slept. On the 2-vCPU EPYC VM with quiet neighbours, after a 30 ms / 200 ms sleep a
33 ms prefill took +3-5 %, a 106 ms prefill +5-7 % (so the cost grows with the step, roughly in
proportion, rather than being a fixed delay) and a 12 ms decode +15 %; with busy neighbours,
tens of ms more. The sweep times every point back to back, so its fit never sees this.

Measured here on the compute reference step (the prefill of one short prompt: the step an arrival
that wakes the engine brings): the step right after a warm step, and after sleeping each of
WAKE_IDLES_S, in shuffled rounds so the machine's drift falls on all of them. The slowdown at an
idle is the ratio of its median to the back-to-back median, minus one, made non-decreasing in
idle (a longer sleep never wakes faster; the medians' noise would say so). It is
`cost_model.wake_slowdown_curve`: the simulator stretches the first step after every idle wait by
it (`sim.spec.profile.wake_slowdown`).
"""

from __future__ import annotations

import random
import statistics
import time

from calibrate.sweep import Point, PointRunner

WAKE_IDLES_S = (0.005, 0.03, 0.2)  # gaps between arrivals: short, typical, long
MIN_ROUNDS, MAX_ROUNDS = 5, 15


def measure_wake(point_runner: PointRunner, point: Point, budget_s: float, seed: int = 0) -> dict:
    """measurements.wake: the point's median seconds back to back and after each idle sleep, and
    the wake-up's slowdown curve from them. Rounds continue while budget_s lasts (at least
    MIN_ROUNDS)."""
    rng = random.Random(seed)
    back_to_back: list[float] = []
    after: dict[float, list[float]] = {idle: [] for idle in WAKE_IDLES_S}
    began = time.perf_counter()
    point_runner.time_once(point)
    rounds = 0
    while rounds < MAX_ROUNDS and (rounds < MIN_ROUNDS or time.perf_counter() - began < budget_s):
        order = [0.0, *WAKE_IDLES_S]
        rng.shuffle(order)
        for idle in order:
            point_runner.time_once(point)  # the step before: every timed step follows one
            seconds = point_runner.time_once(point, idle_s=idle)[0]
            (after[idle] if idle else back_to_back).append(seconds)
        rounds += 1
    back_s = statistics.median(back_to_back)
    curve, slowdown = [], 0.0
    for idle in WAKE_IDLES_S:
        slowdown = max(slowdown, statistics.median(after[idle]) / back_s - 1.0)
        curve.append([idle, round(slowdown, 4)])
    return {"point": {"kind": point.kind, "batch": point.batch, "length": point.length},
            "model": point_runner.model_name, "rounds": rounds,
            "back_to_back_s": float(f"{back_s:.6g}"),
            "after_idle_s": [[idle, float(f"{statistics.median(after[idle]):.6g}")] for idle in WAKE_IDLES_S],
            "wake_slowdown_curve": curve}
