"""Drift-cancelling timing: two reference steps timed beside the sweep, and each point's timings
brought to the sweep's median machine speed.

A shared CPU VM does not run at one speed: its neighbours take memory bandwidth and cores in
phases of seconds (on the 2-vCPU AMD EPYC a batch-8 decode step moved between 15 and 24 ms within
a minute with nothing else running here). A point's median over timings spread across the run
averages that out only slowly. So the sweep also times two quick reference steps of the
calibration model, about every SAMPLE_INTERVAL_S: a batch-1 decode (weight streaming: the memory
reference) and a short prefill (GEMMs: the compute reference). At the moment of each timing the
machine's memory and compute factors are the references' times then (a running median over
SMOOTH_SAMPLES samples, interpolated between them) over their medians over the run.

How much of each factor a point feels is measured, not assumed: the two move apart (the
decode/prefill ratio of the references itself varied by +-15 %), and a step's sensitivity does
not follow the roofline's split (a long-context decode is KV-bound in the cost model but drifts
with compute on this CPU). For each point the weight w in WEIGHTS that makes its timings most
consistent is chosen, and its time at the median speed is the median of
log t - w log f_memory - (1 - w) log f_compute.

The profile stores the references, their baseline (median) times, every sample and each timing's
moment (`stamps_s`), so the correction can be redone from the profile alone. It corrects within
one run only: brought to a stored baseline in a later run, the references did not carry over (on
the same machine an hour later the memory reference ran 0.62-0.95x its calibrated time while a
second model's decode steps ran within 5 % of the cost model), so `benchmarks/calibration_fit.py`
compares raw medians.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from calibrate.speed_track import SpeedSample, SpeedTrack, baseline_of
from calibrate.sweep import Grid, Point, PointRunner

SAMPLE_INTERVAL_S = 0.5
COMPUTE_PROMPT_TOKENS = 64


def reference_points(grid: Grid) -> tuple[Point, Point]:
    """The memory reference (one sequence decoding at the grid's shortest context) and the compute
    reference (one prompt of the grid's length nearest COMPUTE_PROMPT_TOKENS)."""
    prompt = min(grid.prompt_lens, key=lambda p: (abs(math.log(p / COMPUTE_PROMPT_TOKENS)), p))
    return Point("decode", 1, min(grid.contexts)), Point("prefill", 1, prompt)


@dataclass
class SpeedReference:
    """Times the two reference steps on a runner of the calibration model."""

    point_runner: PointRunner
    memory_point: Point
    compute_point: Point
    interval_s: float = SAMPLE_INTERVAL_S
    samples: list[SpeedSample] = field(default_factory=list)
    seconds: float = 0.0  # time spent on samples

    def warm(self) -> None:
        for point in (self.memory_point, self.compute_point):
            for _ in range(2):
                self.point_runner.time_once(point)

    def sample(self) -> SpeedSample:
        began = time.perf_counter()
        memory_s = self.point_runner.time_once(self.memory_point)[0]
        compute_s = self.point_runner.time_once(self.compute_point)[0]
        ended = time.perf_counter()
        self.seconds += ended - began
        sample = SpeedSample((began + ended) / 2, memory_s, compute_s)
        self.samples.append(sample)
        return sample

    def maybe_sample(self) -> None:
        """Sample unless the last sample is recent."""
        if not self.samples or time.perf_counter() - self.samples[-1].at_s >= self.interval_s:
            self.sample()

    def finish(self) -> SpeedTrack:
        """A last sample (after the last timing), and the samples against their own medians."""
        self.sample()
        return SpeedTrack(self.samples, *baseline_of(self.samples))

    def to_dict(self, track: SpeedTrack) -> dict:
        """What the profile stores: the reference steps, their baseline times and the spread."""
        def describe(p: Point) -> dict:
            return {"kind": p.kind, "batch": p.batch, "length": p.length}

        return {"model": self.point_runner.model_name, "memory_point": describe(self.memory_point),
                "compute_point": describe(self.compute_point),
                "memory_s": float(f"{track.memory_s:.6g}"),
                "compute_s": float(f"{track.compute_s:.6g}"),
                "num_samples": len(self.samples), "sample_seconds": round(self.seconds, 1),
                "factor_p10_p90": track.spread(), "smooth_samples": track.smooth,
                "samples": track.samples_record()}

