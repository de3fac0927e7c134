"""`calibrate validate`: the real engine serves a workload; the simulator predicts it; compare.

    calibrate validate --profile profiles/x-cpu.json --model llama-small-150m --rate 2 \\
        --input-tokens 128 --output-tokens 64 --num-requests 40 [--scheduler chunked] [--json OUT]
    calibrate validate --profile profiles/x-cpu.json --scenario my.toml
    calibrate validate --profile profiles/x-cpu.json --suite [--record]

The quick flags are `infercast simulate`'s. `--suite` runs the default validation suite (loads of
30/60/80% of capacity, continuous and chunked batching, a time-scaled slice of the Azure trace,
and a second model size). `--record` stores the comparison in the profile's provenance
(`provenance.validation`), so reports and the dashboard show it. `--repeats N` serves each
workload N times and compares with the median of the runs; the "run spread" column is the farthest
run from that median, the machine's own noise (on a shared 2-vCPU VM the same workload's mean TPOT
moved by up to half between two runs). Several workloads are served in rounds, each workload once
a round, in order and back, so each one's runs spread over the whole time and a slow spell of the
machine does not fall on one workload's runs alone.

Before the first run and after each a few of the profile's calibration points are timed again: the table's
"at speed" column is the prediction at the speed the machine ran at then (a shared VM drifts),
the step lines compare every real step with the cost model, the "run speed" column is the
prediction at the speed the run's own steps ran at (a decomposition, not a prediction), and the
"replay" column is the simulator fed each real step's measured time: its error is what
scheduling alone leaves unexplained (see `calibrate.validate`). When those re-timed points, pooled
over the workloads, lie further from their calibrated times than the profile's own speed wander, a
warning says that the profile no longer describes the machine (`calibrate.validate.drift_line`):
re-run `calibrate` before reading the plain column.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys

from calibrate.steps_alone import ALONE_STEPS
from sim.errors import InputError

SUITE_SECOND_MODEL = "llama-medium-400m"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="calibrate validate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", required=True, help="the measured profile of this machine")
    parser.add_argument("--scenario", help="scenario file (quick flags override it)")
    parser.add_argument("--suite", action="store_true", help="run the default validation suite")
    parser.add_argument("--second-model", default=SUITE_SECOND_MODEL, help="suite: the cross-model check")
    parser.add_argument("--suite-requests", type=int, default=60, help="suite: requests per case")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tdp-w", type=float, help="stated TDP for an estimated energy figure")
    parser.add_argument("--json", metavar="OUT", help="write every comparison here")
    parser.add_argument("--record", action="store_true", help="store the comparison in the profile")
    parser.add_argument("--repeats", type=int, default=1,
                        help="serve each workload this many times and compare with the median run "
                             "(a shared machine measures differently each time; the 'run spread' "
                             "column shows by how much): 3 on a cloud VM")
    parser.add_argument("--no-speed-check", action="store_true",
                        help="skip re-timing calibration points before and after each run")
    parser.add_argument("--alone-steps", type=int, default=ALONE_STEPS, metavar="N",
                        help="after the runs, rebuild up to N served steps of each kind and time them "
                             "alone, to tell the cost model's form from what serving adds (0: skip)")
    return parser


def _scenarios(args: argparse.Namespace, rest: list[str], profile) -> list[tuple[str, dict]]:
    from calibrate.validate import default_suite
    from sim.cli import build_parser as sim_parser
    from sim.cli import scenario_dict_from_args

    if args.suite:
        model = profile.provenance.get("calibration_model") or "llama-small-150m"
        return default_suite(profile, model, args.second_model, num_requests=args.suite_requests)
    sim_args = sim_parser().parse_args(["simulate", *([args.scenario] if args.scenario else []), *rest,
                                        "--profile", profile.path])
    data, _, _ = scenario_dict_from_args(sim_args)
    return [("custom", data)]


def validate_command(argv: list[str]) -> int:
    from calibrate.speed_track import stored_wander, wander_summary
    from calibrate.validate import drift_line, format_diagnostics, format_rows, validate_all
    from sim.profile import load_profile, write_profile
    from sim.scenario import scenario_from_dict

    args, rest = build_parser().parse_known_args(argv)
    if args.repeats < 1:
        raise InputError("--repeats", "", f"expected >= 1, got {args.repeats}")
    if args.alone_steps < 0:
        raise InputError("--alone-steps", "", f"expected >= 0, got {args.alone_steps}")
    profile = load_profile(args.profile)
    cases = [(name, scenario_from_dict(data, args.scenario or "command line"))
             for name, data in _scenarios(args, rest, profile)]
    described = {name: scenario.workload.describe() for name, scenario in cases}

    def announce(name: str, round_no: int, rounds: int) -> None:
        of = f" (round {round_no} of {rounds})" if rounds > 1 else ""
        print(f"== {name}{of}: serving {described[name]} on {args.device} (real time) ...", flush=True)

    results = validate_all(cases, profile, device=args.device, tdp_w=args.tdp_w,
                           check_speed=not args.no_speed_check, repeats=args.repeats, announce=announce,
                           alone_steps=args.alone_steps)
    for result in results:
        runs = f" over {len(result.runs)} runs" if len(result.runs) > 1 else ""
        print(f"\n== {result.name}\nidentical workload: {result.same_workload}; real engine wall time "
              f"{result.wall_s:.1f} s{runs}")
        print(format_rows(result.rows, result.columns()))
        print(format_diagnostics(result), flush=True)
    bands = stored_wander(profile.raw)
    wander = wander_summary(bands)
    if wander:
        print(f"\n{wander}: an error within the wander at a run's length cannot be told "
              f"from the machine's own moves")
    drift = drift_line([r.speed for r in results], bands)
    if drift:
        print(f"\nwarning: {drift}")
    if args.json:
        from sim.files import write_text_atomic

        write_text_atomic(args.json, json.dumps([r.to_dict() for r in results], indent=1, default=str) + "\n")
    if args.record:
        document = dict(profile.raw)
        provenance = dict(document["provenance"])
        provenance["validation"] = [{
            "date": datetime.date.today().isoformat(), "model": r.scenario.model,
            "scheduler": r.scenario.scheduler.policy, "workload": r.scenario.workload.describe(), **r.record(),
        } for r in results]
        document["provenance"] = provenance
        write_profile(document, profile.path)
        print(f"recorded {len(results)} comparison(s) in {profile.path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        return validate_command(list(sys.argv[1:] if argv is None else argv))
    except InputError as exc:
        print(f"calibrate validate: error: {exc}", file=sys.stderr)
        return 2
