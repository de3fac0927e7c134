"""`infercast` command line: simulate a scenario (file or quick flags), list/validate profiles.

Every bad input ends in one line on stderr naming the file/flag and field, and exit status 2;
outputs are written atomically (temp file, then rename), so nothing is half-written.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import sys
from pathlib import Path

from sim.errors import InputError
from sim.files import check_writable, write_text_atomic


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


def _add_dashboard(sub) -> None:
    p = sub.add_parser("dashboard", help="start the Streamlit what-if dashboard",
                       description="Start the what-if dashboard (needs `pip install infercast[dashboard]`).")
    p.add_argument("--address", default="127.0.0.1", help="address to serve on (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8501, help="port (default: 8501)")
    p.add_argument("--headless", action="store_true", help="do not open a browser")


def _add_run_options(p) -> None:
    """Options shared by plan and sweep: SLO overrides, executor, outputs, progress."""
    g = p.add_argument_group("SLOs (override the scenario's [slo])")
    g.add_argument("--slo-ttft-s", type=float)
    g.add_argument("--slo-tpot-s", type=float)
    g.add_argument("--slo-e2e-s", type=float)
    g.add_argument("--stat", choices=("mean", "p50", "p90", "p95", "p99"),
                   help="statistic each SLO bounds (default: p99)")
    g.add_argument("--seed", type=int, help="base seed (default: the scenario's)")
    g.add_argument("--requests-per-run", type=int, help="requests per one-replica run (default: the workload's)")
    e = p.add_argument_group("where the runs go")
    e.add_argument("--executor", choices=("local", "ray", "serial"), default="local",
                   help="local process pool (default), Ray (pip install 'infercast[ray]') or in-process")
    e.add_argument("--workers", type=int, help="local pool size (default: CPU count)")
    e.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    o = p.add_argument_group("outputs")
    o.add_argument("--json", metavar="OUT", help="write the result JSON (input of `infercast report`)")
    o.add_argument("--report", metavar="OUT", action="append", default=[],
                   help="write a report: .html (self-contained), .md or .json; may repeat")
    o.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    o.add_argument("--quiet", action="store_true", help="do not print the result")


def _add_plan(sub) -> None:
    p = sub.add_parser("plan", help="capacity plan: hardware, replicas, cost and energy that meet the SLOs",
                       description="For each candidate: the highest request rate one replica sustains within "
                                   "the SLOs, the fewest replicas for the target load (verified by a cluster "
                                   "simulation), monthly cost, $ and J per token, CO2, headroom, sensitivity "
                                   "and confidence across seeds; then the cheapest that meets the SLOs.")
    p.add_argument("scenario", help="scenario file (.toml/.yaml/.json), optionally with a [plan] table")
    _add_candidates(p, "the scenario's [plan] candidates")
    p.add_argument("--target-rate", type=_positive_rate, help="load to plan for, requests/s (default: the workload's)")
    p.add_argument("--seeds", type=int, help="seeds per answer (default 3)")
    p.add_argument("--confidence", type=float, help="fraction of seeds an answer must hold for (default 0.95)")
    p.add_argument("--load-factors", type=_positive_rate, nargs="*", help="sensitivity loads (default 1.5 2)")
    p.add_argument("--rel-tol", type=float, help="relative precision of the rate search (default 0.03)")
    _add_run_options(p)


def _add_candidates(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument("--candidates", nargs="+", metavar="PROFILE[:tpN]",
                   help=f"hardware to compare (default: {default})")


def _add_sweep(sub) -> None:
    p = sub.add_parser("sweep", help="latency/throughput vs load up to and past saturation",
                       description="Run the scenario at a range of request rates (given, or --auto around "
                                   "the saturation point) per candidate and mark where it saturates.")
    p.add_argument("scenario", help="scenario file (.toml/.yaml/.json), optionally with a [sweep] table")
    rates = p.add_mutually_exclusive_group()
    rates.add_argument("--rates", type=_positive_rate, nargs="+", metavar="R", help="request rates (req/s)")
    rates.add_argument("--auto", action="store_true", help="find saturation, then sweep 10%%..150%% of it")
    _add_candidates(p, "the scenario's deployment")
    p.add_argument("--replicas", type=int, help="replicas per deployment (default: the scenario's)")
    _add_run_options(p)


def _add_report(sub) -> None:
    p = sub.add_parser("report", help="render a plan or sweep result as HTML, Markdown or JSON",
                       description="Render a result JSON (from `plan --json` / `sweep --json`) as a "
                                   "self-contained HTML report (opens offline), Markdown or JSON.")
    p.add_argument("result", help="result JSON")
    p.add_argument("-o", "--output", action="append", required=True, metavar="OUT",
                   help="report file: .html, .md or .json; may repeat")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="infercast", description="LLM inference cost and capacity planner.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_simulate(sub)
    _add_profiles(sub)
    _add_dashboard(sub)
    _add_plan(sub)
    _add_sweep(sub)
    _add_report(sub)
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
        check_writable(out)
    data, where, base = scenario_dict_from_args(args)
    scenario = scenario_from_dict(data, where, base_dir=base)
    result = run_scenario(scenario)
    if not args.quiet:
        print(format_summary(result.summary))
    if args.json:
        payload = dict(result.summary)
        payload["scenario"] = scenario.to_dict()
        write_text_atomic(args.json, json.dumps(payload, indent=1, allow_nan=False) + "\n")
    if args.requests_csv:
        rows = result.request_rows()
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["request_id"])
        writer.writeheader()
        writer.writerows(rows)
        write_text_atomic(args.requests_csv, buf.getvalue())
    if args.export_scenario:
        write_text_atomic(args.export_scenario, _scenario_text(scenario.to_dict(), args.export_scenario))
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


def dashboard_command(args: argparse.Namespace) -> list[str]:
    """The `streamlit run` command line; streamlit runs in its own process (sim never imports it)."""
    app = Path(__file__).resolve().parent.parent / "dashboard" / "app.py"
    if not app.is_file():
        raise InputError(str(app), "", "the dashboard is not part of this installation of infercast")
    import importlib.util

    if importlib.util.find_spec("streamlit") is None:
        raise InputError("infercast dashboard", "", "streamlit is not installed: pip install 'infercast[dashboard]'")
    return [sys.executable, "-m", "streamlit", "run", str(app), "--server.address", args.address,
            "--server.port", str(args.port), "--server.headless", "true" if args.headless else "false",
            "--browser.gatherUsageStats", "false"]


def cmd_dashboard(args: argparse.Namespace) -> int:
    import subprocess

    command = dashboard_command(args)
    print(f"infercast: dashboard on http://{args.address}:{args.port} (Ctrl-C stops it)", file=sys.stderr)
    return subprocess.call(command)


def _plan_inputs(args: argparse.Namespace, table_name: str) -> tuple[dict, dict, str, Path]:
    """The scenario dict (with command-line SLO/seed overrides) and its [plan] or [sweep] table."""
    from sim.planner import load_plan_file

    data, plan_table, sweep_table, where, base = load_plan_file(args.scenario)
    for flag, key in (("slo_ttft_s", "ttft_s"), ("slo_tpot_s", "tpot_s"), ("slo_e2e_s", "e2e_s")):
        value = getattr(args, flag)
        if value is not None:
            if not value > 0:
                raise InputError("command line", f"--{flag.replace('_', '-')}", f"expected a number > 0, got {value!r}")
            _set(data, f"slo.{key}", value)
    if args.seed is not None:
        if args.seed < 0:
            raise InputError("command line", "--seed", f"expected an integer >= 0, got {args.seed}")
        data["seed"] = args.seed
    return data, plan_table if table_name == "plan" else sweep_table, where, base


def _executor(args: argparse.Namespace):
    from sim.executors import make_executor

    if args.workers is not None and args.workers < 1:
        raise InputError("command line", "--workers", f"expected an integer >= 1, got {args.workers}")
    return make_executor(args.executor, args.workers, args.address)


class _ProgressBar:
    """A tqdm bar on stderr counting finished runs (its total grows as rounds are submitted)."""

    def __init__(self, desc: str, enabled: bool) -> None:
        self.bar = None
        self.desc = desc
        self.enabled = enabled

    def __call__(self, done: int, submitted: int) -> None:
        if self.bar is None and self.enabled:  # created at the first run, not before input is checked
            self.enabled = False
            try:
                from tqdm import tqdm
            except ImportError:
                return
            tqdm.monitor_interval = 0  # no monitor thread (the local pool forks)
            self.bar = tqdm(total=0, desc=self.desc, unit="run", file=sys.stderr, dynamic_ncols=True, leave=True)
        if self.bar is not None:
            self.bar.total = submitted
            self.bar.n = done
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _write_outputs(result: dict, args: argparse.Namespace) -> None:
    import json

    from sim.report import result_text, write_report

    if not args.quiet:
        print(result_text(result))
    if args.json:
        write_text_atomic(args.json, json.dumps(result, indent=1, allow_nan=False) + "\n")
    for out in args.report:
        write_report(result, out)
        print(f"infercast: wrote {out}", file=sys.stderr)


def _check_report_paths(paths: list[str]) -> None:
    from sim.report import report_format

    for out in paths:
        report_format(out)
        check_writable(out)


def _run_and_write(args: argparse.Namespace, label: str, units: str, run) -> int:
    """Run a plan or sweep on the chosen executor with a progress bar, write its outputs, and
    exit 130 when Ctrl-C stopped it (the finished part is kept and written)."""
    bar = _ProgressBar(label, not args.no_progress)
    with _executor(args) as executor:
        try:
            result = run(executor, bar)
        finally:
            bar.close()
    _write_outputs(result, args)
    if result["interrupted"]:
        print(f"infercast: interrupted; finished {units} were kept", file=sys.stderr)
        return 130
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from sim.planner import candidates_from, plan, settings_from_dict

    check_writable(args.json)
    _check_report_paths(args.report)
    data, table, where, base = _plan_inputs(args, "plan")
    candidates = candidates_from(args.candidates, table, where)
    overrides = {"target_rate_per_s": args.target_rate, "seeds": args.seeds, "confidence": args.confidence,
                 "stat": args.stat, "rel_tol": args.rel_tol, "requests_per_run": args.requests_per_run,
                 "load_factors": tuple(args.load_factors) if args.load_factors is not None else None}
    settings = settings_from_dict({k: v for k, v in table.items() if k != "candidates"}, where, overrides)
    return _run_and_write(args, "plan", "candidates",
                          lambda executor, bar: plan(data, candidates, settings, executor, where, base, bar))


def cmd_sweep(args: argparse.Namespace) -> int:
    from sim.planner import candidates_from
    from sim.sweep import sweep

    check_writable(args.json)
    _check_report_paths(args.report)
    data, table, where, base = _plan_inputs(args, "sweep")
    for key in table:
        if key not in ("rates", "candidates", "stat", "requests_per_run", "replicas"):
            raise InputError(where, f"sweep.{key}", "unknown key; expected rates, candidates, stat, "
                             "requests_per_run, replicas")
    rates = args.rates if args.rates is not None else (None if args.auto else table.get("rates"))
    candidates = None
    if args.candidates is not None or table.get("candidates"):
        candidates = candidates_from(args.candidates, table, where)
    return _run_and_write(args, "sweep", "points", lambda executor, bar: sweep(
        data, candidates, rates, executor, where, base, bar, stat=args.stat or table.get("stat", "p99"),
        requests_per_run=args.requests_per_run or table.get("requests_per_run"),
        replicas=args.replicas or table.get("replicas")))


def cmd_report(args: argparse.Namespace) -> int:
    from sim.report import load_result, write_report

    _check_report_paths(args.output)
    result = load_result(args.result)
    for out in args.output:
        write_report(result, out)
        print(f"infercast: wrote {out}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    commands = {"simulate": cmd_simulate, "profiles": cmd_profiles, "dashboard": cmd_dashboard,
                "plan": cmd_plan, "sweep": cmd_sweep, "report": cmd_report}
    if args.command not in commands:
        parser.error(f"unknown command {args.command}")
    try:
        return commands[args.command](args)
    except InputError as exc:
        print(f"infercast: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("infercast: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
