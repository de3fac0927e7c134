"""Regressions of a bad-input sweep of the command lines: each input that once gave a traceback,
a hang, or exit 0 with a wrong answer now gets one line on stderr naming the file or flag and the
field, and exit status 2 (or the fixed behaviour: a warning with a count, "no price", "no SLO set",
a quiet end when stdout's reader left)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sim.cli import main

REPO = Path(__file__).resolve().parents[2]
QUICK = ["--model", "llama-3-8b", "--profile", "h100-sxm", "--input-tokens", "100", "--output-tokens", "20",
         "--num-requests", "40"]
TINY_PLAN = """
[model]
name = "llama-3-8b"
[deployment]
profile = "h100-sxm"
[workload]
num_requests = 40
arrival = {process = "poisson", rate_per_s = 5.0}
input_tokens = 100
output_tokens = 20
[slo]
ttft_s = 1.0
[plan]
seeds = 1
load_factors = []
requests_per_run = 20
run_duration_s = 1.0
max_requests_per_run = 60
verify_requests = 40
"""


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(list(argv))
    return status, out.getvalue(), err.getvalue()


def refused(*argv: str) -> str:
    """The one line of a refusal (exit 2)."""
    status, _, err = run(*argv)
    lines = err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and lines[0].startswith("infercast: error: "), (status, err)
    return lines[0]


# ---- tracebacks -----------------------------------------------------------------------------------

@pytest.mark.parametrize("what", ["scenario", "profile", "trace", "report"])
def test_non_utf8_input_is_named(tmp_path, what):
    bad = tmp_path / {"scenario": "s.toml", "profile": "p.json", "trace": "t.csv", "report": "r.json"}[what]
    bad.write_bytes(b'seed = 1\n[model]\nname = "llama\xff\xfe"\n')
    argv = {"scenario": ["simulate", str(bad)],
            "profile": ["simulate", *QUICK, "--rate", "1", "--profile", str(bad)],
            "trace": ["simulate", "--model", "llama-3-8b", "--profile", "h100-sxm", "--trace", str(bad)],
            "report": ["report", str(bad), "-o", str(tmp_path / "r.md")]}[what]
    line = refused(*argv)
    assert str(bad) in line and "UTF-8" in line


def test_a_binary_trace_is_refused(tmp_path):
    bad = tmp_path / "trace.csv"
    bad.write_bytes(bytes(range(256)) * 8)
    line = refused("simulate", "--model", "llama-3-8b", "--profile", "h100-sxm", "--trace", str(bad))
    assert str(bad) in line


@pytest.mark.parametrize("count", ["1e12", "1000000000000", "1e8", "3000000"])
def test_a_run_too_large_is_refused_up_front(count):
    start = time.perf_counter()
    line = refused("simulate", *QUICK, "--rate", "1", "--num-requests", count)
    assert "workload.num_requests" in line and "MAX_REQUESTS_PER_RUN" in line
    assert time.perf_counter() - start < 5  # refused, not simulated


@pytest.mark.parametrize("field", ["question", "candidates[0].status", "candidates[0].monthly"])
def test_a_plan_result_missing_a_field_is_named(tmp_path, plan_result, field):
    result = json.loads(json.dumps(plan_result))
    if field == "question":
        del result["question"]
    else:
        del result["candidates"][0][field.split(".")[1]]
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(result))
    line = refused("report", str(path), "-o", str(tmp_path / "r.md"))
    assert field in line and str(path) in line
    assert not (tmp_path / "r.md").exists()


def _closed_stdout_run(argv: list[str]) -> subprocess.CompletedProcess:
    """argv with stdout a pipe whose reader has already gone (as `| head` after its lines)."""
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run(argv, stdout=write, stderr=subprocess.PIPE, text=True, cwd=REPO, timeout=120)
    finally:
        os.close(write)


@pytest.mark.parametrize("argv", [["-m", "sim", "profiles", "list"], ["-m", "sim", "--help"],
                                  ["-m", "calibrate", "validate", "--help"], ["-m", "calibrate", "--help"],
                                  ["-m", "calibrate", "validate", "--profile", "amd-epyc-2vcpu-cpu", "--model",
                                   "llama-small-150m", "--rate", "5", "--input-tokens", "8", "--output-tokens",
                                   "4", "--num-requests", "4"]])
def test_a_closed_stdout_ends_quietly(argv):
    done = _closed_stdout_run([sys.executable, *argv])
    # 141 (128 + SIGPIPE) where the command saw the pipe close; argparse's --help ignores it itself
    expected = (0, 141) if "--help" in argv else (141,)
    assert done.returncode in expected and done.stderr == ""


# ---- hangs ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("flags, named", [
    (["--num-requests", "100000000"], "MAX_VALIDATE_REQUESTS"),
    (["--num-requests", "1e8"], "MAX_VALIDATE_REQUESTS"),
    (["--num-requests", "4000"], "--max-wall-s"),  # 4,000 requests at 2/s: half an hour of real time
])
def test_calibrate_validate_refuses_a_run_beyond_its_budget_up_front(capsys, flags, named):
    from calibrate.validate_cli import main as validate_main

    start = time.perf_counter()
    status = validate_main(["--profile", "amd-epyc-2vcpu-cpu", "--model", "llama-small-150m", "--rate", "2",
                            "--input-tokens", "64", "--output-tokens", "16", *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and named in err[0], err
    assert time.perf_counter() - start < 30  # refused before a model is loaded


# ---- exit 0 with a wrong answer ---------------------------------------------------------------------

def test_every_prompt_over_the_token_budget_is_refused():
    line = refused("simulate", *QUICK, "--rate", "1", "--input-tokens", "9000")
    assert "scheduler.max_num_batched_tokens" in line and "9000" in line and "8192" in line


def test_some_prompts_over_the_token_budget_are_a_warning_with_the_count(tmp_path):
    scenario = tmp_path / "s.json"
    scenario.write_text(json.dumps({
        "model": "llama-3-8b", "deployment": {"profile": "h100-sxm"},
        "workload": {"num_requests": 40, "arrival": {"process": "poisson", "rate_per_s": 2},
                     "input_tokens": {"dist": "uniform", "min": 4000, "max": 12000}, "output_tokens": 10}}))
    status, out, err = run("simulate", str(scenario))
    assert status == 0
    (warning,) = [line for line in err.splitlines() if "can never be served" in line]
    rejected = int(warning.split("warning: ")[1].split(" of ")[0])
    assert 0 < rejected < 40 and f"{rejected} rejected" in out


@pytest.mark.parametrize("extra, named", [
    (["--rate", "1", "--concurrency", "4"], "--concurrency"),
    (["--rate", "1", "--think-time-s", "1"], "--think-time-s"),
    (["--rate", "1", "--trace", "azure-conv-2023"], "--input-tokens"),
])
def test_contradicting_flags_are_refused(extra, named):
    assert named in refused("simulate", *QUICK, *extra)


def test_an_unpriced_profile_has_no_price_not_zero_dollars(tmp_path):
    out = tmp_path / "s.json"
    status, text, _ = run("simulate", *QUICK, "--rate", "1", "--profile", "b200", "--json", str(out))
    assert status == 0 and "no price" in text and "$0" not in text
    cost = json.loads(out.read_text())["cost"]
    assert cost["usd"] is None and cost["usd_per_1m_tokens"] is None and cost["is_priced"] is False


def test_an_unpriced_plan_candidate_has_no_price_in_every_report(tmp_path, plan_result):
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan_result))
    outs = [tmp_path / f"r.{ext}" for ext in ("md", "html", "json")]
    status, _, _ = run("report", str(path), *[a for o in outs for a in ("-o", str(o))])
    assert status == 0
    b200_rows = [line for line in outs[0].read_text().splitlines() if line.startswith("| b200 |")]
    assert b200_rows and all("$0" not in line for line in b200_rows)
    assert "no price" in b200_rows[0] and "no price" in outs[1].read_text()
    (b200,) = [c for c in json.loads(outs[2].read_text())["result"]["candidates"] if c["label"] == "b200"]
    assert b200["monthly"]["usd"] is None and b200["usd_per_1m_tokens"] is None


def test_no_slo_is_not_100_percent_attainment():
    status, out, _ = run("simulate", *QUICK, "--rate", "1")
    assert status == 0 and "no SLO set" in out and "attainment" not in out


def test_dropped_zero_output_rows_are_counted_and_said(tmp_path):
    trace = tmp_path / "burst.csv"
    rows = ["Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type"]
    rows += [f"{i * 0.5},ChatGPT,{100 + i},{0 if i % 5 == 0 else 20},{120 + i},Conversation log" for i in range(40)]
    trace.write_text("\n".join(rows) + "\n")
    out = tmp_path / "s.json"
    status, _, err = run("simulate", "--model", "llama-3-8b", "--profile", "h100-sxm", "--trace", str(trace),
                         "--json", str(out), "--quiet")
    assert status == 0 and "dropped 8 trace rows with 0 output tokens" in err
    summary = json.loads(out.read_text())
    assert summary["workload"]["notes"]["num_zero_output_dropped"] == 8 and summary["requests"]["arrived"] == 32


# ---- every flag -----------------------------------------------------------------------------------

@pytest.mark.parametrize("flags, named", [
    (["--num-requests", "0"], "--num-requests"), (["--num-requests", "-5"], "--num-requests"),
    (["--replicas", "0"], "--replicas"), (["--replicas", "20000"], "deployment.replicas"),
    (["--tp", "0"], "--tp"), (["--max-num-seqs", "0"], "--max-num-seqs"),
    (["--max-num-batched-tokens", "0"], "--max-num-batched-tokens"),
    (["--slo-ttft-s", "nan"], "--slo-ttft-s"), (["--slo-tpot-s", "inf"], "--slo-tpot-s"),
    (["--slo-e2e-s", "-1"], "--slo-e2e-s"), (["--gpu-memory-utilization", "2"], "--gpu-memory-utilization"),
    (["--gpu-memory-utilization", "0"], "gpu_memory_utilization"), (["--seed", "-1"], "--seed"),
    (["--seed", str(2**64)], "--seed"), (["--acceptance-rate", "1.5"], "--acceptance-rate"),
    (["--speculative-tokens", "4"], "speculative.draft_model"),
    (["--scheduler", "static", "--max-queue-delay-s", "nan"], "--max-queue-delay-s"),
    (["--scheduler", "static", "--max-batch-size", "0"], "--max-batch-size"),
    (["--rate", "1e-12"], "workload.arrival"), (["--rate", "1e12"], "workload.arrival"),
    (["--input-tokens", "2.5"], "--input-tokens"),
])
def test_simulate_flag_values(flags, named):
    assert named in refused("simulate", *QUICK, "--rate", "1", *flags)


@pytest.mark.parametrize("flags, named", [
    (["--concurrency", "0"], "--concurrency"), (["--concurrency", "2", "--think-time-s", "nan"], "--think-time-s"),
])
def test_closed_loop_flag_values(flags, named):
    assert named in refused("simulate", *QUICK, *flags)


def test_a_closed_loop_with_more_users_than_requests_ends():
    status, _, _ = run("simulate", *QUICK, "--concurrency", "1000000000000", "--quiet")
    assert status == 0


@pytest.mark.parametrize("command, flags, named", [
    ("plan", ["--load-factors", "inf"], "--load-factors"), ("plan", ["--confidence", "1.5"], "plan.confidence"),
    ("plan", ["--seeds", "0"], "plan.seeds"), ("plan", ["--target-rate", "nan"], "--target-rate"),
    ("plan", ["--rel-tol", "nan"], "plan.rel_tol"), ("plan", ["--slo-ttft-s", "inf"], "--slo-ttft-s"),
    ("plan", ["--workers", "100000"], "--workers"), ("plan", ["--requests-per-run", "0"], "--requests-per-run"),
    ("sweep", ["--replicas", "0"], "--replicas"), ("sweep", ["--requests-per-run", "0"], "--requests-per-run"),
    ("sweep", ["--rates", "inf"], "--rates"), ("sweep", ["--workers", "2", "--executor", "serial"], "--workers"),
])
def test_plan_and_sweep_flag_values(tmp_path, command, flags, named):
    scenario = tmp_path / "s.toml"
    scenario.write_text(TINY_PLAN)
    assert named in refused(command, str(scenario), "--candidates", "h100-sxm", "--no-progress", *flags)


@pytest.mark.parametrize("argv, named", [
    (["report", "missing.json", "-o", "r.pdf"], "r.pdf"),
    (["profiles", "show", "nope"], "nope"),
    (["profiles", "validate", "missing.json"], "profiles validate"),
])
def test_report_and_profiles_arguments(argv, named):
    assert named in refused(*argv)


# ---- the scenario's [plan] and [sweep] tables ---------------------------------------------------------

def test_plan_and_sweep_tables_are_ignored_by_simulate_and_other_sections_refused(tmp_path):
    scenario = tmp_path / "s.toml"
    scenario.write_text(TINY_PLAN + "\n[sweep]\nrates = [1.0]\n")
    assert run("simulate", str(scenario), "--quiet")[0] == 0
    scenario.write_text(TINY_PLAN + "\n[planner]\nseeds = 1\n")
    assert "planner: unknown section" in refused("simulate", str(scenario))


# ---- calibrate validate ----------------------------------------------------------------------------

@pytest.mark.parametrize("flags, named", [
    (["--profile", "h100-sxm", "--scenario", "examples/chat-8b.toml"], "provenance.source"),
    (["--profile", "amd-epyc-2vcpu-cpu", "--scenario", "examples/chat-8b.toml"], "deployment.profile"),
    (["--profile", "amd-epyc-2vcpu-cpu", "--model", "llama-small-150m", "--rate", "2", "--input-tokens", "8",
      "--output-tokens", "4", "--num-requests", "4", "--json", "/nonexistent/v.json"], "/nonexistent/v.json"),
    (["--scenario", "examples/chat-8b.toml"], "--profile"),
])
def test_calibrate_validate_refuses_up_front(capsys, monkeypatch, flags, named):
    from calibrate.validate_cli import main as validate_main

    monkeypatch.chdir(REPO)
    start = time.perf_counter()
    status = validate_main(flags)
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and named in err[0] and err[0].startswith("calibrate validate: "), err
    assert time.perf_counter() - start < 30


@pytest.fixture(scope="module")
def plan_result(tmp_path_factory) -> dict:
    """A tiny plan with a priced (h100-sxm) and an unpriced (b200) candidate."""
    folder = tmp_path_factory.mktemp("plan")
    scenario, out = folder / "s.toml", folder / "plan.json"
    scenario.write_text(TINY_PLAN)
    status, _, err = run("plan", str(scenario), "--candidates", "h100-sxm", "b200", "--executor", "serial",
                         "--no-progress", "--quiet", "--json", str(out))
    assert status == 0, err
    return json.loads(out.read_text())
