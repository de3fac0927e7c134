"""Replay: the simulator driven by a log of step times (what `calibrate validate` feeds it from
the real engine) makes the same decisions and reproduces the logged run's latencies."""

from __future__ import annotations

import dataclasses
import json

import pytest

from sim.cost_model import StepCost
from sim.plan import StepShape
from sim.replay import replay_scenario
from sim.scenario import prepare, run_prepared, scenario_from_dict


@pytest.fixture
def profile_path(tmp_path, toy_profile_dict):
    path = tmp_path / "toy-gpu.json"
    path.write_text(json.dumps(toy_profile_dict))
    return str(path)


def scenario(profile_path: str, policy: str) -> dict:
    return {"seed": 5, "model": {"name": "llama-3-8b"}, "deployment": {"profile": profile_path},
            "scheduler": {"policy": policy, "max_num_seqs": 16, "max_num_batched_tokens": 1024,
                          "max_batch_size": 8},
            "measurement": {"warmup_fraction": 0.0, "drain_fraction": 0.0},
            "workload": {"num_requests": 80, "arrival": {"process": "poisson", "rate_per_s": 6.0},
                         "input_tokens": {"dist": "uniform", "min": 64, "max": 1500},
                         "output_tokens": {"dist": "uniform", "min": 8, "max": 200}}}


class Recording:
    """The profile's cost model on a machine `slower` times slower, one step at a time, each step
    logged (a stand-in for a real engine's step log, with a fixed loop time after each step)."""

    closed_form_decode = False

    def wake_slowdown(self, idle_s: float) -> float:
        return 0.0

    def __init__(self, base, after_s: float, slower: float = 1.0) -> None:
        self.base, self.after_s, self.slower = base, after_s, slower
        self.log: list[tuple[StepShape, float, float]] = []

    def step_cost(self, shape: StepShape) -> StepCost:
        step = self.base.step_cost(shape)
        seconds = step.time_s * self.slower
        self.log.append((shape, seconds, self.after_s))
        return dataclasses.replace(step, time_s=seconds, after_s=self.after_s)


def request_times(result) -> list[float]:
    """Each request's first-token and finish times, in request order."""
    requests = sorted(result.recorder.requests, key=lambda r: r.request_id)
    return [t for r in requests for t in (r.first_token_s, r.finish_s)]


@pytest.mark.parametrize("policy", ["continuous", "chunked", "static"])
def test_a_replayed_step_log_reproduces_the_run_it_came_from(profile_path, policy):
    sc = scenario_from_dict(scenario(profile_path, policy))
    prep = prepare(sc)
    logged = Recording(prep.cost, after_s=0.0003, slower=1.3)
    original = run_prepared(prep, logged)
    replay = replay_scenario(sc, prep.profile, logged.log)
    assert replay.agrees and replay.num_steps == len(logged.log) > 100
    assert request_times(replay.result) == pytest.approx(request_times(original), rel=1e-12)
    # the loop time after each step is spent: the same run without it finishes earlier
    without = replay_scenario(sc, prep.profile, [(shape, s, 0.0) for shape, s, _ in logged.log])
    assert sum(request_times(without.result)) < sum(request_times(original))


@pytest.mark.parametrize("policy", ["continuous", "static"])
@pytest.mark.parametrize("engine_overhead_s", [0.0, 0.0004])
def test_running_decode_steps_one_at_a_time_equals_the_closed_form(tmp_path, toy_profile_dict, policy,
                                                                   engine_overhead_s):
    """The simulator advances runs of decode steps in closed form; the real engine (and a replay)
    runs them one at a time, with the engine's own loop after each. The two must give the same
    times, arrivals that cut a run short included."""
    toy_profile_dict["cost_model"]["engine_step_overhead_s"] = engine_overhead_s
    path = tmp_path / "looped.json"
    path.write_text(json.dumps(toy_profile_dict))
    sc = scenario_from_dict(scenario(str(path), policy))
    prep = prepare(sc)
    closed_form = run_prepared(prep, prep.cost)
    prep = prepare(sc)
    one_at_a_time = run_prepared(prep, Recording(prep.cost, after_s=engine_overhead_s))
    assert request_times(one_at_a_time) == pytest.approx(request_times(closed_form), rel=1e-9)
    closed_tpot = closed_form.summary["latency"]["tpot_s"]
    looped_tpot = one_at_a_time.summary["latency"]["tpot_s"]
    assert closed_tpot.keys() == looped_tpot.keys()
    for stat, seconds in closed_tpot.items():  # None in both where the run is overloaded (static)
        assert looped_tpot[stat] == (None if seconds is None else pytest.approx(seconds, rel=1e-9))


def test_a_log_from_another_run_is_counted_as_diverged(profile_path):
    sc = scenario_from_dict(scenario(profile_path, "continuous"))
    prep = prepare(sc)
    logged = Recording(prep.cost, after_s=0.0)
    run_prepared(prep, logged)
    shifted = logged.log[1:]  # every step one position off
    replay = replay_scenario(sc, prep.profile, shifted)
    assert not replay.agrees and replay.num_diverged > 0.5 * replay.num_steps
