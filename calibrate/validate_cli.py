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

Refused up front (one line, exit 2), before a model is loaded: a profile that is not a measured
profile of this kind of device (`provenance.source`, `device.kind`: a datasheet GPU profile on a CPU
predicts nothing this machine can confirm); a scenario written for another kind of device; a
deployment other than one replica on one device, or with speculative decoding (the real engine
serves neither); a workload of more than MAX_VALIDATE_REQUESTS requests, or one every request of
which would be rejected; a run whose real-time serving, estimated by the simulator from its arrival schedule and
the profile (times --repeats), exceeds --max-wall-s; a --json path that cannot be written.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import math
import sys

from calibrate.cli import _Parser
from calibrate.steps_alone import ALONE_STEPS
from sim.errors import InputError

SUITE_SECOND_MODEL = "llama-medium-400m"
MAX_VALIDATE_REQUESTS = 5000  # per workload: served in real time, and predicted SPEED_DRAWS times
# the real engine's serving time, all workloads and repeats together (the default suite x --repeats 3 fits)
DEFAULT_MAX_WALL_S = 1800.0


def _whole(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}, got {text!r}")
        return value
    return parse


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="calibrate validate", description=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", required=True, help="the measured profile of this machine")
    parser.add_argument("--scenario", help="scenario file (quick flags override it)")
    parser.add_argument("--suite", action="store_true", help="run the default validation suite")
    parser.add_argument("--second-model", default=SUITE_SECOND_MODEL, help="suite: the cross-model check")
    parser.add_argument("--suite-requests", type=_whole(2), default=60, help="suite: requests per case")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N, mps or auto")
    parser.add_argument("--tdp-w", type=_positive_float, help="stated TDP for an estimated energy figure")
    parser.add_argument("--max-wall-s", type=_positive_float, default=DEFAULT_MAX_WALL_S,
                        help="refuse a validation whose real-time serving the simulator estimates longer "
                             f"than this (default {DEFAULT_MAX_WALL_S:g} s, every workload and repeat)")
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
    if args.scenario:
        _check_scenario_device(args.scenario, profile)
    said = io.StringIO()
    try:
        with contextlib.redirect_stderr(said):
            sim_args = sim_parser().parse_args(["simulate", *([args.scenario] if args.scenario else []), *rest,
                                                "--profile", profile.path])
    except SystemExit:  # a bad quick flag, said in one line by `infercast simulate`'s parser
        message = said.getvalue().strip().removeprefix("infercast: error: ")
        raise InputError("command line", "", message) from None
    data, _, _ = scenario_dict_from_args(sim_args)
    return [("custom", data)]


def _device_kind(device: str) -> str:
    """The profile device.kind that --device serves on: "cpu" or "gpu" (cuda, mps)."""
    from calibrate.devices import resolve_device

    return "cpu" if resolve_device(device).type == "cpu" else "gpu"


def check_profile(profile, device: str) -> None:
    """A measured profile of the kind of device the real engine will serve on, or InputError."""
    kind = _device_kind(device)
    if profile.source != "measured":
        raise InputError(profile.path, "provenance.source", f"{profile.source!r}: calibrate validate compares "
                         "this machine with the profile `calibrate` measured on it; a "
                         f"{profile.source} profile of a {profile.device.name} predicts nothing this "
                         f"{kind} can confirm (run `calibrate --device {device}` first)")
    if profile.device.kind != kind:
        raise InputError(profile.path, "device.kind", f"a {profile.device.kind} profile "
                         f"({profile.device.name}), but --device {device} serves on a {kind}")


def _check_scenario_device(path: str, profile) -> None:
    """A scenario whose deployment names a profile of another kind of device (an example written
    for a GPU) is not this machine's workload: refused rather than served for hours."""
    from sim.spec.profile import load_profile
    from sim.scenario import load_scenario_dict

    data = load_scenario_dict(path)
    named = (data.get("deployment") or {}).get("profile") if isinstance(data, dict) else None
    if not isinstance(named, str):
        return
    try:
        theirs = load_profile(named)
    except InputError:
        return  # not a profile this machine knows: --profile replaces it anyway
    if theirs.device.kind != profile.device.kind or theirs.source != "measured":
        raise InputError(path, "deployment.profile", f"{named!r} is a {theirs.source} {theirs.device.kind} "
                         f"profile ({theirs.device.name}): this scenario is written for other hardware, and "
                         f"calibrate validate serves on this machine's {profile.device.kind} ({profile.name}); "
                         "give a scenario for this machine (a small model, e.g. llama-small-150m)")


def check_budget(cases: list, profile, repeats: int, max_wall_s: float) -> float:
    """The simulator's estimate of the real engine's serving time, all cases x repeats, in seconds;
    InputError (before any model is loaded) when a case is not one replica on one device without
    speculative decoding (all the real engine serves), has too many requests, would have every
    request rejected, or when the estimate is over max_wall_s."""
    from calibrate.validate import in_profile_dtype
    from sim.scenario import check_run_size, prepare, rejections, requested_size, run_prepared

    total_s = 0.0
    for name, sc in cases:
        for field_name in ("replicas", "tp"):
            if getattr(sc.deployment, field_name) != 1:
                raise InputError(sc.source, f"deployment.{field_name}", f"expected 1, got "
                                 f"{getattr(sc.deployment, field_name)}: the real engine serves one replica "
                                 "on one device")
        if sc.speculative is not None:
            raise InputError(sc.source, "speculative", "the real engine does not decode speculatively: "
                             "there is nothing to compare the prediction with")
        field_name, count = requested_size(sc.workload)
        check_run_size(sc.source, field_name, count, MAX_VALIDATE_REQUESTS,
                       "MAX_VALIDATE_REQUESTS: calibrate validate serves every request in real time")
        prep = prepare(in_profile_dtype(sc, profile), profile)
        result = run_prepared(prep, prep.cost, speed_draw=None)
        check_run_size(sc.source, field_name, result.summary["requests"]["arrived"], MAX_VALIDATE_REQUESTS,
                       "MAX_VALIDATE_REQUESTS")  # a whole trace
        rejections(result)  # InputError when every request would be rejected
        ends = [max(r.finish_s, r.arrival_s) for r in result.recorder.requests]
        total_s += max(ends, default=0.0) * repeats
        if total_s > max_wall_s:
            raise InputError(sc.source, "workload", f"serving {name!r} in real time would take about "
                             f"{max(ends, default=0.0):,.0f} s (the simulator's estimate from its "
                             f"{len(ends)} arrivals on {profile.name}) x {repeats} repeat(s): "
                             f"{total_s:,.0f} s in all, over --max-wall-s {max_wall_s:g}; ask for fewer "
                             "requests, shorter ones or a smaller model (or raise --max-wall-s)")
    return total_s


def validate_command(argv: list[str]) -> int:
    from calibrate.speed_track import stored_wander, wander_summary
    from calibrate.validate import drift_line, format_diagnostics, format_rows, validate_all
    from sim.files import check_writable, write_text_atomic
    from sim.spec.profile import load_profile, write_profile
    from sim.scenario import scenario_from_dict

    args, rest = build_parser().parse_known_args(argv)
    if args.repeats < 1:
        raise InputError("--repeats", "", f"expected >= 1, got {args.repeats}")
    if args.alone_steps < 0:
        raise InputError("--alone-steps", "", f"expected >= 0, got {args.alone_steps}")
    if args.suite and (args.scenario or rest):
        raise InputError("--suite", "", "runs its own workloads; not with --scenario or quick flags")
    check_writable(args.json)
    profile = load_profile(args.profile)
    check_profile(profile, args.device)
    if args.record:
        check_writable(profile.path)
    cases = [(name, scenario_from_dict(data, args.scenario or "command line"))
             for name, data in _scenarios(args, rest, profile)]
    estimate_s = check_budget(cases, profile, args.repeats, args.max_wall_s)
    described = {name: scenario.workload.describe() for name, scenario in cases}
    print(f"calibrate validate: serving {len(cases)} workload(s) x {args.repeats} in real time: about "
          f"{estimate_s:,.0f} s (the simulator's estimate), plus loading and speed checks", flush=True)

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
    except SystemExit as exc:  # --help, or a usage error already said in one line
        return exc.code if isinstance(exc.code, int) else 2
