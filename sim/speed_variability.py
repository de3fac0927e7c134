"""The machine's speed from step to step: what a profile's point times (medians) leave out.

A calibrated profile predicts a step's *median* time at the machine's *median* speed. A real
machine's steps scatter around it, and a shared cloud VM's by a lot: on the 2-vCPU AMD EPYC the
same batch-1 decode step takes 0.8x to 1.6x its median within one minute, in spells of seconds
(its neighbours' memory traffic) plus a step's own jitter with a long tail (a descheduled vCPU).
Means barely notice; tails are made of it: a request that arrives in a slow spell waits longer
for its first token and decodes slower. Without it a simulation predicts tails that are too light.

Modelled per resource (memory-bound decode steps, compute-bound steps with prompt tokens), in the
log of a step's time:

  * wander: a stationary Gaussian process (Ornstein-Uhlenbeck) of standard deviation `wander_sd`
    whose correlation decays as exp(-lag / wander_time_s): the machine's slow spells;
  * jitter: each step's own, independent draw: `fast_sd` for a step as long as the reference step
    it was measured on (`reference_step_s`), shrinking as 1/sqrt(time) for longer steps (a longer
    step averages more of the machine's independent moments); its shape (right-skewed, a long
    tail of stalls) is `fast_shape`, the measured quantiles of a standardised jitter.

Both have median 0, so the median step keeps the cost model's time and a step's mean is above it.
Moves slower than a minute are not in the process (calibrate fits them apart and leaves them out):
a profile made at one moment cannot predict the level of another, and `calibrate validate` warns
when the machine has moved (`calibrate.validate.drift_line`).

Measured by `calibrate` from its speed reference (`calibrate.speed_variability`); datasheet
profiles have none, and then every step takes its cost-model time. A scenario turns it off with
`deployment.speed_variability = false`. One `SpeedProcess` per replica, from a seeded generator:
same scenario, seed and draw => the same steps.

A run of decode steps (the engine's closed-form runs) takes its factors in one go
(`SpeedProcess.memory_run`): the same process, stepped exactly over each step's actual start, at
a fraction of one simulated event per step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Wander:
    """One resource's speed over time (see the module doc); standard deviations are of ln(time)."""

    fast_sd: float
    wander_sd: float
    wander_time_s: float
    reference_step_s: float

    def __post_init__(self) -> None:
        for name in ("fast_sd", "wander_sd"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0 <= value <= 2):
                raise ValueError(f"{name}: expected 0 <= x <= 2, got {value!r}")
        for name in ("wander_time_s", "reference_step_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name}: expected a positive number, got {value!r}")

    def to_dict(self) -> dict:
        return {"fast_sd": self.fast_sd, "wander_sd": self.wander_sd, "wander_time_s": self.wander_time_s,
                "reference_step_s": self.reference_step_s}


@dataclass(frozen=True)
class SpeedVariability:
    """A profile's cost_model.speed_variability: memory- and compute-bound wander, and the
    jitter's shape as quantiles of a standardised draw at probabilities (i + 0.5) / n, rising."""

    memory: Wander
    compute: Wander
    fast_shape: tuple[float, ...]
    method: str = ""

    def __post_init__(self) -> None:
        shape = self.fast_shape
        if len(shape) < 3 or any(not math.isfinite(q) for q in shape):
            raise ValueError(f"fast_shape: expected at least 3 finite quantiles, got {list(shape)!r}")
        if any(b < a for a, b in zip(shape, shape[1:])):
            raise ValueError("fast_shape: expected quantiles in rising order")

    def to_dict(self) -> dict:
        return {"method": self.method, "memory": self.memory.to_dict(), "compute": self.compute.to_dict(),
                "fast_shape": list(self.fast_shape)}


def ou_step(log: float, lag_s: float, w: Wander, normal: float) -> float:
    """The wander's ln factor lag_s later, from log, given one standard normal draw: an
    Ornstein-Uhlenbeck step over any lag is exact in one Gaussian draw."""
    keep = math.exp(-lag_s / w.wander_time_s)
    return log * keep + w.wander_sd * math.sqrt(1.0 - keep * keep) * normal


class SpeedProcess:
    """One replica's machine speed: factor() is the multiplier of a step's cost-model time.
    The two wanders advance lazily (exactly: an Ornstein-Uhlenbeck step over any lag is one
    Gaussian draw), each from its stationary distribution at time 0."""

    def __init__(self, variability: SpeedVariability, rng: np.random.Generator) -> None:
        self.variability = variability
        self.rng = rng
        self._wanders = (variability.memory, variability.compute)
        self._log = [float(rng.normal(0.0, w.wander_sd)) for w in self._wanders]
        self._at_s = [0.0, 0.0]
        n = len(variability.fast_shape)
        self._probs = (np.arange(n) + 0.5) / n
        self._shape = np.asarray(variability.fast_shape, dtype=float)
        self._run: tuple[float, float, list[float], list[float]] | None = None  # see memory_run

    def wander(self, now_s: float, is_memory_bound: bool) -> float:
        """ln of the resource's slow speed factor at now_s (times never go back)."""
        k = 0 if is_memory_bound else 1
        w = self._wanders[k]
        lag = now_s - self._at_s[k]
        if lag > 0 and w.wander_sd > 0:
            self._log[k] = ou_step(self._log[k], lag, w, float(self.rng.standard_normal()))
            self._at_s[k] = now_s
        return self._log[k]

    def factor(self, now_s: float, step_s: float, is_memory_bound: bool) -> float:
        """A step of cost-model time step_s starting at now_s takes this many times as long."""
        w = self._wanders[0 if is_memory_bound else 1]
        slow = self.wander(now_s, is_memory_bound)
        if w.fast_sd <= 0:
            return math.exp(slow)
        sd = w.fast_sd * math.sqrt(min(1.0, w.reference_step_s / step_s)) if step_s > 0 else w.fast_sd
        draw = float(np.interp(self.rng.random(), self._probs, self._shape))
        return math.exp(slow + sd * draw)

    def memory_run(self, start_s: float, step_s: np.ndarray, gap_s: float) -> np.ndarray:
        """Factors of consecutive memory-bound steps of cost-model times step_s, the first starting
        at start_s and each followed by the engine's loop gap_s: the steps factor() would give one
        by one (other draws). The process then stands at the last step's start; when only the
        first k of them ran, keep_memory_run(k) puts it at the k-th's (k = 0: where it was)."""
        w = self.variability.memory
        n = len(step_s)
        if w.fast_sd > 0:
            sd = w.fast_sd * np.sqrt(np.minimum(1.0, w.reference_step_s / np.maximum(step_s, 1e-300)))
            jitter = (sd * np.interp(self.rng.random(n), self._probs, self._shape)).tolist()
        else:
            jitter = [0.0] * n
        normals = self.rng.standard_normal(n).tolist() if w.wander_sd > 0 else None
        log, at_s = self._log[0], self._at_s[0]
        self._run = (log, at_s, [], [])
        logs, starts = self._run[2], self._run[3]
        factors = []
        t = start_s
        for j, nominal_s in enumerate(step_s.tolist()):
            lag = t - at_s
            if lag > 0 and normals is not None:
                log = ou_step(log, lag, w, normals[j])
                at_s = t
            f = math.exp(log + jitter[j])
            factors.append(f)
            logs.append(log)
            starts.append(at_s)
            t += nominal_s * f + gap_s
        self._log[0], self._at_s[0] = log, at_s
        return np.asarray(factors)

    def keep_memory_run(self, num_steps: int) -> None:
        """Only the first num_steps of the last memory_run ran: the process goes back to the last
        of them (their draws stand; the dropped steps' draws are never seen)."""
        if self._run is None:
            return
        log, at_s, logs, starts = self._run
        if num_steps > 0:
            log, at_s = logs[num_steps - 1], starts[num_steps - 1]
        self._log[0], self._at_s[0] = log, at_s
        self._run = None
