"""Load sweeps: latency and throughput against offered load, per candidate, up to and past
saturation, with the saturation point marked.

Each point is one run of the scenario's deployment (its replica count and router; a candidate
swaps the profile and TP degree) with the workload's arrival rate set to r (`sim.planning.capacity.with_load`:
the arrival process keeps its shape, a trace is rescaled). All points use the scenario's seed, so
the arrival gaps scale exactly with 1/r (common random numbers) and the curves are smooth. A run
is sized by time as the planner's (`sim.planning.capacity.search_requests`: `run_duration_s` of arrivals, at
least `requests_per_run` requests), so a backlog has as long to show at every rate.

Rates: given (`rates`), or automatic: the saturation point is searched first (x4 steps to bracket
the first overloaded rate, then bisection in log(rate) to 10%), then a grid from 10% to 150% of it.
Saturation: the deployment is *overloaded* when the work in the system grows through the
measurement window (`summary["overloaded"]`, `sim.overload`). The saturation point is the geometric mean of the highest rate
not overloaded and the lowest overloaded rate above it; `saturation_throughput_per_s` is the
completion rate the overloaded run sustained. `max_rate_meeting_slo_per_s` is the highest rate
below the first failure of the SLO criterion (`sim.planning.capacity.Criterion`; without SLOs: not
overloaded). Ctrl-C keeps every finished point.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sim.errors import InputError
from sim.planning.executors import Executor, SerialExecutor, make_task
from sim.planning.capacity import (SCHEMA_VERSION, SLO_METRICS, STATS, Candidate, Criterion, LoadShape, PlanSettings,
                         ProgressFn, assumptions, capacity_estimate, compact_summary, drive, gather, load_shape,
                         profile_facts, rate_search, search_requests, with_deployment, with_load)

GRID_FRACTIONS = (0.1, 0.25, 0.4, 0.55, 0.7, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5)


def _task(scenario: dict, cand: Candidate, profile: Any, replicas: int, rate: float, num_requests: int,
          seed: int, base_rate: float) -> dict:
    d = with_load(with_deployment(scenario, cand, replicas), rate, num_requests, seed, base_rate)
    task = make_task(d, profile.raw, profile.path)
    task["tag"] = {"label": cand.label, "rate_per_s": rate, "num_requests": num_requests}
    return task


def _candidate(scenario: dict, cand: Candidate, replicas: int, rates: Sequence[float] | None,
               settings: PlanSettings, shape: LoadShape, seed: int, where: str):
    from sim.spec.profile import load_profile

    profile = load_profile(cand.profile)

    def task(rate: float) -> dict:  # a run's length: run_duration_s of arrivals at each replica's share
        n = search_requests(settings, shape, rate / replicas) * replicas
        n = min(n, shape.trace_rows) if shape.trace_rows is not None else n
        return _task(scenario, cand, profile, replicas, rate, n, seed, shape.base_rate_per_s)

    if rates is not None:
        yield [task(r) for r in rates]
        return
    start = 0.5 * replicas * capacity_estimate(scenario, cand, profile, where)
    search = rate_search(start, 0.1, start * 1e-4, start * 1e3)
    rate = next(search)
    tried = {rate}
    while True:
        (result,) = yield [task(rate)]
        try:
            rate = search.send(not result["summary"]["overloaded"])
            tried.add(rate)
        except StopIteration as stop:
            lo, hi = stop.value
            break
    if lo is None or hi is None:
        return
    sat = math.sqrt(lo * hi)
    grid = [sat * f for f in GRID_FRACTIONS]
    grid = [r for r in grid if all(abs(r / t - 1) > 0.02 for t in tried)]
    if grid:
        yield [task(r) for r in grid]


def finish_candidate(record: dict, criterion: Criterion) -> None:
    """Saturation and the highest rate meeting the SLOs, from the record's points."""
    points = sorted(record["points"], key=lambda p: p["rate_per_s"])
    record["points"] = points
    over = [p for p in points if p["overloaded"]]
    record.update(saturation_rate_per_s=None, saturation_bracket=None, saturation_throughput_per_s=None)
    if over:
        first = over[0]
        below = [p for p in points if p["rate_per_s"] < first["rate_per_s"] and not p["overloaded"]]
        lo = below[-1]["rate_per_s"] if below else None
        record["saturation_bracket"] = [lo, first["rate_per_s"]]
        record["saturation_rate_per_s"] = math.sqrt(lo * first["rate_per_s"]) if lo else first["rate_per_s"]
        record["saturation_throughput_per_s"] = first["overload"]["sustainable_rate_per_s"]
    best = None
    for p in points:
        if not p["passes"]:
            break
        best = p["rate_per_s"]
    record["max_rate_meeting_slo_per_s"] = best
    if record["status"] != "interrupted":
        record["status"] = "ok"


def sweep(scenario_dict: dict, candidates: Sequence[Candidate] | None = None, rates: Sequence[float] | None = None,
          executor: Executor | None = None, where: str = "<scenario>", base_dir: str | Path | None = None,
          progress: ProgressFn | None = None, stat: str = "p99", requests_per_run: int | None = None,
          replicas: int | None = None, run_duration_s: float | None = None) -> dict:
    """Latency/throughput curves as plain data (the JSON that `infercast report` renders).
    rates None: automatic (see the module docstring)."""
    from sim.cost_model import CostModel
    from sim.spec.profile import load_profile
    from sim.scenario import scenario_from_dict

    if stat not in STATS:
        raise InputError(where, "stat", f"expected one of {', '.join(STATS)}, got {stat!r}")
    if rates is not None:
        try:
            rates = sorted({float(r) for r in rates})
        except (TypeError, ValueError):
            rates = []
        if not rates or not all(0 < r < math.inf for r in rates):
            raise InputError(where, "rates", f"expected one or more finite rates > 0 (requests/s), got {rates!r}")
    base = copy.deepcopy(scenario_dict)
    if replicas is not None:
        base.setdefault("deployment", {})["replicas"] = replicas
    if candidates is not None and not candidates:
        raise InputError(where, "candidates", "no candidates: give at least one PROFILE[:tpN]")
    if candidates:
        base.setdefault("deployment", {}).setdefault("profile", candidates[0].profile)
    sc = scenario_from_dict(base, where, base_dir=base_dir)
    cands = list(candidates) if candidates else [Candidate(sc.deployment.profile, sc.deployment.tp)]
    for cand in cands:
        CostModel(sc.model_spec(), load_profile(cand.profile), cand.tp)
    canonical = sc.to_dict()
    slo = {m: float(v) for m, v in canonical.get("slo", {}).items() if m in SLO_METRICS and v is not None}
    criterion = Criterion(slo, stat)
    try:
        settings = PlanSettings(requests_per_run=requests_per_run,
                                **({"run_duration_s": run_duration_s} if run_duration_s is not None else {}))
    except ValueError as exc:
        name, _, problem = str(exc).partition(": ")
        raise InputError(where, f"sweep.{name}", problem or str(exc)) from None
    shape = load_shape(canonical, settings, where)
    records = {c.label: {"label": c.label, "profile": c.profile, "tp": c.tp, "replicas": sc.deployment.replicas,
                         "status": "interrupted", "points": [], **profile_facts(c, load_profile(c.profile))}
               for c in cands}

    def on_result(task: dict, result: dict) -> None:
        tag = task["tag"]
        ok, reason = criterion.check(result["summary"])
        records[tag["label"]]["points"].append({"rate_per_s": tag["rate_per_s"], "num_requests": tag["num_requests"],
                                                "passes": ok, "reason": reason,
                                                **compact_summary(result["summary"])})

    coroutines = [_candidate(canonical, c, sc.deployment.replicas, rates, settings, shape, sc.seed, where)
                  for c in cands]
    interrupted = False
    try:
        drive(gather(coroutines), executor or SerialExecutor(), progress, on_result)
        for r in records.values():
            r["status"] = "ok"
    except KeyboardInterrupt:
        interrupted = True
    for r in records.values():
        finish_candidate(r, criterion)
    criterion_text = criterion.describe() if slo else "not overloaded (no SLOs set)"
    return {
        "kind": "sweep", "schema_version": SCHEMA_VERSION, "interrupted": interrupted,
        "question": {"model": sc.model, "weight_dtype": sc.model_spec().weight_dtype,
                     "kv_dtype": sc.model_spec().kv_dtype, "workload": sc.workload.describe(),
                     "workload_rate_per_s": shape.base_rate_per_s, "slo": slo, "router": sc.deployment.router,
                     "replicas": sc.deployment.replicas, "scheduler": canonical["scheduler"],
                     "rates": list(rates) if rates is not None else [], "seed": sc.seed},
        "criterion": {"stat": stat, "text": criterion_text, "requests_per_run": shape.requests_per_run,
                      "run_duration_s": settings.run_duration_s},
        "scenario": canonical,
        "candidates": list(records.values()),
        "assumptions": assumptions(canonical, list(records.values())),
    }
