"""`infercast simulate`: quick flags and scenario files give the same numbers; bad input is one
line on stderr, exit status 2, and nothing written."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

QUICK = ["--model", "llama-3-8b", "--profile", "h100-sxm", "--rate", "4", "--input-tokens", "1000",
         "--output-tokens", "200", "--num-requests", "300", "--scheduler", "continuous", "--seed", "1"]


def infercast(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sim", *args], capture_output=True, text=True, cwd=cwd)


def test_quick_what_if_writes_json_csv_and_a_scenario_that_reproduces_it(tmp_path):
    out, csv_path, sc = tmp_path / "out.json", tmp_path / "req.csv", tmp_path / "sc.toml"
    run = infercast("simulate", *QUICK, "--json", str(out), "--requests-csv", str(csv_path),
                    "--export-scenario", str(sc))
    assert run.returncode == 0, run.stderr
    assert "TTFT" in run.stdout and "per 1M output tokens" in run.stdout
    summary = json.loads(out.read_text())
    assert summary["requests"]["arrived"] == 300 and not summary["overloaded"]
    assert csv_path.read_text().count("\n") == 301
    again = tmp_path / "again.json"
    assert infercast("simulate", str(sc), "--json", str(again), "--quiet").returncode == 0
    first, second = json.loads(out.read_text()), json.loads(again.read_text())
    assert first["latency"] == second["latency"] and first["energy"] == second["energy"]


def test_rate_inf_and_concurrency_and_trace(tmp_path):
    for extra in (["--rate", "inf"], ["--concurrency", "8"]):
        args = [a for a in QUICK if a not in ("--rate", "4")] + extra + ["--json", str(tmp_path / "o.json")]
        run = infercast("simulate", *args)
        assert run.returncode == 0, run.stderr
    run = infercast("simulate", "--model", "llama-3-8b", "--profile", "h100-sxm", "--trace", "azure-code-2023",
                    "--num-requests", "500", "--json", str(tmp_path / "t.json"), "--quiet")
    assert run.returncode == 0, run.stderr
    assert json.loads((tmp_path / "t.json").read_text())["requests"]["arrived"] == 500


@pytest.mark.parametrize("args, needle", [
    (["--model", "llama-9b", "--profile", "h100-sxm", "--rate", "1"], "--model"),
    (["--model", "llama-3-8b", "--profile", "no-such", "--rate", "1", "--input-tokens", "5",
      "--output-tokens", "5"], "profile"),
    (["--model", "llama-3-8b", "--profile", "h100-sxm", "--rate", "0"], "--rate"),
    (["--model", "llama-3-8b", "--profile", "h100-sxm", "--rate", "1", "--input-tokens", "-5",
      "--output-tokens", "5"], "--input-tokens"),
    (["--model", "llama-3-8b", "--profile", "h100-sxm", "--rate", "1", "--input-tokens", "5",
      "--output-tokens", "5", "--scheduler", "fifo"], "--scheduler"),
    (["--model", "llama-3-70b", "--profile", "l4", "--rate", "1", "--input-tokens", "5",
      "--output-tokens", "5"], "device.memory_bytes"),
    (["--model", "llama-3-8b", "--profile", "h100-sxm", "--trace", "missing.csv"], "trace"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, args, needle):
    out = tmp_path / "out.json"
    run = infercast("simulate", *args, "--json", str(out))
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], run.stderr
    assert not out.exists() and not list(tmp_path.iterdir())


def test_bad_scenario_file_names_file_and_field(tmp_path):
    sc = tmp_path / "bad.toml"
    sc.write_text('[model]\nname = "llama-3-8b"\n[deployment]\nprofile = "h100-sxm"\n'
                  '[scheduler]\npolicy = "magic"\n[workload]\nnum_requests = 5\n')
    run = infercast("simulate", str(sc))
    assert run.returncode == 2 and "bad.toml: scheduler.policy" in run.stderr
    sc.write_text('[model]\nname = "llama-3-8b"\n[deployment]\nprofile = "h100-sxm"\n[workload]\n'
                  'num_requests = 5\narrival = {process = "poisson", rate_per_s = 1}\ninput_tokens = 5\n'
                  'output_tokens = 5\n[slo]\nttft_ms = 3\n')
    run = infercast("simulate", str(sc))
    assert run.returncode == 2 and "slo.ttft_ms: unknown key" in run.stderr


def test_unwritable_output_is_refused_before_running(tmp_path):
    run = infercast("simulate", *QUICK, "--json", str(tmp_path / "no" / "dir" / "o.json"))
    assert run.returncode == 2 and "does not exist" in run.stderr
