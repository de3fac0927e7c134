"""The serving engine's own time between steps, measured on the real engine.

Between two steps the real engine commits the step's tokens (the policy's bookkeeping, the
runner's token lists), admits arrivals and asks the policy for the next plan: host seconds in
which the device sits idle, outside every step the sweep times. On the 2-vCPU AMD EPYC it is about
0.14 ms a step, nearly flat in the batch (0.14 ms at 2-8 sequences, 0.15-0.16 ms at 13-16), so
0.3-1 % of a 12-100 ms CPU step; a GPU's steps are shorter, so there its share is larger.

Measured by serving a short workload (LOOP_REQUESTS requests all at once, continuous batching)
on the calibration model's runner with `calibrate.real_engine`: the median over its steps of the
loop's seconds before and after each step is `cost_model.engine_step_overhead_s`, which the
simulator spends after every step (`sim.engine`). The median, as for the sweep's points: one
descheduled moment of a shared machine is not the engine's cost.
"""

from __future__ import annotations

import statistics

from calibrate.real_engine import serve
from calibrate.runner import Runner
from sim.spec.profile import Profile
from sim.scenario import prepare, scenario_from_dict

LOOP_REQUESTS = 16
LOOP_MAX_SEQS = 8
LOOP_PROMPT_TOKENS = (16, 64)
LOOP_OUTPUT_TOKENS = (8, 24)


def loop_workload(runner: Runner, model: str, profile: Profile, seed: int = 0) -> dict:
    """The scenario served: short prompts and outputs that fit the runner's slots and positions;
    model: the name or config path the runner's model was resolved from."""
    longest_prompt = max(1, min(LOOP_PROMPT_TOKENS[1], runner.max_seq_len - LOOP_OUTPUT_TOKENS[1] - 1))
    longest_output = max(2, min(LOOP_OUTPUT_TOKENS[1], runner.max_seq_len - longest_prompt - 1))
    spec = runner.spec
    return {"seed": seed,
            "model": {"name": model, "weight_dtype": spec.weight_dtype, "kv_dtype": spec.kv_dtype},
            "deployment": {"profile": profile.path},
            "scheduler": {"policy": "continuous", "max_num_seqs": min(LOOP_MAX_SEQS, runner.cache.num_slots)},
            "measurement": {"warmup_fraction": 0.0, "drain_fraction": 0.0},
            "workload": {"num_requests": LOOP_REQUESTS, "arrival": {"process": "all_at_once"},
                         "input_tokens": {"dist": "uniform", "min": min(LOOP_PROMPT_TOKENS[0], longest_prompt),
                                          "max": longest_prompt},
                         "output_tokens": {"dist": "uniform", "min": min(LOOP_OUTPUT_TOKENS[0], longest_output),
                                           "max": longest_output}}}


def measure_engine_loop(runner: Runner, model: str, profile: Profile, seed: int = 0) -> dict:
    """measurements.engine_loop: the real engine serves loop_workload on the runner; the loop's
    median seconds a step (engine_step_overhead_s), its 90th percentile, and the steps it saw."""
    sc = scenario_from_dict(loop_workload(runner, model, profile, seed), "calibrate engine loop")
    prep = prepare(sc, profile)
    run = serve(prep, runner, seed=seed)
    loops = run.loop_s
    deciles = statistics.quantiles(loops, n=10) if len(loops) > 1 else loops * 9
    return {"model": runner.spec.name, "num_requests": LOOP_REQUESTS, "num_steps": len(loops),
            "median_s": float(f"{statistics.median(loops):.4g}"),
            "before_median_s": float(f"{statistics.median(run.before_s):.4g}"),
            "after_median_s": float(f"{statistics.median(run.after_s):.4g}"),
            "p90_s": float(f"{deciles[-1]:.4g}"), "wall_s": round(run.wall_s, 3)}
