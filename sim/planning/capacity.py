"""Capacity planner: per candidate hardware, the highest request rate one replica sustains within
the SLOs, the fewest replicas for the target load (verified by a cluster simulation), what that
costs per month and per token, and how sure we are (across seeds).

The SLO criterion (`Criterion`): a run *meets the SLOs* when
  (1) it is not overloaded (`summary["overloaded"]` is false: neither the work in the system nor
      the waiting queue grows through the measurement window, `sim.overload`), its window is long
      enough for its latencies (`summary["window"]["is_too_short"]` is false) and at least one
      measured request completed, and
  (2) for every SLO set in the scenario (ttft_s, tpot_s, e2e_s), the chosen statistic (`stat`,
      default p99; one of mean, p50, p90, p95, p99) of that latency over the measured requests is
      at most the SLO.
Requests a deployment can never serve (rejected: a prompt longer than max_num_batched_tokens, a
request larger than the KV cache or the model's context) do not depend on the load, so they do not
count against capacity; the plan reports how many there were, per candidate.

The search, per candidate and per seed: runs of one replica at rate r (the workload's arrival
process with its rate set to r; the same seed at every r, so arrival gaps scale exactly with 1/r:
common random numbers). Start at half a cost-model estimate of the saturation rate; multiply by 4
until a run fails (or divide by 4 until one passes), then bisect in log(rate) until the passing
and failing rates are within `rel_tol`. The answer for the seed is the highest passing rate.
Runs are sized by time, not by a fixed count: `run_duration_s` of arrivals at the rate tried (at
least `requests_per_run` requests, at most `max_requests_per_run`), so a fast replica is watched
for as long as a slow one; a run whose window is too short for its latencies is run again with
twice the requests (up to `max_requests_per_run`; then it fails).

Sizing: replicas for seed s = ceil(target / max_rate_s); the plan takes the count that holds for
`confidence` of the seeds (the upper `confidence` quantile), then verifies it by simulating the
whole cluster (the scenario's router) at the target load with every seed. It passes when at least
ceil(confidence x seeds) seeds meet the SLOs; otherwise one more replica is tried. Verification
runs are long: `verify_requests` requests of the whole cluster (a replayed trace: all its rows if
it has fewer), many times a search run, so a backlog the search's runs could hide shows. The sizing is
therefore conservative: a router that balances better than the per-replica Poisson split may
manage with fewer (the verification never searches downwards). Sensitivity: the same sizing and
verification at target x each load factor.

Money and energy come from the verification runs (mean over seeds): cost per window second times
a month (730.5 h) for the monthly cost; mean power for kWh per month (IT equipment; CO2 includes
PUE); $ and J per token straight from the run summaries. Headroom: 1 - target / (replicas x the
conservative per-replica rate). Confidence intervals: the per-replica rate across seeds (min..max
and the (1 - confidence) quantile), and a stratified percentile bootstrap (resampling requests
within each seed) of the pooled p99 TTFT/TPOT/E2E at the verified size.

Runs are pure functions of (scenario dict, seed) and go through an executor (`sim.planning.executors`), in
lockstep rounds: every round, each candidate's pending runs are submitted together. Ctrl-C stops
the rounds; candidates already finished keep their results, the others are marked "interrupted".
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sim.errors import InputError
from sim.planning.executors import Executor, SerialExecutor, make_task

HOURS_PER_MONTH = 8766.0 / 12.0
STATS = ("mean", "p50", "p90", "p95", "p99")
SLO_METRICS = ("ttft_s", "tpot_s", "e2e_s")
DEFAULT_REQUESTS_PER_RUN = 1000
SCHEMA_VERSION = 1

Batch = list[dict]
Coroutine = Generator[Batch, list[dict], Any]
ProgressFn = Callable[[int, int], None]


# ---- inputs -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Candidate:
    """A hardware profile (name or path) at a tensor-parallel degree: PROFILE[:tpN]."""

    profile: str
    tp: int = 1

    @property
    def label(self) -> str:
        name = Path(self.profile).stem if self.profile.endswith(".json") else self.profile
        return name if self.tp == 1 else f"{name}:tp{self.tp}"


def parse_candidate(text: str, where: str = "command line", field_name: str = "--candidates") -> Candidate:
    profile, _, tp_text = str(text).partition(":")
    tp = 1
    if tp_text:
        digits = tp_text[2:] if tp_text.lower().startswith("tp") else ""
        if not digits.isdigit() or int(digits) < 1:
            raise InputError(where, field_name, f"expected PROFILE or PROFILE:tpN (N >= 1), got {text!r}")
        tp = int(digits)
    if not profile:
        raise InputError(where, field_name, f"expected PROFILE or PROFILE:tpN, got {text!r}")
    return Candidate(profile, tp)


@dataclass(frozen=True)
class PlanSettings:
    """How the plan searches; a scenario's optional [plan] table holds the same keys (plus
    `candidates`)."""

    target_rate_per_s: float | None = None  # None: the workload's own mean rate
    seeds: int = 3
    confidence: float = 0.95
    stat: str = "p99"
    rel_tol: float = 0.03
    load_factors: tuple[float, ...] = (1.5, 2.0)
    requests_per_run: int | None = None  # least requests of a search run; None: the workload's (or 1000)
    run_duration_s: float = 600.0  # a search run's arrivals span this long at the rate tried
    max_requests_per_run: int = 50000
    verify_requests: int = 20000  # requests of each cluster verification run
    max_replicas: int = 512
    bootstrap_samples: int = 400

    def __post_init__(self) -> None:
        if self.target_rate_per_s is not None and not (isinstance(self.target_rate_per_s, (int, float))
                                                       and 0 < self.target_rate_per_s < math.inf):
            raise ValueError(f"target_rate_per_s: expected a number > 0, got {self.target_rate_per_s!r}")
        for name in ("seeds", "max_requests_per_run", "verify_requests", "max_replicas", "bootstrap_samples"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")
        if self.requests_per_run is not None and not (isinstance(self.requests_per_run, int)
                                                      and self.requests_per_run >= 20):
            raise ValueError(f"requests_per_run: expected an integer >= 20, got {self.requests_per_run!r}")
        if not (isinstance(self.run_duration_s, (int, float)) and not isinstance(self.run_duration_s, bool)
                and 0 < self.run_duration_s < math.inf):
            raise ValueError(f"run_duration_s: expected a number of seconds > 0, got {self.run_duration_s!r}")
        if self.requests_per_run is not None and self.requests_per_run > self.max_requests_per_run:
            raise ValueError(f"requests_per_run: expected at most max_requests_per_run "
                             f"({self.max_requests_per_run}), got {self.requests_per_run}")
        if not (isinstance(self.confidence, (int, float)) and 0 < self.confidence <= 1):
            raise ValueError(f"confidence: expected 0 < x <= 1, got {self.confidence!r}")
        if self.stat not in STATS:
            raise ValueError(f"stat: expected one of {', '.join(STATS)}, got {self.stat!r}")
        if not (isinstance(self.rel_tol, (int, float)) and 0.001 <= self.rel_tol <= 0.5):
            raise ValueError(f"rel_tol: expected 0.001 <= x <= 0.5, got {self.rel_tol!r}")
        if not isinstance(self.load_factors, (list, tuple)):
            raise ValueError(f"load_factors: expected a list of numbers > 0, got {self.load_factors!r}")
        factors = tuple(self.load_factors)
        if not all(isinstance(f, (int, float)) and not isinstance(f, bool) and 0 < f < math.inf for f in factors):
            raise ValueError(f"load_factors: expected numbers > 0, got {self.load_factors!r}")
        object.__setattr__(self, "load_factors", tuple(float(f) for f in factors))

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items() if v is not None}


def settings_from_dict(raw: Any, where: str, overrides: dict[str, Any] | None = None) -> PlanSettings:
    """PlanSettings from a [plan] table (minus `candidates`) with command-line overrides on top."""
    raw = dict(raw or {})
    names = set(PlanSettings.__dataclass_fields__)
    for key in raw:
        if key not in names:
            raise InputError(where, f"plan.{key}",
                             f"unknown key; expected one of: candidates, {', '.join(sorted(names))}")
    raw.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return PlanSettings(**raw)
    except ValueError as exc:
        name, _, problem = str(exc).partition(": ")
        raise InputError(where, f"plan.{name}", problem or str(exc)) from None


def load_plan_file(path: str | Path) -> tuple[dict, dict, dict, str, Path]:
    """A scenario file with optional [plan] and [sweep] tables: (scenario dict, plan, sweep, where, dir)."""
    from sim.scenario import load_scenario_dict

    data = load_scenario_dict(path)
    if not isinstance(data, dict):
        raise InputError(str(path), "", "expected a table of settings")
    plan, sweep = data.pop("plan", {}), data.pop("sweep", {})
    for key, value in (("plan", plan), ("sweep", sweep)):
        if not isinstance(value, dict):
            raise InputError(str(path), key, f"expected a table of settings, got {type(value).__name__}")
    return data, plan, sweep, str(path), Path(path).parent


def candidates_from(texts: Sequence[str] | None, plan_table: dict, where: str) -> list[Candidate]:
    """Candidates from the command line, else from [plan] candidates; an empty list is an error."""
    if texts is not None:
        cands = [parse_candidate(t) for t in texts]
        source = ("command line", "--candidates")
    else:
        listed = plan_table.get("candidates", [])
        if not isinstance(listed, list):
            raise InputError(where, "plan.candidates", f"expected a list of PROFILE[:tpN], got {listed!r}")
        cands = [parse_candidate(t, where, "plan.candidates") for t in listed]
        source = (where, "plan.candidates")
    if not cands:
        raise InputError(*source, "no candidates: give at least one PROFILE[:tpN] "
                         "(e.g. --candidates h100-sxm a100-80gb l4)")
    labels = [c.label for c in cands]
    dupes = sorted({lb for lb in labels if labels.count(lb) > 1})
    if dupes:
        raise InputError(*source, f"candidate listed twice: {', '.join(dupes)}")
    return cands


# ---- the SLO criterion --------------------------------------------------------------------------

@dataclass(frozen=True)
class Criterion:
    """See the module docstring: not overloaded, and `stat` of each SLO'd latency <= its SLO."""

    slo: dict[str, float]
    stat: str = "p99"

    def check(self, summary: dict) -> tuple[bool, str]:
        if summary.get("window", {}).get("is_too_short"):
            return False, "measurement window too short for its latencies"
        if summary["overloaded"]:
            return False, "overloaded"
        if not summary["requests"]["measured_completed"]:
            return False, "no measured request completed"
        for metric, limit in self.slo.items():
            value = summary["latency"][metric][self.stat]
            if value is None or value > limit:
                shown = "n/a" if value is None else f"{value:.4g} s"
                return False, f"{self.stat} {metric[:-2]} {shown} > {limit:g} s"
        return True, "meets the SLOs"

    def describe(self) -> str:
        parts = [f"{self.stat} {m[:-2].upper()} <= {v:g} s" for m, v in self.slo.items()]
        return ("not overloaded (work in the system does not grow), a window long enough for its latencies, "
                "and " + " and ".join(parts) + " (over the measured requests of the run)")


def criterion_for(slo: dict[str, float | None], stat: str, where: str) -> Criterion:
    active = {m: float(slo[m]) for m in SLO_METRICS if slo.get(m) is not None}
    if not active:
        raise InputError(where, "slo", "the plan needs at least one SLO: set slo.ttft_s, slo.tpot_s "
                         "or slo.e2e_s (or --slo-ttft-s / --slo-tpot-s / --slo-e2e-s)")
    return Criterion(active, stat)


# ---- changing the load of a scenario dict ------------------------------------------------------

def workload_rate(scenario_dict: dict, where: str) -> float:
    """The mean arrival rate of an open-loop workload (a trace replayed at its own pace: its rate)."""
    wl = scenario_dict["workload"]
    arrival = wl.get("arrival")
    if arrival is None:
        trace = wl["trace"]
        if trace.get("rate_per_s") is not None:
            return float(trace["rate_per_s"])
        arr = _trace_arrivals(trace)
        if arr.size < 2 or arr[-1] <= 0:
            raise InputError(where, "workload.trace", "the trace needs two or more arrivals at different times")
        return (arr.size - 1) / (float(arr[-1]) * trace.get("time_scale", 1.0))
    process = arrival["process"]
    if process in ("poisson", "gamma", "constant"):
        rate = float(arrival["rate_per_s"])
        if math.isinf(rate):
            raise InputError(where, "workload.arrival.rate_per_s", "an offline (infinite-rate) workload has no "
                             "request rate to plan for; use a finite rate")
        return rate
    if process == "piecewise":
        from sim.traffic.workload import arrival_from_dict

        return float(arrival_from_dict(arrival, where).mean_rate_per_s)
    raise InputError(where, "workload.arrival.process", f"planning needs an open-loop arrival process with a "
                     f"rate (poisson, gamma, constant, piecewise or a trace), got {process!r}")


def _trace_arrivals(trace: dict) -> np.ndarray:
    from sim.traffic.traces import load_trace_spec
    from sim.traffic.workload import TraceSpec

    spec = TraceSpec(path=trace["path"], format=trace.get("format", "auto"), start_s=trace.get("start_s", 0.0),
                     max_requests=trace.get("max_requests"), zero_output=trace.get("zero_output", "auto"))
    return np.asarray(load_trace_spec(spec).arrival_s, dtype=np.float64)


def with_load(scenario_dict: dict, rate_per_s: float, num_requests: int, seed: int,
              base_rate_per_s: float, trace_start_s: float | None = None) -> dict:
    """A copy of the scenario with its arrival rate set to rate_per_s (the arrival process's shape
    kept: a piecewise curve or a trace is rescaled), num_requests requests and this seed."""
    d = copy.deepcopy(scenario_dict)
    d["seed"] = seed
    wl = d["workload"]
    arrival = wl.get("arrival")
    if "trace" in wl:
        wl["trace"]["max_requests"] = num_requests
        if trace_start_s is not None:
            wl["trace"]["start_s"] = trace_start_s
        if arrival is None:
            wl["trace"].pop("time_scale", None)
            wl["trace"]["rate_per_s"] = rate_per_s
    else:
        wl["num_requests"] = num_requests
    if arrival is not None:
        if arrival["process"] == "piecewise":
            factor = rate_per_s / base_rate_per_s
            arrival["segments"] = [{"start_s": s["start_s"], "rate_per_s": s["rate_per_s"] * factor}
                                   for s in arrival["segments"]]
        else:
            arrival["rate_per_s"] = rate_per_s
    return d


def with_deployment(scenario_dict: dict, cand: Candidate, replicas: int) -> dict:
    d = copy.deepcopy(scenario_dict)
    dep = d.setdefault("deployment", {})
    dep.update({"profile": cand.profile, "tp": cand.tp, "replicas": replicas})
    return d


@dataclass
class LoadShape:
    """What the planner needs to know about the scenario's workload."""

    base_rate_per_s: float
    requests_per_run: int
    trace_rows: int | None  # rows of a replayed trace (None: synthetic lengths)
    trace_arrivals: np.ndarray | None = field(default=None, repr=False)

    def start_s(self, seed_index: int, num_seeds: int, num_requests: int) -> float | None:
        """Seeds replay different windows of a trace where it is long enough (a replayed trace
        is otherwise the same for every seed)."""
        if self.trace_arrivals is None or self.trace_rows is None or num_seeds == 1:
            return None
        spare = self.trace_rows - num_requests
        if spare <= 0:
            return None
        row = round(seed_index * spare / (num_seeds - 1))
        return float(self.trace_arrivals[row])


def load_shape(scenario_dict: dict, settings: PlanSettings, where: str) -> LoadShape:
    wl = scenario_dict["workload"]
    rate = workload_rate(scenario_dict, where)
    if "trace" in wl:
        arrivals = _trace_arrivals({**wl["trace"], "max_requests": None})
        count = wl["trace"].get("max_requests") or min(len(arrivals), DEFAULT_REQUESTS_PER_RUN)
        return LoadShape(rate, settings.requests_per_run or count, len(arrivals), arrivals)
    count = wl.get("num_requests") or DEFAULT_REQUESTS_PER_RUN
    return LoadShape(rate, settings.requests_per_run or count, None)


# ---- running coroutines in lockstep rounds -----------------------------------------------------

def gather(coroutines: Sequence[Coroutine]) -> Coroutine:
    """Run coroutines (each yields a batch of tasks and receives their results) in lockstep:
    every round submits the union of their batches. Returns their return values, in order."""
    values: list[Any] = [None] * len(coroutines)
    batches: dict[int, Batch] = {}
    for i, co in enumerate(coroutines):
        try:
            batches[i] = next(co)
        except StopIteration as stop:
            values[i] = stop.value
    while batches:
        order = sorted(batches)
        results = yield [t for i in order for t in batches[i]]
        pos, nxt = 0, {}
        for i in order:
            part = results[pos:pos + len(batches[i])]
            pos += len(batches[i])
            try:
                nxt[i] = coroutines[i].send(part)
            except StopIteration as stop:
                values[i] = stop.value
        batches = nxt
    return values


def drive(co: Coroutine, executor: Executor, progress: ProgressFn | None = None,
          on_result: Callable[[dict, dict], None] | None = None) -> Any:
    """Run a coroutine's batches on an executor until it returns. on_result(task, result) sees
    each result as it arrives (so an interrupted batch still keeps its finished runs)."""
    done = submitted = 0
    try:
        batch = next(co)
    except StopIteration as stop:
        return stop.value
    while True:
        submitted += len(batch)
        if progress:
            progress(done, submitted)
        results: list[dict] = [{}] * len(batch)
        # longest runs first, so a round does not wait on one big run started last
        order = sorted(range(len(batch)), key=lambda i: -batch[i].get("weight", 1))
        for k, result in executor.imap([batch[i] for i in order]):
            index = order[k]
            results[index] = result
            if on_result:
                on_result(batch[index], result)
            done += 1
            if progress:
                progress(done, submitted)
        try:
            batch = co.send(results)
        except StopIteration as stop:
            return stop.value


# ---- the search ---------------------------------------------------------------------------------

def rate_search(start: float, rel_tol: float, floor: float, ceiling: float
                ) -> Generator[float, bool, tuple[float | None, float | None]]:
    """Yields rates to try, receives pass/fail; returns (highest passing, lowest failing)."""
    lo: float | None = None
    hi: float | None = None
    rate = start
    while True:
        ok = yield rate
        if ok:
            lo = rate
        else:
            hi = rate
        if lo is None:
            if rate <= floor:
                return None, hi
            rate = max(rate / 4.0, floor)
        elif hi is None:
            if rate >= ceiling:
                return lo, None
            rate = min(rate * 4.0, ceiling)
        elif hi / lo - 1.0 <= rel_tol:
            return lo, hi
        else:
            rate = math.sqrt(lo * hi)


def capacity_estimate(scenario_dict: dict, cand: Candidate, profile: Any, where: str) -> float:
    """A rough saturation rate of one replica from the cost model (only a starting point)."""
    from sim.cost_model import CostModel
    from sim.kv_cache import kv_capacity
    from sim.scenario import scenario_from_dict
    from sim.traffic.workload import generate

    sc = scenario_from_dict(with_deployment(scenario_dict, cand, 1), where)
    model = sc.model_spec()
    cfg = sc.scheduler
    cost = CostModel(model, profile, cand.tp)
    cap = kv_capacity(model, profile, cand.tp, sc.deployment.gpu_memory_utilization, cfg.block_size_tokens,
                      cfg.max_num_batched_tokens, cfg.max_num_seqs)
    table = generate(sc.workload, np.random.default_rng(sc.seed))
    mean_in = max(float(np.mean(table.prompt_tokens[:2000])), 1.0)
    mean_out = max(float(np.mean(table.output_tokens[:2000])), 1.0)
    limit = cfg.max_batch_size if cfg.policy == "static" else cfg.max_num_seqs
    batch = int(max(1, min(limit, cap.num_tokens // (mean_in + mean_out))))
    per_request_s = (cost.prefill_time(int(mean_in)) + (mean_out - 1)
                     * cost.decode_time(batch, int(mean_in + mean_out / 2)) / batch)
    return 1.0 / per_request_s


def compact_summary(summary: dict) -> dict:
    keep = ("overloaded", "overload", "window_s", "requests", "latency", "throughput", "goodput", "energy",
            "cost", "co2_g", "utilisation")
    return {k: summary[k] for k in keep if k in summary}


@dataclass
class _Context:
    scenario: dict
    where: str
    settings: PlanSettings
    criterion: Criterion
    shape: LoadShape
    target_rate_per_s: float
    base_seed: int


def search_requests(settings: PlanSettings, shape: LoadShape, rate: float) -> int:
    """Requests of a one-replica search run at `rate`: run_duration_s of arrivals, within bounds."""
    n = min(max(math.ceil(rate * settings.run_duration_s), shape.requests_per_run), settings.max_requests_per_run)
    return min(n, shape.trace_rows) if shape.trace_rows is not None else n


def verify_requests(settings: PlanSettings, shape: LoadShape) -> int:
    """Requests of a cluster verification run."""
    n = max(settings.verify_requests, shape.requests_per_run)
    return min(n, shape.trace_rows) if shape.trace_rows is not None else n


def _probe_task(ctx: _Context, cand: Candidate, profile: Any, replicas: int, rate: float, seed_index: int,
                num_requests: int, extras: Sequence[str] = ()) -> dict:
    start_s = ctx.shape.start_s(seed_index, ctx.settings.seeds, num_requests)
    d = with_load(with_deployment(ctx.scenario, cand, replicas), rate, num_requests, ctx.base_seed + seed_index,
                  ctx.shape.base_rate_per_s, start_s)
    task = make_task(d, profile.raw, profile.path, extras)
    task["weight"] = num_requests * replicas  # a rough cost: requests x replicas stepping
    return task


def _seed_search(ctx: _Context, cand: Candidate, profile: Any, seed_index: int, start: float) -> Coroutine:
    """One seed's search; its runs are recorded as search points by `plan`'s on_result as they finish.
    A run whose window is too short for its latencies is run again with twice the requests."""
    search = rate_search(start, ctx.settings.rel_tol, start * 1e-4, start * 1e3)
    rate = next(search)
    n = search_requests(ctx.settings, ctx.shape, rate)
    while True:
        task = _probe_task(ctx, cand, profile, 1, rate, seed_index, n)
        task["tag"] = {"label": cand.label, "rate_per_s": rate, "seed_index": seed_index,
                       "seed": ctx.base_seed + seed_index, "num_requests": n}
        (result,) = yield [task]
        summary = result["summary"]
        longest = min(ctx.settings.max_requests_per_run, ctx.shape.trace_rows or ctx.settings.max_requests_per_run)
        if summary["window"].get("is_too_short") and n < longest:
            n = min(2 * n, longest)
            continue
        ok, _ = ctx.criterion.check(summary)
        try:
            rate = search.send(ok)
        except StopIteration as stop:
            return stop.value
        n = search_requests(ctx.settings, ctx.shape, rate)


def _size(ctx: _Context, cand: Candidate, profile: Any, load: float, replicas: int, extras: Sequence[str],
          attempts: list[dict]) -> Coroutine:
    """Smallest replica count >= `replicas` whose long cluster run meets the SLOs for enough seeds."""
    need = math.ceil(ctx.settings.confidence * ctx.settings.seeds - 1e-9)
    limit = min(ctx.settings.max_replicas, max(2 * replicas, replicas + 8))
    n = verify_requests(ctx.settings, ctx.shape)
    while True:
        if replicas > limit:
            return None, []
        tasks = [_probe_task(ctx, cand, profile, replicas, load, s, n, extras if s == 0 else
                             [e for e in extras if e != "timeline"]) for s in range(ctx.settings.seeds)]
        results = yield tasks
        checks = [ctx.criterion.check(r["summary"]) for r in results]
        passing = sum(ok for ok, _ in checks)
        attempts.append({"replicas": replicas, "seeds_passing": passing, "seeds": len(results), "num_requests": n,
                         "reasons": [reason for _, reason in checks]})
        if passing >= need:
            return replicas, results
        replicas += 1 if passing else max(1, math.ceil(replicas * 0.1))


def _quantile(values: Sequence[float], q: float, method: str) -> float:
    return float(np.quantile(np.asarray(values, dtype=np.float64), q, method=method))


def _candidate(ctx: _Context, cand: Candidate, record: dict) -> Coroutine:
    """The whole plan of one candidate; fills `record` as it goes (so an interrupt keeps it)."""
    from sim.spec.profile import load_profile

    profile = load_profile(cand.profile)
    record.update(profile_facts(cand, profile))
    try:
        start = 0.5 * capacity_estimate(ctx.scenario, cand, profile, ctx.where)
    except InputError as exc:
        if exc.field != "device.memory_bytes":
            raise
        record.update(status="does_not_fit", message=exc.problem)
        return
    s = ctx.settings
    found = yield from gather([_seed_search(ctx, cand, profile, k, start) for k in range(s.seeds)])
    points = record["search_points"]
    rates = [lo or 0.0 for lo, _ in found]
    record["max_rate_by_seed"] = rates
    record["max_rate_range"] = [min(rates), max(rates)]
    rate = _quantile(rates, 1.0 - s.confidence, "lower")
    record["max_rate_per_replica_per_s"] = rate
    if rate <= 0:
        lowest = min(points, key=lambda p: (p["rate_per_s"], p["seed_index"]))
        record.update(status="cannot_meet_slo",
                      message=f"misses the SLOs even at {lowest['rate_per_s']:.3g} req/s on one replica "
                              f"({lowest['reason']})")
        return
    by_seed = [math.ceil(ctx.target_rate_per_s / r - 1e-9) if r > 0 else None for r in rates]
    record["replicas_by_seed"] = by_seed
    finite = [n for n in by_seed if n is not None]
    record["replicas_range"] = [min(finite), max(finite)]
    first = math.ceil(_quantile([n if n is not None else s.max_replicas + 1 for n in by_seed], s.confidence,
                                "higher"))
    loads = [ctx.target_rate_per_s] + [ctx.target_rate_per_s * f for f in s.load_factors]
    starts = [first] + [max(first, math.ceil(ctx.target_rate_per_s * f / rate - 1e-9)) for f in s.load_factors]
    attempts: list[list[dict]] = [[] for _ in loads]
    sized = yield from gather([_size(ctx, cand, profile, load, n, ("samples", "cdf", "timeline") if i == 0 else (),
                                     attempts[i]) for i, (load, n) in enumerate(zip(loads, starts))])
    replicas, results = sized[0]
    record["sensitivity"] = [_sensitivity_row(ctx, cand, profile, f, load, *sized[i + 1], attempts[i + 1])
                             for i, (f, load) in enumerate(zip(s.load_factors, loads[1:]))]
    if replicas is None:
        tried = attempts[0][-1]["replicas"] if attempts[0] else first
        record.update(status="not_verified",
                      message=f"the cluster simulation missed the SLOs up to {tried} replicas "
                              f"(max_replicas = {s.max_replicas}); last: {_last_reason(attempts[0])}")
        record["verification"] = {"attempts": attempts[0]}
        return
    record.update(_economics(ctx, cand, profile, replicas, rate, results))
    record["verification"] = {"replicas": replicas, "rate_per_s": ctx.target_rate_per_s,
                              "attempts": attempts[0], **_latency_confidence(ctx, results)}
    rejected = [r["summary"]["requests"]["rejected"] for r in results]
    reasons: dict[str, int] = {}
    for r in results:
        for reason, count in r["summary"]["requests"]["rejected_by_reason"].items():
            reasons[reason] = reasons.get(reason, 0) + count
    record["rejected_requests"] = {"by_seed": rejected, "by_reason": reasons}
    record["cdf"] = _pooled_cdf(results)
    record["timeline"] = results[0].get("timeline")
    message = ""
    if any(rejected):
        message = (f"warning: {sum(rejected)} requests can never be served with this configuration "
                   f"({', '.join(f'{k} {v}' for k, v in reasons.items())}); they are not counted")
    record.update(status="ok", message=message)


def _last_reason(attempts: list[dict]) -> str:
    if not attempts:
        return "no run"
    reasons = [r for r in attempts[-1]["reasons"] if r != "meets the SLOs"]
    return reasons[0] if reasons else "meets the SLOs"


def profile_facts(cand: Candidate, profile: Any) -> dict:
    price = profile.price
    return {"profile_name": profile.name, "profile_path": profile.path, "profile_source": profile.source,
            "device_name": profile.device.name, "devices_per_replica": cand.tp,
            "price_usd_per_device_h": price.usd_per_device_h if price else None,
            "price_source": price.source if price else None, "price_date": price.date if price else None,
            "power_method": profile.power.method, "power_is_estimated": profile.power.is_estimated,
            "provenance": profile.provenance}


def _mean(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def _monthly(summaries: list[dict], cand: Candidate, replicas: int) -> dict:
    month_s = HOURS_PER_MONTH * 3600.0
    per_s = lambda get: _mean([get(s) / s["window_s"] if s["window_s"] > 0 else None for s in summaries])  # noqa: E731
    usd, joules, co2 = per_s(lambda s: s["cost"]["usd"]), per_s(lambda s: s["energy"]["joules"]), \
        per_s(lambda s: s["co2_g"])
    return {"usd": usd * month_s if usd is not None else None,
            "kwh": joules * month_s / 3.6e6 if joules is not None else None,
            "co2_kg": co2 * month_s / 1e3 if co2 is not None else None,
            "mean_power_w": joules, "devices": replicas * cand.tp,
            "device_hours": replicas * cand.tp * HOURS_PER_MONTH}


def _economics(ctx: _Context, cand: Candidate, profile: Any, replicas: int, rate: float,
               results: list[dict]) -> dict:
    sums = [r["summary"] for r in results]
    capacity = replicas * rate
    j_per_token = _mean([s["energy"]["j_per_token"] for s in sums])
    monthly = _monthly(sums, cand, replicas)
    priced = all(s["cost"].get("is_priced", True) for s in sums)
    if not priced:  # no price and no owned-hardware costs: the cost is unknown, not $0
        monthly["usd"] = None
    usd_per = (lambda key: _mean([s["cost"][key] for s in sums]) if priced else None)  # noqa: E731
    return {"replicas": replicas, "devices": replicas * cand.tp, "monthly": monthly, "is_priced": priced,
            "usd_per_1m_tokens": usd_per("usd_per_1m_tokens"),
            "usd_per_1m_output_tokens": usd_per("usd_per_1m_output_tokens"),
            "j_per_token": j_per_token,
            "j_per_output_token": _mean([s["energy"]["j_per_output_token"] for s in sums]),
            "j_per_1m_tokens": j_per_token * 1e6 if j_per_token is not None else None,
            "output_tokens_per_s": _mean([s["throughput"]["output_tokens_per_s"] for s in sums]),
            "slo_attainment": _mean([s["goodput"]["slo_attainment"] for s in sums]),
            "headroom": {"capacity_rate_per_s": capacity, "fraction": 1.0 - ctx.target_rate_per_s / capacity,
                         "max_load_factor": capacity / ctx.target_rate_per_s}}


def _sensitivity_row(ctx: _Context, cand: Candidate, profile: Any, factor: float, load: float,
                     replicas: int | None, results: list[dict], attempts: list[dict]) -> dict:
    row: dict[str, Any] = {"load_factor": factor, "rate_per_s": load, "replicas": replicas,
                           "status": "ok" if replicas is not None else "not_verified",
                           "attempts": attempts}
    if replicas is not None:
        sums = [r["summary"] for r in results]
        priced = all(s["cost"].get("is_priced", True) for s in sums)
        row.update(devices=replicas * cand.tp,
                   monthly_usd=_monthly(sums, cand, replicas)["usd"] if priced else None,
                   usd_per_1m_tokens=_mean([s["cost"]["usd_per_1m_tokens"] for s in sums]) if priced else None,
                   p99_ttft_s=_mean([s["latency"]["ttft_s"]["p99"] for s in sums]),
                   p99_tpot_s=_mean([s["latency"]["tpot_s"]["p99"] for s in sums]))
    return row


def bootstrap_ci(samples: Sequence[Sequence[float]], q: float, num_resamples: int, rng: np.random.Generator,
                 level: float = 0.95) -> list[float] | None:
    """Percentile bootstrap CI of the q-quantile of the pooled samples, resampling each group
    (seed) with replacement within itself."""
    groups = [np.asarray(g, dtype=np.float64) for g in samples if len(g)]
    if not groups:
        return None
    stats = np.empty(num_resamples)
    chunk = max(1, int(4e6 // sum(g.size for g in groups)))
    for start in range(0, num_resamples, chunk):
        b = min(chunk, num_resamples - start)
        pooled = np.concatenate([g[rng.integers(0, g.size, size=(b, g.size))] for g in groups], axis=1)
        stats[start:start + b] = np.quantile(pooled, q, axis=1)
    alpha = (1.0 - level) / 2.0
    return [float(np.quantile(stats, alpha)), float(np.quantile(stats, 1.0 - alpha))]


def _latency_confidence(ctx: _Context, results: list[dict]) -> dict:
    rng = np.random.default_rng([ctx.base_seed, 2024])
    out: dict[str, Any] = {"seeds_passing": None}
    p99: dict[str, Any] = {}
    for metric in SLO_METRICS:
        groups = [r["samples"][metric] for r in results]
        pooled = np.concatenate([np.asarray(g, dtype=np.float64) for g in groups]) if groups else np.zeros(0)
        p99[metric] = {"pooled": float(np.quantile(pooled, 0.99)) if pooled.size else None,
                       "by_seed": [r["summary"]["latency"][metric]["p99"] for r in results],
                       "ci95": bootstrap_ci(groups, 0.99, ctx.settings.bootstrap_samples, rng),
                       "slo": ctx.criterion.slo.get(metric)}
    out["p99"] = p99
    out["seeds_passing"] = sum(ctx.criterion.check(r["summary"])[0] for r in results)
    out["seeds"] = len(results)
    return out


def _pooled_cdf(results: list[dict]) -> dict:
    from sim.report.figures import cdf_points

    return {m: cdf_points([v for r in results for v in r["samples"][m]]) for m in ("ttft_s", "tpot_s", "e2e_s")}


# ---- the plan -----------------------------------------------------------------------------------

def recommend(candidates: list[dict]) -> dict | None:
    """The cheapest candidate that meets the SLOs (monthly cost; ties: fewer devices, then J/token).
    Candidates without a price only win when none has one."""
    ok = [c for c in candidates if c.get("status") == "ok"]
    if not ok:
        return None
    priced = [c for c in ok if c.get("is_priced", bool(c.get("price_usd_per_device_h")))]
    pool = priced or ok
    key = (lambda c: (c["monthly"]["usd"], c["devices"], c["j_per_token"] or 0.0)) if priced else \
        (lambda c: (c["devices"], c["j_per_token"] or 0.0))
    best = min(pool, key=key)
    others = sorted((c for c in pool if c is not best), key=key)
    if priced:
        reason = (f"cheapest that meets the SLOs: {best['replicas']} x {best['label']} at "
                  f"${best['monthly']['usd']:,.0f}/month")
        if others:
            nxt = others[0]
            reason += f" (next: {nxt['label']} at ${nxt['monthly']['usd']:,.0f}/month)"
    else:
        reason = f"fewest devices that meet the SLOs ({best['devices']}); no candidate has a price"
    return {"label": best["label"], "replicas": best["replicas"], "devices": best["devices"],
            "monthly_usd": best["monthly"]["usd"], "reason": reason}


def plan(scenario_dict: dict, candidates: Sequence[Candidate], settings: PlanSettings | None = None,
         executor: Executor | None = None, where: str = "<scenario>", base_dir: str | Path | None = None,
         progress: ProgressFn | None = None) -> dict:
    """The capacity plan as plain data (the JSON that `infercast report` renders)."""
    from sim.spec.profile import load_profile
    from sim.scenario import scenario_from_dict

    settings = settings or PlanSettings()
    if not candidates:
        raise InputError(where, "candidates", "no candidates: give at least one PROFILE[:tpN]")
    base = copy.deepcopy(scenario_dict)
    base.setdefault("deployment", {}).setdefault("profile", candidates[0].profile)
    sc = scenario_from_dict(base, where, base_dir=base_dir)
    for cand in candidates:  # unknown profiles and impossible TP degrees: bad input, before any run
        from sim.cost_model import CostModel

        CostModel(sc.model_spec(), load_profile(cand.profile), cand.tp)
    canonical = sc.to_dict()
    criterion = criterion_for(canonical.get("slo", {}), settings.stat, where)
    shape = load_shape(canonical, settings, where)
    target = settings.target_rate_per_s or shape.base_rate_per_s
    ctx = _Context(canonical, where, settings, criterion, shape, target, sc.seed)
    records = [{"label": c.label, "profile": c.profile, "tp": c.tp, "status": "interrupted", "message": "",
                "search_points": []} for c in candidates]
    by_label = {r["label"]: r for r in records}

    def on_result(task: dict, result: dict) -> None:  # keep every finished search run, even if interrupted
        tag = task.get("tag")
        if tag:
            ok, reason = criterion.check(result["summary"])
            by_label[tag["label"]]["search_points"].append(
                {"rate_per_s": tag["rate_per_s"], "seed_index": tag["seed_index"], "seed": tag["seed"],
                 "num_requests": tag["num_requests"], "passes": ok, "reason": reason,
                 **compact_summary(result["summary"])})

    interrupted = False
    executor = executor or SerialExecutor()
    try:
        drive(gather([_candidate(ctx, c, r) for c, r in zip(candidates, records)]), executor, progress, on_result)
    except KeyboardInterrupt:
        interrupted = True
    for r in records:  # arrival order depends on the executor; the result must not
        r["search_points"].sort(key=lambda p: (p["seed_index"], p["rate_per_s"], p["num_requests"]))
    result = {
        "kind": "plan", "schema_version": SCHEMA_VERSION, "interrupted": interrupted,
        "question": {"model": sc.model, "weight_dtype": sc.model_spec().weight_dtype,
                     "kv_dtype": sc.model_spec().kv_dtype, "workload": sc.workload.describe(),
                     "target_rate_per_s": target, "workload_rate_per_s": shape.base_rate_per_s,
                     "slo": criterion.slo, "router": sc.deployment.router, "scheduler": canonical["scheduler"],
                     "seeds": settings.seeds, "confidence": settings.confidence,
                     "load_factors": list(settings.load_factors)},
        "criterion": {"stat": settings.stat, "text": criterion.describe(), "rel_tol": settings.rel_tol,
                      "requests_per_run": shape.requests_per_run, "run_duration_s": settings.run_duration_s,
                      "max_requests_per_run": settings.max_requests_per_run,
                      "verify_requests": verify_requests(settings, shape)},
        "settings": settings.to_dict(),
        "scenario": canonical,
        "candidates": records,
        "recommendation": recommend(records),
        "assumptions": assumptions(canonical, records),
    }
    return result


def assumptions(canonical: dict, records: list[dict]) -> dict:
    econ = canonical.get("economics", {})
    return {"economics": econ, "hours_per_month": HOURS_PER_MONTH,
            "price_override": econ.get("price_usd_per_device_h"),
            "notes": ["monthly figures extrapolate the verification runs at the target load to "
                      f"{HOURS_PER_MONTH:g} hours",
                      "energy is the IT equipment's (idle power included); CO2 multiplies it by PUE and the "
                      "carbon intensity",
                      "cost is rental per device-hour (the profile's price unless the scenario overrides it) "
                      "plus electricity x PUE and amortised hardware when set"]}
