"""One calibration run, start to finish: what `calibrate` does between parsing flags and exiting.

Order: resolve device, model and grid and check them against the model's positions and the free
memory (bad input fails here, before anything slow); microbenchmarks; choose the dtype; power meter
and idle power; first passes of the sweep on the calibration model and on probe models (a
shallower copy, and a narrower one where the cost model can use it: with one shape alone,
per-step and per-layer overheads and weight streaming cannot be told apart); more visits to all
measured points while the budget lasts; the machine's wake-up after idle sleeps; the real engine's
loop between steps; the fit; the
profile document, validated and written atomically.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from calibrate.cli import (DEFAULT_BUDGET_S, FIT_RESERVE_S, HOLDOUT_SHARE, QUICK_BUDGET_S,
                           _check_positive, defaults_for, output_path, print_summary)
from calibrate.devices import describe_device, resolve_device
from calibrate.engine_loop import measure_engine_loop
from calibrate.fit import WIDTH_EXPONENT, cost_fields, fit_profile
from calibrate.machine_load import ForeignLoad
from calibrate.microbench import default_dtypes, run_microbench
from calibrate.power import make_meter
from calibrate.profile_builder import (build_document, default_profile_name, power_section,
                                       provenance_section)
from calibrate.runner import Runner
from calibrate.speed_reference import SpeedReference, reference_points
from calibrate.sweep import Grid, ModelSweep, Point, PointRunner, SweepResult, more_rounds
from calibrate.wake import measure_wake
from sim.cost_model import CostModel
from sim.errors import InputError
from sim.spec.model import BYTES_PER_ELEMENT, ModelSpec, resolve_model
from sim.spec.profile import Profile, profile_from_dict, write_profile

MEMORY_HEADROOM = 0.85  # a grid may plan to use at most this share of the free memory
WAKE_BUDGET_S, WAKE_SHARE = 8.0, 0.03  # the wake-up's rounds take at most this (and share of the budget)
LOOP_RESERVE_S, LOOP_SHARE = 3.0, 0.02  # kept for the engine loop's short served run (calibrate.engine_loop)
STEAL_WARN_SHARE = 0.10  # the hypervisor's share of all CPUs over a calibration that earns a warning
PROBE_SHARE = 0.08  # share of the sweep budget for each probe model's first pass


def build_grid(args: argparse.Namespace, device_type: str, spec: ModelSpec) -> Grid:
    """The grid from flags, else the device's defaults; default lengths beyond the model's
    positions are dropped (lengths given by flag are checked instead)."""
    d = defaults_for(device_type, args.quick)
    limit = spec.max_position_embeddings

    def fitting(values: tuple[int, ...], margin: int) -> tuple[int, ...]:
        kept = tuple(v for v in values if v + margin <= limit)
        return kept or (limit - margin,)

    grid = Grid(
        batches=tuple(sorted(set(args.batches or d.batches))),
        prompt_lens=tuple(sorted(set(args.prompt_lens or fitting(d.prompt_lens, 0)))),
        contexts=tuple(sorted(set(args.contexts or fitting(d.contexts, 1)))),
        mixed_chunks=tuple(sorted(set(args.mixed_chunks if args.mixed_chunks is not None
                                      else d.mixed_chunks))),
        mixed_batches=tuple(sorted(set(args.mixed_batches if args.mixed_batches is not None
                                       else d.mixed_batches))),
        repeats=args.repeats if args.repeats is not None else d.repeats,
        warmup=1)
    if args.mixed_chunks is None:  # default chunks: those that fit after the mixed prefix
        room = limit - grid.mixed_context
        grid = dataclasses.replace(grid, mixed_chunks=tuple(c for c in grid.mixed_chunks
                                                            if c <= room))
    for flag, values in (("--batches", grid.batches), ("--prompt-lens", grid.prompt_lens),
                         ("--contexts", grid.contexts), ("--mixed-chunks", grid.mixed_chunks),
                         ("--mixed-batches", grid.mixed_batches)):
        _check_positive(flag, values)
    if grid.repeats < 1:
        raise InputError("--repeats", "", f"expected >= 1, got {grid.repeats}")
    return grid


def check_grid_fits_model(grid: Grid, spec: ModelSpec) -> None:
    limit = spec.max_position_embeddings
    for flag, longest in (("--prompt-lens", max(grid.prompt_lens)),
                          ("--contexts", max(grid.contexts) + 1)):
        if longest > limit:
            raise InputError(flag, "", f"{longest} tokens exceed the model {spec.name}'s "
                             f"max_position_embeddings {limit}")
    if grid.max_seq_len() > limit:
        raise InputError("--mixed-chunks", "", f"a chunk after a {grid.mixed_context}-token "
                         f"prefix reaches {grid.max_seq_len()} tokens, beyond the model "
                         f"{spec.name}'s max_position_embeddings {limit}")


def memory_needed_bytes(grid: Grid, spec: ModelSpec, dtype: str) -> dict[str, float]:
    """What the runner will hold: weights, the preallocated KV cache (one slot of max_seq_len
    per sequence, plus a scratch slot) and the largest step's activations (incl. attention scores,
    in case the attention kernel materialises them)."""
    size = BYTES_PER_ELEMENT[dtype]
    kv = (2 * spec.num_layers * (grid.max_num_seqs() + 1) * spec.num_kv_heads
          * grid.max_seq_len() * spec.head_dim * size)
    tokens = max(max(grid.batches) * max(grid.prompt_lens),
                 max(grid.mixed_chunks, default=0) + max(grid.mixed_batches, default=0))
    width = spec.q_size + 2 * spec.kv_size + 4 * spec.hidden_size + 3 * spec.intermediate_size
    scores = spec.num_attention_heads * max(grid.prompt_lens) ** 2 * 4
    return {"weights": spec.num_params * size, "kv_cache": kv,
            "activations": tokens * width * size * 2 + scores + max(grid.batches) * spec.vocab_size * 4}


def free_memory_bytes(device) -> float | None:
    if device.type == "cuda":
        import torch

        return float(torch.cuda.mem_get_info(device)[0])
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return float(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def check_grid_fits_memory(grid: Grid, spec: ModelSpec, dtype: str, device) -> dict:
    need = memory_needed_bytes(grid, spec, dtype)
    free = free_memory_bytes(device)
    total = sum(need.values())
    if free is not None and total > MEMORY_HEADROOM * free:
        parts = ", ".join(f"{k} {v / 2**30:.1f}" for k, v in need.items())
        raise InputError("--batches/--prompt-lens/--contexts", "",
                         f"the grid needs about {total / 2**30:.1f} GiB on {device} ({parts}) but "
                         f"only {free / 2**30:.1f} GiB is free; use smaller batches or lengths")
    return {"needed_bytes": int(total), "free_bytes": None if free is None else int(free)}


def shrink_to_memory(grid: Grid, spec: ModelSpec, dtype: str, device) -> Grid:
    """A default grid made to fit: drop its largest batch, then context, then prompt length,
    until the runner's memory fits (a grid given by flag is checked, never shrunk)."""
    free = free_memory_bytes(device)
    if free is None:
        return grid
    while sum(memory_needed_bytes(grid, spec, dtype).values()) > MEMORY_HEADROOM * free:
        if len(grid.batches) > 1:
            grid = dataclasses.replace(grid, batches=grid.batches[:-1],
                                       mixed_batches=tuple(b for b in grid.mixed_batches
                                                           if b < grid.batches[-1]))
        elif len(grid.contexts) > 1:
            grid = dataclasses.replace(grid, contexts=grid.contexts[:-1])
        elif len(grid.prompt_lens) > 1:
            grid = dataclasses.replace(grid, prompt_lens=grid.prompt_lens[:-1])
        else:
            break  # the check that follows names the problem
    return grid


def microbenchmarks(device, dtypes: tuple[str, ...], budget_s: float, runs: int = 2) -> dict:
    """`run_microbench` `runs` times, keeping each figure's best run (interference from other
    processes only ever slows a run down, and these are the device's achievable peaks); every
    run's figures are kept for the audit."""
    results = [run_microbench(device, dtypes, budget_s=budget_s / runs).to_dict()
               for _ in range(runs)]
    best = copy.deepcopy(results[0])
    for dtype in best["matmul"]:
        best["matmul"][dtype] = max((r["matmul"][dtype] for r in results),
                                    key=lambda m: m["matmul_flops_per_s"])
    best["bandwidth"] = max((r["bandwidth"] for r in results),
                            key=lambda b: b["bandwidth_bytes_per_s"])
    best["wall_time_s"] = sum(r["wall_time_s"] for r in results)
    best["runs"] = [{"matmul_flops_per_s": {d: m["matmul_flops_per_s"] for d, m in r["matmul"].items()},
                     "bandwidth_bytes_per_s": r["bandwidth"]["bandwidth_bytes_per_s"]}
                    for r in results]
    return best


def choose_dtype(requested: str | None, device_type: str, microbench: dict) -> tuple[str, str]:
    """The dtype real inference would use here, and why."""
    if requested:
        return requested, "--dtype"
    if device_type != "cpu":
        return "bf16", "default on GPUs"
    rates = {d: microbench["matmul"][d]["matmul_flops_per_s"] for d in ("fp32", "bf16")
             if d in microbench["matmul"]}
    best = max(rates, key=rates.get)
    text = ", ".join(f"{d} {r / 1e9:.0f} GFLOP/s" for d, r in rates.items())
    return best, f"faster large-GEMM rate on this CPU ({text})"


def provisional_profile(document: dict, device_type: str) -> Profile:
    """The profile before anything is measured: textbook efficiencies and overheads."""
    doc = dict(document)
    cpu = device_type == "cpu"
    doc["cost_model"] = dict(document["cost_model"], matmul_efficiency=0.5, matmul_half_tokens=16.0,
                             memory_efficiency=0.6, attention_efficiency=0.1,
                             step_overhead_s=1e-3 if cpu else 1e-4,
                             layer_overhead_s=3e-4 if cpu else 2e-5,
                             sequence_overhead_s=1e-5, matmul_efficiency_curve=[], fit=None)
    return profile_from_dict(doc, "provisional")


def provisional_predictor(document: dict, spec: ModelSpec, device_type: str):
    """Step-time guesses before anything is measured: the provisional profile's cost model (the
    sweep rescales them by measured/predicted as points come in)."""
    return CostModel(spec, provisional_profile(document, device_type)).step_time


def probe_points(grid: Grid) -> list[Point]:
    """A probe model's points: the corners of the decode and prefill grids, then their middles
    and one mixed step."""
    b, p, c = grid.batches, grid.prompt_lens, grid.contexts
    mid = len(b) // 2
    points = [Point("decode", bb, cc) for bb in (b[0], b[-1]) for cc in (c[0], c[-1])]
    points += [Point("prefill", bb, pp) for bb in (b[0], b[-1]) for pp in (p[0], p[-1])]
    points += [Point("decode", b[mid], c[len(c) // 2], level=1),
               Point("prefill", b[0], p[len(p) // 2], level=1),
               Point("prefill", b[mid], p[0], level=1)]
    if grid.mixed_chunks and grid.mixed_batches:
        points.append(Point("mixed", grid.mixed_batches[-1], grid.mixed_chunks[0], 0,
                            grid.mixed_context, level=1))
    return list(dict.fromkeys(points))  # small grids repeat corners


@dataclass
class Plan:
    """Everything resolved from the flags before anything slow runs."""

    device: torch.device
    info: dict
    base_spec: ModelSpec
    grid: Grid
    is_default_grid: bool
    budget_s: float
    out: Path
    name: str
    holdout_spec: ModelSpec | None = None
    model_ref: str = ""  # the --model name or config path base_spec came from


def resolve_inputs(args: argparse.Namespace) -> Plan:
    """Device, model, grid, budget and output, checked; InputError names the flag."""
    device = resolve_device(args.device)
    model_ref = args.model or defaults_for(device.type, args.quick).model
    base_spec = resolve_model(model_ref)
    grid = build_grid(args, device.type, base_spec)
    holdout_spec = resolve_holdout(args.holdout, base_spec)
    budget_s = args.time_budget if args.time_budget is not None else (
        QUICK_BUDGET_S if args.quick else DEFAULT_BUDGET_S) / (1 - HOLDOUT_SHARE * bool(holdout_spec))
    if not budget_s > 0:
        raise InputError("--time-budget", "", f"expected seconds > 0, got {budget_s}")
    for flag, value in (("--tdp-w", args.tdp_w), ("--price-usd-per-h", args.price_usd_per_h)):
        if value is not None and not value >= 0:
            raise InputError(flag, "", f"expected a number >= 0, got {value}")
    check_grid_fits_model(grid, base_spec)
    if holdout_spec is not None:
        check_grid_fits_model(grid, holdout_spec)
    is_default_grid = not (args.batches or args.prompt_lens or args.contexts)
    if not is_default_grid:  # a default grid is shrunk to fit once the dtype is known
        check_grid_fits_memory(grid, base_spec, args.dtype or "bf16", device)
    info = describe_device(device).to_dict()
    default_name = default_profile_name("cpu" if device.type == "cpu" else "gpu", info["name"])
    out = output_path(args.output, default_name)
    return Plan(device, info, base_spec, grid, is_default_grid, budget_s, out,
                args.name or out.stem, holdout_spec, model_ref)


def resolve_holdout(name: str | None, base_spec: ModelSpec) -> ModelSpec | None:
    """The --holdout model, which must differ from the calibration model and its probes."""
    if name is None:
        return None
    try:
        spec = resolve_model(name)
    except InputError as exc:
        raise InputError("--holdout", "", exc.problem) from None
    if spec.name in {base_spec.name, *(p.name for p in probe_specs(base_spec))}:
        raise InputError("--holdout", "", f"{spec.name} is the calibration model (or one of its "
                         "probes); hold out a different model")
    return spec


def device_section(plan: Plan, bench: dict, memory: dict) -> dict:
    return {
        "kind": "cpu" if plan.device.type == "cpu" else "gpu",
        "name": plan.info["name"],
        "count": 1,
        "memory_bytes": plan.info["memory_bytes"] or memory["needed_bytes"],
        "memory_bandwidth_bytes_per_s": bench["bandwidth"]["bandwidth_bytes_per_s"],
        "peak_flops": {d: r["matmul_flops_per_s"] for d, r in bench["matmul"].items()},
        "interconnect": None,
    }


def sweep_models(plan: Plan, grid: Grid, spec: ModelSpec, document: dict, meter, args,
                 deadline: float, holdout: ModelSpec | None = None
                 ) -> tuple[list[SweepResult], dict | None, dict, dict]:
    """First passes on the calibration model, its probes and the held-out model, then more
    passes over all of them while time lasts; reference steps of the calibration model are timed
    throughout, and every point is brought to the run's median machine speed (see
    calibrate.speed_reference); last, the machine's wake-up on the compute reference step
    (calibrate.wake) and the real engine's loop between steps (calibrate.engine_loop). Returns
    the results, the reference's record (None with --no-speed-reference), the wake-up's and the
    engine loop's."""
    probes = [(probe, probe_points(grid)) for probe in probe_specs(spec)]
    share = 1.0 - PROBE_SHARE * len(probes) - HOLDOUT_SHARE * bool(holdout)
    jobs: list[tuple[ModelSpec, list[Point] | None, float]] = [(spec, None, share)]
    jobs += [(probe, points, PROBE_SHARE) for probe, points in probes]
    if holdout is not None:
        jobs.append((holdout, None, HOLDOUT_SHARE))
    sweeps: list[ModelSweep] = []
    reference: SpeedReference | None = None
    total_s = deadline - time.perf_counter()
    for model_spec, points, budget_share in jobs:
        if sweeps and sweeps[0].result.limits:
            break  # memory is tight: no probes
        runner = Runner(model_spec, model_spec.weight_dtype, str(plan.device), grid.max_num_seqs(),
                        grid.max_seq_len(), args.seed, compile_decode=args.compile_decode)
        if not sweeps and not args.no_speed_reference:
            reference = SpeedReference(PointRunner(runner, model_spec.name, args.seed),
                                       *reference_points(grid))
            reference.warm()
        sweep = ModelSweep(runner, grid, model_spec.name,
                           provisional_predictor(document, model_spec, plan.device.type),
                           args.seed, points, reference)
        budget_s = min(budget_share * total_s, deadline - time.perf_counter())
        sweep.first_pass(meter, budget_s, not args.no_progress)
        sweeps.append(sweep)
    wake_budget_s = min(WAKE_BUDGET_S, WAKE_SHARE * plan.budget_s)
    loop_reserve_s = min(LOOP_RESERVE_S, LOOP_SHARE * plan.budget_s)
    more_rounds(sweeps, meter, deadline - wake_budget_s - loop_reserve_s, args.seed)
    wake = measure_wake(sweeps[0].point_runner, reference_points(grid)[1], wake_budget_s, args.seed)
    loop = measure_engine_loop(sweeps[0].point_runner.runner, plan.model_ref,
                               provisional_profile(document, plan.device.type), args.seed)
    record = None
    if reference is not None:
        track = reference.finish()
        for sweep in sweeps:
            sweep.result.track = track
        record = reference.to_dict(track)
    return [s.result for s in sweeps if s.result.measurements], record, wake, loop


def probe_specs(spec: ModelSpec) -> list[ModelSpec]:
    """Shallower (and, where the cost model has a width term, narrower) copies of the
    calibration model. Same widths with fewer layers separate per-layer from per-step costs;
    same layers with half the widths show how GEMM efficiency grows with width and separate
    per-layer overhead from per-layer weight streaming, which one shape alone cannot."""
    probes = []
    if spec.num_layers >= 4:
        layers = max(1, spec.num_layers // 4)
        probes.append(dataclasses.replace(spec, name=f"{spec.name}-{layers}layers",
                                          num_layers=layers))
    if WIDTH_EXPONENT not in cost_fields():
        return probes  # a cost model without a width term cannot use a narrower probe
    heads, kv_heads = spec.num_attention_heads // 2, spec.num_kv_heads // 2
    if heads >= 1 and kv_heads >= 1 and heads % kv_heads == 0 and spec.hidden_size >= 128:
        probes.append(dataclasses.replace(
            spec, name=f"{spec.name}-half-width", hidden_size=spec.hidden_size // 2,
            num_attention_heads=heads, num_kv_heads=kv_heads,
            intermediate_size=spec.intermediate_size // 2))
    return probes


def run_calibration(args: argparse.Namespace, command: str) -> int:
    started = time.perf_counter()
    plan = resolve_inputs(args)
    load_before = _load_average()
    machine = ForeignLoad()
    machine_mark = machine.start()
    dtypes = tuple(dict.fromkeys(default_dtypes(plan.device) + ((args.dtype,) if args.dtype else ())))
    bench = microbenchmarks(plan.device, dtypes, budget_s=min(12.0, 0.08 * plan.budget_s))
    dtype, dtype_reason = choose_dtype(args.dtype, plan.device.type, bench)
    spec = plan.base_spec.with_dtypes(dtype, dtype)
    grid = shrink_to_memory(plan.grid, spec, dtype, plan.device) if plan.is_default_grid else plan.grid
    memory = check_grid_fits_memory(grid, spec, dtype, plan.device)
    meter = make_meter(plan.device.type, plan.device.index or 0, args.tdp_w)
    idle_w = meter.idle_w(0.0 if meter.is_estimated else 2.0)
    placeholder_power = {"method": meter.method, "idle_w": 0.0, "decode_w": 1.0, "prefill_w": 1.0,
                         "is_estimated": meter.is_estimated}
    document = build_document(name=plan.name, device=device_section(plan, bench, memory),
                              provenance={"source": "measured", "date": "pending"},
                              compute_dtype=dtype, power=placeholder_power,
                              price_usd_per_h=args.price_usd_per_h, microbench=bench, points=[],
                              models={}, limits=[], grid={})

    holdout = plan.holdout_spec.with_dtypes(dtype, dtype) if plan.holdout_spec else None
    if holdout is not None:
        check_grid_fits_memory(grid, holdout, dtype, plan.device)
    deadline = started + plan.budget_s - FIT_RESERVE_S
    results, speed_reference, wake, engine_loop = sweep_models(plan, grid, spec, document, meter, args,
                                                  deadline, holdout)
    held = [r for r in results if holdout is not None and r.model_name == holdout.name]
    results = [r for r in results if r not in held]
    models = {r.model_name: m.to_dict() for r in results + held
              for m in [spec, *probe_specs(spec), *([holdout] if holdout else [])]
              if m.name == r.model_name}
    points = [p for r in results for p in r.points]
    if not points:
        raise InputError("--time-budget", "", f"{plan.budget_s:.0f} s left no time to measure a "
                         "single grid point; raise the budget or shrink the grid")
    document["measurements"].update(
        points=points, models=models, limits=[x for r in results for x in r.limits],
        speed_reference=speed_reference, wake=wake, engine_loop=engine_loop,
        holdout=holdout_record(holdout, held) if holdout is not None else None,
        grid=grid.to_dict() | {"skipped": [x for r in results for x in r.skipped],
                               "memory": memory,
                               "probe_model": [r.model_name for r in results
                                               if r.model_name != spec.name] or None})
    idle_how = "estimated" if meter.is_estimated else "measured over 2 s before the sweeps"
    document["power"] = power_section(meter.method, meter.is_estimated, idle_w, points,
                                      meter.details | {"idle": idle_how})
    meter.close()
    loads = [p["foreign_cpu_share"] for p in points if p.get("foreign_cpu_share") is not None]
    document["provenance"] = provenance_section(
        device_info=plan.info, command=command, model_name=plan.base_spec.name, dtype=dtype,
        grid=grid.to_dict(), seconds=time.perf_counter() - started) | {
        "dtype_choice": dtype_reason, "compile_decode": args.compile_decode,
        "load_average_before": load_before, "load_average_after": _load_average(),
        "other_processes_cpu_share": None if not loads else {
            "median": round(statistics.median(loads), 3), "max": round(max(loads), 3)},
        "sweep_seconds": round(sum(r.seconds for r in results), 1),
        "machine_load": _machine_load(machine, machine_mark)}
    fitted = fit_profile(document, str(plan.out))
    fitted["provenance"]["calibration_seconds"] = round(time.perf_counter() - started, 1)
    write_profile(fitted, plan.out)
    print_summary(plan.out, fitted, time.perf_counter() - started)
    _warn_if_busy(load_before, plan.device.type)
    _warn_if_stolen(document["provenance"]["machine_load"], plan.device.type)
    return 0


def holdout_record(holdout: ModelSpec, held: list[SweepResult]) -> dict:
    """measurements.holdout: the held-out model's points (scored by the fit), and what the budget
    or memory left out."""
    return {"model": holdout.name, "points": [p for r in held for p in r.points],
            "skipped": [x for r in held for x in r.skipped],
            "limits": [x for r in held for x in r.limits],
            "sweep_seconds": round(sum(r.seconds for r in held), 1)}


def _load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _machine_load(machine: ForeignLoad, mark) -> dict:
    """provenance.machine_load: the shares of all CPUs that other processes and the hypervisor
    (other_share), and the hypervisor alone (steal_share), took over the whole calibration."""
    shares = {"other_share": machine.share(mark), "steal_share": machine.steal_share(mark)}
    return {k: None if v is None else round(v, 3) for k, v in shares.items()}


def _warn_if_stolen(load: dict, device_type: str) -> None:
    steal = load.get("steal_share")
    if device_type == "cpu" and steal is not None and steal > STEAL_WARN_SHARE:
        print(f"calibrate: warning: the hypervisor took {steal * 100:.0f}% of this VM's CPU time "
              "during the calibration (steal, /proc/stat); its timings are slower and noisier than "
              "this machine's; calibrate again when its neighbours are quiet", file=sys.stderr)


def _warn_if_busy(load: list[float] | None, device_type: str) -> None:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if device_type == "cpu" and load and cpus and load[0] > 0.5 * cpus:
        print(f"calibrate: warning: the load average was {load[0]} on {cpus} CPUs when the "
              "calibration started; other processes skew CPU timings", file=sys.stderr)

