"""Calibration sweeps: time real prefill, decode and mixed steps on the runner.

Measured: for each grid point, the wall time of one engine step (`Runner.execute` of a StepPlan,
device-synchronised before and after), `warmup` untimed runs then `repeats` timed runs, median
kept; the energy over the timed runs from the power meter; peak device memory where torch reports
it (CUDA). Each point is recorded with the StepShape of the very plan executed (`plan.shape()`), so
the fit sees exactly what the simulator computes.

* prefill (batch x prompt length): `batch` fresh prompts of `prompt_tokens` in one step;
* decode (batch x context): `batch` sequences decoding one token each at `context_tokens`
  (contexts are set with `Runner.reserve_context`, no prefill is paid);
* mixed: one prefill chunk (fresh, or the second chunk of a prompt) with `batch` decodes.

The grid is ordered coarse first: each axis is visited by bisection (ends, then the middle, then
quarters, ...), and a point's level is the finest of its coordinates, so a sweep cut short by the
time budget still spans the whole space. A point whose predicted time exceeds the remaining budget
is skipped (and listed), as is one predicted to take more than MAX_POINT_SHARE of the whole
budget (a huge corner must not eat the time of the rest of the grid). Predictions come from the cost model with a provisional profile, scaled
by the measured/predicted ratio of the points already run. An out-of-memory error is recorded as
the limit of its grid row (same kind and batch); the row's longer points are not attempted.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from calibrate.power import EnergyMeter
from calibrate.runner import Runner
from sim.plan import PrefillChunk, StepPlan, StepShape

SHAPE_FIELDS = ("num_tokens", "num_seqs", "num_sampled", "context_tokens", "attention_pairs",
                "num_prefill_tokens")


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


@dataclass
class SweepResult:
    points: list[dict] = field(default_factory=list)
    limits: list[dict] = field(default_factory=list)  # out-of-memory rows
    skipped: list[dict] = field(default_factory=list)  # cut by the time budget
    seconds: float = 0.0


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
        return StepPlan(prefill=tuple(PrefillChunk(first_id + i, 0, point.length, True)
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

    def __init__(self, runner: Runner, rng: np.random.Generator) -> None:
        self.runner = runner
        self.rng = rng
        self.vocab = runner.spec.vocab_size

    def _prompt(self, length: int) -> list[int]:
        return self.rng.integers(0, self.vocab, size=length).tolist()

    def setup(self, point: Point) -> StepPlan:
        plan = plan_for(point)
        if point.kind == "prefill":
            for chunk in plan.prefill:
                self.runner.add_request(chunk.request_id, self._prompt(point.length))
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

    def time_once(self, point: Point) -> tuple[float, StepPlan]:
        plan = self.setup(point)
        try:
            self.runner.synchronize()
            start = time.perf_counter()
            self.runner.execute(plan)
            self.runner.synchronize()
            return time.perf_counter() - start, plan
        finally:
            self.teardown(plan)


class ForeignLoad:
    """CPU time other processes used while we measured, as a share of all CPUs (Linux
    /proc/stat minus this process's own CPU time). Calibrating beside a busy process skews CPU
    timings badly (threads wait for descheduled peers), so points taken under load are retried."""

    def __init__(self) -> None:
        self.tick_s = 1.0 / os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 0.01
        self.num_cpus = os.cpu_count() or 1

    def _busy_s(self) -> float | None:
        try:
            with open("/proc/stat") as fh:
                fields = fh.readline().split()[1:]
        except OSError:
            return None
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
        return (user + nice + system + irq + softirq + steal) * self.tick_s

    def start(self) -> tuple[float | None, float, float]:
        times = os.times()
        return self._busy_s(), times.user + times.system, time.perf_counter()

    def share(self, started: tuple[float | None, float, float]) -> float | None:
        busy0, own0, wall0 = started
        busy1 = self._busy_s()
        if busy0 is None or busy1 is None:
            return None
        times = os.times()
        foreign = (busy1 - busy0) - (times.user + times.system - own0)
        wall = time.perf_counter() - wall0
        # /proc/stat counts in clock ticks (10 ms): forgive two ticks of rounding and daemons
        return max(0.0, foreign - 2 * self.tick_s) / max(wall * self.num_cpus, 1e-9)


MAX_POINT_SHARE = 0.1  # no single point may be predicted to take more of the sweep's budget
FOREIGN_LOAD_LIMIT = 0.15  # share of all CPUs used by other processes that makes a point suspect
MAX_TRIES = 3


def measure_point(point_runner: PointRunner, point: Point, model_name: str, repeats: int,
                  warmup: int, meter: EnergyMeter, load: ForeignLoad | None = None,
                  deadline: float = float("inf")) -> dict:
    """Warm up, time `repeats` steps, return the point's record (median seconds). If other
    processes were busy meanwhile, measure again (up to MAX_TRIES, within the deadline) and keep
    the quietest try; `tries` says how many were made."""
    load = load or ForeignLoad()
    best: dict | None = None
    for tries in range(1, MAX_TRIES + 1):
        began = time.perf_counter()
        record = _measure_once(point_runner, point, model_name, repeats, warmup, meter, load)
        if best is None or (record["foreign_cpu_share"] or 0.0) < (best["foreign_cpu_share"] or 0.0):
            best = record
        best["tries"] = tries
        took = time.perf_counter() - began
        if (best["foreign_cpu_share"] or 0.0) <= FOREIGN_LOAD_LIMIT or time.perf_counter() + took > deadline:
            break
    assert best is not None
    return best


def _measure_once(point_runner: PointRunner, point: Point, model_name: str, repeats: int,
                  warmup: int, meter: EnergyMeter, load: ForeignLoad) -> dict:
    device = point_runner.runner.device
    for _ in range(warmup):
        point_runner.time_once(point)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times: list[float] = []
    load_start = load.start()
    with meter.measure() as energy:
        for _ in range(repeats):
            seconds, plan = point_runner.time_once(point)
            times.append(seconds)
    foreign = load.share(load_start)
    median = statistics.median(times)
    shape = plan.shape()
    record: dict = {"kind": point.kind, "model": model_name, "batch": point.batch}
    if point.kind == "prefill":
        record["prompt_tokens"] = point.length
    elif point.kind == "decode":
        record["context_tokens_per_seq"] = point.length
    else:
        record.update(chunk_tokens=point.length, chunk_start=point.start,
                      context_tokens_per_seq=point.context)
    record.update({f: getattr(shape, f) for f in SHAPE_FIELDS})
    power_w = energy.watts
    record.update({
        "seconds": float(f"{median:.6g}"),
        "repeats": repeats,
        "min_seconds": float(f"{min(times):.6g}"),
        "spread": round((max(times) - min(times)) / median, 4),
        "foreign_cpu_share": None if foreign is None else round(foreign, 3),
        "joules": None if power_w is None else float(f"{power_w * median:.6g}"),
        "power_w": None if power_w is None else round(power_w, 3),
        "energy_is_estimated": energy.is_estimated if power_w is not None else None,
        "peak_memory_bytes": (int(torch.cuda.max_memory_allocated(device))
                              if device.type == "cuda" else None),
    })
    return record


# ---- the sweep ---------------------------------------------------------------------------------
def run_sweep(runner: Runner, grid: Grid, model_name: str, meter: EnergyMeter,
              predict_s: Callable[[StepShape], float], budget_s: float, seed: int = 0,
              progress: bool = True, points: list[Point] | None = None) -> SweepResult:
    """Measure the grid's points coarse-first within budget_s seconds (see the module doc)."""
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    point_runner = PointRunner(runner, rng)
    load = ForeignLoad()
    todo = points if points is not None else grid_points(grid)
    todo = sorted(todo, key=lambda p: (p.level, predict_s(shape_of(p)), p.kind))
    result = SweepResult()
    ratios: list[float] = []  # measured / predicted of the points run so far
    oom_rows: dict[tuple[str, int, int], int] = {}
    steps_per_point = grid.warmup + grid.repeats
    bar = _progress_bar(len(todo), model_name, progress)
    try:
        for point in todo:
            bar.update(1)
            limit = oom_rows.get(point.row)
            if limit is not None and point.length >= limit:
                continue
            if any(kind == point.kind and b < point.batch and point.length >= lim
                   for (kind, b, _), lim in oom_rows.items()):
                continue  # a smaller batch already ran out of memory at this length
            scale = statistics.median(ratios) if ratios else 1.0
            predicted = predict_s(shape_of(point)) * scale
            remaining = budget_s - (time.perf_counter() - started)
            cost = predicted * steps_per_point
            if cost > min(remaining, MAX_POINT_SHARE * budget_s):
                reason = ("remaining time budget" if cost > remaining
                          else f"one point may take at most {MAX_POINT_SHARE:.0%} of the budget")
                result.skipped.append({"kind": point.kind, "batch": point.batch,
                                       "length": point.length, "start": point.start,
                                       "predicted_s": float(f"{predicted:.4g}"), "reason": reason})
                continue
            try:
                record = measure_point(point_runner, point, model_name, grid.repeats,
                                       grid.warmup, meter, load, started + budget_s)
            except Exception as exc:  # noqa: BLE001 - only out-of-memory is absorbed
                if not _is_oom(exc):
                    raise
                oom_rows[point.row] = point.length
                result.limits.append({"kind": point.kind, "model": model_name,
                                      "batch": point.batch, "length": point.length,
                                      "start": point.start, "error": _first_line(exc)})
                _release_memory(runner)
                continue
            ratios.append(record["seconds"] / max(predict_s(shape_of(point)), 1e-9))
            result.points.append(record)
            bar.set_postfix_str(f"{budget_s - (time.perf_counter() - started):.0f}s left")
    finally:
        bar.close()
    result.seconds = time.perf_counter() - started
    return result


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
