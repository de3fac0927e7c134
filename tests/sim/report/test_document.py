"""Reports: the HTML report holds every section and every chart as embedded data, opens offline
(plotly.js inline once, nothing loaded from anywhere, no web address outside plotly.js's own
source); Markdown and JSON carry the same content; figures are plain-data builders."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from sim.planning.executors import SerialExecutor
from sim.planning.capacity import Candidate, PlanSettings, plan
from sim.report.document import PLOTLY_BEGIN, PLOTLY_END, build_report, render_html, render_json, render_markdown
from sim.planning.sweep import sweep

pytest.importorskip("plotly")

SCENARIO = {"seed": 2, "model": "llama-3.2-1b", "deployment": {"profile": "l4"},
            "scheduler": {"max_num_seqs": 64},
            "workload": {"num_requests": 200, "arrival": {"process": "poisson", "rate_per_s": 20.0},
                         "input_tokens": {"dist": "uniform", "min": 100, "max": 400},
                         "output_tokens": {"dist": "uniform", "min": 20, "max": 80}},
            "slo": {"ttft_s": 0.5, "tpot_s": 0.05}}
PLAN_SECTIONS = ("question", "recommendation", "candidates", "load", "sensitivity", "distributions",
                 "assumptions", "provenance", "method")
PLAN_CHARTS = ("latency_vs_load", "candidates", "sensitivity", "latency_cdfs", "timeline")


@pytest.fixture(scope="module")
def plan_result() -> dict:
    return plan(SCENARIO, [Candidate("l4"), Candidate("a100-80gb")],
                PlanSettings(seeds=2, load_factors=(2.0,), run_duration_s=60.0, verify_requests=2000), SerialExecutor())


@pytest.fixture(scope="module")
def sweep_result() -> dict:
    return sweep(SCENARIO, [Candidate("l4")], [10, 40, 80, 160], SerialExecutor())


def outside_plotly_js(page: str) -> str:
    start, end = page.index(PLOTLY_BEGIN), page.index(PLOTLY_END)
    return page[:start] + page[end:]


def test_html_report_is_self_contained_with_every_section_and_chart(plan_result, tmp_path):
    page = render_html(plan_result)
    assert page.count(PLOTLY_BEGIN) == 1 and page.count(PLOTLY_END) == 1
    assert page.count("Plotly.newPlot") == 1  # one loop draws every chart
    rest = outside_plotly_js(page)
    assert "http" not in rest.lower() and "cdn" not in rest.lower() and "//" not in re.sub(
        r"<script type=\"text/javascript\">.*?</script>", "", rest, flags=re.S).replace("<!--", "")
    assert not re.search(r"<script[^>]*\bsrc\s*=", page, re.IGNORECASE)
    assert not re.search(r"<link\b", page, re.IGNORECASE)
    assert not re.search(r"<(img|iframe)\b[^>]*\bsrc\s*=", page, re.IGNORECASE)
    for sid in PLAN_SECTIONS:
        assert f'<section id="{sid}">' in page
    for name in PLAN_CHARTS:
        assert f'id="chart-{name}"' in page
        blob = re.search(rf'<script type="application/json" id="chart-data-{name}">(.*?)</script>', page, re.S)
        figure = json.loads(blob.group(1))
        assert figure["data"] and any(len(trace.get("x", trace.get("y", []))) for trace in figure["data"])
    for cand in plan_result["candidates"]:
        assert cand["label"] in rest and cand["status"] == "ok"
    # the datasheet profiles cite documents by web address: shown as plain text without a scheme
    assert "github.com/stas00/ml-engineering" in rest


def test_markdown_and_json_reports_carry_the_same_sections(plan_result):
    report = build_report(plan_result)
    md = render_markdown(plan_result)
    for section in report["sections"]:
        assert f"## {section['title']}" in md
    assert "http" not in md and "| candidate | status |" in md
    data = json.loads(render_json(plan_result))
    assert [s["id"] for s in data["sections"]] == list(PLAN_SECTIONS)
    charts = {f["name"]: f["figure"] for s in data["sections"] for f in s["figures"]}
    assert set(charts) == set(PLAN_CHARTS) and all(c["data"] for c in charts.values())
    assert data["result"]["kind"] == "plan"


def test_sweep_report_marks_saturation(sweep_result):
    cand = sweep_result["candidates"][0]
    assert cand["saturation_rate_per_s"] is not None  # 160 req/s overloads one L4
    lo, hi = cand["saturation_bracket"]
    assert lo < cand["saturation_rate_per_s"] < hi
    page = render_html(sweep_result)
    for name in ("latency_vs_load", "throughput_vs_load"):
        assert f'id="chart-{name}"' in page
    assert "http" not in outside_plotly_js(page).lower()
    assert "## Saturation" in render_markdown(sweep_result)


def test_report_cli_renders_every_format_and_rejects_bad_input(plan_result, tmp_path):
    result = tmp_path / "plan.json"
    result.write_text(json.dumps(plan_result))
    outs = [tmp_path / f"r.{ext}" for ext in ("html", "md", "json")]
    cmd = [sys.executable, "-m", "sim", "report", str(result)]
    for out in outs:
        cmd += ["-o", str(out)]
    run = subprocess.run(cmd, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert all(out.stat().st_size > 0 for out in outs)
    # report.json holds the result too, so it can be rendered again
    again = subprocess.run([sys.executable, "-m", "sim", "report", str(outs[2]), "-o", str(tmp_path / "x.md")],
                           capture_output=True, text=True)
    assert again.returncode == 0 and (tmp_path / "x.md").read_text() == outs[1].read_text()
    for args, message in (([str(result), "-o", str(tmp_path / "r.pdf")], "unknown report format"),
                          ([str(tmp_path / "missing.json"), "-o", str(tmp_path / "r.md")], "cannot read"),
                          ([str(outs[1]), "-o", str(tmp_path / "r.md")], "not valid JSON")):
        run = subprocess.run([sys.executable, "-m", "sim", "report", *args], capture_output=True, text=True)
        assert run.returncode == 2 and message in run.stderr and run.stderr.count("\n") == 1


def test_figure_builders_take_plain_data():
    from sim.report import figures

    points = [{"rate_per_s": r, "overloaded": r > 4, "latency": {"ttft_s": {"p99": 0.1 * r}, "tpot_s": {"p99": 0.01}},
               "throughput": {"output_tokens_per_s": 100.0 * min(r, 4)}, "goodput": {"requests_per_s": min(r, 4)}}
              for r in (1, 2, 3, 4, 5, 6)]
    curve = {"label": "gpu", "points": points, "saturation_rate_per_s": 4.5, "max_rate_per_s": 3.0}
    fig = figures.latency_vs_load([curve], {"ttft_s": 0.35})
    assert len(fig.data) == 4  # per metric: latency line + overloaded crosses
    assert any(shape["y0"] == pytest.approx(350.0) for shape in fig.layout.shapes)  # the SLO, in ms
    assert sum(1 for s in fig.layout.shapes if s["x0"] == 4.5) == 2  # the saturation point, on both panels
    assert figures.throughput_vs_load([curve]).data
    cdf = figures.cdf_points(range(1, 10001))
    assert cdf["x"][-1] == 10000 and 0.99 in cdf["p"] and len(cdf["p"]) < 400
    assert figures.latency_cdfs({"gpu": {"ttft_s": cdf}}, {"ttft_s": 5.0}).data
    rows = [{"label": "a", "replicas": 2, "monthly_usd": 10.0, "usd_per_1m_tokens": 0.1, "j_per_1m_tokens": 1e5,
             "is_recommended": True, "replicas_ci": [2, 3]},
            {"label": "b", "replicas": None, "monthly_usd": None, "meets_slo": False}]
    assert len(figures.candidate_bars(rows).data) == 4
    assert figures.sensitivity_bars([{"label": "a", "load_factor": 1.5, "replicas": 3}]).data
    timeline = {"t_s": [0, 1, 2], "replica": [0, 1, 0], "waiting": [1, 0, 2], "running": [3, 4, 5],
                "kv_usage": [0.1, 0.2, 0.3], "power_w": [200, 210, 220]}
    assert len(figures.timeseries(timeline).data) == 8  # 4 panels x 2 replicas


def test_sim_imports_without_plotly():
    code = ("import sys; sys.modules['plotly'] = None\n"
            "import sim, sim.report.figures, sim.report.document, sim.planning.capacity, sim.planning.sweep, sim.planning.executors\n"
            "print(sim.report.figures.cdf_points([1.0, 2.0]))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
