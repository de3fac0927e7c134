"""The capacity planner: an answer known in closed form (M/D/1), the search and lockstep machinery,
the load rescaling, Ctrl-C keeping finished work, and bad input as one line with exit status 2."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from sim.errors import InputError
from sim.planning.executors import SerialExecutor
from sim.planning.capacity import (Candidate, Criterion, PlanSettings, candidates_from, criterion_for, gather,
                         parse_candidate, plan, rate_search, settings_from_dict, with_load, workload_rate)
from sim.scenario import run_scenario, scenario_from_dict


def md1_scenario(num_requests: int) -> dict:
    """Batch size 1 (max_num_seqs = 1), fixed lengths, Poisson arrivals: one replica is an M/D/1
    queue whose service time D is one prefill step plus one decode step."""
    return {"seed": 7, "model": "tiny", "deployment": {"profile": "h100-sxm", "router": "random"},
            "scheduler": {"policy": "continuous", "max_num_seqs": 1},
            "workload": {"num_requests": num_requests, "arrival": {"process": "poisson", "rate_per_s": 100.0},
                         "input_tokens": 100, "output_tokens": 2}}


def test_plan_matches_the_md1_closed_form():
    # One request alone: TTFT = P (its prefill), E2E = D (prefill + one decode step).
    row = run_scenario(scenario_from_dict(md1_scenario(1))).request_rows()[0]
    prefill_s, service_s = row["ttft_s"], row["e2e_s"]
    # M/D/1: mean wait Wq = rho D / (2 (1 - rho)), rho = lambda D. With an SLO on the *mean* TTFT of
    # P + w, the highest rate meeting it solves Wq = w: lambda* = 2w / (D^2 + 2wD). w = D/2: rho* = 0.5.
    wait_s = service_s / 2
    exact_rate = 2 * wait_s / (service_s ** 2 + 2 * wait_s * service_s)
    assert exact_rate * service_s == pytest.approx(0.5)
    load = 3.4 * exact_rate  # -> ceil(3.4) = 4 replicas, away from an integer boundary
    scenario = md1_scenario(100)
    scenario["slo"] = {"ttft_s": prefill_s + wait_s}
    settings = PlanSettings(target_rate_per_s=load, seeds=3, confidence=0.5, stat="mean", requests_per_run=5000,
                            rel_tol=0.01, load_factors=(), run_duration_s=10.0, verify_requests=20000)
    result = plan(scenario, [Candidate("h100-sxm")], settings, SerialExecutor())
    cand = result["candidates"][0]
    assert cand["status"] == "ok", cand["message"]
    # Tolerance 8%: the mean wait over 4,000 measured requests at rho = 0.5 has a few % sampling
    # error, and the rate moves by half the relative error of Wq there (d ln Wq / d ln rho = 2).
    assert cand["max_rate_per_replica_per_s"] == pytest.approx(exact_rate, rel=0.08)
    for rate in cand["max_rate_by_seed"]:
        assert rate == pytest.approx(exact_rate, rel=0.12)
    assert cand["replicas"] == math.ceil(load / exact_rate) == 4
    assert cand["verification"]["attempts"][0]["seeds_passing"] == 3  # random routing: Poisson per replica
    assert result["recommendation"]["label"] == "h100-sxm"
    assert 0 < cand["headroom"]["fraction"] < 1


def test_rate_search_brackets_a_threshold_within_tolerance():
    for threshold in (0.37, 5.0, 123.0):
        search = rate_search(3.0, 0.02, 3e-4, 3e3)
        rate = next(search)
        calls = 0
        try:
            while True:
                calls += 1
                rate = search.send(rate <= threshold)
        except StopIteration as stop:
            lo, hi = stop.value
        assert lo <= threshold < hi and hi / lo - 1 <= 0.02
        assert calls < 20
    search = rate_search(1.0, 0.02, 0.01, 100.0)  # never passes: no answer
    rate = next(search)
    try:
        while True:
            rate = search.send(False)
    except StopIteration as stop:
        assert stop.value[0] is None


def test_gather_runs_coroutines_in_lockstep_and_returns_their_values():
    def co(name: str, rounds: int):
        got = []
        for k in range(rounds):
            (result,) = yield [f"{name}{k}"]
            got.append(result)
        return got

    def runner(main):
        batch = next(main)
        seen = []
        while True:
            seen.append(list(batch))
            try:
                batch = main.send([t.upper() for t in batch])
            except StopIteration as stop:
                return seen, stop.value

    seen, values = runner(gather([co("a", 2), co("b", 3), co("c", 0)]))
    assert seen == [["a0", "b0"], ["a1", "b1"], ["b2"]]
    assert values == [["A0", "A1"], ["B0", "B1", "B2"], []]


def test_criterion_is_overload_then_each_slo_statistic():
    crit = Criterion({"ttft_s": 1.0, "tpot_s": 0.05}, "p99")

    def summary(overloaded=False, ttft=0.5, tpot=0.04):
        return {"overloaded": overloaded, "requests": {"rejected": 0, "measured_completed": 10},
                "latency": {"ttft_s": {"p99": ttft}, "tpot_s": {"p99": tpot}}}

    assert crit.check(summary())[0]
    assert crit.check(summary(overloaded=True)) == (False, "overloaded")
    assert not crit.check(summary(ttft=1.01))[0]
    assert "tpot" in crit.check(summary(tpot=0.2))[1]
    assert "p99 TTFT <= 1 s" in crit.describe()


def test_load_rescaling_keeps_the_arrival_shape():
    sc = scenario_from_dict(md1_scenario(50)).to_dict()
    assert workload_rate(sc, "x") == 100.0
    d = with_load(sc, 250.0, 70, 3, 100.0)
    assert d["workload"]["arrival"]["rate_per_s"] == 250.0 and d["workload"]["num_requests"] == 70
    assert d["seed"] == 3 and sc["workload"]["num_requests"] == 50  # a copy
    piece = dict(sc, workload={"num_requests": 50, "input_tokens": {"dist": "fixed", "value": 10},
                               "output_tokens": {"dist": "fixed", "value": 2},
                               "arrival": {"process": "piecewise", "period_s": 10.0,
                                           "segments": [{"start_s": 0, "rate_per_s": 1.0},
                                                        {"start_s": 5, "rate_per_s": 3.0}]}})
    assert workload_rate(piece, "x") == pytest.approx(2.0)
    doubled = with_load(piece, 4.0, 50, 0, 2.0)["workload"]["arrival"]["segments"]
    assert [s["rate_per_s"] for s in doubled] == [2.0, 6.0]
    trace = scenario_from_dict(dict(md1_scenario(1), workload={"trace": {"path": "azure-conv-2023",
                                                                          "max_requests": 200}})).to_dict()
    assert workload_rate(trace, "x") > 0
    t = with_load(trace, 9.0, 300, 0, 1.0, trace_start_s=12.5)["workload"]["trace"]
    assert t["rate_per_s"] == 9.0 and t["max_requests"] == 300 and t["start_s"] == 12.5
    closed = dict(sc, workload={"num_requests": 5, "arrival": {"process": "closed", "concurrency": 2},
                                "input_tokens": 5, "output_tokens": 5})
    with pytest.raises(InputError, match="open-loop"):
        workload_rate(closed, "x")


class _InterruptAfter(SerialExecutor):
    """Serial, but Ctrl-C after `n` runs."""

    def __init__(self, n: int) -> None:
        self.n = n

    def imap(self, tasks):
        for item in super().imap(tasks):
            if self.n == 0:
                raise KeyboardInterrupt
            self.n -= 1
            yield item


def test_ctrl_c_keeps_finished_work():
    scenario = md1_scenario(300)
    scenario["slo"] = {"ttft_s": 0.01}
    settings = PlanSettings(seeds=1, load_factors=(), requests_per_run=300, run_duration_s=10.0)
    result = plan(scenario, [Candidate("h100-sxm"), Candidate("a100-80gb")], settings, _InterruptAfter(5))
    assert result["interrupted"]
    assert all(c["status"] == "interrupted" for c in result["candidates"])
    assert sum(len(c["search_points"]) for c in result["candidates"]) == 5  # every finished run kept

    from sim.planning.sweep import sweep

    swept = sweep(scenario, None, [100, 200, 300, 400], _InterruptAfter(3))
    assert swept["interrupted"] and len(swept["candidates"][0]["points"]) == 3


def test_a_model_that_does_not_fit_is_an_answer_not_an_error():
    scenario = md1_scenario(200)
    scenario["model"] = "llama-3-70b"
    scenario["slo"] = {"ttft_s": 5.0}
    result = plan(scenario, [Candidate("l4")], PlanSettings(seeds=1, load_factors=()), SerialExecutor())
    assert result["candidates"][0]["status"] == "does_not_fit"
    assert result["recommendation"] is None


def test_bad_slos_candidates_and_settings_are_input_errors():
    with pytest.raises(InputError, match="at least one SLO"):
        criterion_for({}, "p99", "sc.toml")
    with pytest.raises(InputError, match="no candidates"):
        candidates_from(None, {"candidates": []}, "sc.toml")
    with pytest.raises(InputError, match="no candidates"):
        candidates_from([], {}, "sc.toml")
    with pytest.raises(InputError, match="PROFILE:tpN"):
        parse_candidate("h100-sxm:2")
    assert parse_candidate("h100-sxm-x8:tp4") == Candidate("h100-sxm-x8", 4)
    with pytest.raises(InputError, match="plan.confidence"):
        settings_from_dict({"confidence": 1.5}, "sc.toml")
    with pytest.raises(InputError, match="plan.stat"):
        settings_from_dict({"stat": "p42"}, "sc.toml")
    with pytest.raises(InputError, match="plan.bogus"):
        settings_from_dict({"bogus": 1}, "sc.toml")
    bad = md1_scenario(10)
    bad["slo"] = {"ttft_s": -1}
    with pytest.raises(InputError, match="slo.ttft_s"):
        plan(bad, [Candidate("h100-sxm")], PlanSettings(seeds=1))
    with pytest.raises(InputError, match="no such profile"):
        plan(dict(md1_scenario(10), slo={"ttft_s": 1.0}), [Candidate("no-such-gpu")], PlanSettings(seeds=1))
    with pytest.raises(InputError, match="tensor parallelism"):
        plan(dict(md1_scenario(10), slo={"ttft_s": 1.0}), [Candidate("h100-sxm", 2)], PlanSettings(seeds=1))


def infercast(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sim", *args], capture_output=True, text=True)


SMALL = """seed = 2
[model]
name = "llama-3.2-1b"
[deployment]
profile = "l4"
[scheduler]
max_num_seqs = 64
[workload]
num_requests = 200
arrival = {process = "poisson", rate_per_s = 20.0}
input_tokens = {dist = "uniform", min = 100, max = 400}
output_tokens = {dist = "uniform", min = 20, max = 80}
[slo]
ttft_s = 0.5
tpot_s = 0.05
[plan]
candidates = ["l4", "a100-80gb"]
seeds = 2
load_factors = [2.0]
run_duration_s = 60
verify_requests = 2000
"""


@pytest.fixture
def small_scenario(tmp_path):
    path = tmp_path / "small.toml"
    path.write_text(SMALL)
    return path


def test_plan_cli_writes_result_and_reports(small_scenario, tmp_path):
    out, html, md = tmp_path / "plan.json", tmp_path / "r.html", tmp_path / "r.md"
    run = infercast("plan", str(small_scenario), "--executor", "serial", "--json", str(out),
                    "--report", str(html), "--report", str(md), "--no-progress")
    assert run.returncode == 0, run.stderr
    assert "Capacity plan" in run.stdout and "recommended" in run.stdout
    result = json.loads(out.read_text())
    assert result["kind"] == "plan" and [c["label"] for c in result["candidates"]] == ["l4", "a100-80gb"]
    assert html.read_text().startswith("<!DOCTYPE html>") and "## Candidates" in md.read_text()
    again = tmp_path / "again.md"
    run = infercast("report", str(out), "-o", str(again))
    assert run.returncode == 0, run.stderr
    assert again.read_text() == md.read_text()


@pytest.mark.parametrize("args, message", [
    (["--candidates"], "expected at least one argument"),
    (["--candidates", "no-such-gpu"], "no such profile"),
    (["--candidates", "l4:4"], "PROFILE:tpN"),
    (["--slo-ttft-s", "-1"], "--slo-ttft-s"),
    (["--seeds", "0"], "plan.seeds"),
    (["--report", "out.pdf"], "unknown report format"),
])
def test_plan_cli_bad_input_is_one_line_and_exit_2(small_scenario, args, message, tmp_path):
    run = infercast("plan", str(small_scenario), "--executor", "serial", "--no-progress", *args)
    assert run.returncode == 2
    assert message in run.stderr and run.stderr.count("\n") == 1, run.stderr
    assert run.stdout == ""


def test_plan_cli_without_slos_or_candidates(tmp_path):
    no_slo = tmp_path / "no_slo.toml"
    no_slo.write_text(SMALL.replace("ttft_s = 0.5\ntpot_s = 0.05\n", ""))
    run = infercast("plan", str(no_slo), "--no-progress")
    assert run.returncode == 2 and "at least one SLO" in run.stderr and run.stderr.count("\n") == 1
    no_cands = tmp_path / "no_cands.toml"
    no_cands.write_text(SMALL.replace('candidates = ["l4", "a100-80gb"]', "candidates = []"))
    run = infercast("plan", str(no_cands), "--no-progress")
    assert run.returncode == 2 and "no candidates" in run.stderr and run.stderr.count("\n") == 1
