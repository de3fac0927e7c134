"""Overload that cannot hide behind a running batch, a window that says when it is too short, and
a planner whose answer holds for long runs on seeds it never saw."""

from __future__ import annotations

import numpy as np
import pytest

from sim.planning.executors import SerialExecutor
from sim.overload import RequestTimes, in_system, overload_verdict, sustainable_rate, window_warnings
from sim.planning.capacity import Candidate, Criterion, PlanSettings, plan, with_deployment, with_load
from sim.scenario import run_scenario, scenario_from_dict


def chat(num_requests: int, rate_per_s: float, seed: int = 3) -> dict:
    """A 1B model on an L4 with a 256-sequence running batch: room to hide a backlog."""
    return {"seed": seed, "model": "llama-3.2-1b", "deployment": {"profile": "l4", "router": "least_outstanding"},
            "scheduler": {"policy": "continuous", "max_num_seqs": 256},
            "workload": {"num_requests": num_requests, "arrival": {"process": "poisson", "rate_per_s": rate_per_s},
                         "input_tokens": {"dist": "lognormal", "mean": 600, "sigma": 1.0, "max": 4000},
                         "output_tokens": {"dist": "lognormal", "mean": 200, "sigma": 1.0, "max": 2000}},
            "slo": {"ttft_s": 1.0, "tpot_s": 0.05}}


def test_in_system_counts_requests_and_the_tokens_left():
    # two requests: [0, 10) with its first token at 2, and [5, 8) with its first token at 6
    times = RequestTimes(np.array([0.0, 5.0]), np.array([2.0, 6.0]), np.array([10.0, 8.0]),
                         np.array([100.0, 50.0]), np.array([9.0, 5.0]))
    count, tokens = in_system(times, np.array([1.0, 4.0, 5.5, 7.0, 9.0, 11.0]))
    assert count.tolist() == [1, 1, 2, 2, 1, 0]
    # before the first token: prompt + output; after it: output prorated over the decode time
    assert tokens.tolist() == pytest.approx([109, 9 * 6 / 8, 9 * 4.5 / 8 + 55, 9 * 3 / 8 + 5 * 1 / 2, 9 / 8, 0])


def test_a_backlog_in_the_running_batch_is_overload_though_the_waiting_queue_is_empty():
    # Above this replica's capacity (about 20 req/s); a 1,024-sequence running batch absorbs the
    # whole backlog, so the waiting queue never grows (the old test, the waiting queue only, passed
    # it): the requests in the system do.
    scenario = chat(2000, 24.0)
    scenario["scheduler"]["max_num_seqs"] = 1024
    summary = run_scenario(scenario_from_dict(scenario)).summary
    ov = summary["overload"]
    assert summary["overloaded"]
    assert ov["queue_growth_requests"] < 1
    assert any("requests in the system" in r for r in ov["reasons"])
    assert ov["in_system_growth_requests"] > 0.05 * 800
    assert 0 < ov["sustainable_rate_per_s"] < 0.9 * ov["arrival_rate_per_s"]
    assert summary["latency"]["ttft_s"]["p99"] is None  # an overloaded run reports no latency


def test_a_stable_run_is_not_overloaded_and_its_window_is_long_enough():
    summary = run_scenario(scenario_from_dict(chat(4000, 8.0))).summary
    assert not summary["overloaded"] and summary["overload"]["reasons"] == []
    assert not summary["window"]["is_too_short"] and summary["window"]["warnings"] == []
    assert summary["throughput"]["requests_per_s"] == pytest.approx(8.0, rel=0.1)


def test_the_sustainable_rate_is_never_zero_when_latencies_exceed_the_window():
    # every request finishes after the window [0, 10]: the rate comes from the whole run
    times = RequestTimes(np.linspace(0, 12, 13), np.full(13, 20.0), np.linspace(30, 42, 13),
                         np.full(13, 10.0), np.full(13, 10.0))
    rate = sustainable_rate(times, 1.0, 10.0)
    assert rate == pytest.approx(13 / 41)
    verdict = overload_verdict(times, 1.0, 10.0, np.zeros(0), np.zeros(0), can_overload=False)
    assert not verdict.is_overloaded and verdict.completion_shortfall_requests == 10


def test_a_short_window_warns_and_fails_the_criterion():
    warnings = window_warnings(0.0, 3.8, 30.0, 34.0, 11.7)  # the warm-up shorter than one E2E
    assert any(w.startswith("warm-up 3.8 s") for w in warnings)
    assert window_warnings(0.0, 40.0, 400.0, 440.0, 11.7) == []
    # a real run: 300 requests at a high rate finish within a few E2E latencies
    summary = run_scenario(scenario_from_dict(chat(300, 15.0))).summary
    assert summary["window"]["is_too_short"], summary["window"]
    crit = Criterion({"ttft_s": 10.0}, "p99")
    assert crit.check(summary) == (False, "measurement window too short for its latencies")


def test_the_plan_holds_for_long_runs_on_seeds_it_never_saw():
    scenario = chat(500, 30.0)
    settings = PlanSettings(seeds=2, load_factors=(), requests_per_run=500, run_duration_s=120.0,
                            verify_requests=3000)
    result = plan(scenario, [Candidate("l4")], settings, SerialExecutor())
    cand = result["candidates"][0]
    assert cand["status"] == "ok", cand["message"]
    crit = Criterion({"ttft_s": 1.0, "tpot_s": 0.05}, "p99")
    for seed in (11, 12, 13):
        d = with_load(with_deployment(result["scenario"], Candidate("l4"), cand["replicas"]), 30.0, 10000, seed, 30.0)
        summary = run_scenario(scenario_from_dict(d)).summary
        assert crit.check(summary) == (True, "meets the SLOs"), (seed, summary["overload"], summary["latency"])


def test_no_warmup_asked_for_is_not_held_against_the_window():
    assert window_warnings(0.0, 0.0, 400.0, 440.0, 11.7, has_warmup=False) == []
    scenario = chat(4000, 8.0)
    scenario["measurement"] = {"warmup_fraction": 0.0}
    summary = run_scenario(scenario_from_dict(scenario)).summary
    assert not summary["window"]["is_too_short"], summary["window"]["warnings"]


@pytest.mark.parametrize("factors", [3, [float("inf")], [True]])
def test_load_factors_must_be_a_list_of_finite_numbers(factors):
    with pytest.raises(ValueError, match="load_factors"):
        PlanSettings(load_factors=factors)
