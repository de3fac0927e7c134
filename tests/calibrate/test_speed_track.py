"""Drift-cancelling timing: a point's timings brought to the run's median machine speed."""

from __future__ import annotations

import math

import numpy as np
import pytest

from calibrate.speed_track import (MIN_TIMINGS, SpeedSample, SpeedTrack, at_speed, baseline_of,
                                   running_median)


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
