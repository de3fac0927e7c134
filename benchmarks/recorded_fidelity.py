"""Fidelity against recorded measurements: today's simulator predicts the suite a profile recorded
(`calibrate validate --suite --record` keeps each case's measured figures in
provenance.validation), without serving anything: seconds, not minutes, and on any machine.

Each case's workload is rebuilt from the profile (`calibrate.validate.default_suite`, the same
arrivals and lengths as were served) and predicted twice: every step at its cost-model (median)
time, and with the profile's speed variability (`sim.speed_variability`: the median of
`calibrate.validate.SPEED_DRAWS` draws, as `calibrate validate` predicts). A profile without a
`cost_model.speed_variability` gets one fitted from its stored speed reference, so older profiles
(e.g. `git show <commit>:profiles/amd-epyc-2vcpu-cpu.json`) can be back-tested.

Targets (issue: fidelity): means within 5 % (cross-model: 10 %), p99 within 10 %.

Given several profiles (suites), it also prints what leans one way across them: each case's error
with the variability, mean ± standard deviation over the suites (a model's bias shows as a mean
beyond its spread), and how much slower the served steps ran than the speed probe's calibration
points timed around them (run speed over probe speed, per suite).

Usage: python benchmarks/recorded_fidelity.py [--profile P ...] [--draws 31]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
from statistics import geometric_mean

METRICS = ("ttft_s.mean", "tpot_s.mean", "e2e_s.mean", "throughput.output_tokens_per_s",
           "ttft_s.p99", "tpot_s.p99", "e2e_s.p99")


def value(summary: dict, metric: str) -> float:
    group, stat = metric.rsplit(".", 1)
    return (summary["latency"][group] if group in summary["latency"] else summary["throughput"])[stat]


def bound(metric: str, case: str) -> float:
    return 0.10 if metric.endswith(".p99") or "cross-model" in case else 0.05


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", action="append", help="a measured profile with a recorded suite (repeatable)")
    ap.add_argument("--draws", type=int, default=None, help="draws of the speed variability per prediction")
    args = ap.parse_args()

    from calibrate.speed_variability import measure_speed_variability
    from calibrate.validate import SPEED_DRAWS, default_suite, in_profile_dtype, predict
    from sim.spec.profile import profile_from_dict
    from sim.scenario import scenario_from_dict

    draws = args.draws or SPEED_DRAWS
    totals = {"plain": [0, 0, 0, 0], "varied": [0, 0, 0, 0]}
    across: dict[str, dict[str, list[float]]] = {}  # case -> metric -> error with the variability, %
    served_over_probe: list[tuple[str, float, float]] = []  # per suite: decode, compute
    for path in args.profile or ["profiles/amd-epyc-2vcpu-cpu.json"]:
        with open(path) as fh:
            doc = json.load(fh)
        recorded = doc.get("provenance", {}).get("validation") or []
        if not recorded:
            print(f"{path}: no recorded suite")
            continue
        fitted = "cost_model.speed_variability" if "speed_variability" in doc["cost_model"] else "fitted now"
        if "speed_variability" not in doc["cost_model"]:
            found = measure_speed_variability(doc["measurements"].get("speed_reference") or {})
            if found is None:
                print(f"{path}: no speed reference to fit a variability from")
                continue
            doc["cost_model"]["speed_variability"] = found.to_dict()
        profile = profile_from_dict(doc, path)
        plain_doc = copy.deepcopy(doc)
        plain_doc["cost_model"].pop("speed_variability")
        plain = profile_from_dict(plain_doc, path)
        model = doc["provenance"].get("calibration_model") or "llama-small-150m"
        suite = dict(default_suite(profile, model, "llama-medium-400m"))
        ratios = [(r["run_speed"]["decode_factor"] / r["machine_speed"]["memory_factor"],
                   r["run_speed"]["prefill_factor"] / r["machine_speed"]["compute_factor"])
                  for r in recorded if r.get("run_speed") and r.get("machine_speed")]
        if ratios:
            served_over_probe.append((path, geometric_mean([d for d, _ in ratios]),
                                      geometric_mean([c for _, c in ratios])))
        print(f"\n{path} (recorded {recorded[0].get('date')}; variability: {fitted})")
        print(f"{'case':<52}" + "".join(f"{m.replace('_s', '').replace('throughput.output_tokens_per', 'tokens/s'):>22}"
                                        for m in METRICS))
        for rec in recorded:
            name = rec["name"]
            if name not in suite:
                print(f"{name:<52} not in today's default suite")
                continue
            sc = in_profile_dtype(scenario_from_dict(suite[name], "suite"), profile)
            measured = {row["metric"]: row["measured"] for row in rec["comparison"]}
            predicted = {"plain": predict(sc, plain, 1).summary, "varied": predict(sc, profile, draws).summary}
            cells = []
            for metric in METRICS:
                pair = []
                for key, summary in predicted.items():
                    err = (value(summary, metric) - measured[metric]) / measured[metric]
                    hit = abs(err) <= bound(metric, name)
                    t = totals[key]
                    t[2 if metric.endswith(".p99") else 0] += hit
                    t[3 if metric.endswith(".p99") else 1] += 1
                    pair.append(f"{100 * err:+.1f}{'' if hit else '!'}")
                    if key == "varied":
                        across.setdefault(name, {}).setdefault(metric, []).append(100 * err)
                cells.append(f"{' / '.join(pair):>22}")
            print(f"{name[:51]:<52}" + "".join(cells))
    print("\ncells: error without / with the speed variability, % ('!': beyond its target)")
    for key, label in (("plain", "every step at its cost-model time"), ("varied", "with the speed variability")):
        t = totals[key]
        print(f"{label}: means within target in {t[0]} of {t[1]} cells, p99s in {t[2]} of {t[3]}")
    if len(served_over_probe) > 1:
        print_across(across, served_over_probe)



def print_across(across: dict, served_over_probe: list[tuple[str, float, float]]) -> None:
    print("\nacross the suites, with the speed variability: each case's error, mean ± standard deviation, %")
    print(f"{'case':<52}" + "".join(f"{m.replace('_s', '').replace('throughput.output_tokens_per', 'tokens/s'):>22}"
                                    for m in METRICS))
    for name, errors in across.items():
        print(f"{name[:51]:<52}" + "".join(f"{statistics.fmean(errors[m]):+.1f} ± {statistics.pstdev(errors[m]):.1f}"
                                           .rjust(22) if m in errors else " " * 22 for m in METRICS))
    print("\nserved steps' speed over the probe's around them (geometric mean of the cases; > 1: served slower)")
    for path, decode, compute in served_over_probe:
        print(f"  {path}: decode {decode:.3f}x, prefill and mixed {compute:.3f}x")
    print(f"  all suites: decode {geometric_mean([d for _, d, _ in served_over_probe]):.3f}x, "
          f"prefill and mixed {geometric_mean([c for _, _, c in served_over_probe]):.3f}x")


if __name__ == "__main__":
    main()
