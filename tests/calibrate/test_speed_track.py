"""Drift-cancelling timing: a point's timings brought to the run's median machine speed."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from calibrate.speed_track import (MIN_TIMINGS, WANDER_BANDS_S, SpeedSample, SpeedTrack, at_speed,
                                   baseline_of, running_median, speed_wander, stored_wander, wander_line)


def drifting_track(num: int = 240, smooth: int = 1) -> SpeedTrack:
    """Samples every 0.5 s; memory and compute speeds wander apart (as a shared VM's neighbours
    take bandwidth or cores), memory by up to 30 %, compute by up to 15 %."""
    samples = [SpeedSample(0.5 * i, 0.010 * (1 + 0.3 * math.sin(0.5 * i / 7)),
                           0.030 * (1 + 0.15 * math.sin(0.5 * i / 11 + 1))) for i in range(num)]
    return SpeedTrack(samples, *baseline_of(samples), smooth=smooth)


def timings(track: SpeedTrack, nominal_s: float, memory_share: float, stamps: list[float]
            ) -> list[float]:
    memory, compute = track.factors(np.asarray(stamps))
    return [nominal_s * m ** memory_share * c ** (1 - memory_share) for m, c in zip(memory, compute)]


# timings taken mostly while memory was slow: a plain median is biased there
SLOW_MEMORY_STAMPS = [0.5 * i + 0.1 for i in range(240) if math.sin(0.5 * i / 7) > -0.2][::3]


def test_a_memory_bound_point_is_brought_to_the_median_speed() -> None:
    track = drifting_track()
    times = timings(track, 0.020, 1.0, SLOW_MEMORY_STAMPS)
    result = at_speed(times, SLOW_MEMORY_STAMPS, track)
    assert float(np.median(times)) > 0.020 * 1.05  # measured mostly while memory was slow
    assert result.weight == 1.0
    assert result.seconds == pytest.approx(0.020, rel=1e-9)
    assert result.mad < 1e-9 < result.raw_mad


def test_a_compute_bound_point_follows_the_compute_reference() -> None:
    track = drifting_track()
    stamps = [0.5 * i + 0.2 for i in range(240) if math.sin(0.5 * i / 11 + 1) > 0][::3]
    times = timings(track, 0.5, 0.0, stamps)
    assert float(np.median(times)) > 0.5 * 1.03  # measured mostly while compute was slow
    result = at_speed(times, stamps, track)
    assert result.weight == 0.0
    assert result.seconds == pytest.approx(0.5, rel=1e-9)


def test_a_point_that_does_not_move_with_the_references_keeps_its_median() -> None:
    track = drifting_track()
    rng = np.random.default_rng(3)
    stamps = [0.5 * i + 0.3 for i in range(0, 240, 4)]
    times = list(0.05 * np.exp(rng.normal(0, 0.01, len(stamps))))
    result = at_speed(times, stamps, track)
    assert math.isnan(result.weight)
    assert result.seconds == float(np.median(times))


def test_too_few_timings_are_not_corrected() -> None:
    track = drifting_track()
    stamps = SLOW_MEMORY_STAMPS[:MIN_TIMINGS - 1]
    result = at_speed(timings(track, 0.02, 1.0, stamps), stamps, track)
    assert math.isnan(result.weight)


def test_smoothing_keeps_phases_and_drops_a_single_outlier() -> None:
    values = [1.0] * 10 + [1.3] * 10
    values[4] = 5.0  # one noisy sample
    smoothed = running_median(values, 5)
    assert smoothed[4] == 1.0
    assert list(smoothed[:3]) == [1.0] * 3 and list(smoothed[-3:]) == [1.3] * 3
    assert list(running_median(values, 1)) == values


def test_the_track_records_its_samples_relative_to_the_first() -> None:
    track = drifting_track(num=3)
    record = track.samples_record()
    assert [row[0] for row in record] == [0.0, 0.5, 1.0]
    assert record[0][1:] == [0.01, pytest.approx(0.030 * (1 + 0.15 * math.sin(1)), rel=1e-3)]
    low, high = track.spread()["memory"]
    assert low <= 1.0 <= high


# ---- speed wander: how far one step's time moves with the time between its timings --------------
def _point(times: list[float], stamps: list[float]) -> dict:
    return {"times_s": times, "stamps_s": stamps}


def _band(bands: list[dict], low: float) -> dict:
    return next(b for b in bands if b["lag_s"][0] == low)


def test_independent_jitter_shows_as_its_own_std_at_every_lag() -> None:
    """For timings that scatter independently by sigma (log), one timing about another is sigma
    at every distance apart: the figure is a per-timing std, not the difference's."""
    rng = np.random.default_rng(3)
    stamps = list(np.arange(0.0, 400.0, 0.5))
    points = [_point(list(0.02 * np.exp(rng.normal(0.0, 0.05, len(stamps)))), stamps) for _ in range(3)]
    bands = speed_wander(points)
    assert [b["lag_s"] for b in bands] == [list(b) for b in WANDER_BANDS_S]
    for b in bands:
        assert b["rms"] == pytest.approx(0.05, rel=0.1)


def test_a_slow_move_of_the_machine_shows_only_between_timings_far_apart() -> None:
    """A machine 25% slower in the second half of the run: back-to-back timings agree, timings
    a minute or more apart do not, which is what a profile made at one moment cannot predict."""
    stamps = [0.25 * i for i in range(800)]  # 0-200 s
    times = [0.02 * (1.25 if s >= 100.0 else 1.0) for s in stamps]
    bands = speed_wander([_point(times, stamps)])
    assert _band(bands, 0.0)["rms"] < 0.01 and _band(bands, 1.0)["rms"] < 0.02
    assert _band(bands, 80.0)["rms"] > 0.1
    assert _band(bands, 0.0)["rms"] < _band(bands, 5.0)["rms"] < _band(bands, 20.0)["rms"] < _band(bands, 80.0)["rms"]


def test_a_steady_machine_has_no_wander_and_unusable_points_are_skipped() -> None:
    steady = _point([0.01] * 5, [0.0, 0.1, 10.0, 30.0, 300.0])
    single = _point([0.05], [1.0])  # one timing: no pair
    unstamped = {"times_s": [0.01, 0.02], "stamps_s": None}  # --no-speed-reference
    bands = speed_wander([steady, single, unstamped])
    assert all(b["rms"] == 0.0 for b in bands if b["lag_s"][0] != 1.0)
    assert _band(bands, 1.0) == {"lag_s": [1.0, 5.0], "rms": None, "pairs": 0}  # no pair 1-5 s apart
    assert sum(b["pairs"] for b in bands) == 10


def test_a_datasheet_profile_has_no_wander_and_the_shipped_cpu_profile_has() -> None:
    root = Path(__file__).resolve().parents[2] / "profiles"
    assert stored_wander(json.loads((root / "h100-sxm.json").read_text())) is None
    bands = stored_wander(json.loads((root / "amd-epyc-2vcpu-cpu.json").read_text()))
    assert bands is not None and all(b["pairs"] > 0 and 0.0 < b["rms"] < 1.0 for b in bands)
    assert "±" in wander_line(bands) and "(t < 1 s)" in wander_line(bands)
