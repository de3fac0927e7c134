"""Executors: a run is a pure function of its task, so in-process, the local process pool and Ray
give identical results, run by run and for a whole plan."""

from __future__ import annotations

import copy

import pytest

from sim.planning.executors import LocalExecutor, SerialExecutor, make_executor, make_task, run_task
from sim.planning.capacity import Candidate, PlanSettings, plan

SCENARIO = {"seed": 3, "model": "llama-3.2-1b", "deployment": {"profile": "l4", "router": "random"},
            "scheduler": {"max_num_seqs": 32},
            "workload": {"num_requests": 150, "arrival": {"process": "poisson", "rate_per_s": 15.0},
                         "input_tokens": {"dist": "lognormal", "mean": 300, "sigma": 0.5},
                         "output_tokens": {"dist": "uniform", "min": 10, "max": 60}},
            "slo": {"ttft_s": 0.3, "tpot_s": 0.04}}
SETTINGS = PlanSettings(seeds=2, load_factors=(1.5,), bootstrap_samples=100, run_duration_s=60.0, verify_requests=2000)
CANDIDATES = [Candidate("l4"), Candidate("a100-80gb")]


def tasks() -> list[dict]:
    out = []
    for seed, rate in ((0, 5.0), (1, 20.0), (2, 60.0)):
        d = copy.deepcopy(SCENARIO)
        d["seed"], d["workload"]["arrival"]["rate_per_s"] = seed, rate
        out.append(make_task(d, extras=("samples", "cdf", "timeline")))
    return out


def collect(executor, batch) -> list[dict]:
    results = [None] * len(batch)
    for index, result in executor.imap(batch):
        results[index] = result
    return results


def test_run_task_is_pure_and_local_pool_matches_serial():
    batch = tasks()
    serial = collect(SerialExecutor(), batch)
    assert serial[0] == run_task(batch[0])
    with LocalExecutor(2) as pool:
        assert collect(pool, batch) == serial
    assert serial[0]["summary"]["seed"] == 0 and len(serial[0]["samples"]["ttft_s"]) > 0


def test_plan_is_identical_on_serial_and_local_executors():
    serial = plan(SCENARIO, CANDIDATES, SETTINGS, SerialExecutor())
    with LocalExecutor(2) as pool:
        local = plan(SCENARIO, CANDIDATES, SETTINGS, pool)
    assert local == serial
    assert all(c["status"] == "ok" for c in serial["candidates"])


def test_plan_is_identical_on_ray_and_local_executors():
    ray = pytest.importorskip("ray")
    with LocalExecutor(2) as pool:
        local = plan(SCENARIO, CANDIDATES, SETTINGS, pool)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        executor = make_executor("ray")
        assert executor.name == "ray"
        batch = tasks()
        assert collect(executor, batch) == collect(SerialExecutor(), batch)
        on_ray = plan(SCENARIO, CANDIDATES, SETTINGS, executor)
        executor.close()
    finally:
        ray.shutdown()
    assert on_ray == local


def test_bad_executor_and_extras():
    with pytest.raises(ValueError, match="executor"):
        make_executor("cluster")
    with pytest.raises(ValueError, match="extras"):
        make_task({}, extras=("everything",))
    with pytest.raises(ValueError, match="workers"):
        LocalExecutor(0)
