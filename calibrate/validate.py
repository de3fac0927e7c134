"""Fidelity: the real engine serves a workload and the simulator must predict what it measured.

Both engines get the identical workload (one `sim.scenario.prepare` builds arrivals, lengths,
policy and KV capacity for both), so the comparison measures the cost model and nothing else.
Compared: TTFT, TPOT, ITL and E2E (mean, p50, p90, p99), throughput, and energy per token where the
device has a meter. Relative error = (predicted - measured) / measured. With repeats, the real
engine serves the workload several times and the prediction is compared with the runs'
element-wise median; the farthest run from it ("run spread") is the machine's own noise. Several
workloads (the suite) are served in rounds, in order and back (`serving_order`), so each one's
runs spread over the suite's whole time: a slow spell of a shared machine then lands on a run of
several workloads, where the median sets it aside, instead of on every run of one.

The model runs in the profile's calibrated dtype (the dtype its cost model was fitted in), unless
the scenario says otherwise.

Diagnostics say where an error comes from:
  * machine speed: a few of the profile's own calibration points are timed again just before the
    first run and after each run; their time now over their calibrated time is the speed the
    machine runs at (a shared cloud VM's memory bandwidth drifts with its neighbours: on the
    2-vCPU AMD EPYC the same batch-1 decode step took 7 to 14 ms over minutes). Decode points give the memory
    factor, prefill and mixed points the compute factor. The prediction is also given at that
    speed (`at_time_factor`), so a model error and a slower machine are told apart.
  * run speed: the prediction with every step scaled by the time the run's own steps took over
    their cost-model time, in sum: decode steps by the decode steps' factor, prefill and mixed
    steps by theirs (`sim.cost_model.KindScaledCost`). Two numbers are taken from the
    measurement, so it is a decomposition, not a prediction: what remains is the cost model's form
    across shapes and the machine's moves within the run.
  * steps: every step the real engine ran, measured against the cost model's time for its shape,
    by kind (prefill, decode, mixed). If steps agree but latencies do not, the difference is in
    scheduling or the engine loop, not in the cost model.
  * steps alone: after the runs, a few served steps of each kind rebuilt and timed alone, each
    after one timing of the speed probe's reference step (`calibrate.steps_alone`): alone / cost
    model / machine factor is the cost model's form on the served shapes at the machine's present
    speed, and served / alone what serving added (wake-ups, neighbours).
  * replay: the simulator runs the workload again with each step taking the time the real engine
    measured for it (its loop's time between steps included; `sim.replay`). Its error is what
    scheduling and the engine loops leave unexplained; the rest of a prediction's error lies in
    step times (the cost model, or the machine's speed then).
  * machine load: per run, the share of all CPUs that other processes and the hypervisor took
    while it served (`calibrate.machine_load`), and the hypervisor's steal alone: a cloud VM's
    neighbours show up as steal, and with it step times no profile predicts.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from dataclasses import dataclass, field

import numpy as np

from calibrate.machine_load import ForeignLoad
from calibrate.power import make_meter
from calibrate.real_engine import RealRun, serve
from calibrate.runner import Runner
from calibrate.steps_alone import ALONE_STEPS, evenly, steps_alone
from calibrate.sweep import Point, PointRunner
from sim.cost_model import CostModel, KindScaledCost
from sim.errors import InputError
from sim.spec.model import resolve_model
from sim.plan import StepShape
from sim.spec.profile import Profile, at_time_factor
from sim.replay import Replay, replay_scenario
from sim.scenario import Prepared, RunResult, Scenario, has_speed_variability, prepare, run_prepared

SPEED_DRAWS = 31  # a prediction's draws of the machine's speed variability (predict)
LATENCY_FIELDS = ("ttft_s", "tpot_s", "itl_s", "e2e_s")
STATS = ("mean", "p50", "p90", "p99")


@dataclass
class Validation:
    name: str
    scenario: Scenario
    predicted: RunResult
    runs: list[RealRun]  # the real engine served the workload this many times (repeats)
    measured_summary: dict  # their summaries' element-wise median (median_summary): what is compared
    rows: list[dict]
    same_workload: bool
    speed: MachineSpeed | None = None
    at_speed_rows: list[dict] | None = None  # the comparison with the prediction at that speed
    steps: dict = field(default_factory=dict)  # step_errors() over every run's steps
    replays: list[Replay] = field(default_factory=list)  # the simulator fed each run's own step times
    replay_rows: list[dict] | None = None  # their comparison: what scheduling alone gets wrong
    run_speed: dict | None = None  # run_speed_factors(steps): the speeds the run's own steps ran at
    run_speed_rows: list[dict] | None = None  # the comparison with the prediction at those speeds
    spread_rows: list[dict] | None = None  # with repeats: run_spread(), the machine's own noise
    # per run: the share of all CPUs other processes and the hypervisor took while it served, and
    # the hypervisor's steal alone (None where /proc/stat is not there)
    machine_load: list[dict] = field(default_factory=list)
    alone: dict = field(default_factory=dict)  # steps_alone(): served steps re-timed alone, by kind

    def columns(self) -> list[tuple[str, list[dict]]]:
        """The extra comparisons, as (column title, rows) for format_rows."""
        return [(title, rows) for title, rows in (("at speed", self.at_speed_rows), ("run speed", self.run_speed_rows),
                                                  ("replay", self.replay_rows), (SPREAD, self.spread_rows))
                if rows]

    @property
    def wall_s(self) -> float:
        return sum(r.wall_s for r in self.runs)

    def replay_counts(self) -> dict | None:
        """The replays' steps, logged steps and diverged steps, summed over the runs."""
        if not self.replays:
            return None
        return {key: sum(r.to_dict()[key] for r in self.replays) for key in ("num_steps", "num_logged", "num_diverged")}

    def to_dict(self) -> dict:
        return {"name": self.name, "scenario": self.scenario.to_dict(), "same_workload": self.same_workload,
                "repeats": len(self.runs), "comparison": self.rows,
                "machine_speed": self.speed and self.speed.to_dict(),
                "comparison_at_machine_speed": self.at_speed_rows, "steps": self.steps,
                "run_speed": self.run_speed, "comparison_at_run_speed": self.run_speed_rows,
                "replay": self.replay_counts(), "comparison_of_replay": self.replay_rows,
                "run_spread": self.spread_rows, "machine_load": self.machine_load,
                "steps_alone": self.alone, "predicted": self.predicted.summary, "measured": self.measured_summary,
                "measured_runs": [r.summary for r in self.runs] if len(self.runs) > 1 else None}

    def record(self) -> dict:
        """What `--record` keeps in a profile's provenance: to_dict without the scenario, the run
        summaries and the speed probe's points (the comparison rows carry the values)."""
        out = {k: v for k, v in self.to_dict().items()
               if k not in ("scenario", "predicted", "measured", "measured_runs")}
        if out["machine_speed"]:
            out["machine_speed"] = {k: v for k, v in out["machine_speed"].items() if k != "points"}
        return out


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
    for name in LATENCY_FIELDS:
        for stat in STATS:
            rows.append(_row(f"{name}.{stat}", predicted["latency"][name][stat], measured["latency"][name][stat]))
    for name in ("requests_per_s", "output_tokens_per_s"):
        rows.append(_row(f"throughput.{name}", predicted["throughput"][name], measured["throughput"][name]))
    if measured["energy"].get("joules") is not None:
        rows.append(_row("energy.j_per_output_token", predicted["energy"]["j_per_output_token"],
                         measured["energy"]["j_per_output_token"]))
    return rows


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def predict(sc: Scenario, profile: Profile, draws: int = SPEED_DRAWS) -> RunResult:
    """The simulator's prediction. With the profile's speed variability (sim.speed_variability)
    one run is one draw of the machine's spells and jitter, as one real run is: the prediction is
    then the element-wise median of `draws` runs of the identical workload (as the measurement is
    the median of the real runs); it keeps the first draw's records."""
    first_prep = prepare(sc, profile)
    first = run_prepared(first_prep, first_prep.cost)
    if draws <= 1 or not has_speed_variability(first_prep):
        return first
    summaries = [first.summary]
    for draw in range(1, draws):
        prep = prepare(sc, profile)
        summaries.append(run_prepared(prep, prep.cost, speed_draw=draw).summary)
    return dataclasses.replace(first, summary=median_summary(summaries))


def median_summary(summaries: list[dict]) -> dict:
    """The element-wise median of run summaries of one shape: each number is the median of the
    runs' values (None only where every run has None); anything else is the first run's. The real
    engine serving a workload again on a shared machine measures again differently; its median is
    what a deterministic prediction is compared with, as a calibration point keeps its median."""
    first = summaries[0]
    if isinstance(first, dict):
        return {k: median_summary([s.get(k) if isinstance(s, dict) else None for s in summaries]) for k in first}
    numbers = [v for v in summaries if _is_number(v)]
    if _is_number(first) or (first is None and numbers):
        return statistics.median(numbers) if numbers else None
    return first


def run_spread(summaries: list[dict], median: dict) -> list[dict]:
    """Per compared metric, how far the farthest run lies from the runs' median, |run - median| /
    median: the error a prediction equal to the median would show against a single run (compare()
    rows; "measured" is the median)."""
    per_run = [compare(s, median) for s in summaries]
    rows = []
    for cells in zip(*per_run):
        errors = [abs(c["rel_error"]) for c in cells if c["rel_error"] is not None]
        rows.append({"metric": cells[0]["metric"], "predicted": None, "measured": cells[0]["measured"],
                     "rel_error": max(errors) if errors else None})
    return rows


def same_workload(a, b, closed_loop: bool) -> bool:
    """Identical request ids, arrival times and lengths (closed loops: ids and lengths only,
    since users send their next request when the previous one ends)."""
    def key(r):
        return (r.request_id, r.prompt_tokens, r.output_tokens, None if closed_loop else r.arrival_s)
    return sorted(map(key, a.requests)) == sorted(map(key, b.requests))


# ---- where an error comes from ----------------------------------------------------------------
def step_kind(shape: StepShape) -> str:
    if not shape.num_prefill_tokens:
        return "decode"
    return "prefill" if shape.num_prefill_tokens == shape.num_tokens else "mixed"


def step_errors(steps: list[tuple[StepShape, float]], cost: CostModel, loop_s: list[float],
                idle_s: list[float] | None = None) -> dict:
    """The real engine's steps against the cost model, by kind and in all: how many, measured and
    predicted seconds summed, the relative error of the sum and the median step's ratio; and under
    "loop", the engine loop's own seconds around each step (loop_s) beside the profile's figure for
    it (cost.engine_overhead_s a step, spent after each step by the simulator). A step
    the engine slept before (idle_s: seconds slept since the step before) is predicted slowed by
    the profile's wake-up after that long, as the simulator runs it; "all" counts them
    (num_after_idle) and sums the wake-up's seconds predicted (wake_s)."""
    groups: dict[str, list[tuple[float, float]]] = {}
    wake_s = 0.0
    for (shape, seconds), idle in zip(steps, idle_s or [0.0] * len(steps)):
        modelled = cost.step_time(shape)
        woken = modelled * cost.wake_slowdown(idle) if idle > 0 else 0.0
        wake_s += woken
        pair = (seconds, modelled + woken)
        groups.setdefault(step_kind(shape), []).append(pair)
        groups.setdefault("all", []).append(pair)
    out = {}
    for kind in ("prefill", "decode", "mixed", "all"):
        pairs = groups.get(kind)
        if not pairs:
            continue
        measured, predicted = sum(m for m, _ in pairs), sum(p for _, p in pairs)
        out[kind] = {"num_steps": len(pairs), "measured_s": measured, "predicted_s": predicted,
                     "rel_error": (predicted - measured) / measured if measured else None,
                     "median_ratio": statistics.median(p / m for m, p in pairs if m > 0)}
    if idle_s is not None and "all" in out:
        out["all"] |= {"num_after_idle": sum(idle > 0 for idle in idle_s), "wake_s": wake_s}
    if loop_s:
        stepped = sum(seconds for _, seconds in steps)
        out["loop"] = {"num_steps": len(loop_s), "seconds": sum(loop_s), "median_s": statistics.median(loop_s),
                       "predicted_s": cost.engine_overhead_s * len(loop_s),
                       "share_of_step_time": sum(loop_s) / stepped if stepped else None}
    return out


def run_speed_factors(steps: dict) -> dict | None:
    """The machine's speed during a run, from its own steps (step_errors): the decode steps'
    measured seconds over their cost-model seconds ("decode_factor"), and the same over the steps
    with prefill tokens, prefill and mixed ("prefill_factor"); summed seconds, as the means the
    comparison checks are sums of step times. A kind the run did not have takes the other's
    factor. None without steps."""
    def factor(kinds: tuple[str, ...]) -> float | None:
        present = [steps[k] for k in kinds if k in steps]
        predicted = sum(e["predicted_s"] for e in present)
        measured = sum(e["measured_s"] for e in present)
        return measured / predicted if predicted > 0 and measured > 0 else None

    decode, prefill = factor(("decode",)), factor(("prefill", "mixed"))
    if decode is None and prefill is None:
        return None
    return {"decode_factor": decode or prefill, "prefill_factor": prefill or decode}


REFERENCE_POINTS = 4
REFERENCE_MAX_STEP_S = 0.1  # reference points are quick steps: the check must not take long
REFERENCE_REPEATS = 7


def _geomean(values: list[float]) -> float:
    return math.exp(statistics.fmean(math.log(v) for v in values))


@dataclass
class MachineSpeed:
    """Calibration points re-timed now (each with "when": before/after the run, "kind" and
    "factor" = time now / calibrated time, > 1: slower). Decode points (memory-bound) give the
    memory factor, the others (prefill and mixed steps, compute-bound) the compute factor: a
    shared machine's neighbours slow the two apart."""

    points: list[dict]

    def _of(self, keep) -> float | None:
        factors = [p["factor"] for p in self.points if keep(p)]
        return _geomean(factors) if factors else None

    @property
    def factor(self) -> float:
        return self._of(lambda p: True)

    @property
    def before(self) -> float:
        return self._of(lambda p: p["when"] == "before")

    @property
    def after(self) -> float | None:
        return self._of(lambda p: p["when"] == "after")

    @property
    def memory_factor(self) -> float:
        return self._of(lambda p: p["kind"] == "decode") or self.factor

    @property
    def compute_factor(self) -> float:
        return self._of(lambda p: p["kind"] != "decode") or self.factor

    def to_dict(self) -> dict:
        return {"factor": self.factor, "memory_factor": self.memory_factor,
                "compute_factor": self.compute_factor, "before": self.before, "after": self.after,
                "points": self.points}


def drift_line(speeds: list[MachineSpeed | None], bands: list[dict] | None) -> str | None:
    """One line when the machine has moved from its profile further than the profile's own speed
    wander: every case's probe timings pooled, decode (memory) and prefill/mixed (compute) apart,
    against the widest band of `calibrate.speed_track.stored_wander` (a timing's std about one of
    the same point taken that far apart during calibration). None when both lie within it, or
    without probe timings (a case without a probe is None) or stored wander (nothing to judge by)."""
    points = [p for s in speeds if s is not None for p in s.points]
    widest = max((b["rms"] for b in bands or [] if b["rms"] is not None), default=None)
    if not points or not widest:
        return None
    pooled = MachineSpeed(points)
    memory, compute = pooled.memory_factor, pooled.compute_factor
    if max(abs(math.log(memory)), abs(math.log(compute))) <= widest:
        return None
    return (f"the profile no longer describes this machine: its calibration points now take {memory:.2f}x "
            f"(decode) and {compute:.2f}x (prefill/mixed) their calibrated time, beyond the ±{widest:.1%} "
            f"its speed wandered during calibration; the plain column measures mostly that move: "
            f"re-run `calibrate` to predict the machine as it is now")


def point_from_record(record: dict) -> Point:
    """The sweep point a profile's measurement record was taken at."""
    kind, batch = record["kind"], int(record["batch"])
    if kind == "prefill" and "chunk_start" in record:  # a chunk after a prefix
        return Point("prefill", batch, int(record["chunk_tokens"]), int(record["chunk_start"]))
    if kind == "prefill":
        return Point("prefill", batch, int(record["prompt_tokens"]))
    if kind == "decode":
        return Point("decode", batch, int(record["context_tokens_per_seq"]))
    return Point("mixed", batch, int(record["chunk_tokens"]), int(record["chunk_start"]),
                 int(record["context_tokens_per_seq"]))


def reference_records(profile: Profile, count: int = REFERENCE_POINTS) -> list[dict]:
    """A few quick measured points of the profile's calibration model, spread over their range of
    step times (shortest, longest and evenly between); [] for a profile without measurements."""
    model = profile.provenance.get("calibration_model")
    quick = sorted((r for r in profile.measurements.get("points", [])
                    if r.get("model") == model and 0 < r.get("seconds", 0) <= REFERENCE_MAX_STEP_S),
                   key=lambda r: r["seconds"])
    if not quick:
        return []
    return [quick[i] for i in evenly(len(quick), count)]


class SpeedProbe:
    """Times a profile's reference points on a runner of its calibration model."""

    def __init__(self, profile: Profile, device: str = "cpu", seed: int = 0) -> None:
        self.records = reference_records(profile)
        self.runner: Runner | None = None
        if not self.records:
            return
        points = [point_from_record(r) for r in self.records]
        longest = max(p.start + p.length + p.context + 2 for p in points)
        spec = resolve_model(profile.provenance["calibration_model"])
        dtype = profile.provenance.get("calibration_dtype") or profile.cost.compute_dtype
        self.runner = Runner(spec, dtype=dtype, device=device,
                             max_num_seqs=max(p.batch for p in points) + 1,
                             max_seq_len=min(longest, spec.max_position_embeddings), seed=seed)
        self.point_runner = PointRunner(self.runner, spec.name, seed)
        self.points = points

    def factor_now(self, kind: str) -> float | None:
        """One timing of the quickest reference point of the step kind's bound (decode: memory;
        prefill and mixed: compute; else any) over its calibrated time; None without points."""
        if self.runner is None:
            return None
        pairs = list(zip(self.records, self.points))
        bound = [(r, p) for r, p in pairs if (p.kind == "decode") == (kind == "decode")] or pairs
        record, point = bound[0]
        return self.point_runner.time_once(point)[0] / record["seconds"]

    def measure(self, when: str, repeats: int = REFERENCE_REPEATS) -> list[dict]:
        """Each reference point timed now against its calibrated time; [] without points."""
        if self.runner is None:
            return []
        rows = []
        for record, point in zip(self.records, self.points):
            self.point_runner.time_once(point)  # warm-up
            now = statistics.median(self.point_runner.time_once(point)[0] for _ in range(repeats))
            rows.append({"when": when, "kind": point.kind, "batch": point.batch, "length": point.length,
                         "calibrated_s": record["seconds"], "now_s": now,
                         "factor": now / record["seconds"]})
        return rows


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


WARM_MAX_ROWS = 512  # step sizes whose GEMM kernels are built before serving (~8 s at 512)


def max_step_tokens(sc: Scenario, load) -> int:
    """The most tokens one step of this scenario can compute."""
    cfg = sc.scheduler
    if cfg.policy == "static":
        return cfg.max_batch_size * int(np.max(load.prompt_tokens))
    return cfg.max_num_batched_tokens


@dataclass
class Served:
    """One workload set up for the real engine (prepared, predicted, a warm runner) and what its
    runs measured so far."""

    name: str
    prep: Prepared  # its scenario, in the profile's dtype, is prep.scenario
    predicted: RunResult
    runner: Runner
    runs: list[RealRun] = field(default_factory=list)
    machine_load: list[dict] = field(default_factory=list)  # per run (calibrate.machine_load)
    alone: dict = field(default_factory=dict)  # retime_alone(): served steps re-timed alone
    speed_points: list[dict] = field(default_factory=list)  # the probe's, before the first run and after each


def _runner_needs(prep: Prepared) -> tuple[int, int, int]:
    """A workload's sequences at once, positions and most tokens in one step (the runner's size)."""
    sc, load = prep.scenario, prep.load
    longest = int(np.max(np.asarray(load.prompt_tokens) + np.asarray(load.output_tokens)))
    max_seqs = sc.scheduler.max_batch_size if sc.scheduler.policy == "static" else sc.scheduler.max_num_seqs
    return (min(max_seqs, len(load.prompt_tokens)) + 1, min(longest + 1, prep.model.max_position_embeddings),
            min(max_step_tokens(sc, load), WARM_MAX_ROWS))


def set_up(cases: list[tuple[str, Scenario]], profile: Profile, device: str = "cpu",
           seed: int = 0) -> list[Served]:
    """Each workload prepared and predicted; one warm runner per model, sized for every workload
    of that model (a GPU holds one copy of a large model's weights, not one per workload)."""
    served, needs = [], {}
    for name, sc in cases:
        sc = in_profile_dtype(sc, profile)
        prep = prepare(sc, profile)
        served.append((name, prep, predict(sc, profile)))
        seqs, positions, rows = _runner_needs(prep)
        have = needs.get(prep.model, (0, 0, 0))
        needs[prep.model] = (max(have[0], seqs), max(have[1], positions), max(have[2], rows))
    runners = {}
    for model, (seqs, positions, rows) in needs.items():
        runner = Runner(model, dtype=model.weight_dtype, device=device, max_num_seqs=seqs,
                        max_seq_len=positions, seed=seed)
        warm_up(runner, max(1, min(64, runner.max_seq_len - 6)))
        runner.warm_shapes(rows)
        runners[model] = runner
    return [Served(name, prep, predicted, runners[prep.model]) for name, prep, predicted in served]


def serve_once(case: Served, probe: SpeedProbe | None = None, tdp_w: float | None = None, seed: int = 0,
               progress=None) -> RealRun:
    """The real engine serves the case's workload once more; the probe re-times the machine's
    speed before its first run and after every run."""
    if probe is not None and not case.speed_points:
        case.speed_points = probe.measure("before")
    meter = make_meter(case.runner.device.type, tdp_w=tdp_w)
    others = ForeignLoad()
    mark = others.start()
    try:
        run = serve(case.prep, case.runner, meter, seed=seed, progress=progress)
    finally:
        meter.close()
    case.runs.append(run)
    case.machine_load.append({"other_share": others.share(mark), "steal_share": others.steal_share(mark)})
    if probe is not None and case.speed_points:
        case.speed_points += probe.measure("after")
    return run


def retime_alone(case: Served, probe: SpeedProbe | None, per_kind: int) -> None:
    """Up to per_kind of the case's served steps of each kind re-timed alone on its runner, each
    after the probe's reference step (calibrate.steps_alone); kept as case.alone."""
    served = [(shape, seconds, idle, recipe) for run in case.runs
              for (shape, seconds), idle, recipe in zip(run.steps, run.idle_s, run.recipes)]
    reference = probe.factor_now if probe is not None else None
    case.alone = steps_alone(served, step_kind, case.runner, case.prep.cost.step_time, reference, per_kind)


def compare_served(case: Served, profile: Profile) -> Validation:
    """The prediction against the median of the case's runs, with every diagnostic column."""
    prep, runs = case.prep, case.runs
    sc = prep.scenario
    measured = median_summary([r.summary for r in runs])
    rows = compare(case.predicted.summary, measured)
    replays = [replay_scenario(sc, profile, r.replay_log()) for r in runs]
    replayed = median_summary([r.result.summary for r in replays])
    speed, at_speed_rows = None, None
    if case.speed_points:
        speed = MachineSpeed(case.speed_points)
        at_speed = predict(sc, at_time_factor(profile, speed.memory_factor, speed.compute_factor))
        at_speed_rows = compare(at_speed.summary, measured)
    steps = step_errors([s for r in runs for s in r.steps], prep.cost, [t for r in runs for t in r.loop_s],
                        [idle for r in runs for idle in r.idle_s])
    run_speed = run_speed_factors(steps)
    run_speed_rows = None
    if run_speed:
        again = prepare(sc, profile)
        at_run_speed = run_prepared(again, KindScaledCost(again.cost, **run_speed), speed_draw=None)
        run_speed_rows = compare(at_run_speed.summary, measured)
    closed = sc.workload.is_closed_loop
    return Validation(case.name, sc, case.predicted, runs, measured, rows,
                      all(same_workload(case.predicted.recorder, r.recorder, closed) for r in runs),
                      speed, at_speed_rows, steps, replays, compare(replayed, measured),
                      run_speed, run_speed_rows,
                      run_spread([r.summary for r in runs], measured) if len(runs) > 1 else None,
                      case.machine_load, case.alone)


def serving_order(num_cases: int, repeats: int) -> list[int]:
    """Rounds that serve every case once, in order and then back (0 1 2, 2 1 0, 0 1 2, ...): each
    case's runs spread over the whole suite's time, at the same mean position, so a slow spell of a
    shared machine (minutes long on a cloud VM) falls on several cases' runs rather than on all of
    one case's."""
    forward = list(range(num_cases))
    return [i for r in range(repeats) for i in (forward if r % 2 == 0 else forward[::-1])]


def validate_all(cases: list[tuple[str, Scenario]], profile: Profile, device: str = "cpu",
                 tdp_w: float | None = None, seed: int = 0, progress=None, check_speed: bool = True,
                 repeats: int = 1, announce=None, alone_steps: int = ALONE_STEPS) -> list[Validation]:
    """Serve every case `repeats` times (identical workload each time) in serving_order and
    compare each case's prediction with the median of its runs (median_summary); with repeats > 1
    the runs' spread around it (run_spread) is the machine's own noise, a floor under any error.
    After the runs, up to alone_steps served steps of each kind per case are re-timed alone
    (retime_alone; 0: none). announce(case name, round, of rounds) is called before each run."""
    if repeats < 1:
        raise InputError("--repeats", "", f"expected >= 1, got {repeats}")
    served = set_up(cases, profile, device, seed)
    probe = SpeedProbe(profile, device, seed) if check_speed else None
    for k, i in enumerate(serving_order(len(served), repeats)):
        if announce is not None:
            announce(served[i].name, k // len(served) + 1, repeats)
        serve_once(served[i], probe, tdp_w, seed, progress)
    if alone_steps > 0:
        for case in served:
            retime_alone(case, probe, alone_steps)
    return [compare_served(case, profile) for case in served]


def validate(name: str, sc: Scenario, profile: Profile, device: str = "cpu", tdp_w: float | None = None,
             seed: int = 0, progress=None, check_speed: bool = True, repeats: int = 1,
             alone_steps: int = ALONE_STEPS) -> Validation:
    """One workload: validate_all of it alone."""
    return validate_all([(name, sc)], profile, device, tdp_w, seed, progress, check_speed, repeats,
                        alone_steps=alone_steps)[0]


SPREAD = "run spread"


def percent(value: float | None, spread: bool = False) -> str:
    """A relative error as +x.x%; a spread (a distance either way) as ±x.x%."""
    if value is None:
        return "n/a"
    return f"±{value * 100:.1f}%" if spread else f"{value * 100:+.1f}%"


def format_rows(rows: list[dict], columns: list[tuple[str, list[dict]]] = ()) -> str:
    """The comparison table; each of columns (title, rows) adds the error of another prediction
    of the same measurement (Validation.columns: at the machine's speed, at the run's own speed,
    the replay) or the runs' spread."""
    def fmt(v: float | None, scale: float = 1.0) -> str:
        return "n/a" if v is None else f"{v * scale:.4g}"

    widths = [max(10, len(title) + 2) for title, _ in columns]
    header = f"{'metric':<34}{'predicted':>12}{'measured':>12}{'error':>9}"
    lines = [header + "".join(f"{title:>{w}}" for (title, _), w in zip(columns, widths))]
    for i, r in enumerate(rows):
        scale = 1e3 if r["metric"].split(".")[0].endswith("_s") else 1.0
        unit = " ms" if scale == 1e3 else ""
        line = (f"{r['metric'] + unit:<34}{fmt(r['predicted'], scale):>12}{fmt(r['measured'], scale):>12}"
                f"{percent(r['rel_error']):>9}")
        line += "".join(f"{percent(other[i]['rel_error'], title == SPREAD):>{w}}"
                        for (title, other), w in zip(columns, widths))
        lines.append(line)
    return "\n".join(lines)


def format_diagnostics(v: Validation) -> str:
    """Machine speed against calibration, and the real steps against the cost model."""
    lines = []
    if v.speed is not None:
        after = "n/a" if v.speed.after is None else f"{v.speed.after:.3f}"
        lines.append(f"machine speed: calibration points now take {v.speed.factor:.3f}x their calibrated "
                     f"time (before the run {v.speed.before:.3f}x, after {after}x; decode "
                     f"{v.speed.memory_factor:.3f}x, prefill/mixed {v.speed.compute_factor:.3f}x); "
                     f"'at speed' predicts with memory and compute at those speeds")
    for kind, e in v.steps.items():
        if kind == "loop":
            modelled = e.get("predicted_s", 0.0) / e["num_steps"] if e["num_steps"] else 0.0
            lines.append(f"engine loop: {e['median_s'] * 1e3:.3f} ms a step (median) between steps, "
                         f"{percent(e['share_of_step_time'])} of step time; the profile's engine loop "
                         f"{modelled * 1e3:.3f} ms a step")
            continue
        woke = (f"; {e['num_after_idle']} after the engine slept, +{e['wake_s'] * 1e3:.2f} ms of wake-up in all"
                if e.get("num_after_idle") else "")
        lines.append(f"steps {kind:<8}{e['num_steps']:>6} steps: measured {e['measured_s']:.3f} s, "
                     f"cost model {e['predicted_s']:.3f} s ({percent(e['rel_error'])}; median step ratio "
                     f"{e['median_ratio']:.3f}{woke})")
    for kind, e in v.alone.items():
        speed = ("" if e["form"] is None else f", the machine's reference step {e['machine_factor']:.3f}x its "
                 f"calibrated time beside them: form {e['form']:.3f}x")
        lines.append(f"alone {kind:<8}{e['num_steps']:>6} served steps rebuilt and timed alone: "
                     f"{e['alone_over_model']:.3f}x the cost model{speed}; served {e['served_over_alone']:.3f}x "
                     f"alone ({e['num_after_idle']} of them after the engine slept)")
    if v.run_speed is not None:
        lines.append(f"run speed: the run's own steps took {v.run_speed['decode_factor']:.3f}x (decode) and "
                     f"{v.run_speed['prefill_factor']:.3f}x (prefill/mixed) their cost-model time in sum; 'run "
                     f"speed' predicts with every step scaled so (taken from this run: what is left is the cost "
                     f"model's form across shapes and the machine's moves within the run)")
    counts = v.replay_counts()
    if counts is not None:
        lines.append(f"replay: the simulator fed each real step's measured time, loop included ({counts['num_steps']} "
                     f"steps, {counts['num_diverged']} not the real engine's at that position): 'replay' is "
                     f"what the policy and engine loop alone leave unexplained")
    shares = [load["other_share"] for load in v.machine_load if load["other_share"] is not None]
    if shares:
        steals = [load["steal_share"] for load in v.machine_load if load["steal_share"] is not None]
        stolen = f" (the hypervisor's steal: up to {max(steals) * 100:.1f}%)" if steals else ""
        lines.append(f"machine load: while the real engine served, other processes and the hypervisor took "
                     f"up to {max(shares) * 100:.1f}% of the CPUs{stolen}; above ~10% step times are "
                     f"skewed, and no profile predicts them")
    if v.spread_rows:
        lines.append(f"repeats: the real engine served the identical workload {len(v.runs)} times; 'measured' is "
                     f"their median and 'run spread' the farthest run from it: the machine's own run-to-run "
                     f"noise, which no prediction can beat against a single run")
    return "\n".join(lines)


def saturation_rate(data: dict, profile: Profile) -> float:
    """Requests per second the profile predicts this workload's deployment sustains: the
    throughput of the same requests all arriving at once (offline), every step at its cost-model
    time (no speed variability: the suite's loads do not depend on a draw)."""
    offline = {**data, "workload": {**data["workload"], "arrival": {"process": "all_at_once"}}}
    from sim.scenario import scenario_from_dict

    prep = prepare(in_profile_dtype(scenario_from_dict(offline, "suite"), profile), profile)
    return run_prepared(prep, prep.cost, speed_draw=None).summary["throughput"]["requests_per_s"]


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
