"""Sweep ordering, time budget and out-of-memory handling, on a fake runner (no model needed)."""

from __future__ import annotations

import dataclasses
import time

import pytest

torch = pytest.importorskip("torch")

from calibrate.power import EnergyMeter  # noqa: E402
from calibrate.sweep import (Grid, bisection_levels, grid_points, run_sweep, shape_of,  # noqa: E402
                             target_samples)
from sim.spec.model import PRESETS  # noqa: E402
from sim.plan import StepPlan  # noqa: E402


class FakeRunner:
    """The Runner API the sweep uses; a step "takes" tokens x seconds_per_token and runs out of
    memory beyond max_tokens."""

    def __init__(self, seconds_per_token: float = 0.0, max_tokens: int = 10**9) -> None:
        self.spec = PRESETS["tiny"]
        self.device = torch.device("cpu")
        self.seconds_per_token = seconds_per_token
        self.max_tokens = max_tokens
        self.requests: dict[int, int] = {}
        self.executed: list[StepPlan] = []

    def add_request(self, request_id: int, tokens: list[int]) -> None:
        assert request_id not in self.requests
        self.requests[request_id] = len(tokens)

    def reserve_context(self, request_id: int, num_tokens: int) -> None:
        assert request_id in self.requests

    def free(self, request_id: int) -> None:
        if request_id not in self.requests:
            raise ValueError("unknown")
        del self.requests[request_id]

    def synchronize(self) -> None:
        pass

    def execute(self, plan: StepPlan) -> dict[int, int]:
        if plan.num_tokens > self.max_tokens:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        self.executed.append(plan)
        time.sleep(self.seconds_per_token * plan.num_tokens)
        return {}


GRID = Grid(batches=(1, 2, 4, 8), prompt_lens=(16, 32, 64, 128, 256), contexts=(64, 256, 1024),
            mixed_chunks=(32,), mixed_batches=(2,), repeats=2, warmup=1)


def test_bisection_levels_visit_ends_then_middles() -> None:
    levels = bisection_levels((1, 2, 4, 8, 16))
    assert levels == {1: 0, 16: 0, 4: 1, 2: 2, 8: 2}
    assert bisection_levels((7,)) == {7: 0}


def test_grid_points_cover_every_combination_with_levels() -> None:
    points = grid_points(GRID)
    assert sum(p.kind == "prefill" and not p.start for p in points) == 4 * 5
    # each prompt length as the last chunk of a prompt as long as each longer context, batch 1
    prefixed = {(p.length, p.start) for p in points if p.kind == "prefill" and p.start}
    assert prefixed == {(16, 48), (32, 32)} | {(n, 256 - n) for n in (16, 32, 64, 128)} | {
        (n, 1024 - n) for n in GRID.prompt_lens}
    assert all(p.batch == 1 for p in points if p.kind == "prefill" and p.start)
    assert GRID.max_seq_len() == 1025  # the prefixed chunks needed no longer runner
    assert sum(p.kind == "decode" for p in points) == 4 * 3
    assert sum(p.kind == "mixed" for p in points) == 2  # a first chunk and a later chunk
    corners = {(p.kind, p.batch, p.length) for p in points if p.level == 0 and p.kind != "mixed"}
    assert ("prefill", 1, 16) in corners and ("prefill", 8, 256) in corners
    assert ("decode", 8, 1024) in corners and ("prefill", 2, 64) not in corners


def test_points_record_the_shape_of_the_plan_they_ran() -> None:
    runner = FakeRunner()
    result = run_sweep(runner, GRID, "tiny", EnergyMeter(), lambda s: 1e-3, 60.0, progress=False)
    assert len(result.points) == len(grid_points(GRID)) and not result.skipped
    by_key = {(p.kind, p.batch, p.length, p.start): shape_of(p) for p in grid_points(GRID)}
    for record in result.points:
        length = record.get("prompt_tokens") or record.get("chunk_tokens") or record["context_tokens_per_seq"]
        shape = by_key[(record["kind"], record["batch"], length, record.get("chunk_start", 0))]
        assert record["num_tokens"] == shape.num_tokens
        assert record["attention_pairs"] == shape.attention_pairs
    assert not runner.requests  # every request freed


def test_budget_skips_points_predicted_too_long_and_runs_coarse_first() -> None:
    runner = FakeRunner(seconds_per_token=2e-5)
    # predictions: 20 us per token; 3 steps per point; the largest prefill (2048 tokens) ~0.12 s
    result = run_sweep(runner, GRID, "tiny", EnergyMeter(), lambda s: 2e-5 * s.num_tokens, 0.3,
                       progress=False)
    assert result.skipped, "a 0.3 s budget cannot hold the whole grid"
    measured = {(p["kind"], p["batch"]) for p in result.points}
    assert ("prefill", 1) in measured and ("decode", 8) in measured  # corners came first
    assert result.seconds < 0.6


def test_out_of_memory_is_recorded_as_the_row_limit() -> None:
    runner = FakeRunner(max_tokens=300)
    result = run_sweep(runner, GRID, "tiny", EnergyMeter(), lambda s: 1e-4 * s.num_tokens, 60.0,
                       progress=False)
    assert result.limits
    for limit in result.limits:
        assert limit["kind"] == "prefill" and "out of memory" in limit["error"]
        assert limit["batch"] * limit["length"] > 300
    # nothing at or beyond a row's limit was measured, nothing that fits was lost
    for record in result.points:
        if record["kind"] == "prefill":
            assert record["num_tokens"] <= 300
    fits = [p for p in grid_points(GRID) if p.kind != "prefill" or p.batch * p.length <= 300]
    assert len(result.points) == len(fits)
    assert not runner.requests


def test_later_rounds_merge_into_one_median_per_point() -> None:
    runner = FakeRunner(seconds_per_token=1e-6)
    result = run_sweep(runner, GRID, "tiny", EnergyMeter(), lambda s: 1e-6 * s.num_tokens, 60.0,
                       progress=False, rounds=True)
    assert len(result.points) == len(grid_points(GRID))
    for record in result.points:
        assert record["repeats"] == len(record["times_s"]) >= target_samples(record["seconds"])
        assert record["visits"] > 1 and record["min_seconds"] <= record["seconds"]


def test_short_steps_want_more_samples() -> None:
    assert target_samples(0.001) > target_samples(0.2) > target_samples(2.0) >= GRID.repeats


def test_a_profile_record_gives_back_the_point_it_was_measured_at() -> None:
    from calibrate.validate import point_from_record

    result = run_sweep(FakeRunner(), GRID, "tiny", EnergyMeter(), lambda s: 1e-3, 60.0, progress=False)
    points = {dataclasses.replace(p, level=0) for p in grid_points(GRID)}
    assert {point_from_record(r) for r in result.points} == points
