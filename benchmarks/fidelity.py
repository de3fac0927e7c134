"""Fidelity: the real PyTorch engine serves workloads on this machine and the simulator predicts
them from the machine's measured profile. Prints predicted vs measured and the relative errors.

Targets (issue: fidelity): mean TTFT, TPOT, E2E and throughput within 5%; p99 within 10%;
cross-model (a model the profile was not fitted with) within 10%.

Usage: python benchmarks/fidelity.py --profile profiles/<host>-cpu.json [--requests 60] [--repeat 3]
       [--json OUT]
Run it on a quiet machine: other processes' load shows up as error. Each case also prints the
machine's speed against its calibration (re-timed calibration points) and the error of the
prediction made at that speed, the real steps against the cost model, the prediction at the speed
the run's own steps ran at (what is left is the cost model's form and the machine's moves within
the run), and the replay: the simulator fed the real steps' measured times, whose error is what
scheduling alone leaves unexplained (`calibrate.validate`, `sim.replay`).
"""

from __future__ import annotations

import argparse
import json
import os
import time

from calibrate.steps_alone import ALONE_STEPS

MEAN_METRICS = ("ttft_s.mean", "tpot_s.mean", "e2e_s.mean", "throughput.output_tokens_per_s")
TAIL_METRICS = ("ttft_s.p99", "tpot_s.p99", "e2e_s.p99")


def tally(table, rows_of, metrics: tuple[str, ...], bound: float) -> tuple[int, int, int, int]:
    """Over the cases and these metrics: (cells whose |error| <= bound, cells, cells that miss the
    bound, of those the ones that miss by no more than that cell's run spread)."""
    hits = total = missed = inside = 0
    for _, r in table:
        spread = {row["metric"]: row["rel_error"] for row in r.spread_rows or []}
        for row in rows_of(r) or []:
            if row["metric"] not in metrics:
                continue
            total += 1
            e = row["rel_error"]
            if e is None:
                continue
            hits += abs(e) <= bound
            if abs(e) > bound:
                missed += 1
                inside += spread.get(row["metric"]) is not None and abs(e) <= spread[row["metric"]]
    return hits, total, missed, inside


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", required=True)
    ap.add_argument("--requests", type=int, default=60)
    ap.add_argument("--second-model", default="llama-medium-400m")
    ap.add_argument("--only", help="run only the cases whose name contains this")
    ap.add_argument("--repeat", type=int, default=1,
                    help="serve each case this many times (in rounds over the cases, in order and back) and "
                         "compare with the median run; the runs' spread around it is the machine's own "
                         "noise, a floor under any prediction error")
    ap.add_argument("--alone-steps", type=int, default=ALONE_STEPS,
                    help="served steps of each kind per case rebuilt and timed alone after the runs (0: none)")
    ap.add_argument("--json")
    args = ap.parse_args()

    from calibrate.speed_track import stored_wander, wander_summary
    from calibrate.validate import default_suite, drift_line, format_diagnostics, format_rows, percent, validate_all
    from sim.spec.profile import load_profile
    from sim.scenario import scenario_from_dict

    profile = load_profile(args.profile)
    model = profile.provenance.get("calibration_model") or "llama-small-150m"
    print(f"profile {profile.name} (fitted with {model}); load average {os.getloadavg()[0]:.2f}")
    bands = stored_wander(profile.raw)
    wander = wander_summary(bands)
    if wander:
        print(wander)
    cases = [(name, scenario_from_dict(data, "suite"))
             for name, data in default_suite(profile, model, args.second_model, num_requests=args.requests)
             if not args.only or args.only in name]
    start = time.perf_counter()
    results = validate_all(cases, profile, repeats=args.repeat, alone_steps=args.alone_steps,
                           announce=lambda name, k, n: print(f"serving {name} (round {k} of {n})", flush=True))
    print(f"served {len(cases)} case(s) x {args.repeat} run(s) in rounds, {time.perf_counter() - start:.0f} s")
    table, dump = [], []
    for result in results:
        print(f"\n== {result.name} ({result.wall_s:.0f} s served, {len(result.runs)} run(s); identical "
              f"workload: {result.same_workload})")
        print(format_rows(result.rows, result.columns()))
        print(format_diagnostics(result))
        table.append((result.name, result))
        dump.append(result.to_dict())
    cols = MEAN_METRICS + TAIL_METRICS
    labels = {"throughput.output_tokens_per_s": "tokens/s"}
    heads = "".join(f"{labels.get(c, c.replace('_s', '')):>16}" for c in cols)
    against = "the median of the runs" if args.repeat > 1 else "the run"
    error_of = f"relative error against {against}, (predicted - measured) / measured, of"
    for title, rows_of in ((f"{error_of} the profile as calibrated", lambda r: r.rows),
                           (f"{error_of} the profile at the speed the machine was found in", lambda r: r.at_speed_rows),
                           (f"{error_of} the profile at the speed the run's own steps ran at (a decomposition, "
                            "not a prediction)", lambda r: r.run_speed_rows),
                           (f"{error_of} the replay: the simulator fed the real steps' measured times",
                            lambda r: r.replay_rows),
                           ("run spread: the farthest run from the median, |run - median| / median (the machine's "
                            "own noise: a perfect prediction's error against a single run)", lambda r: r.spread_rows)):
        if not any(rows_of(r) for _, r in table):
            continue
        spread = title.startswith("run spread")
        print(f"\n{title}")
        print(f"{'case':<56}{'speed':>7}{'steps':>8}" + heads)
        for name, r in table:
            errors = {row["metric"]: row["rel_error"] for row in rows_of(r) or []}
            speed = "n/a" if r.speed is None else f"{r.speed.factor:.2f}x"
            steps = percent(r.steps.get("all", {}).get("rel_error"))
            print(f"{name:<56}{speed:>7}{steps:>8}" + "".join(f"{percent(errors.get(c), spread):>16}" for c in cols))
    if any(r.alone for _, r in table):
        print("\nserved steps rebuilt and timed alone: the cost model's form at the machine's present speed "
              "(alone / cost model / reference factor) and what serving added (served / alone)")
        print(f"{'case':<56}" + "".join(f"{k + ' form':>14}{k + ' served':>16}" for k in ("prefill", "mixed", "decode")))
        for name, r in table:
            cells = []
            for kind in ("prefill", "mixed", "decode"):
                e = r.alone.get(kind)
                form = "-" if not e or e["form"] is None else f"{e['form']:.3f}x"
                served = "-" if not e else f"{e['served_over_alone']:.3f}x"
                cells.append(f"{form:>14}{served:>16}")
            print(f"{name:<56}" + "".join(cells))
    print()
    for title, rows_of in (("the profile as calibrated", lambda r: r.rows),
                           ("at the machine's speed", lambda r: r.at_speed_rows),
                           ("at the run's own speed", lambda r: r.run_speed_rows)):
        parts = []
        for label, metrics, bound in (("means", MEAN_METRICS, 0.05), ("p99s", TAIL_METRICS, 0.10)):
            hits, total, missed, inside = tally(table, rows_of, metrics, bound)
            noise = f" ({inside} of the {missed} misses within that cell's run spread)" if args.repeat > 1 else ""
            parts.append(f"{label} within {bound:.0%} in {hits} of {total} cells{noise}")
        print(f"targets, {title}: " + "; ".join(parts))
    drift = drift_line([r.speed for _, r in table], bands)
    if drift:
        print(f"warning: {drift}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(dump, fh, indent=1, default=str)


if __name__ == "__main__":
    main()
