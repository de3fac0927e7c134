"""Fitting the machine's speed variability from calibrate's speed reference samples."""

from __future__ import annotations

import math

import numpy as np
import pytest

from calibrate.speed_variability import measure_speed_variability


def ou(rng, times_s, sd, time_s):
    x = np.empty(len(times_s))
    x[0] = rng.normal(0, sd)
    for i in range(1, len(times_s)):
        keep = math.exp(-(times_s[i] - times_s[i - 1]) / time_s)
        x[i] = x[i - 1] * keep + sd * math.sqrt(1 - keep * keep) * rng.normal()
    return x


def reference(seed=0, num=600, every_s=0.6):
    """A machine whose memory-bound step wanders by 0.12 in spells of 3 s over a 0.08 jitter, with
    a slow level (0.1, 5 minutes) beneath; its compute-bound step by half as much."""
    rng = np.random.default_rng(seed)
    t = np.arange(num) * every_s + rng.uniform(0, 0.05, num)
    memory = ou(rng, t, 0.12, 3.0) + ou(rng, t, 0.1, 300.0) + rng.normal(0, 0.08, num)
    compute = ou(rng, t, 0.06, 3.0) + rng.normal(0, 0.04, num)
    samples = np.column_stack([t, 0.01 * np.exp(memory), 0.03 * np.exp(compute)])
    return {"samples": samples.tolist(), "memory_s": 0.01, "compute_s": 0.03}


def test_the_fit_finds_the_jitter_and_the_spells_and_leaves_the_slow_level_out():
    v = measure_speed_variability(reference())
    assert v.memory.fast_sd == pytest.approx(0.08, abs=0.02)
    assert v.memory.wander_sd == pytest.approx(0.12, abs=0.03)
    assert 1.5 <= v.memory.wander_time_s <= 6.0
    assert v.memory.reference_step_s == 0.01
    assert v.compute.fast_sd == pytest.approx(0.04, abs=0.015)
    assert v.compute.wander_sd == pytest.approx(0.06, abs=0.02)


def test_the_jitter_shape_is_standardised_about_the_median():
    shape = np.array(measure_speed_variability(reference(seed=1)).fast_shape)
    assert len(shape) == 100 and np.all(np.diff(shape) >= 0)
    assert abs(np.median(shape)) < 0.05
    assert np.std(shape) == pytest.approx(1.0, abs=0.1)


def test_too_short_a_record_says_nothing():
    assert measure_speed_variability(reference(num=20)) is None
    assert measure_speed_variability({}) is None
