"""Does the plan's answer hold? The README's main job, planned, then its recommendation simulated
for a long run (20,000 requests; a replayed trace: all of its rows if it has fewer) at the target
rate on several seeds, each checked against the plan's own SLO criterion.

Target (the trust issue): every seed meets the SLOs. Prints one row per seed and the verdict.

Usage: python benchmarks/plan_holds.py [SCENARIO] [--candidates P ...] [--target-rate R]
                                       [--seeds 1 2 3 4 5] [--requests 20000] [--workers N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from sim.planning.executors import make_executor, make_task, run_task
from sim.planning.capacity import (Candidate, candidates_from, criterion_for, load_plan_file, plan,
                         settings_from_dict, with_deployment, with_load)

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "chat-8b.toml"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scenario", nargs="?", default=str(EXAMPLE))
    ap.add_argument("--candidates", nargs="+", default=None)
    ap.add_argument("--target-rate", type=float, default=None)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--workers", type=int, default=None)
    args = ap.parse_args()

    data, table, _, where, base = load_plan_file(args.scenario)
    settings = settings_from_dict({k: v for k, v in table.items() if k != "candidates"}, where,
                                  {"target_rate_per_s": args.target_rate})
    candidates = candidates_from(args.candidates, table, where)
    started = time.perf_counter()
    with make_executor("local", args.workers) as executor:
        result = plan(data, candidates, settings, executor, where, base)
    plan_s = time.perf_counter() - started
    rec = result["recommendation"]
    if rec is None:
        print(f"no candidate meets the SLOs ({plan_s:.1f} s)")
        return 1
    target = result["question"]["target_rate_per_s"]
    record = next(c for c in result["candidates"] if c["label"] == rec["label"])
    cand = Candidate(record["profile"], record["tp"])
    criterion = criterion_for(result["scenario"]["slo"], settings.stat, where)
    print(f"plan ({plan_s:.1f} s): {rec['replicas']} x {rec['label']} for {target:.4g} req/s "
          f"(max {record['max_rate_per_replica_per_s']:.4g} req/s per replica, seeds "
          f"{record['max_rate_range'][0]:.4g}..{record['max_rate_range'][1]:.4g})")
    print(f"{'seed':>5} {'requests':>9} {'verdict':<40} {'p99 TTFT s':>11} {'p99 TPOT s':>11} "
          f"{'p99 E2E s':>10} {'throughput':>10}")
    passed = 0
    for seed in args.seeds:
        d = with_load(with_deployment(result["scenario"], cand, rec["replicas"]), target, args.requests, seed,
                      result["question"]["workload_rate_per_s"])
        s = run_task(make_task(d))["summary"]
        ok, reason = criterion.check(s)
        passed += ok
        lat = s["latency"]
        cell = lambda m: "n/a" if lat[m]["p99"] is None else f"{lat[m]['p99']:.4g}"  # noqa: E731
        print(f"{seed:>5} {s['requests']['arrived']:>9} {reason:<40} {cell('ttft_s'):>11} {cell('tpot_s'):>11} "
              f"{cell('e2e_s'):>10} {s['throughput']['requests_per_s']:>10.4g}")
    print(f"{passed} of {len(args.seeds)} seeds meet the SLOs over their long runs")
    return 0 if passed == len(args.seeds) else 1


if __name__ == "__main__":
    sys.exit(main())
