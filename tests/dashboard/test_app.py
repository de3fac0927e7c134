"""Smoke and behaviour tests of the dashboard with Streamlit's AppTest (no browser): every page
renders without an exception, and changing a widget changes the numbers shown."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pytest

pytest.importorskip("streamlit")
pytest.importorskip("plotly")

from streamlit.testing.v1 import AppTest  # noqa: E402

from dashboard import state, uploads, validation_data, views  # noqa: E402
from sim import cli  # noqa: E402
from sim.report import figures  # noqa: E402
from sim.errors import InputError  # noqa: E402
from sim.spec.profile import load_profile  # noqa: E402
from sim.scenario import run_scenario, scenario_from_dict  # noqa: E402
from tests.dashboard.conftest import APP, MEASURED_FACTORS, MEASURED_NAME  # noqa: E402

TIMEOUT_S = 60


def _app() -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT_S).run()
    assert not at.exception, at.exception
    return at


def _metrics(at: AppTest) -> dict[str, str]:
    """Label -> shown value of the first run's headline numbers."""
    shown: dict[str, str] = {}
    for metric in at.metric:
        shown.setdefault(metric.label, metric.value)
    return shown


# ---- What-if ----------------------------------------------------------------------------------

def test_what_if_renders_headline_numbers_and_charts(profiles_env):
    at = _app()
    shown = _metrics(at)
    for label in ("TTFT p50", "TTFT p99", "TPOT p50", "TPOT p99", "E2E p50", "E2E p99", "throughput",
                  "goodput", "J / output token", "$ / 1M output tokens"):
        assert label in shown and "n/a" not in shown[label], (label, shown)
    assert not at.error and not at.warning
    assert len(at.get("plotly_chart")) == 2  # latency CDFs and the time series
    assert len(at.get("download_button")) == 1  # the scenario file


def test_changing_the_load_changes_the_numbers(profiles_env):
    at = _app()
    before = _metrics(at)
    at.number_input(key="wi.rate_per_s").set_value(8.0).run()
    assert not at.exception
    after = _metrics(at)
    assert after["TTFT p99"] != before["TTFT p99"]
    assert after["throughput"] != before["throughput"]


def test_quantization_and_scheduler_widgets_change_the_numbers(profiles_env):
    at = _app()
    before = _metrics(at)
    at.selectbox(key="wi.weight_dtype").set_value("fp8").run()
    fp8 = _metrics(at)
    assert fp8["TPOT p50"] != before["TPOT p50"]
    at.number_input(key="wi.max_num_seqs").set_value(4).run()
    capped = _metrics(at)
    assert capped["TTFT p99"] != fp8["TTFT p99"]
    at.checkbox(key="wi.speculative").check().run()
    assert not at.exception and not at.error
    assert _metrics(at)["TPOT p50"] != capped["TPOT p50"]


def test_several_profiles_are_shown_side_by_side(profiles_env):
    at = _app()
    at.multiselect(key="wi.profiles").set_value(["h100-sxm", "a100-80gb"]).run()
    assert not at.exception
    assert [m.label for m in at.metric].count("TTFT p99") == 2
    table = at.dataframe[0].value
    assert list(table.columns) == ["metric", "h100-sxm", "a100-80gb"]
    assert len(at.get("download_button")) == 2  # one scenario per profile
    at.multiselect(key="wi.profiles").set_value([]).run()
    assert not at.exception and "Choose one or more" in at.info[0].value


def test_overload_is_reported_not_hidden_behind_a_latency(profiles_env):
    at = _app()
    at.number_input(key="wi.rate_per_s").set_value(80.0).run()
    assert not at.exception
    assert "Overloaded" in at.warning[0].value
    assert _metrics(at)["TTFT p99"] == "overloaded"


def test_a_rewritten_profile_is_simulated_afresh(profiles_env):
    from pathlib import Path

    at = _app()
    at.multiselect(key="wi.profiles").set_value([MEASURED_NAME]).run()
    before = _metrics(at)
    path = Path(profiles_env["INFERCAST_PROFILES"]) / f"{MEASURED_NAME}.json"
    doc = json.loads(path.read_text())
    doc["cost_model"]["step_overhead_s"] *= 10  # as if `calibrate` had re-measured it
    path.write_text(json.dumps(doc))
    at.run()
    assert _metrics(at)["TPOT p50"] != before["TPOT p50"]


def test_settings_survive_a_page_switch(profiles_env):
    at = _app()
    at.number_input(key="wi.rate_per_s").set_value(6.0).run()
    at.switch_page("app_pages/validation.py").run()
    at.switch_page("app_pages/what_if.py").run()
    assert at.number_input(key="wi.rate_per_s").value == 6.0


def test_default_what_if_resimulates_within_two_seconds():
    scenario = scenario_from_dict(state.scenario_dict(state.WhatIf(), state.DEFAULT_PROFILE))
    assert scenario.workload.num_requests == state.DEFAULT_NUM_REQUESTS
    started = time.perf_counter()
    result = run_scenario(scenario)
    figures.latency_cdfs({"x": figures.latency_cdf_data(result)}).to_json()
    figures.timeseries(figures.timeline_data(result.recorder)).to_json()
    elapsed_s = time.perf_counter() - started
    assert elapsed_s <= 2.0, f"default what-if took {elapsed_s:.2f} s"


@pytest.mark.parametrize("fmt", state.EXPORT_FORMATS)
def test_exported_scenario_gives_the_cli_the_same_numbers(profiles_env, tmp_path, fmt):
    at = _app()
    at.number_input(key="wi.rate_per_s").set_value(5.0).run()
    shown = _metrics(at)
    what_if = at.session_state[state.SAVED_KEY]
    name, text, _ = state.export_scenario(state.scenario_dict(what_if, state.DEFAULT_PROFILE), fmt)
    scenario_file, out = tmp_path / name, tmp_path / "summary.json"
    scenario_file.write_text(text)
    assert cli.main(["simulate", str(scenario_file), "--quiet", "--json", str(out)]) == 0
    summary = json.loads(out.read_text())
    for label, value, _ in views.headline(summary):  # every headline number, as the page shows it
        assert shown[label] == value, label


# ---- uploaded traces ----------------------------------------------------------------------------

GOOD_TRACE = b"arrival_s,prompt_tokens,output_tokens\n" + b"".join(
    f"{i * 0.25},{200 + 10 * (i % 7)},{20 + i % 5}\n".encode() for i in range(120))


def test_an_uploaded_trace_is_simulated(profiles_env):
    at = _app()
    at.radio(key="wi.workload_source").set_value("uploaded trace").run()
    assert "upload a trace" in at.info[0].value
    at.file_uploader(key="upload.trace").set_value(("my trace.csv", GOOD_TRACE, "text/csv")).run()
    assert not at.exception and not at.error
    assert any("120 requests" in caption.value for caption in at.sidebar.caption)
    assert _metrics(at)["TTFT p99"].endswith("ms")
    what_if = at.session_state[state.SAVED_KEY]
    stored = at.session_state["upload.stored"]
    exported = state.portable(state.scenario_dict(what_if, state.DEFAULT_PROFILE, stored.path))
    assert exported["workload"]["trace"]["path"] == "my_trace.csv"  # saved next to the scenario


@pytest.mark.parametrize("name, data, message", [
    ("t.csv", b"a,b\n1,2\n", "cannot tell the format"),
    ("t.csv", b"arrival_s,prompt_tokens,output_tokens\n0,12,3\n1,many,3\n", "t.csv:3: prompt_tokens"),
    ("t.pkl", b"\x80\x04\x95", "expected a .csv or .jsonl"),
    ("t.csv", b"\x80\x04\x95\x00\x00", "binary"),
    ("t.jsonl", b'{"arrival_s": 0, "prompt_tokens": 5\n', "not valid JSON"),
])
def test_a_bad_upload_is_refused_with_a_clear_message(profiles_env, name, data, message):
    at = _app()
    at.radio(key="wi.workload_source").set_value("uploaded trace").run()
    at.file_uploader(key="upload.trace").set_value((name, data, "text/csv")).run()
    assert not at.exception
    assert "Trace refused" in at.error[0].value and message in at.error[0].value, at.error[0].value


def test_upload_size_is_capped(tmp_path):
    with pytest.raises(InputError, match="up to 20 MB"):
        uploads.store_trace("big.csv", b"x" * (uploads.MAX_TRACE_BYTES + 1), tmp_path)
    assert not any(tmp_path.iterdir())  # nothing kept


# ---- the other pages ----------------------------------------------------------------------------

def test_capacity_plan_page_sizes_candidates_and_follows_the_load_slider(profiles_env):
    at = _app()
    at.session_state["cp.candidates"] = ["h100-sxm"]
    at.session_state["cp.requests_per_run"] = 300
    at.switch_page("app_pages/capacity_plan.py").run()
    assert not at.exception, at.exception
    assert "Recommendation" in at.success[0].value
    low = _metrics(at)
    assert int(low["replicas of h100-sxm"]) >= 1
    assert {e.type for e in at.get("plotly_chart")} == {"plotly_chart"}
    at.select_slider(key="cp.load").set_value(80.0).run()
    assert not at.exception
    high = _metrics(at)
    assert int(high["replicas of h100-sxm"]) > int(low["replicas of h100-sxm"])
    assert high["monthly cost"] != low["monthly cost"]
    labels = [button.proto.label for button in at.get("download_button")]
    assert labels == ["scenario + plan settings", "plan result (JSON)", "capacity report (HTML)"]


def test_the_capacity_report_is_self_contained_html(profiles_env, tmp_path):
    from dashboard import runs
    from sim.planning import capacity as planner

    scenario = state.scenario_dict(state.WhatIf(num_requests=200), "h100-sxm")
    settings = state.plan_settings(10.0, seeds=1, stat="p99", requests_per_run=200)
    plan = runs.capacity_plan(state.scenario_json(scenario), ("h100-sxm",), json.dumps(settings))
    assert "error" not in plan and plan["recommendation"]["label"] == "h100-sxm"
    html = runs.report_html(json.dumps(plan, sort_keys=True, default=str))
    assert html.lstrip().lower().startswith("<!doctype html") and "<script src" not in html
    name, text, _ = state.export_plan(scenario, ["h100-sxm"], settings, "toml")
    (tmp_path / name).write_text(text)
    data, table, _, _, _ = planner.load_plan_file(tmp_path / name)  # `infercast plan FILE` reads it
    assert table["candidates"] == ["h100-sxm"] and data["workload"] == scenario["workload"]


def test_profiles_page_shows_provenance_fit_and_comparison(profiles_env):
    at = _app()
    at.switch_page("app_pages/profiles.py").run()
    assert not at.exception
    assert MEASURED_NAME in list(at.dataframe[0].value["name"])
    assert "datasheet profile" in at.info[0].value  # h100-sxm has no measured points
    at.selectbox(key="pr.profile").set_value(MEASURED_NAME).run()
    assert not at.exception
    assert "**source** measured" in at.markdown[0].value
    assert _metrics(at)["measured points"] == "12"
    held = [c.value for c in at.caption if "Cross-model check" in c.value]
    assert held and "llama-medium-400m" in held[0] and "0.171" in held[0]
    assert len(at.get("plotly_chart")) == 3  # measured vs fitted, decode and prefill comparisons
    decode_before = at.get("plotly_chart")[1].proto.spec
    at.selectbox(key="pr.model").set_value("llama-3-70b").run()
    assert not at.exception and at.get("plotly_chart")[1].proto.spec != decode_before


def test_measured_points_are_compared_with_the_cost_model():
    from dashboard import profile_data
    from sim.spec.profile import profile_from_dict
    from tests.dashboard.conftest import measured_profile

    rows = profile_data.measured_points(profile_from_dict(measured_profile(), "m.json"))
    assert len(rows) == 12
    for row, factor in zip(rows, MEASURED_FACTORS):
        assert row["measured_s"] == pytest.approx(factor * row["predicted_s"])


def test_validation_page_says_so_when_there_are_no_results(tmp_path, monkeypatch):
    import streamlit as st

    empty = tmp_path / "none"
    empty.mkdir()
    # the shipped CPU profile records a validation: shadow it with a copy that records none
    shipped = load_profile("amd-epyc-2vcpu-cpu")
    unvalidated = {**shipped.raw, "provenance": {k: v for k, v in shipped.raw["provenance"].items()
                                                 if k not in validation_data.PROVENANCE_KEYS}}
    (empty / Path(shipped.path).name).write_text(json.dumps(unvalidated))
    monkeypatch.setenv("INFERCAST_PROFILES", str(empty))
    st.cache_data.clear()
    at = _app()
    at.switch_page("app_pages/validation.py").run()
    assert not at.exception
    assert "No fidelity results yet" in at.info[0].value
    st.cache_data.clear()


def test_validation_page_shows_recorded_and_uploaded_results(profiles_env):
    at = _app()
    at.switch_page("app_pages/validation.py").run()
    assert not at.exception and not at.info
    labels = [h.value for h in at.subheader]
    assert len(labels) == len(at.dataframe) >= 2  # the fixture's and the shipped CPU profile's
    table = at.dataframe[labels.index("llama-small-150m on test-measured, Poisson 2 req/s")].value
    assert "relative error" in table.columns
    assert dict(zip(table["metric"], table["relative error"]))["TTFT p50"] == "-9.1 %"
    result = {"runs": [{"label": "uploaded", "predicted": {"latency": {"e2e_s": {"p50": 1.0, "p99": 2.0}}},
                        "measured": {"latency": {"e2e_s": {"p50": 1.1, "p99": 2.5}}}}]}
    at.file_uploader(key="upload.validation").set_value(("v.json", json.dumps(result).encode(), "application/json"))
    at.run()
    assert not at.exception and len(at.dataframe) == len(labels) + 1
    at.file_uploader(key="upload.validation").set_value(("v.json", b"{not json", "application/json")).run()
    assert "not a JSON file" in at.error[0].value


def test_validation_results_are_found_in_the_shapes_documented():
    one = {"predicted": {"latency": {}}, "measured": {"latency": {}}}
    assert len(validation_data.results_in(one, "f")) == 1
    assert len(validation_data.results_in([one, one], "f")) == 2
    assert len(validation_data.results_in({"cases": [one]}, "f")) == 1
    assert validation_data.results_in({"predicted": 1}, "f") == []


def test_a_validation_recorded_in_a_profile_is_read_from_its_comparison_rows():
    """`calibrate validate --record` stores comparison rows (predicted, measured, errors), no
    summaries; the shipped CPU profile holds such a record and the page must show it."""
    recorded = {"name": "case", "comparison": [
        {"metric": "ttft_s.p50", "predicted": 0.09, "measured": 0.1, "rel_error": -0.1},
        {"metric": "throughput.output_tokens_per_s", "predicted": 50.0, "measured": 40.0, "rel_error": 0.25}],
        "comparison_of_replay": [{"metric": "ttft_s.p50", "predicted": 0.1, "measured": 0.1, "rel_error": 0.0}],
        "comparison_at_run_speed": [{"metric": "ttft_s.p50", "predicted": 0.098, "measured": 0.1,
                                     "rel_error": -0.02}],
        "repeats": 3, "run_spread": [{"metric": "ttft_s.p50", "predicted": None, "measured": 0.1, "rel_error": 0.07}]}
    (result,) = validation_data.results_in([recorded], "profile")
    rows = {r["key"]: r for r in validation_data.comparison_rows(result)}
    assert rows["latency.ttft_s.p50"]["predicted"] == 0.09 and rows["latency.ttft_s.p50"]["measured"] == 0.1
    assert rows["latency.ttft_s.p50"]["relative error"] == -0.1 and rows["latency.ttft_s.p50"]["replay"] == 0.0
    assert rows["throughput.output_tokens_per_s"]["measured"] == 40.0
    assert rows["latency.ttft_s.p50"]["run speed"] == -0.02
    assert rows["latency.ttft_s.p50"]["run spread"] == 0.07 and result["repeats"] == 3
    assert rows["throughput.output_tokens_per_s"]["replay"] is None
    shipped = validation_data.from_profiles([load_profile("amd-epyc-2vcpu-cpu")])
    assert len(shipped) >= 1 and all(validation_data.comparison_rows(r) for r in shipped)


# ---- the command ----------------------------------------------------------------------------------

def test_infercast_dashboard_runs_streamlit_on_localhost(monkeypatch):
    calls = []
    monkeypatch.setattr(cli, "_serve", lambda command: calls.append(command) or 0)
    assert cli.main(["dashboard", "--headless", "--port", "8599"]) == 0
    command = calls[0]
    assert command[1:4] == ["-m", "streamlit", "run"] and command[4] == str(APP)
    assert command[command.index("--server.address") + 1] == "127.0.0.1"
    assert command[command.index("--server.port") + 1] == "8599"
    args = cli.build_parser().parse_args(["dashboard"])
    assert isinstance(args, argparse.Namespace) and args.address == "127.0.0.1"
