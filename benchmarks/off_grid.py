"""Shapes off the calibration grid: does the cost model fit the steps a server really runs?

`calibrate` times a grid of powers of two, each step of one kind and one size: one prompt of 64,
128, 256 ... tokens; 1, 2, 4, 8, 16 decoders all at one context; a chunk of 32 or 128 tokens
beside 1 or 4 decoders at 1024 tokens. Served steps are neither: a
300-token prompt, 5 decoders at 50 to 350 tokens each, two prompts in one step, a prompt beside
decoders of short contexts (the default validation suite's synthetic workload: prompts of 32-256
tokens, outputs of 16-96).

This times both, interleaved in shuffled rounds, on a runner of the profile's calibration model
(each step built afresh, as `calibrate validate` rebuilds served steps: `calibrate.steps_alone`),
and prints each shape's measured / cost-model time (median over the rounds). The machine's
present speed moves every shape of a kind alike, so what matters is a group of shapes against the
grid's shapes of the same kind: a form that misses the shapes between or beside its points shows
as a ratio above (or below) the grid's. Groups:
  * decode: the grid's; other batch sizes and contexts, each step at one context; decoders at
    different contexts (the spread a served batch has);
  * prefill: single prompts on the profile's grid; the powers of two and the lengths one short of
    them (2^k - 1) when they are not on it; other lengths; several prompts in one step;
  * mixed: the grid's; served-like prompts beside decoders of short, different contexts (compared
    with the grid's mixed steps, not with prefills: their decoders are memory-bound, and the
    machine's memory and compute speed move apart).

Usage: python benchmarks/off_grid.py [--profile P] [--rounds 25]   (a quiet machine: ~1.5 s a round)
"""

from __future__ import annotations

import argparse
import random
import statistics
from statistics import geometric_mean

PROFILE = "profiles/amd-epyc-2vcpu-cpu.json"
SPREAD_6 = (50, 100, 150, 250, 300, 350)
SPREAD_10 = tuple(50 + 33 * i for i in range(10))


PROMPTS = (63, 64, 77, 127, 128, 150, 200, 255, 256, 300, 420, 511, 512)  # one prompt a step


def shapes(prompt_lens: tuple[int, ...]) -> list[tuple[str, str, str, tuple, tuple]]:
    """(label, kind, group, prompts as (start, tokens), decoder contexts); group "grid" is on the
    default grid (one prompt: on the profile's grid, prompt_lens)."""
    dec = [(f"decode {b} x {c}", "grid", (), (c,) * b)
           for b, c in ((2, 1024), (4, 128), (4, 512), (8, 128), (8, 1024))]
    dec += [(f"decode {b} x {c}", "other size", (), (c,) * b) for b, c in ((3, 512), (5, 512), (6, 200), (11, 900))]
    dec += [(f"decode {len(c)} at {c[0]}-{c[-1]}", "contexts apart", (), c)
            for c in ((48, 120, 200, 352), SPREAD_6, SPREAD_10, (200, 700, 1300, 1850))]
    pre = [(f"prefill {n}", prompt_group(n, prompt_lens), ((0, n),), ()) for n in PROMPTS]
    pre += [(f"prefill {' + '.join(map(str, ns))}", "several prompts", tuple((0, n) for n in ns), ())
            for ns in ((128, 128), (90, 160), (40, 120, 200), (64, 64, 64, 64))]
    mix = [(f"mixed {n} + {b} x 1024", "grid", ((0, n),), (1024,) * b)
           for n, b in ((32, 1), (32, 4), (128, 1), (128, 4))]
    mix += [(f"mixed {'+'.join(f'{n}' + (f' after {s}' if s else '') for s, n in p)} + {len(c)} at {c[0]}-{c[-1]}",
             "served-like", p, c)
            for p, c in ((((0, 64),), (120, 260)), (((0, 100),), (80, 200, 330)), (((0, 150),), SPREAD_6),
                         (((0, 200),), SPREAD_10), (((0, 120), (0, 90)), SPREAD_6), (((256, 256),), SPREAD_6))]
    return [(label, kind, g, p, c) for kind, rows in (("decode", dec), ("prefill", pre), ("mixed", mix))
            for label, g, p, c in rows]


def prompt_group(n: int, prompt_lens: tuple[int, ...]) -> str:
    if n in prompt_lens:
        return "grid"
    if n & (n - 1) == 0:
        return "power of two"
    return "2^k - 1" if (n + 1) & n == 0 else "other size"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default=PROFILE, help="a measured profile (its calibration model is timed)")
    ap.add_argument("--rounds", type=int, default=25, help="timings of each shape, interleaved")
    args = ap.parse_args()

    from calibrate.runner import Runner
    from calibrate.steps_alone import StepRecipe, time_alone
    from sim.cost_model import CostModel
    from sim.spec.model import resolve_model
    from sim.spec.profile import load_profile

    profile = load_profile(args.profile)
    spec = resolve_model(profile.provenance["calibration_model"])
    cost = CostModel(spec, profile)
    dtype = profile.provenance.get("calibration_dtype") or profile.cost.compute_dtype
    table = shapes(tuple(profile.provenance.get("grid", {}).get("prompt_lens") or ()))
    recipes = [StepRecipe(tuple((start, n, True) for start, n in prompts), contexts)
               for _, _, _, prompts, contexts in table]
    longest = max(max([s + n for s, n, _ in r.chunks] + list(r.decode_contexts)) for r in recipes) + 2
    runner = Runner(spec, dtype=dtype, device="cpu",
                    max_num_seqs=max(len(r.chunks) + len(r.decode_contexts) for r in recipes) + 1,
                    max_seq_len=min(longest, spec.max_position_embeddings), seed=0)
    model_s = []
    for recipe in recipes:  # also the warm-up: every GEMM size built once
        _, shape = time_alone(recipe, runner)
        model_s.append(cost.step_time(shape))
    ratios: list[list[float]] = [[] for _ in recipes]
    order = list(range(len(recipes)))
    rng = random.Random(0)
    for _ in range(args.rounds):
        rng.shuffle(order)
        for i in order:
            ratios[i].append(time_alone(recipes[i], runner)[0] / model_s[i])

    print(f"{spec.name} on {args.profile}, {args.rounds} rounds: measured / cost-model time (median)")
    groups: dict[tuple[str, str], list[float]] = {}
    for (label, kind, group, _, _), t, r in zip(table, model_s, ratios):
        ratio = statistics.median(r)
        groups.setdefault((kind, group), []).append(ratio)
        print(f"  {label:<36}{group:<17}{1e3 * t:8.2f} ms  {ratio:.3f}")
    print("geometric means, and each group over its kind's grid shapes:")
    for (kind, group), values in groups.items():
        mean = geometric_mean(values)
        on_grid = groups.get((kind, "grid"))
        relative = "" if group == "grid" or not on_grid else f"   / grid {mean / geometric_mean(on_grid):.3f}"
        print(f"  {kind:<8}{group:<17}{mean:.3f}{relative}")



if __name__ == "__main__":
    main()
