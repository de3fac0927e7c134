"""Every scenario in examples/ works with every command it could serve: `infercast simulate` (a few
requests), `plan` and `sweep` (tiny settings, serial), and `calibrate validate`, which serves on
this machine in real time: it either runs (a scenario for a measured CPU profile and a tiny model)
or refuses the example up front with one line and exit 2 (a scenario written for GPUs)."""

from __future__ import annotations

import contextlib
import io
import tomllib
from pathlib import Path

import pytest

from sim.cli import main
from sim.report.toml_writer import dumps

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples").glob("*.toml"))
# the planner's own run sizes, shrunk: what is checked is that the example plans, not the plan
TINY_PLAN = {"seeds": 1, "load_factors": [], "requests_per_run": 20, "run_duration_s": 1.0,
             "max_requests_per_run": 60, "verify_requests": 40}
CPU_PROFILE = "amd-epyc-2vcpu-cpu"


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(list(argv))
    return status, out.getvalue(), err.getvalue()


def test_there_are_examples():
    assert EXAMPLES


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_simulate(example):
    status, out, err = run("simulate", str(example), "--num-requests", "60")
    assert status == 0, err
    assert "requests: 60 arrived" in out


def _tiny_copy(example: Path, folder: Path) -> tuple[Path, dict]:
    """The example with its [plan] settings shrunk (its workload, SLOs and candidates kept)."""
    data = tomllib.loads(example.read_text())
    data["plan"] = {**data.get("plan", {}), **TINY_PLAN}
    path = folder / example.name
    path.write_text(dumps(data))
    return path, data


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_plan(example, tmp_path):
    path, data = _tiny_copy(example, tmp_path)
    candidates = data["plan"].get("candidates") or [data["deployment"]["profile"]]
    status, out, err = run("plan", str(path), "--candidates", candidates[0], "--executor", "serial",
                           "--no-progress")
    assert status == 0, err
    assert out.startswith("Capacity plan:")


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_sweep(example, tmp_path):
    status, out, err = run("sweep", str(example), "--rates", "0.5", "2", "--requests-per-run", "40",
                           "--executor", "serial", "--no-progress", "--json", str(tmp_path / "sweep.json"))
    assert status == 0, err
    assert out.startswith("Load sweep:")


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_calibrate_validate_runs_or_refuses_in_one_line(example, capsys, monkeypatch):
    pytest.importorskip("torch")
    from calibrate.validate_cli import main as validate_main

    monkeypatch.chdir(REPO)
    status = validate_main(["--profile", CPU_PROFILE, "--scenario", str(example.relative_to(REPO)),
                            "--num-requests", "4", "--repeats", "1", "--no-speed-check", "--alone-steps", "0"])
    err = capsys.readouterr().err.strip().splitlines()
    if status != 0:
        assert status == 2 and len(err) == 1 and err[0].startswith("calibrate validate: error: "), err
        assert "deployment.profile" in err[0]  # written for GPUs: refused before a model is loaded


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_every_listed_candidate_fits_the_model(example):
    """Each [plan] / [sweep] candidate is a known profile on which the example's model fits with its
    KV cache (what `plan` checks up front for the candidates it is given)."""
    from sim.cost_model import CostModel
    from sim.kv_cache import kv_capacity
    from sim.planning.capacity import load_plan_file, parse_candidate
    from sim.spec.profile import load_profile
    from sim.scenario import scenario_from_dict

    data, plan, sweep, where, base = load_plan_file(example)
    sc = scenario_from_dict(data, where, base_dir=base)
    model, cfg = sc.model_spec(), sc.scheduler
    for text in {*plan.get("candidates", []), *sweep.get("candidates", [])}:
        cand = parse_candidate(text, where, "plan.candidates")
        profile = load_profile(cand.profile)
        CostModel(model, profile, cand.tp)
        cap = kv_capacity(model, profile, cand.tp, sc.deployment.gpu_memory_utilization, cfg.block_size_tokens,
                          cfg.max_num_batched_tokens, cfg.max_num_seqs)
        assert cap.num_blocks > 0, text
