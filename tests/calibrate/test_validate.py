"""`calibrate validate` on a tiny model: both engines see the identical workload, and the
simulator's prediction lands within a loose bound (a shared CI machine is noisy; the tight
targets are checked by benchmarks/fidelity.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("scipy")

from calibrate.cli import main as calibrate_main  # noqa: E402
from calibrate.steps_alone import evenly, time_alone  # noqa: E402
from calibrate.validate import (MachineSpeed, SpeedProbe, drift_line, retime_alone, run_speed_factors, serve_once,  # noqa: E402
                                serving_order, set_up, step_errors, step_kind, validate,
                                validate_all)
from calibrate.validate_cli import main as validate_main  # noqa: E402
from sim.spec.profile import load_profile  # noqa: E402
from sim.scenario import prepare, scenario_from_dict  # noqa: E402

# a budget no machine misses: the run ends on its own in seconds, whatever else the machine runs
GRID = ["--model", "tiny", "--batches", "1,2,4,8", "--prompt-lens", "8,32,64", "--contexts", "16,64,128",
        "--mixed-chunks", "16", "--mixed-batches", "2", "--repeats", "3", "--time-budget", "3600",
        "--no-progress"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """CI runs two test workers on two cores: one torch thread each keeps them from time-slicing
    each other's steps (calibration and serving run under the same setting)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_profile(tmp_path_factory: pytest.TempPathFactory, one_thread) -> Path:
    out = tmp_path_factory.mktemp("validate") / "tiny-cpu.json"
    assert calibrate_main(GRID + ["--device", "cpu", "--output", str(out)]) == 0
    return out


def scenario(profile: Path, policy: str) -> dict:
    return {"seed": 3, "model": {"name": "tiny"}, "deployment": {"profile": str(profile)},
            "scheduler": {"policy": policy, "max_num_seqs": 8, "max_num_batched_tokens": 128},
            "measurement": {"warmup_fraction": 0.0, "drain_fraction": 0.0},
            "workload": {"num_requests": 24, "arrival": {"process": "poisson", "rate_per_s": 40},
                         "input_tokens": {"dist": "uniform", "min": 8, "max": 60},
                         "output_tokens": {"dist": "uniform", "min": 8, "max": 40}}}


@pytest.mark.parametrize("policy", ["continuous", "chunked"])
def test_real_engine_and_simulator_serve_the_identical_workload(tiny_profile, policy):
    profile = load_profile(tiny_profile)
    result = validate("ci", scenario_from_dict(scenario(tiny_profile, policy)), profile)
    assert result.same_workload
    real, sim = result.runs[0].recorder.requests, result.predicted.recorder.requests
    assert [(r.request_id, r.arrival_s, r.prompt_tokens, r.output_tokens) for r in real] == \
           [(r.request_id, r.arrival_s, r.prompt_tokens, r.output_tokens) for r in sim]
    assert all(r.finish_s > r.first_token_s >= r.arrival_s for r in real)  # all served, for real
    assert all(r.num_output_tokens == r.output_tokens for r in real)
    # the diagnostics: every real step compared with the cost model, and the machine's speed
    kinds = [k for k in result.steps if k not in ("all", "loop")]
    assert sum(result.steps[k]["num_steps"] for k in kinds) == result.steps["all"]["num_steps"] \
        == len(result.runs[0].steps) > 0
    # 40 requests a second against millisecond steps: the engine sleeps between arrivals, and the
    # steps after a sleep are told apart (the profile's wake-up is added to their prediction)
    idle_s = result.runs[0].idle_s
    assert len(idle_s) == len(result.runs[0].steps) and 0 < sum(s > 0 for s in idle_s) < len(idle_s)
    assert result.steps["all"]["num_after_idle"] == sum(s > 0 for s in idle_s)
    cost = prepare(result.scenario, profile).cost
    assert result.steps["all"]["wake_s"] == pytest.approx(sum(
        cost.step_time(shape) * cost.wake_slowdown(s) for (shape, _), s in zip(result.runs[0].steps, idle_s)))
    assert result.speed is not None and result.speed.factor > 0 and result.speed.after is not None
    assert len(result.at_speed_rows) == len(result.rows)
    # the run speed: the prediction at the speeds the run's own steps ran at
    assert result.run_speed == run_speed_factors(result.steps)
    assert [r["metric"] for r in result.run_speed_rows] == [r["metric"] for r in result.rows]
    assert [title for title, _ in result.columns()] == ["at speed", "run speed", "replay"]
    # served steps of each kind rebuilt and timed alone, beside the machine's reference step
    assert "decode" in result.alone and set(result.alone) <= {"prefill", "decode", "mixed"}
    for kind, alone in result.alone.items():
        assert 0 < alone["num_steps"] <= 12 and alone["machine_factor"] > 0
        assert alone["form"] == pytest.approx(alone["alone_s"] / alone["model_s"] / alone["machine_factor"])
        assert alone["served_over_alone"] == pytest.approx(alone["served_s"] / alone["alone_s"])
    assert result.to_dict()["steps_alone"] == result.alone
    # the machine's other load while it served (other processes, the hypervisor's steal): a share
    (load,) = result.machine_load
    for share in (load["other_share"], load["steal_share"]):
        assert share is None or 0.0 <= share <= 1.0
    assert result.to_dict()["machine_load"] == [load] and "machine_load" in result.record()
    errors = {row["metric"]: row["rel_error"] for row in result.rows}
    # Loose on purpose: a shared 2-core CI machine whose speed drifts (the 2-vCPU AMD EPYC ran the
    # same decode step in 7 to 14 ms over minutes; tracked by benchmarks/fidelity.py). A factor of
    # 10 is a regression guard: it still catches a broken engine, wrong units or a comparison of
    # different workloads. It is that loose because millisecond steps are at the mercy of the VM's
    # neighbours: with the hypervisor taking 10-25 % of the CPUs, served steps summed to 1.4-4x
    # their cost-model time while their median sat at 1.0x (a tail of stalled steps; only 5 of
    # ~210 steps followed a sleep, so the profile's wake-up is not what is missing). (TTFT of this
    # tiny model is dominated by the engine loop's own millisecond overheads: left to the
    # benchmark.)
    for metric in ("e2e_s.mean", "tpot_s.mean"):
        assert errors[metric] is not None and 1 / 10 < 1 + errors[metric] < 10, (metric, errors[metric])
    assert abs(errors["throughput.output_tokens_per_s"]) < 0.5
    # The replay: the simulator fed the real steps' own times. Jitter cannot move it, so it is held
    # tight: it reproduces the measured latencies only if both engines made the same decisions at
    # the same moments. (An arrival that lands while the real engine oversleeps can shift one step;
    # such steps are counted, and the means stay within a few percent.)
    loop = result.steps["loop"]
    assert loop["num_steps"] == len(result.runs[0].steps) and 0 < loop["seconds"] < result.wall_s
    (replay,) = result.replays
    assert replay.num_logged == len(result.runs[0].steps)
    assert replay.num_diverged <= 0.25 * replay.num_steps
    replayed = {row["metric"]: row["rel_error"] for row in result.replay_rows}
    for metric in ("e2e_s.mean", "tpot_s.mean", "ttft_s.mean", "throughput.output_tokens_per_s"):
        assert abs(replayed[metric]) < 0.05, (metric, replayed[metric])


def test_validate_cli_writes_json_and_records_in_the_profile(tiny_profile, tmp_path, capsys):
    out = tmp_path / "v.json"
    argv = ["--profile", str(tiny_profile), "--model", "tiny", "--rate", "30", "--input-tokens", "16",
            "--output-tokens", "8", "--num-requests", "10", "--json", str(out), "--record", "--repeats", "3"]
    assert validate_main(argv) == 0
    # the machine's own wander at calibration is stated beside the errors it bounds
    assert "speed wander at calibration" in capsys.readouterr().out
    (entry,) = json.loads(out.read_text())
    assert entry["same_workload"] is True
    # three runs of the identical workload: compared with their median, their spread around it shown
    assert entry["repeats"] == 3 and len(entry["measured_runs"]) == 3
    runs = [r["latency"]["e2e_s"]["mean"] for r in entry["measured_runs"]]
    assert entry["measured"]["latency"]["e2e_s"]["mean"] == sorted(runs)[1]
    spread = {row["metric"]: row["rel_error"] for row in entry["run_spread"]}
    median = entry["measured"]["latency"]["e2e_s"]["mean"]
    assert spread["e2e_s.mean"] == pytest.approx(max(abs(r - median) for r in runs) / median)
    assert entry["replay"]["num_logged"] == entry["steps"]["all"]["num_steps"]  # every run's steps, replayed
    assert {row["metric"] for row in entry["comparison"]} >= {"ttft_s.mean", "e2e_s.p99",
                                                             "throughput.requests_per_s"}
    recorded = load_profile(tiny_profile).provenance["validation"]
    assert recorded[0]["same_workload"] is True and recorded[0]["comparison"]
    assert recorded[0]["repeats"] == 3 and recorded[0]["run_spread"] and "measured_runs" not in recorded[0]


def test_validate_cli_warns_when_the_machine_no_longer_matches_its_profile(tiny_profile, tmp_path, capsys):
    """A profile whose points say the machine was three times faster than it is now: the speed
    probe re-times them, finds the move far beyond the profile's own wander, and says to
    re-calibrate."""
    stale = json.loads(tiny_profile.read_text())
    for point in stale["measurements"]["points"]:
        point["seconds"] *= 0.3
    path = tmp_path / "tiny-cpu.json"
    path.write_text(json.dumps(stale))
    argv = ["--profile", str(path), "--model", "tiny", "--rate", "30", "--input-tokens", "16",
            "--output-tokens", "8", "--num-requests", "6", "--alone-steps", "0"]
    assert validate_main(argv) == 0
    (warning,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("warning:")]
    assert "no longer describes this machine" in warning and "re-run `calibrate`" in warning


def test_several_workloads_are_served_in_rounds_on_one_runner_per_model(tiny_profile):
    """A suite's repeats go round the workloads, in order and back, so a slow spell of the machine
    falls on runs of several workloads instead of on every run of one; workloads of one model share
    one runner (one copy of the weights)."""
    profile = load_profile(tiny_profile)
    light = scenario(tiny_profile, "continuous")
    light["workload"] = {**light["workload"], "num_requests": 8}
    heavy = {**light, "scheduler": {**light["scheduler"], "policy": "chunked"}}
    served = []
    results = validate_all([("a", scenario_from_dict(light)), ("b", scenario_from_dict(heavy))], profile,
                           repeats=3, check_speed=False,
                           announce=lambda name, k, n: served.append((name, k, n)))
    assert served == [("a", 1, 3), ("b", 1, 3), ("b", 2, 3), ("a", 2, 3), ("a", 3, 3), ("b", 3, 3)]
    assert [len(r.runs) for r in results] == [3, 3] and all(r.same_workload for r in results)
    assert results[0].runs[0].recorder is not results[0].runs[1].recorder
    assert results[0].spread_rows and results[1].spread_rows
    longer = {**light, "workload": {**light["workload"], "input_tokens": 200}}
    a, b = set_up([("a", scenario_from_dict(light)), ("b", scenario_from_dict(longer))], profile)
    assert a.runner is b.runner and a.runner.max_seq_len >= 200 + 40  # sized for both


def test_served_steps_are_rebuilt_in_their_identical_shapes_and_timed_alone(tiny_profile):
    """Every served step's recipe rebuilds it on the runner with the same StepShape (chunks,
    starts, decoders' contexts); a few of each kind are timed alone, evenly over the runs."""
    profile = load_profile(tiny_profile)
    data = scenario(tiny_profile, "chunked")  # prompts up to 200 tokens, 64 a step: split in chunks
    data["scheduler"]["max_num_batched_tokens"] = 64
    data["workload"] = {**data["workload"], "num_requests": 12, "input_tokens": {"dist": "uniform", "min": 8, "max": 200}}
    (case,) = set_up([("c", scenario_from_dict(data))], profile)
    run = serve_once(case)
    assert len(run.recipes) == len(run.steps)
    assert any(not samples for recipe in run.recipes for _, _, samples in recipe.chunks)
    kinds = set()
    for recipe, (shape, _) in zip(run.recipes, run.steps):
        assert time_alone(recipe, case.runner)[1] == shape  # executes: the runner checks the plan
        kinds.add(step_kind(shape))
    assert {"decode", "mixed"} <= kinds
    retime_alone(case, None, per_kind=3)  # without a probe: no machine factor, no form
    assert set(case.alone) == kinds
    for alone in case.alone.values():
        assert alone["num_steps"] <= 3 and alone["machine_factor"] is None and alone["form"] is None
        assert alone["alone_s"] > 0 and alone["model_s"] > 0
    retime_alone(case, SpeedProbe(profile), per_kind=2)
    assert all(a["num_steps"] <= 2 and a["form"] > 0 for a in case.alone.values())


def test_steps_alone_are_picked_evenly_over_the_runs():
    assert evenly(10, 4) == [0, 3, 6, 9]
    assert evenly(3, 12) == [0, 1, 2]
    assert evenly(5, 1) == [2]
    assert evenly(0, 3) == [] and evenly(4, 0) == []


def test_serving_order_visits_each_workload_once_a_round_at_the_same_mean_position():
    assert serving_order(3, 1) == [0, 1, 2]
    assert serving_order(3, 4) == [0, 1, 2, 2, 1, 0, 0, 1, 2, 2, 1, 0]
    order = serving_order(5, 4)
    positions = {i: [k for k, j in enumerate(order) if j == i] for i in range(5)}
    assert all(len(p) == 4 for p in positions.values())
    assert len({sum(p) for p in positions.values()}) == 1  # an even number of rounds: the same mean


@pytest.mark.parametrize("flags, named", [(["--model", "nope"], "--model"), (["--repeats", "0"], "--repeats"),
                                          (["--alone-steps", "-1"], "--alone-steps")])
def test_validate_cli_bad_input_is_one_line_exit_2(tiny_profile, capsys, flags, named):
    assert validate_main(["--profile", str(tiny_profile), "--model", "tiny", "--rate", "1", *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and named in err[0]


def test_a_machine_that_moved_beyond_its_calibration_wander_is_told_to_recalibrate():
    def probe(decode: float, prefill: float) -> MachineSpeed:
        return MachineSpeed([{"when": "before", "kind": "decode", "factor": decode},
                             {"when": "before", "kind": "prefill", "factor": prefill}])

    bands = [{"lag_s": [0.0, 1.0], "rms": 0.05, "pairs": 10}, {"lag_s": [80.0, None], "rms": 0.12, "pairs": 10},
             {"lag_s": [20.0, 80.0], "rms": None, "pairs": 0}]
    line = drift_line([probe(0.70, 1.05), probe(0.76, 1.15)], bands)  # decode memory got a third faster
    assert line is not None and "0.73x (decode)" in line and "1.10x (prefill/mixed)" in line
    assert "±12.0%" in line and "re-run `calibrate`" in line
    assert drift_line([probe(1.12, 0.9)], bands) is None  # within the widest wander (ln 1.12 < 0.12)
    assert drift_line([probe(1.3, 1.3)], None) is None  # a datasheet profile: nothing to judge by
    assert drift_line([], bands) is None  # --no-speed-check: no probe


def test_median_summary_and_run_spread():
    from calibrate.validate import median_summary, run_spread

    def summary(e2e: float, joules: float | None) -> dict:
        lat = {name: {stat: e2e for stat in ("mean", "p50", "p90", "p99")} for name in ("ttft_s", "tpot_s", "itl_s", "e2e_s")}
        return {"latency": lat, "throughput": {"requests_per_s": 1 / e2e, "output_tokens_per_s": 10 / e2e},
                "energy": {"joules": joules, "j_per_output_token": joules and joules / 10, "source": "estimated"}}

    runs = [summary(1.0, 5.0), summary(1.5, None), summary(0.8, 7.0)]
    median = median_summary(runs)
    assert median["latency"]["e2e_s"]["mean"] == 1.0 and median["throughput"]["requests_per_s"] == 1.0
    assert median["energy"]["joules"] == 6.0 and median["energy"]["source"] == "estimated"  # runs that have it
    spread = {row["metric"]: row["rel_error"] for row in run_spread(runs, median)}
    assert spread["e2e_s.mean"] == pytest.approx(0.5)  # the 1.5 s run, 50% off the median
    assert spread["throughput.requests_per_s"] == pytest.approx(1 / 3)  # 1/1.5 against 1.0
    assert spread["energy.j_per_output_token"] == pytest.approx(1 / 6)
    assert median_summary([summary(2.0, None)]) == summary(2.0, None)  # one run is its own median


def test_step_errors_compare_each_real_step_with_the_cost_model(tiny_profile):
    from sim.cost_model import CostModel
    from sim.spec.model import get_preset
    from sim.plan import StepShape

    cost = CostModel(get_preset("tiny").with_dtypes(weight_dtype="fp32"), load_profile(tiny_profile))
    decode, prefill = StepShape.for_decode(2, 100), StepShape.for_prefill([50])
    mixed = StepShape(51, 2, 2, 151, 50 * 51 // 2 + 101, num_prefill_tokens=50)
    steps = [(decode, 2 * cost.step_time(decode)), (decode, 2 * cost.step_time(decode)),
             (prefill, cost.step_time(prefill)), (mixed, 0.5 * cost.step_time(mixed))]
    e = step_errors(steps, cost, [1e-4, 2e-4, 1e-4, 1e-4])
    assert "num_after_idle" not in e["all"]  # the engine did not say which steps followed a sleep
    assert e["decode"]["num_steps"] == 2 and e["decode"]["rel_error"] == pytest.approx(-0.5)
    assert e["loop"]["seconds"] == pytest.approx(5e-4) and e["loop"]["median_s"] == pytest.approx(1e-4)
    assert e["loop"]["share_of_step_time"] == pytest.approx(5e-4 / sum(s for _, s in steps))
    assert e["loop"]["predicted_s"] == pytest.approx(4 * cost.engine_overhead_s)  # the profile's, a step
    assert e["prefill"]["rel_error"] == pytest.approx(0.0) and e["mixed"]["median_ratio"] == pytest.approx(2.0)
    assert e["all"]["num_steps"] == 4
    assert e["all"]["measured_s"] == pytest.approx(sum(s for _, s in steps))
    # the run's own speed: decode steps took 2x their cost-model time; the prefill 1x and the mixed
    # step 0.5x, together their measured seconds over their cost-model seconds
    p, m = cost.step_time(prefill), cost.step_time(mixed)
    assert run_speed_factors(e) == pytest.approx({"decode_factor": 2.0, "prefill_factor": (p + 0.5 * m) / (p + m)})
    # a run of one kind lends its factor to the other; no steps, no factors
    only_decode = step_errors(steps[:2], cost, [])
    assert run_speed_factors(only_decode) == pytest.approx({"decode_factor": 2.0, "prefill_factor": 2.0})
    assert run_speed_factors({}) is None
    # a step after the engine slept is predicted with the profile's wake-up added
    import dataclasses
    profile = load_profile(tiny_profile)
    woken = CostModel(get_preset("tiny").with_dtypes(weight_dtype="fp32"), dataclasses.replace(
        profile, cost=dataclasses.replace(profile.cost, wake_slowdown_curve=((0.01, 0.1),))))
    e = step_errors(steps, woken, [], [0.0, 0.0, 0.5, 0.0])
    assert e["prefill"]["predicted_s"] == pytest.approx(1.1 * woken.step_time(prefill))
    assert e["decode"]["predicted_s"] == pytest.approx(2 * woken.step_time(decode))
    assert e["all"]["num_after_idle"] == 1 and e["all"]["wake_s"] == pytest.approx(0.1 * woken.step_time(prefill))


def test_reference_points_are_quick_calibration_points_spread_over_their_times(tiny_profile):
    from calibrate.validate import REFERENCE_MAX_STEP_S, reference_records

    profile = load_profile(tiny_profile)
    records = reference_records(profile, 3)
    own = sorted(r["seconds"] for r in profile.measurements["points"]
                 if r["model"] == profile.provenance["calibration_model"] and r["seconds"] <= REFERENCE_MAX_STEP_S)
    assert [r["seconds"] for r in records] == [own[0], own[(len(own) - 1) // 2], own[-1]] or \
        [r["seconds"] for r in records] == [own[0], own[round((len(own) - 1) / 2)], own[-1]]
    assert reference_records(load_profile("h100-sxm")) == []  # a datasheet profile has none


def test_machine_load_reads_the_hypervisors_steal_from_proc_stat(monkeypatch):
    """A cloud VM's neighbours show up as steal in /proc/stat, not as processes: the share of all
    CPUs the hypervisor took while the engine served is steal ticks over wall time x CPUs."""
    from calibrate.machine_load import ForeignLoad

    others = ForeignLoad()
    ticks = {"steal": 1000, "user": 5000}
    monkeypatch.setattr(others, "_fields", lambda: [ticks["user"], 0, 0, 0, 0, 0, 0, ticks["steal"]])
    mark = others.start()
    assert mark[3] == pytest.approx(1000 * others.tick_s)
    wall_s = 0.2
    mark = (mark[0], mark[1], mark[2] - wall_s, mark[3])  # as if started wall_s ago
    steal_ticks = round(0.5 * wall_s * others.num_cpus / others.tick_s)  # half of every CPU
    ticks["steal"] += steal_ticks
    ticks["user"] += steal_ticks
    assert others.steal_share(mark) == pytest.approx(0.5, abs=0.01)
    monkeypatch.setattr(others, "_fields", lambda: None)  # no /proc/stat: unknown, not zero
    assert others.steal_share(mark) is None


def test_a_prediction_on_a_machine_that_scatters_is_the_median_of_its_draws(tmp_path, toy_profile_dict):
    from calibrate.validate import median_summary, predict
    from sim.scenario import run_prepared

    toy_profile_dict["cost_model"]["speed_variability"] = {
        "memory": {"fast_sd": 0.1, "wander_sd": 0.1, "wander_time_s": 2.0, "reference_step_s": 0.01},
        "compute": {"fast_sd": 0.05, "wander_sd": 0.05, "wander_time_s": 2.0, "reference_step_s": 0.03},
        "fast_shape": [-1.5, -0.5, 0.0, 0.5, 2.5]}
    path = tmp_path / "varied.json"
    path.write_text(json.dumps(toy_profile_dict))
    profile = load_profile(str(path))
    sc = scenario_from_dict({"seed": 2, "model": {"name": "llama-3-8b"}, "deployment": {"profile": str(path)},
                             "workload": {"num_requests": 80, "arrival": {"process": "poisson", "rate_per_s": 3.0},
                                          "input_tokens": 256, "output_tokens": 32}}, "t")
    draws = [run_prepared(prep, prep.cost, k).summary for k, prep in enumerate(prepare(sc, profile) for _ in range(3))]
    predicted = predict(sc, profile, draws=3)
    assert predicted.summary == median_summary(draws)
    assert len(predicted.recorder.requests) == 80  # the first draw's records, for the same-workload check
    assert predict(sc, profile, draws=1).summary == draws[0]
