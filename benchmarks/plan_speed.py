"""Planner speed: wall time of a capacity plan over 4 candidates with the local executor.

The plan of examples/chat-8b.toml: Llama-3-8B, the Azure 2023 conversation trace (its lengths and
its arrival pattern, replayed at its own mean rate, about 4.6 requests/s, as the target load),
p99 TTFT <= 2 s and p99 TPOT <= 100 ms; candidates H100 SXM, A100-80GB, L40S, L4; 3 seeds,
sensitivity at x1.5 and x2, 95% confidence. Target: <= 60 s on a 2-core machine.

Usage: python benchmarks/plan_speed.py [--workers N] [--executor local|serial|ray] [--seeds N]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from sim.planning.executors import make_executor
from sim.planning.capacity import candidates_from, load_plan_file, plan, settings_from_dict

SCENARIO = Path(__file__).resolve().parent.parent / "examples" / "chat-8b.toml"
CANDIDATES = ["h100-sxm", "a100-80gb", "l40s", "l4"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=None, help="local pool size (default: CPU count)")
    ap.add_argument("--executor", default="local", choices=("local", "serial", "ray"))
    ap.add_argument("--seeds", type=int, default=None)
    args = ap.parse_args()

    data, table, _, where, base = load_plan_file(SCENARIO)
    settings = settings_from_dict({k: v for k, v in table.items() if k != "candidates"}, where,
                                  {"seeds": args.seeds})
    candidates = candidates_from(CANDIDATES, {}, where)
    runs = [0]

    def count(done: int, submitted: int) -> None:
        runs[0] = done

    start = time.perf_counter()
    with make_executor(args.executor, args.workers) as executor:
        result = plan(data, candidates, settings, executor, where, base, count)
    wall = time.perf_counter() - start
    print(f"plan over {len(candidates)} candidates ({', '.join(CANDIDATES)}), llama-3-8b, azure-conv-2023 at "
          f"{result['question']['target_rate_per_s']:.3g} req/s, {settings.seeds} seeds, load factors "
          f"{list(settings.load_factors)}: {wall:.1f} s wall on {os.cpu_count()} cores with the "
          f"{args.executor} executor, {runs[0]} simulations (target <= 60 s)")
    for c in result["candidates"]:
        if c["status"] == "ok":
            print(f"  {c['label']:<10} {c['max_rate_per_replica_per_s']:7.3f} req/s per replica, "
                  f"{c['replicas']:3d} replicas, ${c['monthly']['usd']:9,.0f}/month, "
                  f"${c['usd_per_1m_tokens']:.4f}/1M tokens, {c['j_per_token']:.4f} J/token")
        else:
            print(f"  {c['label']:<10} {c['status']}: {c['message']}")
    rec = result["recommendation"]
    print(f"recommendation: {rec['label'] if rec else 'none'}")


if __name__ == "__main__":
    main()
