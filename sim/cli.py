"""`infercast` command line: simulate a scenario (file or quick flags), list/validate profiles.

Every bad input ends in one line on stderr naming the file/flag and field, and exit status 2;
outputs are written atomically (temp file, then rename), so nothing is half-written. A flag's value
is checked where it is parsed (a count is a whole number >= 1, a float is finite), flags that
contradict each other are refused rather than one silently dropped, and a run too large to finish
in reasonable time is refused up front (`sim.scenario.MAX_REQUESTS_PER_RUN`). When the reader of
stdout goes away (`infercast ... | head`) the command stops quietly with status 141.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import sys
from pathlib import Path

from sim.errors import InputError
from sim.files import check_writable, stdout_gone, write_text_atomic

MAX_WORKERS_PER_CPU = 4  # --workers beyond this many processes per CPU only thrash


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2
        self.exit(2, f"infercast: error: {message} (see `{self.prog} --help`)\n")


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def _positive_rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'inf', got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a rate > 0 (or 'inf'), got {text!r}")
    return value


def _positive_float(text: str) -> float:
    """A finite number > 0 (an SLO, a load factor, a delay)."""
    value = _number(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def _float_at_least_0(text: str) -> float:
    value = _number(text)
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def _fraction(text: str) -> float:
    """A number in [0, 1] (the checks of the field itself may narrow it)."""
    value = _number(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text!r}")
    return value


def _whole(text: str, minimum: int) -> int:
    """A whole number >= minimum; 1e6-style notation is accepted when it is whole."""
    try:
        value = int(text)
    except ValueError:
        number = _number(text)
        if not (math.isfinite(number) and number.is_integer()):
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        value = int(number)
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}, got {text!r}")
    return value


def _integer(text: str) -> int:
    """A whole number; its range is checked where the setting is (e.g. plan.seeds)."""
    return _whole(text, -(2**63))


def _count(text: str) -> int:
    """A whole number >= 1 (requests, replicas, sequences, tokens)."""
    return _whole(text, 1)


def _seed(text: str) -> int:
    value = _whole(text, 0)
    if value >= 2**63:
        raise argparse.ArgumentTypeError(f"expected a whole number from 0 to 2^63 - 1, got {text!r}")
    return value


def _add_simulate(sub) -> None:
    p = sub.add_parser("simulate", help="simulate a scenario file or a quick what-if",
                       description="Simulate serving traffic on a deployment and print the summary.")
    p.add_argument("scenario", nargs="?", help="scenario file (.toml, .yaml, .json); flags override it")
    g = p.add_argument_group("quick what-if (without a file, or overriding it)")
    g.add_argument("--model", help="preset name (e.g. llama-3-8b) or path to a config.json")
    g.add_argument("--profile", help="hardware profile name (see `infercast profiles list`) or path")
    load = g.add_mutually_exclusive_group()
    load.add_argument("--rate", type=_positive_rate, help="Poisson arrivals per second; 'inf' = all at once")
    load.add_argument("--concurrency", type=_count, help="closed loop with N concurrent users")
    g.add_argument("--think-time-s", type=_float_at_least_0, default=None,
                   help="closed loop think time (with --concurrency, or a scenario's closed loop)")
    g.add_argument("--trace", help="replay a trace file or built-in trace (azure-conv-2023, ...)")
    g.add_argument("--input-tokens", type=_count, help="fixed prompt length (not with --trace)")
    g.add_argument("--output-tokens", type=_count, help="fixed output length (not with --trace)")
    g.add_argument("--num-requests", type=_count, help="requests in the run (with --trace: the first N)")
    g.add_argument("--scheduler", choices=("continuous", "chunked", "static"))
    g.add_argument("--max-num-seqs", type=_count)
    g.add_argument("--max-num-batched-tokens", type=_count)
    g.add_argument("--max-batch-size", type=_count, help="static batching batch size")
    g.add_argument("--enable-prefix-caching", action="store_const", const=True, default=None,
                   help="reuse cached KV of shared prefixes (needs a trace with prefix hashes, e.g. Mooncake)")
    g.add_argument("--speculative-draft", metavar="MODEL", help="speculative decoding: the draft model")
    g.add_argument("--speculative-tokens", type=_count, help="speculative decoding: tokens proposed per round")
    g.add_argument("--acceptance-rate", type=_fraction, help="speculative decoding: per-token acceptance rate")
    g.add_argument("--max-queue-delay-s", type=_float_at_least_0, help="static batching queue delay")
    g.add_argument("--replicas", type=_count)
    g.add_argument("--tp", type=_count, help="tensor-parallel degree per replica")
    g.add_argument("--router", choices=("round_robin", "random", "least_outstanding", "least_kv"))
    g.add_argument("--weight-dtype", choices=("fp32", "bf16", "fp16", "fp8", "int8", "int4"))
    g.add_argument("--kv-dtype", choices=("fp32", "bf16", "fp16", "fp8"))
    g.add_argument("--gpu-memory-utilization", type=_fraction, help="share of device memory to use, 0 < x <= 1")
    g.add_argument("--slo-ttft-s", type=_positive_float)
    g.add_argument("--slo-tpot-s", type=_positive_float)
    g.add_argument("--slo-e2e-s", type=_positive_float)
    g.add_argument("--seed", type=_seed)
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
                       description="Start the what-if dashboard (needs streamlit: from a checkout, "
                                   "`python3 -m pip install -e '.[dashboard]'`). It serves without "
                                   "prompting and opens no browser unless --browser is given.")
    p.add_argument("--address", default="127.0.0.1", help="address to serve on (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8501, help="port, 1-65535 (default: 8501)")
    browser = p.add_mutually_exclusive_group()
    browser.add_argument("--browser", action="store_true", help="also open the dashboard in a browser")
    browser.add_argument("--headless", action="store_true", help="open no browser (the default; kept for old scripts)")


def _add_run_options(p) -> None:
    """Options shared by plan and sweep: SLO overrides, executor, outputs, progress."""
    g = p.add_argument_group("SLOs (override the scenario's [slo])")
    g.add_argument("--slo-ttft-s", type=_positive_float)
    g.add_argument("--slo-tpot-s", type=_positive_float)
    g.add_argument("--slo-e2e-s", type=_positive_float)
    g.add_argument("--stat", choices=("mean", "p50", "p90", "p95", "p99"),
                   help="statistic each SLO bounds (default: p99)")
    g.add_argument("--seed", type=_seed, help="base seed (default: the scenario's)")
    g.add_argument("--requests-per-run", type=_count,
                   help="least requests per run (default: the workload's count, or 1000)")
    g.add_argument("--run-duration-s", type=_positive_float,
                   help="a run's arrivals span this many simulated seconds at the rate tried (default 600)")
    e = p.add_argument_group("where the runs go")
    e.add_argument("--executor", choices=("local", "ray", "serial"), default="local",
                   help="local process pool (default), Ray (pip install 'infercast[ray]') or in-process")
    e.add_argument("--workers", type=_count, help="local pool size (default: CPU count)")
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
    p.add_argument("--target-rate", type=_positive_float, help="load to plan for, requests/s (default: the workload's)")
    p.add_argument("--seeds", type=_integer, help="seeds per answer (default 3)")
    p.add_argument("--confidence", type=_number, help="fraction of seeds an answer must hold for (default 0.95)")
    p.add_argument("--load-factors", type=_positive_float, nargs="*",
                   help="sensitivity loads (default 1.5 2; none: no sensitivity runs)")
    p.add_argument("--rel-tol", type=_number, help="relative precision of the rate search (default 0.03)")
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
    rates.add_argument("--rates", type=_positive_float, nargs="+", metavar="R", help="request rates (req/s)")
    rates.add_argument("--auto", action="store_true", help="find saturation, then sweep 10%%..150%% of it")
    _add_candidates(p, "the scenario's deployment")
    p.add_argument("--replicas", type=_count, help="replicas per deployment (default: the scenario's)")
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


def _set(d: dict, dotted: str, value, where: str = "command line") -> None:
    """d[a][b][c] = value for "a.b.c" (tables made as needed); nothing for None."""
    if value is None:
        return
    *parents, leaf = dotted.split(".")
    for i, key in enumerate(parents):
        d = d.setdefault(key, {})
        if not isinstance(d, dict):
            raise InputError(where, ".".join(parents[:i + 1]),
                             f"expected a table of settings, got {type(d).__name__}")
    d[leaf] = value


def scenario_dict_from_args(args: argparse.Namespace) -> tuple[dict, str, Path | None]:
    from sim.spec.model import resolve_model
    from sim.scenario import load_scenario_dict

    if args.model is not None:
        try:
            resolve_model(args.model)
        except InputError as exc:
            raise InputError("command line", "--model", exc.problem) from None
    if args.trace is not None:
        for flag in ("input_tokens", "output_tokens"):
            if getattr(args, flag) is not None:
                raise InputError("command line", f"--{flag.replace('_', '-')}",
                                 "not allowed with --trace (the trace gives every request's lengths)")
    if args.scenario:
        data = load_scenario_dict(args.scenario)
        where, base = args.scenario, Path(args.scenario).parent
        if not isinstance(data, dict):
            raise InputError(where, "", f"expected a table of settings, got {type(data).__name__}")
    else:
        data, where, base = {}, "command line", None
        missing = [f for f in ("model", "profile") if getattr(args, f) is None]
        if missing:
            raise InputError("command line", f"--{missing[0]}", "required without a scenario file")
    if isinstance(data.get("model"), str):
        data["model"] = {"name": data["model"]}
    _set(data, "model.name", args.model, where)
    _set(data, "model.weight_dtype", args.weight_dtype, where)
    _set(data, "model.kv_dtype", args.kv_dtype, where)
    _set(data, "deployment.profile", args.profile, where)
    _set(data, "deployment.replicas", args.replicas, where)
    _set(data, "deployment.tp", args.tp, where)
    _set(data, "deployment.router", args.router, where)
    _set(data, "deployment.gpu_memory_utilization", args.gpu_memory_utilization, where)
    _set(data, "scheduler.policy", args.scheduler, where)
    _set(data, "scheduler.max_num_seqs", args.max_num_seqs, where)
    _set(data, "scheduler.max_num_batched_tokens", args.max_num_batched_tokens, where)
    _set(data, "scheduler.max_batch_size", args.max_batch_size, where)
    _set(data, "scheduler.max_queue_delay_s", args.max_queue_delay_s, where)
    _set(data, "scheduler.enable_prefix_caching", args.enable_prefix_caching, where)
    _set(data, "speculative.draft_model", args.speculative_draft, where)
    _set(data, "speculative.num_speculative_tokens", args.speculative_tokens, where)
    _set(data, "speculative.acceptance_rate", args.acceptance_rate, where)
    _set(data, "slo.ttft_s", args.slo_ttft_s, where)
    _set(data, "slo.tpot_s", args.slo_tpot_s, where)
    _set(data, "slo.e2e_s", args.slo_e2e_s, where)
    _set(data, "seed", args.seed, where)
    workload = data.setdefault("workload", {})
    if not isinstance(workload, dict):
        raise InputError(where, "workload", f"expected a table of settings, got {type(workload).__name__}")
    if args.trace is not None:  # the trace's lengths replace the scenario's; its count caps the trace
        workload.pop("input_tokens", None)
        workload.pop("output_tokens", None)
        workload["trace"] = {"path": args.trace}
        if workload.get("num_requests") is not None:
            workload["trace"]["max_requests"] = workload.pop("num_requests")
    if args.num_requests is not None:
        if "trace" in workload:  # a trace's first N requests
            trace = workload["trace"]
            workload["trace"] = trace = {"path": trace} if isinstance(trace, str) else trace
            if not isinstance(trace, dict):
                raise InputError(where, "workload.trace", f"expected a table or a path, got {trace!r}")
            trace["max_requests"] = args.num_requests
            workload.pop("num_requests", None)
        else:
            workload["num_requests"] = args.num_requests
    if args.concurrency is not None:
        workload["arrival"] = {"process": "closed", "concurrency": args.concurrency}
        _set(workload, "arrival.think_time_s", args.think_time_s)
    elif args.think_time_s is not None:
        arrival = workload.get("arrival")
        if args.rate is not None or not (isinstance(arrival, dict) and arrival.get("process") == "closed"):
            raise InputError("command line", "--think-time-s", "only with --concurrency (or a scenario whose "
                             "workload.arrival is a closed loop): open-loop arrivals have no think time")
        arrival["think_time_s"] = args.think_time_s
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
        from sim.report.toml_writer import dumps

        return dumps(data)
    return json.dumps(data, indent=1) + "\n"


def cmd_simulate(args: argparse.Namespace) -> int:
    import json

    from sim.report.text import format_summary, unpriced_as_null
    from sim.scenario import rejections, run_scenario, scenario_from_dict

    for out in (args.json, args.requests_csv, args.export_scenario):
        check_writable(out)
    data, where, base = scenario_dict_from_args(args)
    scenario = scenario_from_dict(data, where, base_dir=base)
    result = run_scenario(scenario)
    rejected = rejections(result)  # InputError when every request was rejected
    summary = unpriced_as_null(result.summary)
    outputs: dict[str, str] = {}  # rendered first, then written: a failure leaves no file behind
    if args.json:
        outputs[args.json] = json.dumps({**summary, "scenario": scenario.to_dict()}, indent=1,
                                        allow_nan=False) + "\n"
    if args.requests_csv:
        rows = result.request_rows()
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["request_id"])
        writer.writeheader()
        writer.writerows(rows)
        outputs[args.requests_csv] = buf.getvalue()
    if args.export_scenario:
        outputs[args.export_scenario] = _scenario_text(scenario.to_dict(), args.export_scenario)
    for path, text in outputs.items():
        write_text_atomic(path, text)
    warnings = [*summary["workload"]["warnings"], *([rejected] if rejected else []),
                *summary.get("window", {}).get("warnings", [])]
    for line in warnings:
        print(f"infercast: warning: {line}", file=sys.stderr)
    if not args.quiet:
        print(format_summary(summary))
    return 0


def cmd_profiles(args: argparse.Namespace) -> int:
    from sim.report import catalog as profile_catalog

    if args.action == "list":
        print(profile_catalog.format_table(profile_catalog.list_rows()))
        return 0
    if args.action == "show":
        print(profile_catalog.show(args.profile))
        return 0
    from sim.spec.profile import list_profiles

    paths = args.paths or [str(p) for p in list_profiles()]
    bad = 0
    for path in paths:  # the report on stdout: "path: ok", or one line per problem
        problems = profile_catalog.validate_file(path)  # each one "path: field: problem"
        bad += bool(problems)
        print("\n".join(problems) if problems else f"{path}: ok")
    if bad:
        raise InputError("profiles validate", "", f"{bad} of {len(paths)} profile file(s) have problems "
                         "(listed above)")
    return 0


def dashboard_command(args: argparse.Namespace) -> list[str]:
    """The `streamlit run` command line; streamlit runs in its own process (sim never imports it).
    Never a prompt: the first-run e-mail prompt is off, so it starts in a fresh HOME, stdin closed."""
    if not 1 <= args.port <= 65535:
        raise InputError("--port", "", f"expected a TCP port 1-65535, got {args.port}")
    app = Path(__file__).resolve().parent.parent / "dashboard" / "app.py"
    if not app.is_file():
        raise InputError(str(app), "", "the dashboard is not part of this installation of infercast")
    import importlib.util

    if importlib.util.find_spec("streamlit") is None:
        raise InputError("infercast dashboard", "", "streamlit is not installed; from the infercast "
                         "checkout: python3 -m pip install -e '.[dashboard]'")
    return [sys.executable, "-m", "streamlit", "run", str(app), "--server.address", args.address,
            "--server.port", str(args.port), "--server.headless", "false" if args.browser else "true",
            "--server.showEmailPrompt", "false", "--browser.gatherUsageStats", "false"]


def _check_port_free(address: str, port: int) -> None:
    """Bind (address, port) as the server will, so a taken port is one line here, not a
    traceback from streamlit."""
    import socket

    try:
        family, kind, proto, _, sockaddr = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise InputError("--address", "", f"cannot serve on {address!r}: {exc.strerror}") from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does
        try:
            probe.bind(sockaddr)
        except OSError as exc:
            raise InputError("--port", "", f"cannot serve on {address}:{port} ({exc.strerror}); "
                             "stop what holds it or choose another --port") from None


def _serve(command: list[str]) -> int:
    """Run streamlit until it exits; its exit status, 0 when stopped by SIGTERM. A SIGTERM or
    Ctrl-C to infercast stops streamlit too, so no server is left behind."""
    import signal
    import subprocess

    child = subprocess.Popen(command)
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: child.terminate())
    try:
        status = child.wait()
    except KeyboardInterrupt:
        child.terminate()
        child.wait(timeout=10)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0 if status == -signal.SIGTERM else status


def cmd_dashboard(args: argparse.Namespace) -> int:
    command = dashboard_command(args)
    _check_port_free(args.address, args.port)
    print(f"infercast: dashboard on http://{args.address}:{args.port} (Ctrl-C stops it)", file=sys.stderr)
    status = _serve(command)
    if status != 0:
        print(f"infercast: error: the dashboard's streamlit exited with status {status} "
              "(its own messages are above)", file=sys.stderr)
        return status if 0 < status < 256 else 1
    return 0


def _plan_inputs(args: argparse.Namespace, table_name: str) -> tuple[dict, dict, str, Path]:
    """The scenario dict (with command-line SLO/seed overrides) and its [plan] or [sweep] table."""
    from sim.planning.capacity import load_plan_file

    data, plan_table, sweep_table, where, base = load_plan_file(args.scenario)
    for key in ("deployment", "scheduler", "workload", "slo", "economics", "measurement", "speculative"):
        if key in data and not isinstance(data[key], dict):  # the planner fills some of them in
            raise InputError(where, key, f"expected a table of settings, got {type(data[key]).__name__}")
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
    import os

    from sim.planning.executors import make_executor

    most = MAX_WORKERS_PER_CPU * (os.cpu_count() or 1)
    if args.workers is not None and not 1 <= args.workers <= most:
        raise InputError("command line", "--workers", f"expected 1 to {most} ({MAX_WORKERS_PER_CPU} per CPU), "
                         f"got {args.workers}")
    if args.workers is not None and args.executor != "local":
        raise InputError("command line", "--workers",
                         f"sizes the local pool; not used with --executor {args.executor}")
    if args.address is not None and args.executor != "ray":
        raise InputError("command line", "--address",
                         f"a Ray cluster address; not used with --executor {args.executor}")
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
    """Files first (money of unpriced candidates as null), then the terminal text."""
    import json

    from sim.report.document import result_text, unpriced_as_null, write_report

    result = unpriced_as_null(result)
    if args.json:
        write_text_atomic(args.json, json.dumps(result, indent=1, allow_nan=False) + "\n")
    for out in args.report:
        write_report(result, out)
        print(f"infercast: wrote {out}", file=sys.stderr)
    if not args.quiet:
        print(result_text(result))


def _trace_warnings(data: dict, where: str, base: Path) -> list[str]:
    """What replaying the scenario's trace changes (rows dropped, sorted); the planner's runs
    replay windows of it. Printed after the result, so that an error stays the only line."""
    from sim.traffic import traces
    from sim.traffic.workload import trace_from_dict, workload_warnings

    workload = data.get("workload")
    if not isinstance(workload, dict) or "trace" not in workload:
        return []
    spec = trace_from_dict(workload["trace"], where, "workload.trace", base)
    return workload_warnings(traces.load_trace_spec(spec).notes)


def _check_report_paths(paths: list[str]) -> None:
    from sim.report.document import report_format

    for out in paths:
        report_format(out)
        check_writable(out)


def _run_and_write(args: argparse.Namespace, label: str, units: str, run, warnings: list[str]) -> int:
    """Run a plan or sweep on the chosen executor with a progress bar, write its outputs, and
    exit 130 when Ctrl-C stopped it (the finished part is kept and written)."""
    bar = _ProgressBar(label, not args.no_progress)
    with _executor(args) as executor:
        try:
            result = run(executor, bar)
        finally:
            bar.close()
    _write_outputs(result, args)
    for line in warnings:
        print(f"infercast: warning: {line}", file=sys.stderr)
    if result["interrupted"]:
        print(f"infercast: interrupted; finished {units} were kept", file=sys.stderr)
        return 130
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from sim.planning.capacity import candidates_from, plan, settings_from_dict

    check_writable(args.json)
    _check_report_paths(args.report)
    data, table, where, base = _plan_inputs(args, "plan")
    warnings = _trace_warnings(data, where, base)
    candidates = candidates_from(args.candidates, table, where)
    overrides = {"target_rate_per_s": args.target_rate, "seeds": args.seeds, "confidence": args.confidence,
                 "stat": args.stat, "rel_tol": args.rel_tol, "requests_per_run": args.requests_per_run,
                 "run_duration_s": args.run_duration_s,
                 "load_factors": tuple(args.load_factors) if args.load_factors is not None else None}
    settings = settings_from_dict({k: v for k, v in table.items() if k != "candidates"}, where, overrides)
    return _run_and_write(args, "plan", "candidates",
                          lambda executor, bar: plan(data, candidates, settings, executor, where, base, bar),
                          warnings)


def cmd_sweep(args: argparse.Namespace) -> int:
    from sim.planning.capacity import candidates_from
    from sim.planning.sweep import sweep

    check_writable(args.json)
    _check_report_paths(args.report)
    data, table, where, base = _plan_inputs(args, "sweep")
    warnings = _trace_warnings(data, where, base)
    for key in table:
        if key not in ("rates", "candidates", "stat", "requests_per_run", "run_duration_s", "replicas"):
            raise InputError(where, f"sweep.{key}", "unknown key; expected rates, candidates, stat, "
                             "requests_per_run, run_duration_s, replicas")
    rates = args.rates if args.rates is not None else (None if args.auto else table.get("rates"))
    candidates = None
    if args.candidates is not None or table.get("candidates"):
        candidates = candidates_from(args.candidates, table, where)
    return _run_and_write(args, "sweep", "points", lambda executor, bar: sweep(
        data, candidates, rates, executor, where, base, bar, stat=args.stat or table.get("stat", "p99"),
        requests_per_run=args.requests_per_run or table.get("requests_per_run"),
        replicas=args.replicas or table.get("replicas"),
        run_duration_s=args.run_duration_s or table.get("run_duration_s")), warnings)


def cmd_report(args: argparse.Namespace) -> int:
    from sim.report.document import load_result, render, report_format

    _check_report_paths(args.output)
    result = load_result(args.result)
    texts = {}
    for out in args.output:  # every report rendered before any is written
        try:
            texts[out] = render(result, report_format(out))
        except InputError:
            raise
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            field = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else ""
            raise InputError(args.result, field, f"missing or malformed in the result ({type(exc).__name__}: "
                             f"{exc}); expected the JSON of `infercast plan --json` or `sweep --json`") from None
    for out, text in texts.items():
        write_text_atomic(out, text)
        print(f"infercast: wrote {out}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """The exit status: 0, 2 for bad input (one line on stderr), 130 when interrupted, 141 when
    stdout's reader went away; argparse's --help and usage errors return theirs (0, 2)."""
    commands = {"simulate": cmd_simulate, "profiles": cmd_profiles, "dashboard": cmd_dashboard,
                "plan": cmd_plan, "sweep": cmd_sweep, "report": cmd_report}
    try:
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as exc:  # --help, or a usage error already said in one line
            sys.stdout.flush()
            return exc.code if isinstance(exc.code, int) else 2
        status = commands[args.command](args)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return status
    except InputError as exc:
        print(f"infercast: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("infercast: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return stdout_gone()


if __name__ == "__main__":
    sys.exit(main())
