"""Fuzzing the `infercast` command line in-process (`sim.cli.main`): scenario files with random
keys, types, values, missing sections and random bytes, and random flag lists for simulate, plan,
sweep, report and profiles. Whatever the input, the command ends with status 0, or with status 2
and exactly one line on stderr that starts "infercast: "; never an exception, never past a time
limit. Workloads stay small: generated request counts are either <= 200 or beyond the up-front
refusal (sim.scenario.MAX_REQUESTS_PER_RUN), and plan/sweep run serially with tiny settings."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import signal
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.cli import main
from sim.scenario import MAX_REQUESTS_PER_RUN
from sim.report.toml_writer import dumps as toml_dumps

CALL_LIMIT_S = 30  # one command; the slowest valid input here (a tiny plan) takes about a second
# Reproducible by default (the same examples every run); INFERCAST_FUZZ_SCALE=20 explores 20x more,
# from a random start.
SCALE = int(os.environ.get("INFERCAST_FUZZ_SCALE", "1"))
REPO = Path(__file__).resolve().parents[2]


def fuzz(max_examples: int) -> settings:
    return settings(max_examples=max_examples * SCALE, deadline=None, derandomize=SCALE == 1,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large, HealthCheck.filter_too_much])

BASE: dict = {
    "seed": 1,
    "model": {"name": "llama-3-8b"},
    "deployment": {"profile": "h100-sxm", "replicas": 1},
    "scheduler": {"policy": "continuous", "max_num_seqs": 64},
    "workload": {"num_requests": 40, "arrival": {"process": "poisson", "rate_per_s": 5.0},
                 "input_tokens": 100, "output_tokens": 20},
    "slo": {"ttft_s": 1.0, "tpot_s": 0.1},
    "economics": {"pue": 1.2},
    "measurement": {"warmup_fraction": 0.1},
    "plan": {"candidates": ["h100-sxm"], "seeds": 1, "load_factors": [], "requests_per_run": 20,
             "run_duration_s": 1.0, "max_requests_per_run": 60, "verify_requests": 40},
    "sweep": {"rates": [1.0, 4.0], "requests_per_run": 30},
}

PATHS = [  # where a mutation lands (a missing parent is created)
    ("seed",), ("model",), ("model", "name"), ("model", "weight_dtype"), ("model", "kv_dtype"),
    ("deployment",), ("deployment", "profile"), ("deployment", "replicas"), ("deployment", "tp"),
    ("deployment", "gpu_memory_utilization"), ("deployment", "router"), ("deployment", "speed_variability"),
    ("scheduler",), ("scheduler", "policy"), ("scheduler", "max_num_seqs"), ("scheduler", "max_num_batched_tokens"),
    ("scheduler", "block_size_tokens"), ("scheduler", "max_batch_size"), ("scheduler", "max_queue_delay_s"),
    ("scheduler", "enable_prefix_caching"),
    ("workload",), ("workload", "num_requests"), ("workload", "arrival"), ("workload", "arrival", "process"),
    ("workload", "arrival", "rate_per_s"), ("workload", "arrival", "concurrency"), ("workload", "arrival", "cv"),
    ("workload", "input_tokens"), ("workload", "output_tokens"), ("workload", "trace"),
    ("workload", "trace", "path"), ("workload", "trace", "max_requests"), ("workload", "trace", "rate_per_s"),
    ("slo",), ("slo", "ttft_s"), ("slo", "tpot_s"), ("slo", "e2e_s"),
    ("economics", "price_usd_per_device_h"), ("economics", "pue"), ("economics", "hardware_usd_per_device"),
    ("measurement", "warmup_fraction"), ("measurement", "drain_fraction"), ("measurement", "timeline_interval_s"),
    ("speculative",), ("speculative", "draft_model"), ("speculative", "num_speculative_tokens"),
    ("speculative", "acceptance_rate"),
    ("plan",), ("plan", "candidates"), ("plan", "seeds"), ("plan", "confidence"), ("plan", "stat"),
    ("plan", "load_factors"), ("plan", "target_rate_per_s"), ("sweep",), ("sweep", "rates"), ("sweep", "replicas"),
    ("nonsense",), ("workload", "nonsense"), ("slo", "nonsense"),
]
WORDS = ["inf", "-inf", "nan", "continuous", "chunked", "static", "poisson", "gamma", "closed", "all_at_once",
         "constant", "piecewise", "fixed", "uniform", "lognormal", "azure-conv-2023", "mooncake-conversation",
         "h100-sxm", "b200", "l4", "h100-sxm:tp2", "llama-3-70b", "llama-3.2-1b", "bf16", "fp8", "int4",
         "least_kv", "", "x" * 300, "../../etc/passwd", "p99", "\u00e9\u4e2d\U0001f600"]


def counts() -> st.SearchStrategy[int]:
    """Request counts and other integers: small, or beyond the up-front refusal."""
    return st.one_of(st.integers(-3, 200), st.integers(MAX_REQUESTS_PER_RUN + 1, 10**30))


def scalars() -> st.SearchStrategy:
    return st.one_of(counts(), st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(WORDS),
                     st.text(max_size=12), st.booleans(), st.none())


def values() -> st.SearchStrategy:
    return st.one_of(scalars(), st.lists(scalars(), max_size=4),
                     st.dictionaries(st.sampled_from(["process", "rate_per_s", "dist", "value", "min", "max",
                                                      "path", "concurrency", "sigma", "mean", "x"]),
                                     scalars(), max_size=4))


@st.composite
def scenario_dicts(draw) -> dict:
    data = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(0, 4))):
        path = draw(st.sampled_from(PATHS))
        parent = data
        for key in path[:-1]:
            if not isinstance(parent.get(key), dict):
                parent[key] = {}
            parent = parent[key]
        if draw(st.booleans()):
            parent.pop(path[-1], None)
        else:
            parent[path[-1]] = draw(values())
    return data


def _plain(value):
    """A value TOML and YAML can write (None dropped, tuples as lists)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value if v is not None]
    return value


@st.composite
def scenario_files(draw, tmp_path: Path, adjust=None) -> Path:
    """A scenario file: the base with random mutations, as TOML, JSON or YAML, or random bytes, or a
    valid file with bytes overwritten; adjust(dict) may bound it first (plan and sweep sizes)."""
    data = draw(scenario_dicts())
    if adjust is not None:
        adjust(data)
    kind = draw(st.sampled_from(["toml", "toml", "json", "json", "yaml", "bytes", "corrupt"]))
    path = tmp_path / f"s{draw(st.integers(0, 10**9))}.{ {'yaml': 'yaml', 'json': 'json'}.get(kind, 'toml')}"
    if kind == "toml":
        try:
            text = toml_dumps(_plain(data))
        except (TypeError, ValueError):
            text = json.dumps(data)
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
    elif kind == "json":
        path.write_text(json.dumps(data), encoding="utf-8")
    elif kind == "yaml":
        path.write_text(yaml.safe_dump(_plain(data), allow_unicode=True), encoding="utf-8")
    elif kind == "bytes":
        path.write_bytes(draw(st.binary(max_size=300)))
    else:  # a valid file with some bytes overwritten or cut short
        raw = bytearray(toml_dumps(_plain(BASE)).encode())
        for _ in range(draw(st.integers(1, 4))):
            raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
        path.write_bytes(bytes(raw[:draw(st.integers(0, len(raw)))]))
    return path


def run(argv: list[str]) -> tuple[int, str, str]:
    """main(argv) with stdout and stderr captured, stopped (TimeoutError) past CALL_LIMIT_S."""
    def too_long(signum, frame):
        raise TimeoutError(f"infercast {' '.join(argv)} ran past {CALL_LIMIT_S} s")

    out, err = io.StringIO(), io.StringIO()
    previous = signal.signal(signal.SIGALRM, too_long)
    signal.alarm(CALL_LIMIT_S)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = main(argv)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    return status, out.getvalue(), err.getvalue()


def _inputs(argv: list[str]) -> str:
    """The input files of argv, for a failure's message."""
    shown = []
    for arg in argv:
        path = Path(arg)
        if arg.startswith("/") and path.is_file():
            shown.append(f"{arg}: {path.read_bytes()[:1500]!r}")
    return "\n".join(shown)


def check(argv: list[str]) -> int:
    try:
        status, _, err = run(argv)
    except BaseException as exc:
        raise AssertionError(f"infercast {argv} raised {exc!r}\n{_inputs(argv)}") from exc
    lines = err.strip().splitlines()
    assert status in (0, 2), f"{argv}: status {status}\n{err}\n{_inputs(argv)}"
    if status == 2:
        assert len(lines) == 1 and lines[0].startswith("infercast: "), f"{argv}:\n{err}\n{_inputs(argv)}"
    return status


def opts(valid: list[str], invalid: list[str]) -> st.SearchStrategy[str]:
    """A flag's value: valid two times in three."""
    return st.one_of(st.sampled_from(valid), st.sampled_from(valid), st.sampled_from(invalid))


SIM_FLAGS: dict[str, st.SearchStrategy] = {
    "--model": opts(["llama-3-8b", "llama-3-70b"], ["nope", ""]),
    "--profile": opts(["h100-sxm", "b200", "l4", "amd-epyc-2vcpu-cpu"], ["nope", "h100-sxm:tp2"]),
    "--rate": opts(["1", "5", "inf", "200"], ["0", "-1", "nan", "1e-12", "1e12", "x"]),
    "--concurrency": opts(["1", "4", "1e3"], ["0", "-2", "2.5"]),
    "--think-time-s": opts(["0", "0.5"], ["-1", "nan", "inf", "1e9"]),
    "--trace": opts(["azure-conv-2023", "mooncake-conversation"], ["missing.csv"]),
    "--input-tokens": opts(["1", "100", "9000", "1e2"], ["0", "-5", "x", "99999999999"]),
    "--output-tokens": opts(["1", "20", "1e1"], ["0", "-1", "100000"]),
    "--num-requests": opts(["1", "30", "150"], ["0", "-1", "1e12", "1000000000000", "2.5", "3000000"]),
    "--scheduler": opts(["continuous", "chunked", "static"], ["fifo"]),
    "--max-num-seqs": opts(["1", "8", "256"], ["0", "-1", "100000000"]),
    "--max-num-batched-tokens": opts(["16", "64", "8192"], ["0", "1"]),
    "--max-batch-size": opts(["1", "4"], ["0"]),
    "--max-queue-delay-s": opts(["0", "0.1"], ["nan", "inf", "-1"]),
    "--speculative-draft": opts(["llama-3.2-1b"], ["nope"]),
    "--speculative-tokens": opts(["1", "4"], ["0"]),
    "--acceptance-rate": opts(["0", "0.7", "1"], ["1.5", "nan"]),
    "--replicas": opts(["1", "2", "16"], ["0", "-1", "20000"]),
    "--tp": opts(["1"], ["2", "0"]),
    "--router": opts(["round_robin", "least_kv", "random", "least_outstanding"], ["bogus"]),
    "--weight-dtype": opts(["bf16", "fp8", "int4"], ["fp64"]),
    "--kv-dtype": opts(["bf16", "fp8"], ["int8"]),
    "--gpu-memory-utilization": opts(["0.9", "0.5"], ["0", "2", "nan", "-0.5"]),
    "--slo-ttft-s": opts(["1", "0.01"], ["0", "-1", "nan", "inf"]),
    "--slo-tpot-s": opts(["0.05"], ["0", "nan"]),
    "--slo-e2e-s": opts(["10"], ["-3", "inf"]),
    "--seed": opts(["0", "7", str(2**63 - 1)], ["-1", "99999999999999999999999", "1.5"]),
    "--enable-prefix-caching": st.just(None),
    "--quiet": st.just(None),
}
RUN_FLAGS: dict[str, st.SearchStrategy] = {
    "--slo-ttft-s": opts(["1", "0.05"], ["0", "nan", "inf"]),
    "--slo-tpot-s": opts(["0.1"], ["-1"]),
    "--stat": opts(["p99", "mean", "p50"], ["p42"]),
    "--seed": opts(["0", "1e3"], ["-1"]),
    "--requests-per-run": opts(["20", "30"], ["0", "-5", "5", "1e9"]),
    "--workers": opts(["1"], ["0", "100000"]),
    "--candidates": opts(["h100-sxm", "b200", "h100-sxm l4"], ["nope", "h100-sxm:tp0", "h100-sxm:tp2", "l4:tpx"]),
    "--json": opts(["OUT/r.json"], ["/nonexistent/x.json", "OUT"]),
    "--report": opts(["OUT/r.md", "OUT/r.html", "OUT/r.json"], ["OUT/r.pdf", "/nonexistent/r.html"]),
}
PLAN_FLAGS = {**RUN_FLAGS,
              "--target-rate": opts(["1", "20"], ["0", "nan", "inf", "1e-9"]),
              "--seeds": opts(["1"], ["0", "-2"]),
              "--confidence": opts(["0.9", "1"], ["0", "1.5", "nan"]),
              "--load-factors": opts(["", "2"], ["nan", "inf", "-1"]),
              "--rel-tol": opts(["0.1", "0.3"], ["0", "nan", "5"])}
SWEEP_FLAGS = {**RUN_FLAGS,
               "--rates": opts(["1 2", "3", "0.5 100"], ["0", "inf", "nan", "x"]),  # not --auto: a long search
               "--replicas": opts(["1", "3"], ["0", "-1"])}


@st.composite
def flag_lists(draw, table: dict[str, st.SearchStrategy], out_dir: Path) -> list[str]:
    argv: list[str] = []
    for flag in draw(st.lists(st.sampled_from(sorted(table)), max_size=4, unique=True)):
        value = draw(table[flag])
        argv.append(flag)
        if value is not None:
            argv += [v.replace("OUT", str(out_dir)) for v in value.split(" ")] if value else []
    if draw(st.integers(0, 19)) == 19:  # (hypothesis draws the simplest value, 0, most often)
        argv.append(draw(st.sampled_from(["--bogus", "-x", "--", "extra"])))
    return argv


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@fuzz(500)
@given(data=st.data())
def test_simulate_scenario_files(files, data):
    path = data.draw(scenario_files(files))
    extra = data.draw(st.sampled_from([[], ["--num-requests", "30"], ["--quiet"], ["--seed", "3"]]))
    check(["simulate", str(path), *extra])


@fuzz(500)
@given(data=st.data())
def test_simulate_flags(files, data):
    argv = data.draw(flag_lists(SIM_FLAGS, files))
    if data.draw(st.integers(0, 3)) < 3:  # mostly a complete quick what-if with the random flags on top
        argv = ["--model", "llama-3-8b", "--profile", "h100-sxm", "--rate", "5", "--input-tokens", "100",
                "--output-tokens", "20", "--num-requests", "30", *argv]
    check(["simulate", *argv])


def small_plan(data: dict) -> None:
    """Keep a mutated [plan] quick: the planner's run sizes stay tiny, at most 2 seeds, and load
    factors (which each size a cluster) at most 3; other values and types stay as drawn."""
    plan = data.get("plan")
    if plan is None:  # no [plan]: the planner's defaults are sized for real plans
        data["plan"] = plan = {}
    if isinstance(plan, dict):
        plan.update({k: BASE["plan"][k] for k in ("run_duration_s", "max_requests_per_run", "verify_requests")})
        if isinstance(plan.get("seeds"), int) and plan["seeds"] > 2:
            plan["seeds"] = 2
        factors = plan.get("load_factors")
        if isinstance(factors, list) and any(isinstance(f, (int, float)) and f > 3 for f in factors):
            plan["load_factors"] = [2]


def explicit_rates(data: dict) -> None:
    """A [sweep] without rates searches for saturation (many runs): give it the base's."""
    sweep = data.get("sweep")
    if not isinstance(sweep, dict):
        data["sweep"] = sweep = {}
    if sweep.get("rates") is None:
        sweep["rates"] = BASE["sweep"]["rates"]


@fuzz(80)
@given(data=st.data())
def test_plan(files, data):
    path = data.draw(scenario_files(files, small_plan))
    argv = data.draw(flag_lists(PLAN_FLAGS, files))
    check(["plan", str(path), *argv, "--executor", "serial", "--no-progress", "--quiet"])


@fuzz(80)
@given(data=st.data())
def test_sweep(files, data):
    path = data.draw(scenario_files(files, explicit_rates))
    argv = data.draw(flag_lists(SWEEP_FLAGS, files))
    check(["sweep", str(path), *argv, "--executor", "serial", "--no-progress", "--quiet"])


@pytest.fixture(scope="module")
def plan_result(files) -> dict:
    path = files / "base.json"
    path.write_text(json.dumps(BASE))
    out = files / "plan.json"
    assert check(["plan", str(path), "--candidates", "h100-sxm", "b200", "--executor", "serial",
                  "--no-progress", "--quiet", "--json", str(out)]) == 0
    return json.loads(out.read_text())


def _mutated(result, draw) -> object:
    """The result with a few fields deleted or given another type."""
    result = copy.deepcopy(result)
    for _ in range(draw(st.integers(1, 3))):
        node, key = None, None
        current = result
        for _ in range(draw(st.integers(1, 5))):
            if isinstance(current, dict) and current:
                node, key = current, draw(st.sampled_from(sorted(current)))
            elif isinstance(current, list) and current:
                node, key = current, draw(st.integers(0, len(current) - 1))
            else:
                break
            current = node[key]
        if node is None:
            return draw(values())
        if isinstance(node, dict) and draw(st.booleans()):
            del node[key]
        else:
            node[key] = draw(values())
    return result


@fuzz(120)
@given(data=st.data())
def test_report(files, plan_result, data):
    kind = data.draw(st.sampled_from(["mutated", "mutated", "bytes", "text"]))
    path = files / f"r{data.draw(st.integers(0, 10**9))}.json"
    if kind == "mutated":
        path.write_text(json.dumps(_mutated(plan_result, data.draw)))
    elif kind == "bytes":
        path.write_bytes(data.draw(st.binary(max_size=200)))
    else:
        path.write_text(data.draw(st.text(max_size=200)), encoding="utf-8", errors="surrogatepass")
    out = data.draw(st.sampled_from(["r.md", "r.json", "r.txt", "r.html"]))
    check(["report", str(path), "-o", str(files / out)])


@fuzz(60)
@given(data=st.data())
def test_profiles(files, data):
    """show / validate a mutated copy of a shipped profile (or bytes); list with such files on the
    profile search path (INFERCAST_PROFILES)."""
    action = data.draw(st.sampled_from(["list", "show", "validate", "bogus"]))
    folder = files / "profiles"
    folder.mkdir(exist_ok=True)
    path = folder / f"p{data.draw(st.integers(0, 10**9))}.json"
    source = data.draw(st.sampled_from(["bytes", "json", "name"]))
    if source == "bytes":
        path.write_bytes(data.draw(st.binary(max_size=200)))
    elif source == "json":
        document = json.loads((REPO / "profiles" / "h100-sxm.json").read_text())
        path.write_text(json.dumps(_mutated(document, data.draw)))
    argv = ["profiles", action]
    if action in ("show", "validate"):
        argv.append(str(path) if source != "name" else data.draw(st.sampled_from(["h100-sxm", "nope"])))
    before = os.environ.get("INFERCAST_PROFILES")
    os.environ["INFERCAST_PROFILES"] = str(folder)
    try:
        check(argv)
    finally:
        if before is None:
            del os.environ["INFERCAST_PROFILES"]
        else:
            os.environ["INFERCAST_PROFILES"] = before
