"""The machine's speed variability (`sim.speed_variability`), measured from calibrate's speed
reference: two reference steps (a batch-1 decode, memory-bound; a short prefill, compute-bound)
each timed once every ~0.6 s through the whole calibration (`calibrate.speed_reference`), so
their log times are a record of the machine's speed over minutes.

Per resource, the semivariogram of the log times, gamma(lag) = mean of (x_i - x_j)^2 / 2 over
pairs about `lag` apart, is fitted with three independent parts:

    gamma(lag) = fast^2 + wander^2 (1 - exp(-lag / time)) + level^2 (1 - exp(-lag / level_time))

fast: a timing's own jitter (pairs at any lag differ by it); wander: spells of `time` seconds
(at most SLOWEST_WANDER_S); level: moves slower than that, which the profile cannot predict at
another moment and the simulator leaves out (`calibrate validate` checks the level instead:
`drift_line`). The jitter's shape: each timing's log time less the median of its
RESIDUAL_NEIGHBOURS nearest neighbours in time (itself left out), centred on its median and standardised, pooled over both resources, as
FAST_SHAPE_QUANTILES quantiles.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import least_squares

from calibrate.speed_track import lag_binned_pairs
from sim.speed_variability import SpeedVariability, Wander

LAG_EDGES_S = (0.0, 0.9, 1.5, 2.5, 4.0, 6.0, 9.0, 13.0, 20.0, 30.0, 45.0, 70.0, 100.0, 150.0, math.inf)
SLOWEST_WANDER_S = 60.0
MIN_SAMPLES = 40  # fewer reference timings than this say too little about the machine's moves
MIN_SPAN_S = 30.0
RESIDUAL_NEIGHBOURS = 4
FAST_SHAPE_QUANTILES = 100
METHOD = ("semivariogram of the speed reference's log timings fitted as jitter + spells "
          f"(exp. correlation, <= {SLOWEST_WANDER_S:g} s) + slower level (left out); jitter shape: "
          f"timings less the median of their {RESIDUAL_NEIGHBOURS} nearest neighbours, standardised")


def semivariogram(at_s: np.ndarray, log_t: np.ndarray, edges=LAG_EDGES_S
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per lag bin with pairs: the pairs' mean lag, mean (x_i - x_j)^2 / 2, and their count."""
    half_sq, lags, counts = lag_binned_pairs(at_s, log_t, np.asarray(edges, dtype=float))
    has = counts > 0
    return lags[has] / counts[has], half_sq[has] / counts[has], counts[has]


def _model(p: np.ndarray, lag: np.ndarray) -> np.ndarray:
    fast, wander, time_s, level, level_time_s = p
    return fast + wander * (1 - np.exp(-lag / time_s)) + level * (1 - np.exp(-lag / level_time_s))


def fit_wander(at_s: np.ndarray, log_t: np.ndarray, reference_step_s: float) -> Wander:
    """The semivariogram fit (module doc), in relative error, each bin weighted by the root of its
    pairs (capped: thousands of overlapping pairs are not thousands of independent ones)."""
    lags, gammas, counts = semivariogram(at_s, log_t)
    weight = np.sqrt(np.minimum(counts, 2000))
    floor = max(float(gammas.max()) * 1e-3, 1e-8)
    start = np.array([gammas[0] / 2, gammas[0] / 2, 3.0, gammas[-1] / 4, 2 * SLOWEST_WANDER_S])
    lo = [0, 0, 0.3, 0, SLOWEST_WANDER_S]
    hi = [1, 1, SLOWEST_WANDER_S, 1, 1e4]
    fit = least_squares(lambda p: (_model(p, lags) - gammas) / np.maximum(gammas, floor) * weight,
                        np.clip(start, np.array(lo) + 1e-9, np.array(hi) - 1e-9), bounds=(lo, hi))
    fast, wander, time_s, _, _ = fit.x
    return Wander(fast_sd=round(math.sqrt(fast), 4), wander_sd=round(math.sqrt(wander), 4),
                  wander_time_s=round(float(time_s), 3), reference_step_s=float(f"{reference_step_s:.4g}"))


def neighbours_median(values: np.ndarray, count: int) -> np.ndarray:
    """Each value's `count` nearest neighbours in order (half before, half after; fewer at the
    ends), itself left out, and their median: a residual about it has no atom at 0."""
    half = max(count // 2, 1)
    n = len(values)
    return np.array([np.median(np.concatenate((values[max(0, i - half):i], values[i + 1:i + 1 + half])))
                     for i in range(n)])


def fast_shape(series: list[np.ndarray], num: int = FAST_SHAPE_QUANTILES) -> tuple[float, ...]:
    """Quantiles at (i + 0.5) / num of the pooled, standardised residuals (module doc)."""
    pooled = []
    for log_t in series:
        residual = log_t - neighbours_median(log_t, RESIDUAL_NEIGHBOURS)
        residual -= np.median(residual)  # the cost model's time is the median step's
        sd = residual.std()
        if sd > 0:
            pooled.append(residual / sd)
    values = np.concatenate(pooled)
    return tuple(round(float(q), 4) for q in np.quantile(values, (np.arange(num) + 0.5) / num))


def measure_speed_variability(reference: dict) -> SpeedVariability | None:
    """From measurements.speed_reference ({"samples": [[at_s, memory_s, compute_s], ...],
    "memory_s", "compute_s"}); None with too few samples or too short a span to say."""
    samples = np.asarray(reference.get("samples") or [], dtype=float)
    if samples.ndim != 2 or len(samples) < MIN_SAMPLES or samples[-1, 0] - samples[0, 0] < MIN_SPAN_S:
        return None
    at_s = samples[:, 0]
    memory, compute = np.log(samples[:, 1]), np.log(samples[:, 2])
    return SpeedVariability(memory=fit_wander(at_s, memory, reference["memory_s"]),
                            compute=fit_wander(at_s, compute, reference["compute_s"]),
                            fast_shape=fast_shape([memory, compute]), method=METHOD)
