"""`infercast` command line: simulate a scenario (file or quick flags), list/validate profiles.

Every bad input ends in one line on stderr naming the file/flag and field, and exit status 2;
outputs are written atomically (temp file, then rename), so nothing is half-written.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import os
import sys
import tempfile
from pathlib import Path

from sim.errors import InputError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def _positive_rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'inf', got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a rate > 0 (or 'inf'), got {text!r}")
    return value


def _add_simulate(sub) -> None:
    p = sub.add_parser("simulate", help="simulate a scenario file or a quick what-if",
                       description="Simulate serving traffic on a deployment and print the summary.")
    p.add_argument("scenario", nargs="?", help="scenario file (.toml, .yaml, .json); flags override it")
    g = p.add_argument_group("quick what-if (without a file, or overriding it)")
    g.add_argument("--model", help="preset name (e.g. llama-3-8b) or path to a config.json")
    g.add_argument("--profile", help="hardware profile name (see `infercast profiles list`) or path")
    g.add_argument("--rate", type=_positive_rate, help="Poisson arrivals per second; 'inf' = all at once")
    g.add_argument("--concurrency", type=int, help="closed loop with N concurrent users")
    g.add_argument("--think-time-s", type=float, default=None, help="closed loop think time")
    g.add_argument("--trace", help="replay a trace file or built-in trace (azure-conv-2023, ...)")
    g.add_argument("--input-tokens", type=int, help="fixed prompt length")
    g.add_argument("--output-tokens", type=int, help="fixed output length")
    g.add_argument("--num-requests", type=int)
    g.add_argument("--scheduler", choices=("continuous", "chunked", "static"))
    g.add_argument("--max-num-seqs", type=int)
    g.add_argument("--max-num-batched-tokens", type=int)
    g.add_argument("--max-batch-size", type=int, help="static batching batch size")
    g.add_argument("--enable-prefix-caching", action="store_const", const=True, default=None,
                   help="reuse cached KV of shared prefixes (needs a trace with prefix hashes, e.g. Mooncake)")
    g.add_argument("--speculative-draft", metavar="MODEL", help="speculative decoding: the draft model")
    g.add_argument("--speculative-tokens", type=int, help="speculative decoding: tokens proposed per round")
    g.add_argument("--acceptance-rate", type=float, help="speculative decoding: per-token acceptance rate")
    g.add_argument("--max-queue-delay-s", type=float, help="static batching queue delay")
    g.add_argument("--replicas", type=int)
    g.add_argument("--tp", type=int, help="tensor-parallel degree per replica")
    g.add_argument("--router", choices=("round_robin", "random", "least_outstanding", "least_kv"))
    g.add_argument("--weight-dtype", choices=("fp32", "bf16", "fp16", "fp8", "int8", "int4"))
    g.add_argument("--kv-dtype", choices=("fp32", "bf16", "fp16", "fp8"))
    g.add_argument("--gpu-memory-utilization", type=float)
    g.add_argument("--slo-ttft-s", type=float)
    g.add_argument("--slo-tpot-s", type=float)
    g.add_argument("--slo-e2e-s", type=float)
    g.add_argument("--seed", type=int)
    o = p.add_argument_group("outputs")
    o.add_argument("--json", metavar="OUT", help="write the summary JSON here")
    o.add_argument("--requests-csv", metavar="OUT", help="write one row per request here")
    o.add_argument("--export-scenario", metavar="OUT", help="write the effective scenario (.toml/.json/.yaml)")
    o.add_argument("--quiet", action="store_true", help="do not print the summary")


def _add_profiles(sub) -> None:
    p = sub.add_parser("profiles", help="list, show or validate hardware profiles")
    psub = p.add_subparsers(dest="action", required=True)
    psub.add_parser("list", help="table of shipped and user profiles with provenance")
    show = psub.add_parser("show", help="one profile in detail")
    show.add_argument("profile")
    val = psub.add_parser("validate", help="check profile files and explain every problem")
    val.add_argument("paths", nargs="*", help="files (default: every profile found)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="infercast", description="LLM inference cost and capacity planner.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_simulate(sub)
    _add_profiles(sub)
    return parser


def _set(d: dict, dotted: str, value) -> None:
    if value is None:
        return
    *parents, leaf = dotted.split(".")
    for key in parents:
        d = d.setdefault(key, {})
    d[leaf] = value


def scenario_dict_from_args(args: argparse.Namespace) -> tuple[dict, str, Path | None]:
    from sim.model_spec import resolve_model
    from sim.scenario import load_scenario_dict

    if args.model is not None:
        try:
            resolve_model(args.model)
        except InputError as exc:
            raise InputError("command line", "--model", exc.problem) from None
    if args.scenario:
        data = load_scenario_dict(args.scenario)
        where, base = args.scenario, Path(args.scenario).parent
    else:
        data, where, base = {}, "command line", None
        missing = [f for f in ("model", "profile") if getattr(args, f) is None]
        if missing:
            raise InputError("command line", f"--{missing[0]}", "required without a scenario file")
    if isinstance(data.get("model"), str):
        data["model"] = {"name": data["model"]}
    _set(data, "model.name", args.model)
    _set(data, "model.weight_dtype", args.weight_dtype)
    _set(data, "model.kv_dtype", args.kv_dtype)
    _set(data, "deployment.profile", args.profile)
    _set(data, "deployment.replicas", args.replicas)
    _set(data, "deployment.tp", args.tp)
    _set(data, "deployment.router", args.router)
    _set(data, "deployment.gpu_memory_utilization", args.gpu_memory_utilization)
    _set(data, "scheduler.policy", args.scheduler)
    _set(data, "scheduler.max_num_seqs", args.max_num_seqs)
    _set(data, "scheduler.max_num_batched_tokens", args.max_num_batched_tokens)
    _set(data, "scheduler.max_batch_size", args.max_batch_size)
    _set(data, "scheduler.max_queue_delay_s", args.max_queue_delay_s)
    _set(data, "scheduler.enable_prefix_caching", args.enable_prefix_caching)
    _set(data, "speculative.draft_model", args.speculative_draft)
    _set(data, "speculative.num_speculative_tokens", args.speculative_tokens)
    _set(data, "speculative.acceptance_rate", args.acceptance_rate)
    _set(data, "slo.ttft_s", args.slo_ttft_s)
    _set(data, "slo.tpot_s", args.slo_tpot_s)
    _set(data, "slo.e2e_s", args.slo_e2e_s)
    _set(data, "seed", args.seed)
    workload = data.setdefault("workload", {})
    if args.trace is not None:
        workload.pop("input_tokens", None)
        workload.pop("output_tokens", None)
        workload["trace"] = {"path": args.trace}
        if args.num_requests is not None:
            workload["trace"]["max_requests"] = args.num_requests
            workload.pop("num_requests", None)
    elif args.num_requests is not None:
        workload["num_requests"] = args.num_requests
    if args.concurrency is not None:
        workload["arrival"] = {"process": "closed", "concurrency": args.concurrency}
        _set(workload, "arrival.think_time_s", args.think_time_s)
    elif args.rate is not None:
        workload["arrival"] = ({"process": "all_at_once"} if math.isinf(args.rate)
                               else {"process": "poisson", "rate_per_s": args.rate})
    if args.input_tokens is not None:
        workload["input_tokens"] = {"dist": "fixed", "value": args.input_tokens}
    if args.output_tokens is not None:
        workload["output_tokens"] = {"dist": "fixed", "value": args.output_tokens}
    if not args.scenario and "trace" not in workload:
        for flag, key in (("--input-tokens", "input_tokens"), ("--output-tokens", "output_tokens")):
            if key not in workload:
                raise InputError("command line", flag, "required without a scenario file or --trace")
        if "arrival" not in workload:
            raise InputError("command line", "--rate", "required (or --concurrency) without a scenario file")
        workload.setdefault("num_requests", 1000)
    return data, where, base


def _atomic_write_text(path: str, text: str) -> None:
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise InputError(path, "", f"folder {folder} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise InputError(path, "", f"cannot write: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "w", newline="") as fh:
            fh.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _check_writable(path: str | None) -> None:
    if path is None:
        return
    folder = Path(path).parent if str(Path(path).parent) else Path(".")
    if not folder.is_dir():
        raise InputError(path, "", f"folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise InputError(path, "", f"folder {folder} is not writable")


def _scenario_text(data: dict, path: str) -> str:
    import json

    import yaml

    if path.endswith((".yaml", ".yml")):
        return yaml.safe_dump(data, sort_keys=False)
    if path.endswith(".toml"):
        from sim.toml_writer import dumps

        return dumps(data)
    return json.dumps(data, indent=1) + "\n"


def cmd_simulate(args: argparse.Namespace) -> int:
    import json

    from sim.report_text import format_summary
    from sim.scenario import run_scenario, scenario_from_dict

    for out in (args.json, args.requests_csv, args.export_scenario):
        _check_writable(out)
    data, where, base = scenario_dict_from_args(args)
    scenario = scenario_from_dict(data, where, base_dir=base)
    result = run_scenario(scenario)
    if not args.quiet:
        print(format_summary(result.summary))
    if args.json:
        payload = dict(result.summary)
        payload["scenario"] = scenario.to_dict()
        _atomic_write_text(args.json, json.dumps(payload, indent=1, allow_nan=False) + "\n")
    if args.requests_csv:
        rows = result.request_rows()
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["request_id"])
        writer.writeheader()
        writer.writerows(rows)
        _atomic_write_text(args.requests_csv, buf.getvalue())
    if args.export_scenario:
        _atomic_write_text(args.export_scenario, _scenario_text(scenario.to_dict(), args.export_scenario))
    return 0


def cmd_profiles(args: argparse.Namespace) -> int:
    from sim import profile_catalog

    if args.action == "list":
        print(profile_catalog.format_table(profile_catalog.list_rows()))
        return 0
    if args.action == "show":
        print(profile_catalog.show(args.profile))
        return 0
    from sim.profile import list_profiles

    paths = args.paths or [str(p) for p in list_profiles()]
    bad = 0
    for path in paths:
        problems = profile_catalog.validate_file(path)
        if problems:
            bad += 1
            for problem in problems:
                print(f"{path}: {problem}", file=sys.stderr)
        else:
            print(f"{path}: ok")
    return 2 if bad else 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "simulate":
            return cmd_simulate(args)
        if args.command == "profiles":
            return cmd_profiles(args)
    except InputError as exc:
        print(f"infercast: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("infercast: interrupted", file=sys.stderr)
        return 130
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
