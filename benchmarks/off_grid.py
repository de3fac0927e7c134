"""Shapes off the calibration grid: does the cost model fit the steps a server really runs?

`calibrate` times a grid of powers of two (prompts of 64, 128, 256 ... tokens; 1, 2, 4, 8, 16
decoders); served steps fall between them (a 300-token prompt, 5 decoders at 700 tokens). This
times both kinds interleaved, in rounds, on a runner of the profile's calibration model, and prints
each shape's measured / cost-model time (median over the rounds). The machine's present speed
moves every shape alike, so what matters is an off-grid shape against its on-grid neighbours: a
form that misses the shapes between its points shows as off-grid ratios above (or below) the
grid's.

Usage: python benchmarks/off_grid.py [--profile P] [--rounds 25]   (a quiet machine: ~1 s a round)
"""

from __future__ import annotations

import argparse
import math
import statistics

PROFILE = "profiles/amd-epyc-2vcpu-cpu.json"
DECODES = ((2, 1024, True), (2, 1500, False), (3, 512, False), (4, 512, True), (5, 512, False),
           (6, 700, False), (8, 1024, True), (11, 900, False))  # (decoders, context, on the grid)
PREFILLS = ((64, True), (77, False), (100, False), (128, True), (150, False), (200, False), (256, True),
            (300, False), (420, False), (512, True))  # (prompt tokens, on the grid), one prompt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default=PROFILE, help="a measured profile (its calibration model is timed)")
    ap.add_argument("--rounds", type=int, default=25, help="timings of each shape, interleaved")
    args = ap.parse_args()

    from calibrate.runner import Runner
    from calibrate.sweep import Point, PointRunner, plan_for
    from sim.cost_model import CostModel
    from sim.model_spec import resolve_model
    from sim.profile import load_profile

    profile = load_profile(args.profile)
    spec = resolve_model(profile.provenance["calibration_model"])
    cost = CostModel(spec, profile)
    dtype = profile.provenance.get("calibration_dtype") or profile.cost.compute_dtype
    points = [(f"decode {b} x {c}", Point("decode", b, c), grid) for b, c, grid in DECODES]
    points += [(f"prefill {n}", Point("prefill", 1, n), grid) for n, grid in PREFILLS]
    longest = max(p.length for _, p, _ in points) + 2
    runner = Runner(spec, dtype=dtype, device="cpu", max_num_seqs=max(p.batch for _, p, _ in points) + 1,
                    max_seq_len=min(longest, spec.max_position_embeddings), seed=0)
    timer = PointRunner(runner, spec.name, 0)
    model_s = [cost.step_time(plan_for(p).shape()) for _, p, _ in points]
    for _, p, _ in points:
        timer.time_once(p)  # warm-up
    ratios: list[list[float]] = [[] for _ in points]
    for _ in range(args.rounds):
        for i, (_, p, _) in enumerate(points):
            ratios[i].append(timer.time_once(p)[0] / model_s[i])

    print(f"{spec.name} on {args.profile}, {args.rounds} rounds: measured / cost-model time (median)")
    by_kind: dict[tuple[str, bool], list[float]] = {}
    for (label, p, grid), t, r in zip(points, model_s, ratios):
        ratio = statistics.median(r)
        by_kind.setdefault((p.kind, grid), []).append(ratio)
        print(f"  {label:<20}{'grid' if grid else '':<6}{1e3 * t:8.2f} ms  {ratio:.3f}")
    for kind in ("decode", "prefill"):
        on, off = (math.exp(statistics.fmean(math.log(x) for x in by_kind[(kind, g)])) for g in (True, False))
        print(f"{kind}: off the grid {off:.3f}, on it {on:.3f} (geometric means): off / on {off / on:.3f}")


if __name__ == "__main__":
    main()
