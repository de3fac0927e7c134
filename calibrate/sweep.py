"""Calibration sweeps: time real prefill, decode and mixed steps on the runner.

Measured: for each grid point, the wall time of one engine step (`Runner.execute` of a StepPlan,
device-synchronised before and after): a warm-up step, then the grid's `repeats` timed steps;
later visits add REPEATS_PER_VISIT more each, and the median of all is kept. Energy over the
timed runs comes from the power meter; peak device memory where torch reports it (CUDA). Each point is recorded with the StepShape of the very plan
executed (`plan.shape()`), so the fit sees exactly what the simulator computes.

* prefill (batch x prompt length): `batch` fresh prompts of `prompt_tokens` in one step;
* decode (batch x context): `batch` sequences decoding one token each at `context_tokens`
  (contexts are set with `Runner.reserve_context`, no prefill is paid);
* prefill after a prefix: the last chunk of a longer prompt, `length` tokens behind `start`
  cached ones (each prompt length shorter than a decode context, ending at that context, so no
  position beyond the grid's is needed): attention over a cache runs at its own rate
  (sim.cost_model), and only these steps show it apart;
* mixed: one prefill chunk (fresh, or the second chunk of a prompt) with `batch` decodes.

The first pass orders the grid coarse first: each axis is visited by bisection (ends, then the
middle, then quarters, ...), and a point's level is the finest of its coordinates, so a sweep cut
short by the time budget still spans the whole space. A point predicted to take longer than the
remaining budget is skipped (and listed), as is one predicted to take more than MAX_POINT_SHARE of
the budget (a huge corner must not eat the time of the rest of the grid). Predictions come from
the cost model with a provisional profile, scaled by the measured/predicted ratio of the points
already run. Time left after the first pass buys more visits to the measured points (rounds in a
shuffled order, until each has `target_samples` timings), so that a point's median spans the
whole run and one slow spell of the machine (a CPU VM's memory bandwidth drifts by +-30 % with
its neighbours' load) does not decide it. Beside
it all, two reference steps are timed about every half second, and each point's timings are
brought to the run's median machine speed (`calibrate.speed_reference`). Timings
taken while other processes were busy are retried (see `calibrate.machine_load`). An
out-of-memory error is recorded as the limit of its grid row (same kind and batch); the row's
longer points, and larger batches at that length, are not attempted.
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch

from calibrate.machine_load import ForeignLoad
from calibrate.power import EnergyMeter
from calibrate.runner import Runner
from calibrate.speed_track import SpeedTrack, at_speed
from sim.plan import PrefillChunk, StepPlan, StepShape

if TYPE_CHECKING:
    from calibrate.speed_reference import SpeedReference

SHAPE_FIELDS = ("num_tokens", "num_seqs", "num_sampled", "context_tokens", "attention_pairs",
                "num_prefill_tokens", "cached_pairs", "prefix_tokens")  # StepShape.from_record


@dataclass(frozen=True)
class Grid:
    batches: tuple[int, ...]
    prompt_lens: tuple[int, ...]
    contexts: tuple[int, ...]
    mixed_chunks: tuple[int, ...] = ()  # prefill chunk sizes of mixed steps
    mixed_batches: tuple[int, ...] = ()  # decodes riding along in a mixed step
    repeats: int = 3
    warmup: int = 1

    @property
    def mixed_context(self) -> int:
        """The decoders' (and a second chunk's prefix) context in mixed steps: the middle one."""
        ordered = sorted(self.contexts)
        return ordered[len(ordered) // 2]

    def max_seq_len(self) -> int:
        """Positions the runner must hold for every point (decode/mixed run warmup+repeats steps
        from scratch each time, so +1 for the decoded token)."""
        longest = max(max(self.prompt_lens), max(self.contexts) + 1)
        if self.mixed_chunks:
            longest = max(longest, self.mixed_context + max(self.mixed_chunks))
        return longest

    def prefix_points(self) -> list[tuple[int, int, int]]:
        """(chunk tokens, start, context) of the prefill-after-a-prefix points: each prompt length
        as the last chunk of a prompt as long as each longer decode context."""
        return [(p, c - p, c) for p in self.prompt_lens for c in self.contexts if p < c]

    def max_num_seqs(self) -> int:
        return max(max(self.batches), max(self.mixed_batches, default=0) + 1)

    def to_dict(self) -> dict:
        return {"batches": list(self.batches), "prompt_lens": list(self.prompt_lens),
                "contexts": list(self.contexts), "mixed_chunks": list(self.mixed_chunks),
                "mixed_batches": list(self.mixed_batches), "mixed_context": self.mixed_context,
                "repeats": self.repeats, "warmup": self.warmup}


@dataclass(frozen=True)
class Point:
    """One grid point: kind, batch (prompts, decoders or decoders beside a chunk) and length
    (prompt tokens, decode context or chunk tokens); `start` > 0 for a chunk after a prefix."""

    kind: str
    batch: int
    length: int
    start: int = 0
    context: int = 0  # mixed: the decoders' context
    level: int = 0

    @property
    def row(self) -> tuple[str, int, int]:
        return (self.kind, self.batch, self.start)


# ---- grid ordering -----------------------------------------------------------------------------
def bisection_levels(values: tuple[int, ...]) -> dict[int, int]:
    """Level of each axis value: 0 for both ends, 1 for the middle, 2 for the quarters, ..."""
    ordered = sorted(set(values))
    levels = {ordered[0]: 0, ordered[-1]: 0}
    spans, level = [(0, len(ordered) - 1)], 1
    while spans:
        next_spans = []
        for lo, hi in spans:
            if hi - lo < 2:
                continue
            mid = (lo + hi) // 2
            levels.setdefault(ordered[mid], level)
            next_spans += [(lo, mid), (mid, hi)]
        spans, level = next_spans, level + 1
    return levels


def grid_points(grid: Grid) -> list[Point]:
    """Every point of the grid with its coarseness level (not yet ordered)."""
    lb, lp, lc = (bisection_levels(grid.batches), bisection_levels(grid.prompt_lens),
                  bisection_levels(grid.contexts))
    points = [Point("prefill", b, p, level=max(lb[b], lp[p]))
              for b in grid.batches for p in grid.prompt_lens]
    points += [Point("prefill", 1, p, start, level=max(lp[p], lc[c]) + 1)
               for p, start, c in grid.prefix_points()]
    points += [Point("decode", b, c, level=max(lb[b], lc[c]))
               for b in grid.batches for c in grid.contexts]
    if grid.mixed_chunks and grid.mixed_batches:
        lm, lmb = bisection_levels(grid.mixed_chunks), bisection_levels(grid.mixed_batches)
        ctx = grid.mixed_context
        for chunk in grid.mixed_chunks:
            for b in grid.mixed_batches:
                for start in (0, ctx):  # a fresh prompt's first chunk, and a later chunk
                    points.append(Point("mixed", b, chunk, start, ctx,
                                        level=max(lm[chunk], lmb[b]) + (start > 0)))
    return points


def plan_for(point: Point, first_id: int = 0) -> StepPlan:
    """The StepPlan of a point (request ids from first_id: decoders first, then the prompts)."""
    if point.kind == "prefill":
        return StepPlan(prefill=tuple(PrefillChunk(first_id + i, point.start, point.length, True)
                                      for i in range(point.batch)))
    if point.kind == "decode":
        return StepPlan(decode_ids=tuple(range(first_id, first_id + point.batch)),
                        decode_context_tokens=point.batch * point.length)
    chunk = PrefillChunk(first_id + point.batch, point.start, point.length, True)
    return StepPlan(prefill=(chunk,), decode_ids=tuple(range(first_id, first_id + point.batch)),
                    decode_context_tokens=point.batch * point.context)


def shape_of(point: Point) -> StepShape:
    return plan_for(point).shape()


# ---- running one point -------------------------------------------------------------------------
def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    oom_type = getattr(torch, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


class PointRunner:
    """Sets up a point's requests on a runner, executes its plan and tears them down."""

    def __init__(self, runner: Runner, model_name: str, seed: int = 0) -> None:
        self.runner = runner
        self.model_name = model_name
        self.rng = np.random.default_rng(seed)
        self.vocab = runner.spec.vocab_size

    def _prompt(self, length: int) -> list[int]:
        return self.rng.integers(0, self.vocab, size=length).tolist()

    def setup(self, point: Point) -> StepPlan:
        plan = plan_for(point)
        if point.kind == "prefill":
            for chunk in plan.prefill:  # after a prefix: a prompt of start + length, prefix reserved
                self.runner.add_request(chunk.request_id, self._prompt(point.start + point.length))
                if point.start:
                    self.runner.reserve_context(chunk.request_id, point.start)
            return plan
        context = point.length if point.kind == "decode" else point.context
        for rid in plan.decode_ids:
            self.runner.add_request(rid, self._prompt(1))
            self.runner.reserve_context(rid, context)
        for chunk in plan.prefill:  # mixed: a prompt of start + length tokens, prefix reserved
            self.runner.add_request(chunk.request_id, self._prompt(chunk.start + chunk.num_tokens))
            if chunk.start:
                self.runner.reserve_context(chunk.request_id, chunk.start)
        return plan

    def teardown(self, plan: StepPlan) -> None:
        for rid in [c.request_id for c in plan.prefill] + list(plan.decode_ids):
            try:
                self.runner.free(rid)
            except ValueError:
                pass  # never added (setup failed part-way)

    def time_once(self, point: Point, idle_s: float = 0.0) -> tuple[float, StepPlan]:
        """The point's step, timed; idle_s: sleep that long before it (calibrate.wake)."""
        plan = self.setup(point)
        try:
            self.runner.synchronize()
            if idle_s > 0:
                time.sleep(idle_s)
            start = time.perf_counter()
            self.runner.execute(plan)
            self.runner.synchronize()
            return time.perf_counter() - start, plan
        finally:
            self.teardown(plan)


@dataclass
class Measurement:
    """The timings of one point, accumulated over tries and visits."""

    point: Point
    shape: StepShape
    times: list[float] = field(default_factory=list)
    energy_j: float = 0.0
    metered_s: float = 0.0
    has_energy: bool = False
    is_estimated: bool = True
    foreign: list[float] = field(default_factory=list)
    stamps: list[float] = field(default_factory=list)  # perf_counter time of each timing
    tries: int = 0
    visits: int = 0
    peak_memory_bytes: int | None = None

    @property
    def seconds(self) -> float:
        return statistics.median(self.times)

    def merge(self, other: Measurement) -> None:
        self.times += other.times
        self.energy_j += other.energy_j
        self.metered_s += other.metered_s
        self.has_energy = self.has_energy or other.has_energy
        self.foreign += other.foreign
        self.stamps += other.stamps
        self.tries += other.tries
        self.visits += other.visits
        if other.peak_memory_bytes is not None:
            self.peak_memory_bytes = max(self.peak_memory_bytes or 0, other.peak_memory_bytes)

    def record(self, model_name: str, track: SpeedTrack | None = None) -> dict:
        """The point as plain data (what the profile stores). With a speed track, "seconds" is
        the point's time at the track's baseline machine speed, "raw_seconds" its plain median."""
        point, median = self.point, self.seconds
        speed = at_speed(self.times, self.stamps, track) if track is not None else None
        out: dict = {"kind": point.kind, "model": model_name, "batch": point.batch}
        if point.kind == "prefill" and point.start:
            out.update(chunk_tokens=point.length, chunk_start=point.start)
        elif point.kind == "prefill":
            out["prompt_tokens"] = point.length
        elif point.kind == "decode":
            out["context_tokens_per_seq"] = point.length
        else:
            out.update(chunk_tokens=point.length, chunk_start=point.start,
                       context_tokens_per_seq=point.context)
        out.update({f: getattr(self.shape, f) for f in SHAPE_FIELDS})
        power_w = self.energy_j / self.metered_s if self.has_energy and self.metered_s > 0 else None
        seconds = speed.seconds if speed else median
        out.update({
            "seconds": _sig(seconds),
            "raw_seconds": _sig(median),
            "speed_weight": None if speed is None or math.isnan(speed.weight) else speed.weight,
            "log_spread": None if speed is None else {"raw": round(speed.raw_mad, 4),
                                                      "at_speed": round(speed.mad, 4)},
            "repeats": len(self.times),
            "visits": self.visits,
            "min_seconds": _sig(min(self.times)),
            "spread": round((max(self.times) - min(self.times)) / median, 4),
            "times_s": [_sig(t, 4) for t in self.times],
            "stamps_s": None if track is None else [round(t - track.start_s, 3) for t in self.stamps],
            "foreign_cpu_share": round(max(self.foreign), 3) if self.foreign else None,
            "tries": self.tries,
            "joules": None if power_w is None else _sig(power_w * seconds),  # per step, like seconds
            "power_w": None if power_w is None else round(power_w, 3),
            "energy_is_estimated": self.is_estimated if power_w is not None else None,
            "peak_memory_bytes": self.peak_memory_bytes,
        })
        return out


def _sig(value: float, digits: int = 6) -> float:
    return float(f"{value:.{digits}g}")


def measure_point(point_runner: PointRunner, point: Point, repeats: int, warmup: int,
                  meter: EnergyMeter, load: ForeignLoad | None = None,
                  deadline: float = float("inf"),
                  reference: SpeedReference | None = None) -> Measurement:
    """Warm up, then time `repeats` steps. If other processes were busy meanwhile, measure again
    (up to MAX_TRIES, within the deadline) and keep the quietest try. A reference, if given, is
    sampled before the warm-up and after each timed step when its interval has passed (so between
    the timings of long steps only; those samples fall inside the energy window, a few % of it)."""
    load = load or ForeignLoad()
    best: Measurement | None = None
    for tries in range(1, MAX_TRIES + 1):
        began = time.perf_counter()
        this = _measure_once(point_runner, point, repeats, warmup, meter, load, reference)
        if best is None or _load_of(this) < _load_of(best):
            best = this
        best.tries = tries
        took = time.perf_counter() - began
        if _load_of(best) <= FOREIGN_LOAD_LIMIT or time.perf_counter() + took > deadline:
            break
    assert best is not None
    return best


def _load_of(m: Measurement) -> float:
    return max(m.foreign) if m.foreign else 0.0


def _measure_once(point_runner: PointRunner, point: Point, repeats: int, warmup: int,
                  meter: EnergyMeter, load: ForeignLoad,
                  reference: SpeedReference | None = None) -> Measurement:
    device = point_runner.runner.device
    if reference is not None:
        reference.maybe_sample()
    for _ in range(warmup):
        point_runner.time_once(point)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times: list[float] = []
    stamps: list[float] = []
    mark = load.start()
    with meter.measure() as energy:
        for _ in range(repeats):
            seconds, plan = point_runner.time_once(point)
            times.append(seconds)
            stamps.append(time.perf_counter() - seconds / 2)
            if reference is not None:
                reference.maybe_sample()
    foreign = load.share(mark)
    return Measurement(
        point, plan.shape(), times, energy.joules or 0.0, energy.seconds,
        energy.joules is not None, energy.is_estimated, [] if foreign is None else [foreign],
        stamps, tries=1, visits=1,
        peak_memory_bytes=(int(torch.cuda.max_memory_allocated(device))
                           if device.type == "cuda" else None))


# ---- the sweep ---------------------------------------------------------------------------------
MAX_POINT_SHARE = 0.1  # no single point may be predicted to take more of the sweep's budget
FOREIGN_LOAD_LIMIT = 0.15  # share of all CPUs used by other processes that makes a point suspect
MAX_TRIES = 3
REPEATS_PER_VISIT = 2  # timed steps per later visit (after one warm-up step)
MAX_ROUNDS = 20


@dataclass
class SweepResult:
    model_name: str
    measurements: list[Measurement] = field(default_factory=list)
    limits: list[dict] = field(default_factory=list)  # out-of-memory rows
    skipped: list[dict] = field(default_factory=list)  # cut by the time budget
    seconds: float = 0.0
    track: SpeedTrack | None = None  # the machine's speed over the sweep (see speed_reference)

    @property
    def points(self) -> list[dict]:
        return [m.record(self.model_name, self.track) for m in self.measurements]


def target_samples(step_s: float) -> int:
    """Timings wanted per point: short steps are noisier (a CPU's memory bandwidth drifts with its
    neighbours' load) and cheap, long compute-bound steps steadier and dear."""
    if step_s < 0.05:
        return 30
    return 12 if step_s < 0.5 else 6


class ModelSweep:
    """The points of one model on one runner: a first pass coarse-first within a budget, then
    later visits (`more_rounds`) that add timings to what was measured."""

    def __init__(self, runner: Runner, grid: Grid, model_name: str,
                 predict_s: Callable[[StepShape], float], seed: int = 0,
                 points: list[Point] | None = None,
                 reference: SpeedReference | None = None) -> None:
        self.point_runner = PointRunner(runner, model_name, seed)
        self.reference = reference  # sampled beside the timings, if given
        self.grid = grid
        self.predict_s = predict_s
        todo = points if points is not None else grid_points(grid)
        self.todo = sorted(todo, key=lambda p: (p.level, predict_s(shape_of(p)), p.kind))
        self.result = SweepResult(model_name)
        self._ratios: list[float] = []  # measured / predicted so far
        self._oom_rows: dict[tuple[str, int, int], int] = {}
        self._load = ForeignLoad()

    def predicted(self, point: Point) -> float:
        scale = statistics.median(self._ratios) if self._ratios else 1.0
        return self.predict_s(shape_of(point)) * scale

    def _cost_s(self, point: Point) -> float:
        return self.predicted(point) * (self.grid.warmup + self.grid.repeats)

    def _blocked_by_oom(self, point: Point) -> bool:
        limit = self._oom_rows.get(point.row)
        if limit is not None and point.length >= limit:
            return True
        return any(kind == point.kind and b < point.batch and point.length >= lim
                   for (kind, b, _), lim in self._oom_rows.items())

    def first_pass(self, meter: EnergyMeter, budget_s: float, progress: bool = True) -> SweepResult:
        started = time.perf_counter()
        deadline = started + budget_s
        bar = _progress_bar(len(self.todo), self.result.model_name, progress)
        try:
            for point in self.todo:
                bar.update(1)
                if self._blocked_by_oom(point):
                    continue
                cost, remaining = self._cost_s(point), deadline - time.perf_counter()
                if cost > min(remaining, MAX_POINT_SHARE * budget_s):
                    self._skip(point, cost > remaining)
                    continue
                self._measure(point, meter, deadline)
                bar.set_postfix_str(f"{deadline - time.perf_counter():.0f}s left")
        finally:
            bar.close()
        self.result.seconds += time.perf_counter() - started
        return self.result

    def visit(self, m: Measurement, meter: EnergyMeter, deadline: float) -> bool:
        """Time a measured point once more (warm-up + REPEATS_PER_VISIT) if it wants more
        samples and the deadline allows; True if it did."""
        step = m.seconds
        if len(m.times) >= target_samples(step):
            return False
        if time.perf_counter() + step * (self.grid.warmup + REPEATS_PER_VISIT) > deadline:
            return False
        started = time.perf_counter()
        m.merge(measure_point(self.point_runner, m.point, REPEATS_PER_VISIT, self.grid.warmup,
                              meter, self._load, deadline, self.reference))
        self.result.seconds += time.perf_counter() - started
        return True

    def _skip(self, point: Point, over_remaining: bool) -> None:
        reason = ("remaining time budget" if over_remaining
                  else f"one point may take at most {MAX_POINT_SHARE:.0%} of the budget")
        self.result.skipped.append({"model": self.result.model_name, "kind": point.kind,
                                    "batch": point.batch,
                                    "length": point.length, "start": point.start,
                                    "predicted_s": _sig(self.predicted(point), 4),
                                    "reason": reason})

    def _measure(self, point: Point, meter: EnergyMeter, deadline: float) -> None:
        try:
            m = measure_point(self.point_runner, point, self.grid.repeats, self.grid.warmup, meter,
                              self._load, deadline, self.reference)
        except Exception as exc:  # noqa: BLE001 - only out-of-memory is absorbed
            if not _is_oom(exc):
                raise
            self._oom_rows[point.row] = point.length
            self.result.limits.append({"kind": point.kind, "model": self.result.model_name,
                                       "batch": point.batch, "length": point.length,
                                       "start": point.start, "error": _first_line(exc)})
            _release_memory(self.point_runner.runner)
            return
        self._ratios.append(m.seconds / max(self.predict_s(shape_of(point)), 1e-9))
        self.result.measurements.append(m)


def _relative_spread(m: Measurement) -> float:
    return (max(m.times) - min(m.times)) / m.seconds


def more_rounds(sweeps: list[ModelSweep], meter: EnergyMeter, deadline: float,
                seed: int = 0) -> int:
    """Visit every measured point of every sweep again, in a shuffled order, round after round,
    until each has its target number of timings or the deadline comes; spreading a point's
    timings over the whole run makes its median robust to slow spells of the machine. Returns
    the number of rounds run."""
    rng = np.random.default_rng(seed)
    visits = [(s, m) for s in sweeps for m in s.result.measurements]
    for round_index in range(MAX_ROUNDS):
        order = rng.permutation(len(visits))
        if not sum(visits[i][0].visit(visits[i][1], meter, deadline) for i in order):
            return round_index
    return MAX_ROUNDS


def run_sweep(runner: Runner, grid: Grid, model_name: str, meter: EnergyMeter,
              predict_s: Callable[[StepShape], float], budget_s: float, seed: int = 0,
              progress: bool = True, points: list[Point] | None = None,
              rounds: bool = False, reference: SpeedReference | None = None) -> SweepResult:
    """One model's sweep: a first pass within budget_s, then (with `rounds`) more visits. With a
    reference, the points' times are brought to the run's median machine speed."""
    deadline = time.perf_counter() + budget_s
    sweep = ModelSweep(runner, grid, model_name, predict_s, seed, points, reference)
    sweep.first_pass(meter, budget_s, progress)
    if rounds:
        more_rounds([sweep], meter, deadline, seed)
    if reference is not None:
        sweep.result.track = reference.finish()
    return sweep.result


def _release_memory(runner: Runner) -> None:
    if runner.device.type == "cuda":
        torch.cuda.empty_cache()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:200]


def _progress_bar(total: int, label: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=f"calibrate {label}", unit="pt", file=sys.stderr,
                disable=not enabled, leave=False, dynamic_ncols=True)
