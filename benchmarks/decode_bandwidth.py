"""Decode speed of the PyTorch runner against its memory-bandwidth bound (batch 1).

A batch-1 decode step must read every weight the step uses once (all decoder layers, the final
norm and the LM head; an untied embedding only gives one row) plus the K/V of the context. The
bound is those bytes / the measured copy bandwidth (bytes read + written per second); the ratio
achieved / bound says how close the runner gets to streaming memory. Contexts are reserved, not
prefilled (`Runner.reserve_context`), so only decode steps are timed.

    python benchmarks/decode_bandwidth.py                       # llama-3.2-1b, fp32 (4.9 GB)
    python benchmarks/decode_bandwidth.py --model llama-small-150m --profile
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from calibrate.devices import describe_device  # noqa: E402
from calibrate.microbench import measure_bandwidth  # noqa: E402
from calibrate.runner import Runner  # noqa: E402
from sim.spec.model import resolve_model  # noqa: E402
from sim.plan import StepPlan  # noqa: E402


def bytes_read_per_decode(runner: Runner, context: int) -> tuple[int, int]:
    """(weight bytes, KV bytes) one batch-1 decode step reads at the given context (before it)."""
    model = runner.model
    total = runner.weight_bytes  # distinct weights, packed or not
    if not runner.spec.tie_word_embeddings:  # an untied embedding is looked up, not read whole
        total -= model.embedding.nbytes - model.embedding[0].nbytes
    kv_per_token = 2 * runner.spec.num_layers * runner.spec.kv_size * runner.cache.k.element_size()
    return total, (context + 1) * kv_per_token


def _cpu_seconds() -> tuple[float, float]:
    """(busy CPU seconds of the whole machine, of this process) so far (Linux /proc/stat)."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    busy = sum(fields) - fields[3] - fields[4]  # all but idle and iowait
    own = os.times()
    return busy / os.sysconf("SC_CLK_TCK"), own.user + own.system


def foreign_load(before: tuple[float, float], after: tuple[float, float], wall_s: float) -> float:
    """Share of all CPUs that other processes used between two _cpu_seconds() readings."""
    foreign = (after[0] - before[0]) - (after[1] - before[1])
    return max(0.0, foreign) / (wall_s * (os.cpu_count() or 1))


def time_decodes(runner: Runner, context: int, num_steps: int, num_warmup: int) -> list[float]:
    """Seconds of each of num_steps batch-1 decode steps starting at the given context."""
    runner.add_request(0, [1])
    runner.reserve_context(0, context)
    plan = StepPlan(decode_ids=(0,))
    for _ in range(num_warmup):
        runner.execute(plan)
    times = []
    for _ in range(num_steps):
        start = time.perf_counter()
        runner.execute(plan)  # returns a Python int: the step is synchronised
        times.append(time.perf_counter() - start)
    runner.free(0)
    return times


def print_profile(runner: Runner, context: int, num_steps: int, row_limit: int) -> None:
    from torch.profiler import ProfilerActivity, profile

    runner.add_request(0, [1])
    runner.reserve_context(0, context)
    plan = StepPlan(decode_ids=(0,))
    runner.execute(plan)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(num_steps):
            runner.execute(plan)
    runner.free(0)
    print(f"\nprofile of {num_steps} decode steps at context {context} (self CPU time):")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=row_limit))


def read_bandwidth_bytes_per_s(num_bytes: int, repeats: int = 7) -> float:
    """Read-only streaming (a sum over a CPU tensor), for comparison with the copy figure."""
    data = torch.ones(num_bytes // 4)
    data.sum()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        data.sum()
        times.append(time.perf_counter() - start)
    return num_bytes / statistics.median(times)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="llama-3.2-1b", help="preset or config.json")
    parser.add_argument("--dtype", default="fp32", choices=("fp32", "bf16", "fp16"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--contexts", default="128,256,512")
    parser.add_argument("--steps", type=int, default=12, help="timed decode steps per context")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--profile", action="store_true", help="print a torch.profiler breakdown")
    parser.add_argument("--target", type=float, default=0.70, help="achieved/bound target")
    return parser.parse_args(argv)


def print_setup(args: argparse.Namespace) -> float:
    """Print the device and the bandwidths; returns the copy bandwidth (bytes/s)."""
    info = describe_device(args.device)
    print(f"device: {info.name} ({info.kind}, {info.num_cores} cores, torch {info.torch_version}, "
          f"{args.threads} threads)")
    load = os.getloadavg()[0]
    if load > 0.5:
        print(f"warning: load average {load:.1f} before starting: other processes share this "
              "machine, figures may be low and noisy (see the 'other load' column)")
    bandwidth = measure_bandwidth(args.device, repeats=9, budget_s=4.0)
    print(f"measured copy bandwidth: {bandwidth.bandwidth_bytes_per_s / 1e9:.1f} GB/s "
          f"(read+write of 2 x {bandwidth.num_bytes / 2**20:.0f} MiB, median of "
          f"{bandwidth.num_repeats}); the bound below uses it")
    if args.device == "cpu":
        read = read_bandwidth_bytes_per_s(bandwidth.num_bytes)
        print(f"for comparison, read-only bandwidth (sum): {read / 1e9:.1f} GB/s")
    return bandwidth.bandwidth_bytes_per_s


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    contexts = [int(c) for c in args.contexts.split(",")]
    spec = resolve_model(args.model)
    bandwidth = print_setup(args)
    start = time.perf_counter()
    max_seq_len = max(contexts) + args.steps + args.warmup + 2
    runner = Runner(spec, args.dtype, args.device, max_num_seqs=1, max_seq_len=max_seq_len)
    print(f"model: {spec.name} {args.dtype}, {runner.weight_bytes / 1e9:.2f} GB of weights "
          f"(built in {time.perf_counter() - start:.1f} s)")
    print(f"{'context':>8} {'tok/s':>8} {'ms/step':>8} {'GB/step':>8} {'GB/s':>6} "
          f"{'bound tok/s':>12} {'achieved/bound':>15} {'other load':>11}")
    ratios = []
    for context in contexts:
        before, started = _cpu_seconds(), time.perf_counter()
        step_s = statistics.median(time_decodes(runner, context, args.steps, args.warmup))
        load = foreign_load(before, _cpu_seconds(), time.perf_counter() - started)
        weights, kv = bytes_read_per_decode(runner, context + args.warmup + args.steps // 2)
        bound_step_s = (weights + kv) / bandwidth
        ratios.append(bound_step_s / step_s)
        print(f"{context:>8} {1 / step_s:>8.2f} {step_s * 1e3:>8.1f} {(weights + kv) / 1e9:>8.3f} "
              f"{(weights + kv) / step_s / 1e9:>6.1f} {1 / bound_step_s:>12.2f} "
              f"{ratios[-1]:>15.2f} {load:>10.0%}")
    print("(other load: share of all CPUs that other processes used meanwhile; above ~10% the "
          "figures are skewed)")
    verdict = "meets" if min(ratios) >= args.target else "below"
    print(f"achieved/bound: min {min(ratios):.2f}, {verdict} the {args.target:.2f} target")
    if args.profile:
        print_profile(runner, contexts[0], num_steps=3, row_limit=15)


if __name__ == "__main__":
    main()
