"""The simulated engine against closed forms (M/D/1, a lone request) and its contracts."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sim.cost_model import CostModel
from sim.spec.model import get_preset
from sim.plan import StepShape
from sim.errors import InputError
from sim.spec.profile import load_profile, profile_from_dict
from sim.scenario import run_scenario, scenario_from_dict


def scenario(profile_path: str, **over) -> dict:
    base = {
        "seed": 3,
        "model": {"name": "llama-3-8b"},
        "deployment": {"profile": profile_path},
        "scheduler": {"policy": "continuous"},
        "workload": {"num_requests": 200, "arrival": {"process": "poisson", "rate_per_s": 2.0},
                     "input_tokens": 512, "output_tokens": 64},
        "slo": {"ttft_s": 0.5, "tpot_s": 0.05},
    }
    for key, value in over.items():
        section, _, field = key.partition("__")
        if field:
            base.setdefault(section, {})[field] = value
        else:
            base[section] = value
    return base


@pytest.fixture
def profile_path(tmp_path, toy_profile_dict):
    path = tmp_path / "toy-gpu.json"
    path.write_text(json.dumps(toy_profile_dict))
    return str(path)


def lone_request_service_s(cost: CostModel, prompt: int, output: int) -> float:
    total = cost.step_time(StepShape.for_prefill([prompt]))
    for j in range(output - 1):
        total += cost.step_time(StepShape.for_decode(1, prompt + j))
    return total


def test_lone_request_e2e_is_prefill_plus_decode_steps_exactly(profile_path, toy_profile):
    sc = scenario_from_dict(scenario(profile_path, workload={
        "num_requests": 1, "arrival": {"process": "poisson", "rate_per_s": 1.0},
        "input_tokens": 700, "output_tokens": 50}, measurement={"warmup_fraction": 0, "drain_fraction": 0}))
    result = run_scenario(sc)
    (req,) = result.recorder.requests
    cost = CostModel(get_preset("llama-3-8b"), toy_profile)
    expected = lone_request_service_s(cost, 700, 50)
    assert req.finish_s - req.arrival_s == pytest.approx(expected, rel=1e-12)
    assert req.first_token_s - req.arrival_s == pytest.approx(cost.prefill_time(700), rel=1e-12)


def test_the_first_step_after_an_idle_wait_pays_the_machines_wake_up(tmp_path, toy_profile_dict):
    """A request that finds the engine asleep gets its first token later by the profile's wake-up:
    its prefill, the step that wakes the engine, takes (1 + slowdown) times as long, and every
    token after moves with it. Requests that find it busy, or a batch there from the start, never
    pay it."""
    plain, woken = tmp_path / "plain.json", tmp_path / "woken.json"
    plain.write_text(json.dumps(toy_profile_dict))
    toy_profile_dict["cost_model"]["wake_slowdown_curve"] = [[0.005, 0.02], [0.1, 0.08]]
    woken.write_text(json.dumps(toy_profile_dict))
    apart = {"num_requests": 2, "arrival": {"process": "poisson", "rate_per_s": 0.05},
             "input_tokens": 700, "output_tokens": 50}
    window = {"warmup_fraction": 0, "drain_fraction": 0}
    (a0, a1), (b0, b1) = (run_scenario(scenario_from_dict(scenario(str(p), workload=apart, measurement=window)))
                          .recorder.requests for p in (plain, woken))
    assert b0.arrival_s == a0.arrival_s == 0.0 and (b0.first_token_s, b0.finish_s) == (a0.first_token_s, a0.finish_s)
    assert b1.arrival_s == a1.arrival_s > a0.finish_s + 0.1  # it finds the engine long asleep
    prefill_s = CostModel(get_preset("llama-3-8b"), profile_from_dict(toy_profile_dict, "woken.json")).prefill_time(700)
    assert b1.first_token_s - a1.first_token_s == pytest.approx(0.08 * prefill_s, rel=1e-9)
    assert b1.finish_s - a1.finish_s == pytest.approx(0.08 * prefill_s, rel=1e-9)
    batch = {"num_requests": 8, "arrival": {"process": "all_at_once"}, "input_tokens": 300,
             "output_tokens": 20}
    runs = [run_scenario(scenario_from_dict(scenario(str(p), workload=batch, measurement=window)))
            for p in (plain, woken)]
    assert [r.finish_s for r in runs[0].recorder.requests] == [r.finish_s for r in runs[1].recorder.requests]


def test_the_engines_own_loop_after_each_step_delays_every_later_token(tmp_path, toy_profile_dict):
    """The profile's engine_step_overhead_s is spent after every step, the device idle: a lone
    request's first token is where it was, and each of its 49 later tokens one loop later than
    the one before (TPOT grows by exactly the loop); the loop's seconds draw idle power."""
    plain, looped = tmp_path / "plain.json", tmp_path / "looped.json"
    plain.write_text(json.dumps(toy_profile_dict))
    toy_profile_dict["cost_model"]["engine_step_overhead_s"] = 0.0004
    looped.write_text(json.dumps(toy_profile_dict))
    lone = {"num_requests": 1, "arrival": {"process": "poisson", "rate_per_s": 1.0},
            "input_tokens": 700, "output_tokens": 50}
    window = {"warmup_fraction": 0, "drain_fraction": 0}
    a, b = (run_scenario(scenario_from_dict(scenario(str(p), workload=lone, measurement=window)))
            for p in (plain, looped))
    (ra,), (rb,) = a.recorder.requests, b.recorder.requests
    assert rb.first_token_s == ra.first_token_s
    assert rb.finish_s - ra.finish_s == pytest.approx(49 * 0.0004, rel=1e-9)
    assert b.summary["latency"]["tpot_s"]["mean"] - a.summary["latency"]["tpot_s"]["mean"] == pytest.approx(0.0004, rel=1e-6)
    idle_w = toy_profile_dict["power"]["idle_w"]
    assert b.summary["energy"]["joules"] - a.summary["energy"]["joules"] == pytest.approx(
        49 * 0.0004 * idle_w, rel=1e-6)


@pytest.mark.parametrize("value", [-0.001, 1.5, True, "0.1"])
def test_a_bad_engine_overhead_is_bad_input_naming_the_field(tmp_path, toy_profile_dict, value):
    toy_profile_dict["cost_model"]["engine_step_overhead_s"] = value
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(toy_profile_dict))
    with pytest.raises(InputError, match="cost_model.engine_step_overhead_s"):
        load_profile(path)


@pytest.mark.parametrize("curve, field", [([[0.01, -0.001]], "wake_slowdown_curve[0]"),
                                          ([[0.0, 0.001]], "wake_slowdown_curve[0]"),
                                          ([[0.1, 0.002], [0.01, 0.003]], "wake_slowdown_curve[1]"),
                                          ({"0.1": 0.002}, "wake_slowdown_curve")])
def test_a_bad_wake_up_curve_is_bad_input_naming_its_point(tmp_path, toy_profile_dict, curve, field):
    toy_profile_dict["cost_model"]["wake_slowdown_curve"] = curve
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(toy_profile_dict))
    with pytest.raises(InputError, match=f"cost_model.{field.replace('[', '.').replace(']', '.')}"):
        load_profile(path)


@pytest.mark.parametrize("rho", [0.3, 0.5, 0.7])
def test_batch_one_poisson_matches_md1_mean_wait(profile_path, toy_profile, rho):
    """Batch size 1, fixed lengths, Poisson arrivals: an M/D/1 queue. The mean wait (arrival to
    first scheduled) must be within 2% of rho / (2 mu (1 - rho)). Four independent seeds of 100k
    requests are pooled: one seed alone scatters by about +-2.5% at these loads."""
    cost = CostModel(get_preset("llama-3-8b"), toy_profile)
    service_s = lone_request_service_s(cost, 256, 16)
    waits = []
    for seed in range(4):
        sc = scenario_from_dict(scenario(profile_path, seed=seed, workload={
            "num_requests": 100_000, "arrival": {"process": "poisson", "rate_per_s": rho / service_s},
            "input_tokens": 256, "output_tokens": 16}, scheduler={"policy": "continuous", "max_num_seqs": 1}))
        result = run_scenario(sc)
        assert not result.summary["overloaded"]
        waits += [r.scheduled_s - r.arrival_s for r in result.recorder.requests if r.is_measured]
        service = [r.finish_s - r.scheduled_s for r in result.recorder.requests[:100]]
        assert service == pytest.approx([service_s] * 100, rel=1e-9)  # deterministic service
    expected = rho * service_s / (2 * (1 - rho))  # Pollaczek-Khinchine for M/D/1
    assert np.mean(waits) == pytest.approx(expected, rel=0.02)


def test_same_scenario_and_seed_give_identical_json(profile_path):
    data = scenario(profile_path, workload={"num_requests": 300, "arrival": {"process": "gamma", "rate_per_s": 6, "cv": 2},
                                            "input_tokens": {"dist": "lognormal", "mean": 600, "sigma": 0.7},
                                            "output_tokens": {"dist": "uniform", "min": 10, "max": 200}})
    one = json.dumps(run_scenario(scenario_from_dict(data)).summary, sort_keys=True)
    two = json.dumps(run_scenario(scenario_from_dict(data)).summary, sort_keys=True)
    assert one == two
    data["seed"] = 4
    assert json.dumps(run_scenario(scenario_from_dict(data)).summary, sort_keys=True) != one


def test_summary_has_the_public_shape(profile_path):
    s = run_scenario(scenario_from_dict(scenario(profile_path))).summary
    assert set(s) >= {"overloaded", "window_s", "requests", "latency", "throughput", "goodput", "energy",
                      "cost", "co2_g"}
    assert set(s["requests"]) >= {"arrived", "completed", "preempted"}
    for metric in ("ttft_s", "tpot_s", "itl_s", "e2e_s"):
        assert set(s["latency"][metric]) == {"mean", "p50", "p90", "p95", "p99"}
    assert set(s["throughput"]) == {"requests_per_s", "input_tokens_per_s", "output_tokens_per_s"}
    assert set(s["goodput"]) >= {"requests_per_s", "slo_attainment"}
    assert set(s["energy"]) >= {"joules", "j_per_output_token", "j_per_token", "kwh"}
    assert set(s["cost"]) >= {"usd", "usd_per_1m_output_tokens", "usd_per_1m_tokens"}
    req = s["requests"]
    assert req["arrived"] == req["completed"] + req["in_flight"] + req["rejected"]
    assert s["latency"]["itl_s"]["mean"] == pytest.approx(s["latency"]["tpot_s"]["mean"], rel=0.05)


def test_overload_is_detected_and_latency_withheld(profile_path):
    s = run_scenario(scenario_from_dict(scenario(profile_path, workload={
        "num_requests": 3000, "arrival": {"process": "poisson", "rate_per_s": 400},
        "input_tokens": 2000, "output_tokens": 200}))).summary
    assert s["overloaded"] is True
    assert s["latency"]["ttft_s"]["p99"] is None
    assert s["overload"]["sustainable_rate_per_s"] < s["overload"]["arrival_rate_per_s"]
    calm = run_scenario(scenario_from_dict(scenario(profile_path))).summary
    assert calm["overloaded"] is False and calm["latency"]["ttft_s"]["p99"] > 0


def test_offline_throughput_counts_until_the_last_completion(profile_path):
    s = run_scenario(scenario_from_dict(scenario(profile_path, workload={
        "num_requests": 400, "arrival": {"process": "all_at_once"}, "input_tokens": 300,
        "output_tokens": 100}))).summary
    assert s["overloaded"] is False and s["window_s"] > 0
    assert s["throughput"]["output_tokens_per_s"] > 1000


def test_idle_power_is_charged_when_replicas_wait(profile_path, toy_profile):
    slow = run_scenario(scenario_from_dict(scenario(profile_path, workload={
        "num_requests": 100, "arrival": {"process": "poisson", "rate_per_s": 0.05},
        "input_tokens": 100, "output_tokens": 10}))).summary
    idle_j = toy_profile.power.idle_w * slow["window_s"]
    assert slow["energy"]["joules"] >= idle_j
    assert slow["energy"]["joules"] < idle_j * 1.2  # nearly all idle at this load


def test_kv_cache_capacity_is_derived_and_fp8_kv_doubles_it(profile_path):
    bf16 = run_scenario(scenario_from_dict(scenario(profile_path))).kv
    fp8 = run_scenario(scenario_from_dict(scenario(profile_path, model={"name": "llama-3-8b", "kv_dtype": "fp8"}))).kv
    m = get_preset("llama-3-8b")
    free = 80e9 * 0.9 - m.weight_bytes - bf16.activation_reserve_bytes
    assert bf16.num_blocks == int(free // (m.kv_bytes_per_token * 16))
    assert fp8.num_blocks == int(free // (m.kv_bytes_per_token / 2 * 16))


def test_closed_loop_keeps_at_most_n_requests_in_flight(profile_path):
    result = run_scenario(scenario_from_dict(scenario(profile_path, workload={
        "num_requests": 60, "arrival": {"process": "closed", "concurrency": 3, "think_time_s": 0.01},
        "input_tokens": 200, "output_tokens": 20})))
    reqs = result.recorder.requests
    events = sorted([(r.arrival_s, 1) for r in reqs] + [(r.finish_s, -1) for r in reqs])
    live, peak = 0, 0
    for _, delta in events:
        live += delta
        peak = max(peak, live)
    assert peak == 3 and len(reqs) == 60 and all(r.finish_s > 0 for r in reqs)


@pytest.mark.parametrize("router", ["round_robin", "random", "least_outstanding", "least_kv"])
def test_routers_spread_load_over_replicas(profile_path, router):
    result = run_scenario(scenario_from_dict(scenario(profile_path, deployment={
        "profile": profile_path, "replicas": 3, "router": router})))
    counts = np.bincount([r.replica for r in result.recorder.requests], minlength=3)
    assert counts.sum() == 200 and counts.min() > 30
    if router == "round_robin":
        assert counts.tolist() == [67, 67, 66]


def test_tensor_parallel_speeds_up_decode_and_adds_communication(toy_profile):
    model = get_preset("llama-3-70b")
    tp4, tp8 = CostModel(model, toy_profile, 4), CostModel(model, toy_profile, 8)
    assert tp8.decode_time(1, 1024) < tp4.decode_time(1, 1024)
    assert tp8.step_cost(StepShape.for_decode(8, 8000)).comm_s > 0


def test_trace_replay_reproduces_the_azure_conversation_trace(profile_path):
    result = run_scenario(scenario_from_dict(scenario(profile_path, workload={"trace": "azure-conv-2023"},
                                                      scheduler={"policy": "chunked"})))
    reqs = result.recorder.requests
    import csv
    from sim.traffic.traces import resolve_trace_path
    with open(resolve_trace_path("azure-conv-2023")) as fh:
        rows = list(csv.DictReader(fh))
    assert len(reqs) == len(rows) == 19366
    assert sum(r.prompt_tokens for r in reqs) == sum(int(r["ContextTokens"]) for r in rows)
    assert sum(r.output_tokens for r in reqs) == sum(int(r["GeneratedTokens"]) for r in rows)
    s = result.summary
    assert s["requests"]["completed"] + s["requests"]["rejected"] == 19366
