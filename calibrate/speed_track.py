"""The machine's speed over a run, from reference-step samples, and a point's timings brought to a
baseline speed. Pure numpy; the samples are taken by `calibrate.speed_reference`, whose docstring
says why and how."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

import numpy as np

WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
MIN_TIMINGS = 4  # fewer timings than this: the point's raw median is kept
SMOOTH_SAMPLES = 5  # reference samples in the running median (about 2.5 s at one per 0.5 s)


def running_median(values: list[float], width: int) -> np.ndarray:
    """Centred running median over `width` values (fewer at the ends)."""
    data = np.asarray(values, dtype=float)
    half = max(width, 1) // 2
    return np.array([np.median(data[max(0, i - half):i + half + 1]) for i in range(len(data))])


@dataclass(frozen=True)
class SpeedSample:
    at_s: float  # perf_counter time, the middle of the sample
    memory_s: float
    compute_s: float


@dataclass
class SpeedTrack:
    """Reference samples over a run and the baseline they are measured against."""

    samples: list[SpeedSample]
    memory_s: float
    compute_s: float
    smooth: int = SMOOTH_SAMPLES

    def factors(self, at_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Memory and compute factors (> 1: slower than the baseline) at the given times: the
        samples' running median over `smooth` neighbours (one sample is one noisy timing),
        interpolated in time."""
        times = [s.at_s for s in self.samples]
        memory = np.interp(at_s, times, running_median([s.memory_s for s in self.samples],
                                                       self.smooth)) / self.memory_s
        compute = np.interp(at_s, times, running_median([s.compute_s for s in self.samples],
                                                        self.smooth)) / self.compute_s
        return memory, compute

    @property
    def start_s(self) -> float:
        return self.samples[0].at_s if self.samples else 0.0

    def samples_record(self) -> list[list[float]]:
        """[seconds since the first sample, memory reference s, compute reference s] each."""
        return [[round(s.at_s - self.start_s, 3), float(f"{s.memory_s:.4g}"),
                 float(f"{s.compute_s:.4g}")] for s in self.samples]

    def spread(self) -> dict:
        """How far the machine's speed moved: the references' 10th and 90th percentile factors."""
        out = {}
        for name, base in (("memory", self.memory_s), ("compute", self.compute_s)):
            values = np.array([getattr(s, f"{name}_s") for s in self.samples]) / base
            out[name] = [round(float(np.percentile(values, 10)), 4),
                         round(float(np.percentile(values, 90)), 4)]
        return out


@dataclass
class AtSpeed:
    """A point's time at the baseline speed, and how it was found."""

    seconds: float
    weight: float  # the point's sensitivity to memory speed (1 - weight: to compute speed); nan:
    # its timings were most consistent as they were, and are kept
    raw_mad: float  # median absolute deviation of log times, before and after
    mad: float


def at_speed(times_s: list[float], stamps_s: list[float], track: SpeedTrack) -> AtSpeed:
    """The point's timings brought to the track's baseline speed (see the module doc)."""
    log_t = np.log(np.asarray(times_s))
    raw = AtSpeed(float(np.median(times_s)), float("nan"), _mad(log_t), _mad(log_t))
    if len(times_s) < MIN_TIMINGS or not track.samples:
        return raw
    memory, compute = track.factors(np.asarray(stamps_s))
    best = raw  # a reference sample is one timing: where it only adds noise, it is not used
    for w in WEIGHTS:
        adjusted = log_t - w * np.log(memory) - (1.0 - w) * np.log(compute)
        spread = _mad(adjusted)
        if spread < best.mad - 1e-12:
            best = AtSpeed(float(np.exp(np.median(adjusted))), w, raw.raw_mad, spread)
    return best


def _mad(values: np.ndarray) -> float:
    return float(np.median(np.abs(values - np.median(values))))


def baseline_of(samples: list[SpeedSample]) -> tuple[float, float]:
    """The samples' median memory and compute reference times."""
    return (statistics.median(s.memory_s for s in samples),
            statistics.median(s.compute_s for s in samples))


WANDER_BANDS_S = ((0.0, 1.0), (1.0, 5.0), (5.0, 20.0), (20.0, 80.0), (80.0, None))


def speed_wander(points: list[dict], bands=WANDER_BANDS_S) -> list[dict]:
    """How far a machine's speed wanders with time, from calibration points each timed several
    times at known moments (`times_s`, `stamps_s` on one clock): for every pair of timings of one
    point, ln(t_i / t_j); per band of |stamp_i - stamp_j|, the root of half their mean square: the
    standard deviation of one timing about another taken that far apart. Back-to-back timings
    show a step's own jitter; timings minutes apart add the machine's slow moves, which no profile
    made at another moment can predict. bands: contiguous (low, high) in seconds, the last high
    None for no bound. Each band: {"lag_s": [low, high or None], "rms": float or None without
    pairs, "pairs": count}."""
    edges = np.array([low for low, _ in bands] + [bands[-1][1] if bands[-1][1] is not None else np.inf])
    sums, counts = np.zeros(len(bands)), np.zeros(len(bands), dtype=np.int64)
    for point in points:
        times, stamps = point.get("times_s") or [], point.get("stamps_s") or []
        if len(times) < 2 or len(times) != len(stamps):
            continue
        half_sq, _, n = lag_binned_pairs(np.asarray(stamps, dtype=float), np.log(np.asarray(times, dtype=float)), edges)
        sums += half_sq
        counts += n
    return [{"lag_s": [low, high], "rms": round(math.sqrt(s / n), 4) if n else None, "pairs": int(n)}
            for (low, high), s, n in zip(bands, sums, counts)]


def lag_binned_pairs(at_s: np.ndarray, log_t: np.ndarray, edges: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair of one series' values binned by the time between them (bin b: edges[b] <= lag <
    edges[b + 1]): per bin, the sum of (x_i - x_j)^2 / 2, the sum of lags, and the count. Row by
    row: a long series' pairs need not fit in memory."""
    bins = len(edges) - 1
    half_sq, lags, counts = np.zeros(bins), np.zeros(bins), np.zeros(bins, dtype=np.int64)
    for i in range(len(log_t) - 1):
        lag = np.abs(at_s[i + 1:] - at_s[i])
        band = np.searchsorted(edges, lag, side="right") - 1
        keep = (band >= 0) & (band < bins)
        band = band[keep]
        half_sq += np.bincount(band, weights=0.5 * (log_t[i + 1:][keep] - log_t[i]) ** 2, minlength=bins)
        lags += np.bincount(band, weights=lag[keep], minlength=bins)
        counts += np.bincount(band, minlength=bins)
    return half_sq, lags, counts


def band_label(low: float, high: float | None) -> str:
    """'t < 1 s', '1-5 s', 't > 80 s': a band of times between two timings."""
    if low == 0:
        return f"t < {high:g} s"
    return f"{low:g}-{high:g} s" if high is not None else f"t > {low:g} s"


def wander_line(bands: list[dict]) -> str:
    """'+-4.9% (t < 1 s), +-5.0% (1-5 s), ...' for the bands that have pairs."""
    return ", ".join(f"±{b['rms']:.1%} ({band_label(*b['lag_s'])})" for b in bands if b["rms"] is not None)


def stored_wander(document: dict) -> list[dict] | None:
    """speed_wander of a measured profile's stored points (the fitted models' and a held-out
    model's, all timed on one clock); None for a profile without timings (a datasheet's)."""
    measurements = document.get("measurements") or {}
    points = list(measurements.get("points") or [])
    holdout = measurements.get("holdout")
    if isinstance(holdout, dict):
        points += holdout.get("points") or []
    bands = speed_wander(points)
    return bands if any(b["pairs"] for b in bands) else None


def wander_summary(bands: list[dict] | None) -> str | None:
    """The line that states a profile's speed wander (stored_wander); None without stored timings."""
    if bands is None:
        return None
    return f"speed wander at calibration (std of a point's timing about one taken t apart): {wander_line(bands)}"
