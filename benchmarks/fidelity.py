"""Fidelity: the real PyTorch engine serves workloads on this machine and the simulator predicts
them from the machine's measured profile. Prints predicted vs measured and the relative errors.

Targets (issue: fidelity): mean TTFT, TPOT, E2E and throughput within 5%; p99 within 10%;
cross-model (a model the profile was not fitted with) within 10%.

Usage: python benchmarks/fidelity.py --profile profiles/<host>-cpu.json [--requests 60] [--json OUT]
Run it on a quiet machine: other processes' load shows up as error.
"""

from __future__ import annotations

import argparse
import json
import os
import time

MEAN_METRICS = ("ttft_s.mean", "tpot_s.mean", "e2e_s.mean", "throughput.output_tokens_per_s")
TAIL_METRICS = ("ttft_s.p99", "tpot_s.p99", "e2e_s.p99")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", required=True)
    ap.add_argument("--requests", type=int, default=60)
    ap.add_argument("--second-model", default="llama-medium-400m")
    ap.add_argument("--only", help="run only the cases whose name contains this")
    ap.add_argument("--json")
    args = ap.parse_args()

    from calibrate.validate import default_suite, format_rows, validate
    from sim.profile import load_profile
    from sim.scenario import scenario_from_dict

    profile = load_profile(args.profile)
    model = profile.provenance.get("calibration_model") or "llama-small-150m"
    print(f"profile {profile.name} (fitted with {model}); load average {os.getloadavg()[0]:.2f}")
    table, dump = [], []
    for name, data in default_suite(profile, model, args.second_model, num_requests=args.requests):
        if args.only and args.only not in name:
            continue
        start = time.perf_counter()
        result = validate(name, scenario_from_dict(data, "suite"), profile)
        errors = {r["metric"]: r["rel_error"] for r in result.rows}
        print(f"\n== {name} ({time.perf_counter() - start:.0f} s; identical workload: {result.same_workload})")
        print(format_rows(result.rows))
        table.append((name, errors))
        dump.append(result.to_dict())
    print("\nsummary: relative error of the prediction (predicted - measured) / measured")
    cols = MEAN_METRICS + TAIL_METRICS
    print(f"{'case':<52}" + "".join(f"{c.replace('_s', '').replace('throughput.', ''):>16}" for c in cols))
    for name, errors in table:
        cells = "".join(f"{'n/a' if errors.get(c) is None else format(errors[c] * 100, '+.1f') + '%':>16}" for c in cols)
        print(f"{name:<52}{cells}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(dump, fh, indent=1, default=str)


if __name__ == "__main__":
    main()
