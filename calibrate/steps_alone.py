"""Served steps re-timed alone: which part of a validation's error is the cost model's form.

A served step's time differs from its cost-model time for three reasons, and `calibrate
validate` must tell them apart to say what to fix:
  * the machine: a shared VM runs 10-15 % slower for minutes at a time, and a profile describes
    it at its calibration's speed (the speed probe measures this);
  * serving: a step after the engine slept pays the wake-up, and neighbours strike at random;
  * the cost model's form: the served shapes (unaligned prompt lengths, several prompts a step,
    a chunk beside short decodes) are not the calibration grid's, and the fit may miss them.
After the runs, a few served steps of each kind are rebuilt on the same runner (fresh requests
with the same chunks, starts and contexts: the identical StepShape) and timed alone, each right
after the speed probe's reference step of the same bound (compute for prefill and mixed steps,
memory for decodes). Then alone / cost model / machine factor is the form's error at the
machine's present speed, and served / alone what serving added.

Measured here (2-vCPU EPYC VM, chunked synthetic 30 %, 150m): alone 1.15x the cost model while
the reference ran 1.14x its calibrated time (form 1.01x); served 1.045x alone in sum, median
1.01x, the excess in a few steps (2.0x, 1.8x) after sleeps or during neighbours' spells.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sim.plan import PrefillChunk, StepPlan, StepShape

if TYPE_CHECKING:  # the CLI reads ALONE_STEPS without loading torch
    from calibrate.runner import Runner

ALONE_STEPS = 12  # served steps of each kind re-timed alone after a workload's runs, by default
FIRST_REQUEST_ID = -1_000_000  # rebuilt steps' requests: negative ids, apart from any workload's


@dataclass(frozen=True, slots=True)
class StepRecipe:
    """What rebuilds a served step: each prefill chunk's (start, tokens, samples) and each
    decoder's computed tokens before the step (plus static batching's padding rows)."""

    chunks: tuple[tuple[int, int, bool], ...]
    decode_contexts: tuple[int, ...]
    num_padding_seqs: int = 0
    padding_context_tokens: int = 0


def recipe_of(plan: StepPlan, runner: Runner) -> StepRecipe:
    """The recipe of a plan about to execute on the runner (its decoders' contexts now)."""
    return StepRecipe(tuple((c.start, c.num_tokens, c.is_sampling) for c in plan.prefill),
                      tuple(runner.num_computed(rid) for rid in plan.decode_ids),
                      plan.num_padding_seqs, plan.padding_context_tokens)


def build(recipe: StepRecipe, runner: Runner) -> StepPlan:
    """Fresh requests on the runner in the recipe's state, and the plan of its step."""
    chunks, decodes = [], []
    rid = FIRST_REQUEST_ID
    for start, num_tokens, samples in recipe.chunks:  # a chunk that does not sample stops short
        known = start + num_tokens + (0 if samples else 1)  # of its request's last known token
        runner.add_request(rid, list(range(1, known + 1)))
        if start:
            runner.reserve_context(rid, start)
        chunks.append(PrefillChunk(rid, start, num_tokens, samples))
        rid -= 1
    for context in recipe.decode_contexts:
        runner.add_request(rid, [1])
        runner.reserve_context(rid, context)
        decodes.append(rid)
        rid -= 1
    return StepPlan(prefill=tuple(chunks), decode_ids=tuple(decodes),
                    decode_context_tokens=sum(recipe.decode_contexts),
                    num_padding_seqs=recipe.num_padding_seqs,
                    padding_context_tokens=recipe.padding_context_tokens)


def release(plan: StepPlan, runner: Runner) -> None:
    """Free a built plan's requests."""
    for rid in [c.request_id for c in plan.prefill] + list(plan.decode_ids):
        runner.free(rid)


def time_alone(recipe: StepRecipe, runner: Runner) -> tuple[float, StepShape]:
    """The recipe's step, rebuilt and timed alone; its requests are freed after."""
    plan = build(recipe, runner)
    try:
        runner.synchronize()
        start = time.perf_counter()
        runner.execute(plan)
        runner.synchronize()
        return time.perf_counter() - start, plan.shape()
    finally:
        release(plan, runner)


def evenly(count: int, num_picks: int) -> list[int]:
    """num_picks indices of range(count), evenly spread from the first to the last."""
    if num_picks <= 0 or count <= 0:
        return []
    if num_picks >= count:
        return list(range(count))
    if num_picks == 1:
        return [count // 2]
    return sorted({round(i * (count - 1) / (num_picks - 1)) for i in range(num_picks)})


def steps_alone(served: list[tuple[StepShape, float, float, StepRecipe]], kind_of, runner: Runner,
                step_time, reference_factor=None, per_kind: int = 12) -> dict:
    """Up to per_kind served steps of each kind (kind_of(shape)), evenly spread over the runs,
    each re-timed alone after reference_factor(kind) (the machine's factor now, from one timing of
    the speed probe's reference step of that bound, or None without one; no reference_factor: no
    probe). served: (shape, seconds, seconds slept before it, recipe) per step; step_time(shape):
    the cost model's seconds.
    Per kind: the steps' served, alone and cost-model seconds summed, the machine's median
    factor, "form" (alone / cost model / factor) and "served_over_alone"."""
    by_kind: dict[str, list[int]] = {}
    for i, (shape, *_rest) in enumerate(served):
        by_kind.setdefault(kind_of(shape), []).append(i)
    out = {}
    for kind in ("prefill", "decode", "mixed"):
        indices = by_kind.get(kind, [])
        picks = [indices[j] for j in evenly(len(indices), per_kind)]
        if not picks:
            continue
        served_s = alone_s = model_s = 0.0
        factors = []
        for i in picks:
            shape, seconds, _slept, recipe = served[i]
            now = reference_factor(kind) if reference_factor is not None else None
            if now is not None:  # None: the probe has no reference point to time
                factors.append(now)
            alone, rebuilt = time_alone(recipe, runner)
            if rebuilt != shape:
                raise RuntimeError(f"a rebuilt step's shape {rebuilt} is not the served {shape}")
            served_s, alone_s, model_s = served_s + seconds, alone_s + alone, model_s + step_time(shape)
        factor = statistics.median(factors) if factors else None
        out[kind] = {"num_steps": len(picks), "num_after_idle": sum(served[i][2] > 0 for i in picks),
                     "served_s": served_s, "alone_s": alone_s, "model_s": model_s, "machine_factor": factor,
                     "alone_over_model": alone_s / model_s,
                     "form": alone_s / model_s / factor if factor else None,
                     "served_over_alone": served_s / alone_s}
    return out
