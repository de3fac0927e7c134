"""Fidelity: the real engine serves a workload and the simulator must predict what it measured.

Both engines get the identical workload (one `sim.scenario.prepare` builds arrivals, lengths,
policy and KV capacity for both), so the comparison measures the cost model and nothing else.
Compared: TTFT, TPOT, ITL and E2E (mean, p50, p90, p99), throughput, and energy per token where the
device has a meter. Relative error = (predicted - measured) / measured.

The model runs in the profile's calibrated dtype (the dtype its cost model was fitted in), unless
the scenario says otherwise.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from calibrate.power import make_meter
from calibrate.real_engine import RealRun, serve
from calibrate.runner import Runner
from sim.profile import Profile
from sim.scenario import RunResult, Scenario, prepare, run_scenario

LATENCY_FIELDS = ("ttft_s", "tpot_s", "itl_s", "e2e_s")
STATS = ("mean", "p50", "p90", "p99")


@dataclass
class Validation:
    name: str
    scenario: Scenario
    predicted: RunResult
    measured: RealRun
    rows: list[dict]
    same_workload: bool

    def to_dict(self) -> dict:
        return {"name": self.name, "scenario": self.scenario.to_dict(), "same_workload": self.same_workload,
                "comparison": self.rows, "predicted": self.predicted.summary,
                "measured": self.measured.summary}


def in_profile_dtype(sc: Scenario, profile: Profile) -> Scenario:
    dtype = profile.cost.compute_dtype
    return dataclasses.replace(sc, weight_dtype=sc.weight_dtype or dtype, kv_dtype=sc.kv_dtype or dtype)


def _row(metric: str, predicted: float | None, measured: float | None) -> dict:
    error = None
    if predicted is not None and measured:
        error = (predicted - measured) / measured
    return {"metric": metric, "predicted": predicted, "measured": measured, "rel_error": error}


def compare(predicted: dict, measured: dict) -> list[dict]:
    rows = []
    for field in LATENCY_FIELDS:
        for stat in STATS:
            rows.append(_row(f"{field}.{stat}", predicted["latency"][field][stat], measured["latency"][field][stat]))
    for field in ("requests_per_s", "output_tokens_per_s"):
        rows.append(_row(f"throughput.{field}", predicted["throughput"][field], measured["throughput"][field]))
    if measured["energy"].get("joules") is not None:
        rows.append(_row("energy.j_per_output_token", predicted["energy"]["j_per_output_token"],
                         measured["energy"]["j_per_output_token"]))
    return rows


def same_workload(a, b, closed_loop: bool) -> bool:
    """Identical request ids, arrival times and lengths (closed loops: ids and lengths only,
    since users send their next request when the previous one ends)."""
    def key(r):
        return (r.request_id, r.prompt_tokens, r.output_tokens, None if closed_loop else r.arrival_s)
    return sorted(map(key, a.requests)) == sorted(map(key, b.requests))


def warm_up(runner: Runner, prompt_tokens: int = 64, decode_steps: int = 4) -> None:
    """One prefill and a few decodes, so allocation and first-call costs stay out of the run."""
    from sim.plan import PrefillChunk, StepPlan

    rid = -1
    runner.add_request(rid, list(range(1, prompt_tokens + 1)))
    runner.execute(StepPlan(prefill=(PrefillChunk(rid, 0, prompt_tokens, True),)))
    for _ in range(decode_steps):
        runner.execute(StepPlan(decode_ids=(rid,), decode_context_tokens=runner.num_computed(rid)))
    runner.synchronize()
    runner.free(rid)


def validate(name: str, sc: Scenario, profile: Profile, device: str = "cpu", tdp_w: float | None = None,
             seed: int = 0, progress=None) -> Validation:
    sc = in_profile_dtype(sc, profile)
    prep = prepare(sc, profile)
    predicted = run_scenario(sc, profile)
    load = prep.load
    longest = int(np.max(np.asarray(load.prompt_tokens) + np.asarray(load.output_tokens)))
    max_seqs = sc.scheduler.max_batch_size if sc.scheduler.policy == "static" else sc.scheduler.max_num_seqs
    runner = Runner(prep.model, dtype=prep.model.weight_dtype, device=device,
                    max_num_seqs=min(max_seqs, len(load.prompt_tokens)) + 1,
                    max_seq_len=min(longest + 1, prep.model.max_position_embeddings), seed=seed)
    warm_up(runner, max(1, min(64, runner.max_seq_len - 6)))
    meter = make_meter(runner.device.type, tdp_w=tdp_w)
    try:
        measured = serve(prep, runner, meter, seed=seed, progress=progress)
    finally:
        meter.close()
    rows = compare(predicted.summary, measured.summary)
    return Validation(name, sc, predicted, measured, rows, same_workload(predicted.recorder, measured.recorder, sc.workload.is_closed_loop))


def format_rows(rows: list[dict]) -> str:
    def fmt(v: float | None, scale: float = 1.0) -> str:
        return "n/a" if v is None else f"{v * scale:.4g}"

    lines = [f"{'metric':<34}{'predicted':>12}{'measured':>12}{'error':>9}"]
    for r in rows:
        scale = 1e3 if r["metric"].split(".")[0].endswith("_s") else 1.0
        unit = " ms" if scale == 1e3 else ""
        err = "n/a" if r["rel_error"] is None else f"{r['rel_error'] * 100:+.1f}%"
        lines.append(f"{r['metric'] + unit:<34}{fmt(r['predicted'], scale):>12}{fmt(r['measured'], scale):>12}{err:>9}")
    return "\n".join(lines)


def saturation_rate(data: dict, profile: Profile) -> float:
    """Requests per second the profile predicts this workload's deployment sustains: the
    throughput of the same requests all arriving at once (offline)."""
    offline = {**data, "workload": {**data["workload"], "arrival": {"process": "all_at_once"}}}
    from sim.scenario import scenario_from_dict

    summary = run_scenario(in_profile_dtype(scenario_from_dict(offline, "suite"), profile), profile).summary
    return summary["throughput"]["requests_per_s"]


def default_suite(profile: Profile, model: str, second_model: str, num_requests: int = 60,
                  loads: tuple[float, ...] = (0.3, 0.6, 0.8)) -> list[tuple[str, dict]]:
    """The checks a user runs after `calibrate`: loads of 30/60/80% of capacity under continuous
    batching and chunked prefill on a synthetic workload, a time-scaled slice of the Azure
    conversation trace, and a second model size (cross-model check)."""
    def synthetic(policy: str, name: str, rate: float | None = None) -> dict:
        data = {"seed": 7, "model": {"name": name}, "deployment": {"profile": profile.path},
                "scheduler": {"policy": policy, "max_num_seqs": 16, "max_num_batched_tokens": 512},
                "workload": {"num_requests": num_requests,
                             "arrival": {"process": "poisson", "rate_per_s": rate or 1.0},
                             "input_tokens": {"dist": "uniform", "min": 32, "max": 256},
                             "output_tokens": {"dist": "uniform", "min": 16, "max": 96}}}
        return data

    suite = []
    for policy in ("continuous", "chunked"):
        capacity = saturation_rate(synthetic(policy, model), profile)
        for load in loads:
            suite.append((f"{model} {policy} synthetic {load:.0%}", synthetic(policy, model, load * capacity)))
    trace = synthetic("chunked", model)
    trace["workload"] = {"trace": {"path": "azure-conv-2023", "max_requests": num_requests // 2}}
    trace_lengths = {**trace, "workload": {"num_requests": num_requests // 2, "arrival": {"process": "all_at_once"},
                                           "input_tokens": {"dist": "empirical", "trace": "azure-conv-2023"},
                                           "output_tokens": {"dist": "empirical", "trace": "azure-conv-2023"}}}
    capacity = saturation_rate(trace_lengths, profile)
    trace["workload"]["trace"]["rate_per_s"] = 0.6 * capacity
    suite.append((f"{model} chunked azure-conv slice 60%", trace))
    capacity = saturation_rate(synthetic("continuous", second_model), profile)
    suite.append((f"{second_model} continuous synthetic 60% (cross-model)",
                  synthetic("continuous", second_model, 0.6 * capacity)))
    return suite
