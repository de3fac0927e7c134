"""The machine's speed variability: the process's statistics, the engine under it, the profile field."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from sim.errors import InputError
from sim.spec.profile import profile_from_dict
from sim.scenario import prepare, run_prepared, run_scenario, scenario_from_dict
from sim.speed_variability import SpeedProcess, SpeedVariability, Wander

GAUSSIAN_SHAPE = tuple(float(q) for q in np.sort(np.random.default_rng(0).standard_normal(2001))[10::20])
SKEWED_SHAPE = (-1.2, -0.8, -0.5, -0.3, -0.1, 0.0, 0.1, 0.3, 0.7, 1.5, 4.0)


def variability(fast_sd=0.1, wander_sd=0.15, wander_time_s=2.0, shape=GAUSSIAN_SHAPE) -> SpeedVariability:
    w = Wander(fast_sd=fast_sd, wander_sd=wander_sd, wander_time_s=wander_time_s, reference_step_s=0.01)
    return SpeedVariability(memory=w, compute=w, fast_shape=shape)


def log_factors(v: SpeedVariability, times_s, step_s=0.01, seed=1) -> np.ndarray:
    process = SpeedProcess(v, np.random.default_rng(seed))
    return np.log([process.factor(t, step_s, True) for t in times_s])


def test_a_step_keeps_its_cost_model_time_as_the_median_and_scatters_by_both_parts():
    x = log_factors(variability(), np.arange(40_000) * 0.5)  # mostly independent draws
    assert abs(np.median(x)) < 0.01
    assert np.std(x) == pytest.approx(math.hypot(0.1, 0.15), rel=0.05)


def test_longer_steps_average_out_their_own_jitter_but_not_the_spells():
    v = variability(wander_sd=0.0)
    short = log_factors(v, np.arange(20_000) * 0.5, step_s=0.01)
    long = log_factors(v, np.arange(20_000) * 0.5, step_s=0.16)  # 16x as long: a quarter of the jitter
    assert np.std(long) / np.std(short) == pytest.approx(0.25, rel=0.05)
    v = variability(fast_sd=0.0)
    assert np.std(log_factors(v, np.arange(20_000) * 5.0, step_s=0.16)) == pytest.approx(0.15, rel=0.05)


def test_spells_last_their_correlation_time():
    x = log_factors(variability(fast_sd=0.0, wander_time_s=2.0), np.arange(100_000) * 0.1)
    corr = [np.corrcoef(x[:-lag], x[lag:])[0, 1] for lag in (1, 20, 100)]  # 0.1 s, 2 s, 10 s
    assert corr[0] == pytest.approx(math.exp(-0.05), abs=0.02)
    assert corr[1] == pytest.approx(math.exp(-1.0), abs=0.05)
    assert abs(corr[2]) < 0.05


def test_the_jitter_takes_the_measured_shape_a_long_tail_of_stalls():
    x = log_factors(variability(wander_sd=0.0, shape=SKEWED_SHAPE), np.arange(50_000) * 0.5)
    assert np.quantile(x, 0.99) > 3 * -np.quantile(x, 0.01)  # slow steps are much slower than fast ones are fast
    assert x.max() <= 0.1 * 4.0 + 1e-12


def test_same_seed_same_steps():
    times = np.arange(100) * 0.013
    assert np.array_equal(log_factors(variability(), times, seed=5), log_factors(variability(), times, seed=5))
    assert not np.array_equal(log_factors(variability(), times, seed=5), log_factors(variability(), times, seed=6))


def test_a_run_of_steps_taken_in_one_go_scatters_and_wanders_as_steps_taken_one_by_one():
    def run(v, n=100_000, gap_s=0.002):
        return np.log(SpeedProcess(v, np.random.default_rng(1)).memory_run(0.0, np.full(n, 0.01), gap_s))

    x = run(variability(fast_sd=0.0, wander_sd=0.3, wander_time_s=0.5))
    seconds = 0.01 * np.exp(x) + 0.002  # each step and its loop: a slow spell holds fewer steps ...
    assert abs(np.average(x, weights=seconds)) < 0.025  # ... so the wander is centred in time
    assert np.mean(x) == pytest.approx(-0.3 ** 2 * 0.01 / 0.012, abs=0.025)  # and leans fast by step
    lag_s = 40 * float(np.mean(seconds))  # 40 steps: about 0.5 s
    assert np.corrcoef(x[:-40], x[40:])[0, 1] == pytest.approx(math.exp(-lag_s / 0.5), abs=0.06)
    x = run(variability(fast_sd=0.1, wander_sd=0.15, wander_time_s=0.5))
    assert np.std(x) == pytest.approx(math.hypot(0.1, 0.15), rel=0.05)
    x = run(variability(wander_sd=0.0, shape=SKEWED_SHAPE), 50_000)
    assert np.quantile(x, 0.99) > 3 * -np.quantile(x, 0.01)


def test_an_interrupted_run_leaves_the_process_where_its_last_step_began():
    v = variability(fast_sd=0.0, wander_sd=0.2, wander_time_s=1.0)
    process = SpeedProcess(v, np.random.default_rng(3))
    before = process.wander(0.0, True)
    process.memory_run(0.0, np.full(50, 0.1), 0.0)
    process.keep_memory_run(0)  # none ran: as if it never started
    assert process.wander(0.0, True) == before
    factors = process.memory_run(0.0, np.full(50, 0.1), 0.0)
    process.keep_memory_run(3)  # three ran: the third began at 0.1 (f0 + f1)
    assert process.wander(0.1 * (factors[0] + factors[1]), True) == pytest.approx(math.log(factors[2]))


# ---- in the engine --------------------------------------------------------------------------

def with_variability(profile: dict, **kw) -> dict:
    profile = json.loads(json.dumps(profile))
    profile["cost_model"]["speed_variability"] = variability(**kw).to_dict()
    return profile


def chat(path: str, **deployment) -> dict:
    return {"seed": 4, "model": {"name": "llama-3-8b"},
            "deployment": {"profile": path, **deployment}, "scheduler": {"policy": "continuous"},
            "workload": {"num_requests": 300, "arrival": {"process": "poisson", "rate_per_s": 4.0},
                         "input_tokens": 512, "output_tokens": 64}}


@pytest.fixture
def paths(tmp_path, toy_profile_dict):
    plain, varied = tmp_path / "plain.json", tmp_path / "varied.json"
    plain.write_text(json.dumps(toy_profile_dict))
    varied.write_text(json.dumps(with_variability(toy_profile_dict)))
    return str(plain), str(varied)


def test_a_machine_that_scatters_has_heavier_tails_on_the_same_workload(paths):
    plain, varied = (run_scenario(scenario_from_dict(chat(p), "t")).summary for p in paths)
    assert varied["requests"]["completed"] == plain["requests"]["completed"]
    for metric in ("ttft_s", "tpot_s"):
        assert varied["latency"][metric]["p99"] > 1.1 * plain["latency"][metric]["p99"]
        assert varied["latency"][metric]["p50"] == pytest.approx(plain["latency"][metric]["p50"], rel=0.1)


def test_the_same_draw_repeats_and_another_draw_differs(paths):
    sc = scenario_from_dict(chat(paths[1]), "t")
    runs = [run_prepared(prep, prep.cost, draw).summary for prep, draw in
            ((prepare(sc), 0), (prepare(sc), 0), (prepare(sc), 1))]
    assert runs[0] == runs[1]
    assert runs[0]["latency"]["ttft_s"]["p99"] != runs[2]["latency"]["ttft_s"]["p99"]


def test_a_scenario_can_turn_it_off_and_a_replay_never_has_it(paths):
    plain = run_scenario(scenario_from_dict(chat(paths[0]), "t")).summary
    off = scenario_from_dict(chat(paths[1], speed_variability=False), "t")
    assert run_scenario(off).summary["latency"] == plain["latency"]
    prep = prepare(scenario_from_dict(chat(paths[1]), "t"))
    assert run_prepared(prep, prep.cost, speed_draw=None).summary["latency"] == plain["latency"]
    assert scenario_from_dict(off.to_dict(), "t") == off


class StepByStep:
    """The profile's cost model with no closed form: the engine runs every decode step alone."""

    closed_form_decode = False

    def __init__(self, base) -> None:
        self.base = base

    def __getattr__(self, name):
        return getattr(self.base, name)


def runs_both_ways(path: str, draws: int) -> dict[str, list[dict]]:
    sc = scenario_from_dict(chat(path), "t")
    runs: dict[str, list[dict]] = {"blocks": [], "steps": []}
    for draw in range(draws):
        for key, summaries in runs.items():
            prep = prepare(sc)
            summaries.append(run_prepared(prep, prep.cost if key == "blocks" else StepByStep(prep.cost), draw).summary)
    return runs


def test_decode_runs_in_blocks_predict_what_steps_one_by_one_do(paths, tmp_path, toy_profile_dict):
    still = tmp_path / "still.json"  # a variability of nothing: exactly the closed-form runs
    still.write_text(json.dumps(with_variability(toy_profile_dict, fast_sd=0.0, wander_sd=0.0)))
    runs = runs_both_ways(str(still), 1)
    plain = run_scenario(scenario_from_dict(chat(paths[0]), "t")).summary
    for key in ("blocks", "steps"):
        for metric, stats in plain["latency"].items():
            assert runs[key][0]["latency"][metric] == pytest.approx(stats, rel=1e-9), (key, metric)

    runs = runs_both_ways(paths[1], 15)
    assert runs["blocks"][0] != runs["steps"][0]  # other draws ...
    for metric, rel_p99 in (("ttft_s", 0.2), ("tpot_s", 0.1), ("e2e_s", 0.1)):  # ... the same machine
        for stat, rel in (("mean", 0.05), ("p99", rel_p99)):
            blocks, steps = (np.median([s["latency"][metric][stat] for s in runs[k]]) for k in ("blocks", "steps"))
            assert blocks == pytest.approx(steps, rel=rel), (metric, stat)
    energy = [np.median([s["energy"]["j_per_output_token"] for s in runs[k]]) for k in ("blocks", "steps")]
    assert energy[0] == pytest.approx(energy[1], rel=0.03)


def test_a_bad_speed_variability_names_its_field(toy_profile_dict):
    bad = with_variability(toy_profile_dict)
    bad["cost_model"]["speed_variability"]["memory"]["wander_time_s"] = 0
    with pytest.raises(InputError, match=r"bad\.json.*cost_model\.speed_variability\.memory\.wander_time_s"):
        profile_from_dict(bad, "bad.json")
    bad = with_variability(toy_profile_dict)
    bad["cost_model"]["speed_variability"]["fast_shape"] = [0.5, 0.1, 0.9]
    with pytest.raises(InputError, match=r"cost_model\.speed_variability\.fast_shape.*rising"):
        profile_from_dict(bad, "bad.json")
    with pytest.raises(InputError, match=r"deployment"):
        scenario_from_dict(chat("x.json", speed_variability="yes"), "s.toml")
