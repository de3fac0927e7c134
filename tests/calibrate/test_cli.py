"""`calibrate` end to end on the tiny model, its bad-input errors, and power on this machine."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("scipy")

from calibrate import power  # noqa: E402
from calibrate.cli import main  # noqa: E402
from sim.spec.profile import load_profile  # noqa: E402

# A budget no machine misses, however busy: the tiny grid's run ends on its own (every point at
# its target number of timings) in seconds, so what it measures does not hang on the machine's speed.
UNMISSABLE_BUDGET_S = "3600"
TINY_GRID = ["--model", "tiny", "--batches", "1,2", "--prompt-lens", "8,32", "--contexts", "16,64",
             "--mixed-chunks", "8", "--mixed-batches", "1", "--repeats", "2",
             "--time-budget", UNMISSABLE_BUDGET_S, "--no-progress"]


def _wider_tiny(folder: Path) -> str:
    """A config.json of a dense model twice tiny's width and with one more layer."""
    path = folder / "tiny-wide" / "config.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"_name_or_path": "tiny-wide", "hidden_size": 128,
                                "num_hidden_layers": 3, "num_attention_heads": 8,
                                "num_key_value_heads": 4, "intermediate_size": 256,
                                "vocab_size": 256, "max_position_embeddings": 512}))
    return str(path)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: the two test workers (and whatever else runs) share two cores, and a
    multi-threaded step whose threads wait on each other stalls for ms each time one of them is
    descheduled: the run then takes minutes, not seconds."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_profile(tmp_path_factory: pytest.TempPathFactory, one_thread) -> Path:
    folder = tmp_path_factory.mktemp("calibrate")
    out = folder / "tiny-cpu.json"
    assert main(TINY_GRID + ["--device", "cpu", "--output", str(out), "--price-usd-per-h", "0.1",
                             "--holdout", _wider_tiny(folder)]) == 0
    return out


def test_tiny_calibration_writes_a_loadable_measured_profile(tiny_profile: Path) -> None:
    profile = load_profile(tiny_profile)
    assert profile.source == "measured"
    assert profile.device.kind == "cpu" and profile.device.count == 1
    assert {"fp32", "bf16"} <= set(profile.device.peak_flops)
    assert profile.device.memory_bandwidth_bytes_per_s > 1e8
    assert profile.price is not None and profile.price.usd_per_device_h == 0.1
    fit = profile.cost.fit
    assert fit is not None and fit["num_points"] == len(profile.measurements["points"])
    assert 0 <= fit["median_rel_error"] <= fit["max_rel_error"]
    prov = profile.provenance
    assert prov["calibration_model"] == "tiny" and prov["command"].startswith("calibrate ")
    assert prov["torch_version"] and prov["calibration_dtype"] == profile.cost.compute_dtype
    # the machine's wake-up: the compute reference step back to back and after idle sleeps
    wake = profile.measurements["wake"]
    assert wake["point"]["kind"] == "prefill" and wake["model"] == "tiny" and wake["rounds"] >= 5
    assert wake["back_to_back_s"] > 0
    idles = [idle for idle, _ in wake["after_idle_s"]]
    assert idles == sorted(idles) and idles[0] > 0
    slowdowns = [slowdown for _, slowdown in wake["wake_slowdown_curve"]]
    assert slowdowns == sorted(slowdowns) and slowdowns[0] >= 0  # a longer sleep never wakes faster
    for (idle, after_s), slowdown in zip(wake["after_idle_s"], slowdowns):
        assert 1 + slowdown >= after_s / wake["back_to_back_s"] * (1 - 1e-4)  # medians rounded
    assert list(profile.cost.wake_slowdown_curve) == [tuple(p) for p in wake["wake_slowdown_curve"]]
    # the real engine's own loop between steps: a short workload served, its median a step
    loop = profile.measurements["engine_loop"]
    assert loop["model"] == "tiny" and loop["num_steps"] >= loop["num_requests"] > 1
    assert 0 < loop["before_median_s"] <= loop["median_s"] <= loop["p90_s"] < 0.05
    assert 0 < loop["after_median_s"] <= loop["median_s"]
    assert profile.cost.engine_step_overhead_s == loop["median_s"]


def test_points_carry_the_executed_step_shape_and_their_prediction(tiny_profile: Path) -> None:
    points = load_profile(tiny_profile).measurements["points"]
    kinds = {p["kind"] for p in points}
    assert kinds == {"prefill", "decode", "mixed"}
    for p in points:
        assert p["seconds"] > 0 and p["predicted_s"] > 0 and "rel_error" in p
        if p["kind"] == "decode":  # b sequences at context c: each reads c + 1 tokens
            assert p["num_tokens"] == p["num_seqs"] == p["batch"]
            assert p["context_tokens"] == p["batch"] * (p["context_tokens_per_seq"] + 1)
        if p["kind"] == "prefill" and "chunk_start" in p:  # the last chunk of a longer prompt
            assert p["num_tokens"] == p["chunk_tokens"] == p["num_prefill_tokens"]
            assert p["prefix_tokens"] == p["chunk_start"] > 0
            assert p["cached_pairs"] == p["chunk_tokens"] * p["chunk_start"]
        elif p["kind"] == "prefill":
            assert p["num_tokens"] == p["batch"] * p["prompt_tokens"] == p["num_prefill_tokens"]
            assert p["cached_pairs"] == p["prefix_tokens"] == 0
    assert any("chunk_start" in p for p in points if p["kind"] == "prefill")


def test_points_are_timed_beside_a_speed_reference(tiny_profile: Path) -> None:
    measurements = load_profile(tiny_profile).measurements
    ref = measurements["speed_reference"]
    assert ref["model"] == "tiny"
    assert ref["memory_point"] == {"kind": "decode", "batch": 1, "length": 16}  # shortest context
    assert ref["compute_point"] == {"kind": "prefill", "batch": 1, "length": 32}  # nearest 64
    assert ref["num_samples"] == len(ref["samples"]) >= 2
    moments = [row[0] for row in ref["samples"]]
    assert moments[0] == 0 and moments == sorted(moments)
    assert ref["memory_s"] > 0 and ref["compute_s"] > 0
    for p in measurements["points"]:
        assert len(p["stamps_s"]) == len(p["times_s"]) == p["repeats"]
        assert p["raw_seconds"] == pytest.approx(statistics.median(p["times_s"]), rel=1e-3)
        if p["speed_weight"] is None:  # no correction made its timings more consistent
            assert p["seconds"] == p["raw_seconds"]
        else:
            # stored to 4 places, where a small strict gain can round to a tie (the strict gain
            # itself is checked at full precision in test_speed_track)
            assert p["log_spread"]["at_speed"] <= p["log_spread"]["raw"]


def test_a_held_out_model_is_measured_beside_but_not_fitted(tiny_profile: Path) -> None:
    profile = load_profile(tiny_profile)
    held = profile.measurements["holdout"]
    assert held["model"] == "tiny-wide" and held["points"]
    assert "tiny-wide" in profile.measurements["models"]
    assert "tiny-wide" not in {p["model"] for p in profile.measurements["points"]}
    assert {p["model"] for p in held["points"]} == {"tiny-wide"}
    assert {p["kind"] for p in held["points"]} == {"prefill", "decode", "mixed"}
    # timed in the same run, against the same speed reference as the fitted points
    ref_end = profile.measurements["speed_reference"]["samples"][-1][0]
    assert all(0 <= s <= ref_end + 1.0 for p in held["points"] for s in p["stamps_s"])
    # its score is the fitted cost model's prediction of each point, as stored
    from calibrate.fit import spec_from_dict
    from sim.plan import StepShape
    from sim.cost_model import CostModel
    model = CostModel(spec_from_dict(profile.measurements["models"]["tiny-wide"]), profile)
    errors = [abs(model.step_time(StepShape.from_record(p)) / p["seconds"] - 1) for p in held["points"]]
    score = profile.cost.fit["holdout"]
    assert score["model"] == "tiny-wide" and score["num_points"] == len(held["points"])
    assert score["median_rel_error"] == pytest.approx(statistics.median(errors), abs=1e-4)
    assert score["max_rel_error"] == pytest.approx(max(errors), abs=1e-4)


def test_the_summary_states_how_far_the_machine_wandered(tiny_profile: Path) -> None:
    """How far one point's timings moved over the run, the held-out model's included, is the
    floor under any prediction from this profile: the summary says it."""
    import io

    from calibrate.cli import print_summary
    from calibrate.speed_track import speed_wander, stored_wander

    document = load_profile(tiny_profile).raw
    bands = stored_wander(document)
    fitted_only = speed_wander(document["measurements"]["points"])
    assert bands is not None and bands[0]["pairs"] > 0
    assert sum(b["pairs"] for b in bands) > sum(b["pairs"] for b in fitted_only)  # held-out points too
    out = io.StringIO()
    print_summary(tiny_profile, document, 20.0, out)
    line = next(x for x in out.getvalue().splitlines() if "speed wander" in x)
    assert f"±{bands[0]['rms']:.1%} (t < 1 s)" in line


def test_no_speed_reference_keeps_plain_medians(tmp_path: Path) -> None:
    out = tmp_path / "plain.json"
    assert main(TINY_GRID + ["--device", "cpu", "--output", str(out), "--no-speed-reference"]) == 0
    measurements = load_profile(out).measurements
    assert measurements["speed_reference"] is None
    for p in measurements["points"]:
        assert p["seconds"] == p["raw_seconds"] and p["stamps_s"] is None


def test_the_machines_other_load_over_the_calibration_is_recorded_and_steal_warned(
        tiny_profile: Path, capsys: pytest.CaptureFixture) -> None:
    """A cloud VM's neighbours take its CPUs as hypervisor steal: the profile says how much over
    the whole calibration, and a calibration that lost a tenth of the CPUs to it says so."""
    from calibrate.calibration import _warn_if_stolen

    load = load_profile(tiny_profile).provenance["machine_load"]
    assert set(load) == {"other_share", "steal_share"}
    if load["steal_share"] is not None:  # Linux
        assert 0.0 <= load["steal_share"] <= 1.0 and 0.0 <= load["other_share"] <= 1.0
    capsys.readouterr()
    _warn_if_stolen({"other_share": 0.5, "steal_share": 0.42}, "cpu")
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "42% of this VM's CPU time" in err and "calibrate again" in err
    _warn_if_stolen({"other_share": 0.1, "steal_share": 0.05}, "cpu")
    _warn_if_stolen({"other_share": None, "steal_share": None}, "cpu")
    assert capsys.readouterr().err == ""


def test_power_is_reported_as_estimated_on_this_machine(tiny_profile: Path) -> None:
    if power.readable_rapl_zones():
        pytest.skip("this machine has readable RAPL counters")
    profile = load_profile(tiny_profile)
    assert profile.power.method == "estimated-from-tdp"
    assert profile.power.is_estimated
    assert 0 < profile.power.idle_w <= profile.power.decode_w
    meter = power.make_meter("cpu")
    assert meter.method == "estimated-from-tdp" and meter.is_estimated
    with meter.measure() as reading:
        sum(i * i for i in range(200_000))
    assert reading.is_estimated and reading.joules is not None and reading.joules > 0
    assert meter.estimated_idle_w <= reading.watts <= meter.tdp_w + 1e-9


def test_fit_subcommand_refits_stored_measurements(tiny_profile: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "refit.json"
    assert main(["fit", str(tiny_profile), "--output", str(out)]) == 0
    assert "re-fitted" in capsys.readouterr().out
    before = json.loads(tiny_profile.read_text())["cost_model"]
    after = load_profile(out).raw["cost_model"]
    assert after["fit"]["num_points"] == before["fit"]["num_points"]
    flat = [v for knot in after["matmul_efficiency_curve"] for v in knot]
    assert flat == pytest.approx([v for knot in before["matmul_efficiency_curve"] for v in knot],
                                 rel=1e-3)
    assert after["wake_slowdown_curve"] == before["wake_slowdown_curve"]  # measured, kept by a re-fit
    assert after["engine_step_overhead_s"] == before["engine_step_overhead_s"] > 0


def _bad_config(tmp_path: Path) -> str:
    path = tmp_path / "config.json"
    path.write_text('{"hidden_size": 64, "num_attention_heads": 4}')  # no num_hidden_layers
    return str(path)


def _broken_json(tmp_path: Path) -> str:
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    return str(path)


BAD_INPUTS = {
    "unknown preset": (lambda t: ["--model", "no-such-model"], "no-such-model"),
    "unreadable config": (lambda t: ["--model", str(t / "missing" / "config.json")], "config.json"),
    "invalid config json": (lambda t: ["--model", _broken_json(t)], "broken.json"),
    "config missing field": (lambda t: ["--model", _bad_config(t)], "num_hidden_layers"),
    "batch zero": (lambda t: ["--model", "tiny", "--batches", "0,1"], "--batches"),
    "batch not a number": (lambda t: ["--model", "tiny", "--batches", "x"], "--batches"),
    "beyond max positions": (lambda t: ["--model", "tiny", "--contexts", "4096"], "--contexts"),
    "grid beyond memory": (lambda t: ["--model", "tiny", "--batches", "2000000",
                                      "--contexts", "500"], "GiB"),
    "device not present": (lambda t: ["--model", "tiny", "--device", "cuda:7"], "--device"),
    "unknown device": (lambda t: ["--model", "tiny", "--device", "tpu"], "--device"),
    "output not writable": (lambda t: TINY_GRID[:-3] + ["--output",
                                       str(t / "no" / "such" / "dir" / "p.json")], "--output"),
    "bad budget": (lambda t: ["--model", "tiny", "--time-budget", "-1"], "--time-budget"),
    "unknown holdout": (lambda t: ["--model", "tiny", "--holdout", "no-such-model"], "--holdout"),
    "holdout is the model": (lambda t: ["--model", "tiny", "--holdout", "tiny"], "--holdout"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_exits_2_with_one_line_and_writes_nothing(
        case: str, tmp_path: Path, capsys: pytest.CaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    make_args, needle = BAD_INPUTS[case]
    args = make_args(tmp_path)
    if "--output" not in args:
        args += ["--output", str(tmp_path / "out.json")]
    try:
        status = main(args + ["--no-progress"])
    except SystemExit as exc:  # argparse's own errors
        status = exc.code
    err = capsys.readouterr().err.strip()
    assert status == 2
    assert len(err.splitlines()) == 1, err
    assert needle in err
    assert not list(tmp_path.rglob("*.json*")) or all(
        p.name in {"config.json", "broken.json"} for p in tmp_path.rglob("*.json*"))


def test_fit_of_a_profile_without_measurements_is_bad_input(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "p.json"
    path.write_text("{}")
    assert main(["fit", str(path)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_help_documents_the_flags(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--model", "--dtype", "--device", "--batches", "--prompt-lens", "--contexts",
                 "--time-budget", "--quick", "--output", "--tdp-w", "--price-usd-per-h", "--seed",
                 "calibrate fit"):
        assert flag in text


def test_rapl_meter_reads_package_counters_across_a_wrap(tmp_path: Path) -> None:
    zone = tmp_path / "intel-rapl:0"
    (tmp_path / "intel-rapl:0:0").mkdir(parents=True)  # a sub-zone: not counted twice
    zone.mkdir()
    (zone / "max_energy_range_uj").write_text("1000000\n")
    (zone / "energy_uj").write_text("999000\n")
    zones = power.readable_rapl_zones(tmp_path)
    assert zones == [zone]
    meter = power.RaplMeter(zones)
    with meter.measure() as reading:
        (zone / "energy_uj").write_text("4000\n")  # wrapped: 1000 + 4000 uJ
    assert reading.joules == pytest.approx(0.005)
    assert not reading.is_estimated and meter.method == "rapl"
