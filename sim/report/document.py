"""Capacity reports: one content model, three renderings (HTML, Markdown, JSON), plus terminal text.

`build_report(result)` turns a plan result (`sim.planning.capacity.plan`) or a sweep result
(`sim.planning.sweep.sweep`) into plain data: a title and sections, each with paragraphs, tables and the
names of the charts (built by `sim.report.figures`) that belong to it. Then:

* `render_html(result)`: one self-contained file that opens offline. plotly.js is embedded inline
  once; every chart's data and layout are embedded as JSON; nothing is loaded from anywhere
  (no <script src>, no <link>, no CDN). Web addresses of the documents a datasheet profile cites
  are printed as plain text without their scheme (e.g. "github.com/..."), never as links.
* `render_markdown(result)`: the same sections and tables; charts are named, their numbers are in
  the tables.
* `render_json(result)`: the same sections with each chart as a Plotly JSON figure, plus the result.

`write_report(result, path)` picks the format from the suffix (.html/.htm, .md, .json) and writes
atomically (temp file, then rename). Plotly is imported only when charts are built.

A candidate without a price per device-hour (its profile has none, the scenario sets none, no owned
hardware) has no cost: its money figures are shown as "no price" and written as null, never as
$0 (`unpriced_as_null`). `load_result` checks that a result file has the fields the report reads
and names the first one missing.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sim.errors import InputError
from sim.files import read_text, write_text_atomic
from sim.report.text import NO_PRICE, PRICED_COST_KEYS

FORMATS = {".html": "html", ".htm": "html", ".md": "md", ".markdown": "md", ".json": "json"}
PLOTLY_BEGIN = "<!-- plotly.js (embedded, offline) -->"
PLOTLY_END = "<!-- end of plotly.js -->"
_URL_SCHEME = re.compile(r"\b(?:https?|ftp)://", re.IGNORECASE)


# ---- formatting helpers -------------------------------------------------------------------------

def _num(value: Any, digits: int = 3, scale: float = 1.0, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int) and scale == 1.0:
        return f"{value:,d}{unit}"
    v = value * scale
    if abs(v) >= 1000:
        return f"{v:,.0f}{unit}"
    return f"{v:.{digits}g}{unit}"


def _usd(value: Any, is_priced: bool = True) -> str:
    if not is_priced:
        return NO_PRICE
    if value is None:
        return "n/a"
    return f"${value:,.0f}" if abs(value) >= 100 else f"${value:.3g}"


def _per_1m(value: Any, is_priced: bool) -> str:
    return _num(value, 4) if is_priced else NO_PRICE


# ---- prices -------------------------------------------------------------------------------------

def candidate_is_priced(result: Mapping, candidate: Mapping) -> bool:
    """A candidate has a cost when its profile has a price, the scenario overrides the price, or
    the hardware is owned (economics.hardware_usd_per_device)."""
    if "is_priced" in candidate:  # plans since the planner records it (from its runs' summaries)
        return bool(candidate["is_priced"])
    a = result.get("assumptions") or {}
    hardware = (a.get("economics") or {}).get("hardware_usd_per_device")
    return (candidate.get("price_usd_per_device_h") is not None or a.get("price_override") is not None
            or (isinstance(hardware, (int, float)) and hardware > 0))


def unpriced_as_null(result: Mapping) -> dict:
    """A copy of a plan or sweep result with every money figure of an unpriced candidate None."""
    import copy

    out = copy.deepcopy(dict(result))
    unpriced = set()
    for c in out.get("candidates") or []:
        if not isinstance(c, dict) or candidate_is_priced(out, c):
            continue
        unpriced.add(c.get("label"))
        if isinstance(c.get("monthly"), dict):
            c["monthly"]["usd"] = None
        for key in ("usd_per_1m_tokens", "usd_per_1m_output_tokens"):
            if key in c:
                c[key] = None
        for row in c.get("sensitivity") or []:
            if isinstance(row, dict):
                row.update({k: None for k in ("monthly_usd", "usd_per_1m_tokens") if k in row})
        for point in (c.get("points") or []) + (c.get("search_points") or []):
            cost = point.get("cost") if isinstance(point, dict) else None
            if isinstance(cost, dict):
                cost.update({k: None for k in PRICED_COST_KEYS if k in cost})
    rec = out.get("recommendation")
    if isinstance(rec, dict) and rec.get("label") in unpriced:
        rec["monthly_usd"] = None
    return out


def _ms(value: Any) -> str:
    return _num(value, 4, 1e3, " ms")


def _ci(ci: Sequence[float] | None, scale: float = 1e3) -> str:
    if not ci or ci[0] is None:
        return ""
    return f" [{_num(ci[0], 4, scale)}, {_num(ci[1], 4, scale)}]"


def _range(values: Sequence[Any] | None, fmt=_num) -> str:
    if not values:
        return "n/a"
    lo, hi = values[0], values[-1]
    return fmt(lo) if lo == hi else f"{fmt(lo)}..{fmt(hi)}"


def _plural(n: Any, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def plain_address(text: str) -> str:
    """A web address as plain text without its scheme (the report links to nothing)."""
    return _URL_SCHEME.sub("", str(text))


def _table(title: str, columns: list[str], rows: list[list[Any]]) -> dict:
    return {"title": title, "columns": columns, "rows": [[str(c) for c in row] for row in rows]}


def _section(sid: str, title: str, paragraphs: list[str] | None = None, tables: list[dict] | None = None,
             figures: list[str] | None = None) -> dict:
    return {"id": sid, "title": title, "paragraphs": paragraphs or [], "tables": tables or [],
            "figures": figures or []}


# ---- content: plan ------------------------------------------------------------------------------

def _slo_text(slo: Mapping[str, float]) -> str:
    return ", ".join(f"{m[:-2].upper()} <= {_ms(v)}" for m, v in slo.items()) or "none"


def _question_section(result: Mapping) -> dict:
    q = result["question"]
    rows = [["model", f"{q['model']} ({q.get('weight_dtype')} weights, {q.get('kv_dtype')} KV cache)"],
            ["traffic", q["workload"]]]
    if result["kind"] == "plan":
        rows += [["target load", f"{_num(q['target_rate_per_s'], 4)} requests/s"
                  + ("" if q["target_rate_per_s"] == q.get("workload_rate_per_s")
                     else f" (the workload itself: {_num(q.get('workload_rate_per_s'), 4)} requests/s)")],
                 ["SLOs", f"{_slo_text(q['slo'])} ({result['criterion']['stat']})"],
                 ["router", q["router"]],
                 ["scheduler", ", ".join(f"{k}={v}" for k, v in q["scheduler"].items())],
                 ["seeds / confidence", f"{q['seeds']} seeds; answers that hold for {q['confidence']:.0%} of them"],
                 ["sensitivity", ", ".join(f"load x{f:g}" for f in q["load_factors"]) or "none"]]
    else:
        rows += [["SLOs", f"{_slo_text(q['slo'])} ({result['criterion']['stat']})"],
                 ["replicas per deployment", str(q.get("replicas"))], ["router", q["router"]],
                 ["rates (requests/s)", ", ".join(_num(r, 3) for r in q.get("rates", [])) or "auto"]]
    paragraphs = [f"Criterion for meeting the SLOs: {result['criterion']['text']}."]
    if result.get("interrupted"):
        paragraphs.insert(0, "INTERRUPTED: this result is partial; candidates not finished are marked.")
    return _section("question", "The question", paragraphs, [_table("", ["", ""], rows)])


def _recommendation_section(result: Mapping) -> dict:
    rec = result.get("recommendation")
    if not rec:
        text = ("The plan was interrupted before a candidate meeting the SLOs was finished."
                if result.get("interrupted") else
                "No candidate meets the SLOs at the target load; see the candidates below.")
        return _section("recommendation", "Recommendation", [text])
    c = next((c for c in result["candidates"] if c["label"] == rec["label"]), None)
    if c is None:
        raise InputError("result", "recommendation.label", f"{rec['label']!r} is not one of the candidates")
    m = c["monthly"]
    priced = candidate_is_priced(result, c)
    devices = f"{_plural(c['devices'], 'device')} of {c.get('device_name', '?')}"
    rows = [["replicas", f"{c['replicas']} x {c['label']} ({devices})"],
            ["monthly cost", _usd(m["usd"], priced)],
            ["$ per 1M tokens (input+output)", _per_1m(c["usd_per_1m_tokens"], priced)],
            ["$ per 1M output tokens", _per_1m(c["usd_per_1m_output_tokens"], priced)],
            ["J per token (input+output)", _num(c["j_per_token"], 4)],
            ["energy per month", f"{_num(m['kwh'], 4)} kWh (IT equipment)"],
            ["CO2 per month", f"{_num(m['co2_kg'], 4)} kg"],
            ["headroom", f"{c['headroom']['fraction']:.0%} (handles up to x{c['headroom']['max_load_factor']:.2f} "
                         f"the target load)"],
            ["p99 TTFT [95% CI]", _ms(c["verification"]["p99"]["ttft_s"]["pooled"])
             + _ci(c["verification"]["p99"]["ttft_s"]["ci95"])],
            ["p99 TPOT [95% CI]", _ms(c["verification"]["p99"]["tpot_s"]["pooled"])
             + _ci(c["verification"]["p99"]["tpot_s"]["ci95"])]]
    return _section("recommendation", "Recommendation", [f"**{rec['label']}**: {rec['reason']}."],
                    [_table("", ["", ""], rows)])


def _candidates_section(result: Mapping) -> dict:
    cols = ["candidate", "status", "max req/s per replica (seeds)", "replicas (by seed)", "devices",
            "monthly cost", "$ / 1M tokens", "$ / 1M output tokens", "J / token", "kWh / month",
            "CO2 kg / month", "headroom"]
    rows = []
    for c in result["candidates"]:
        ok = c["status"] == "ok"
        priced = candidate_is_priced(result, c)
        rows.append([
            c["label"] + (" (recommended)" if c["label"] == (result.get("recommendation") or {}).get("label") else ""),
            c["status"],
            f"{_num(c.get('max_rate_per_replica_per_s'), 4)} ({_range(c.get('max_rate_range'))})"
            if c.get("max_rate_range") else "n/a",
            f"{c['replicas']} ({_range(c.get('replicas_range'))})" if ok else "n/a",
            c.get("devices", "n/a") if ok else "n/a",
            _usd(c["monthly"]["usd"], priced) if ok else "n/a",
            _per_1m(c.get("usd_per_1m_tokens"), priced) if ok else "n/a",
            _per_1m(c.get("usd_per_1m_output_tokens"), priced) if ok else "n/a",
            _num(c.get("j_per_token"), 4) if ok else "n/a",
            _num(c["monthly"]["kwh"], 4) if ok else "n/a",
            _num(c["monthly"]["co2_kg"], 4) if ok else "n/a",
            f"{c['headroom']['fraction']:.0%}" if ok else "n/a"])
    notes = [f"{c['label']}: {c['message']}" for c in result["candidates"] if c.get("message")]
    tables = [_table("All candidates", cols, rows)]
    for c in result["candidates"]:
        tables.append(_candidate_table(c, result))
    return _section("candidates", "Candidates", notes, tables, ["candidates"])


def _price_text(result: Mapping, c: Mapping) -> str:
    if not candidate_is_priced(result, c):
        return f"{NO_PRICE} (the profile has none; set economics.price_usd_per_device_h)"
    if c.get("price_usd_per_device_h") is None:
        return "none in the profile (the scenario's economics set the cost)"
    return f"{_usd(c['price_usd_per_device_h'])}/device-hour"


def _candidate_table(c: Mapping, result: Mapping) -> dict:
    priced = candidate_is_priced(result, c)
    rows = [["profile", f"{c.get('profile_name', c['profile'])} ({c.get('profile_source', '?')}; "
                        f"{c.get('device_name', '')}), tp={c['tp']}"],
            ["price", _price_text(result, c)
                      + (f" ({c['price_source']}, {c['price_date']})" if c.get("price_source") else "")],
            ["status", c["status"] + (f": {c['message']}" if c.get("message") else "")]]
    if c.get("max_rate_by_seed"):
        rows.append(["max req/s per replica by seed", ", ".join(_num(r, 4) for r in c["max_rate_by_seed"])])
    if c.get("replicas_by_seed"):
        rows.append(["replicas by seed", ", ".join(str(n) for n in c["replicas_by_seed"])])
    ver = c.get("verification") or {}
    for a in ver.get("attempts", []):
        rows.append([f"cluster run: {_plural(a['replicas'], 'replica')}", f"{a['seeds_passing']} of {a['seeds']} seeds meet "
                     f"the SLOs" + ("" if a["seeds_passing"] == a["seeds"] else f" ({'; '.join(a['reasons'])})")])
    for metric, p in (ver.get("p99") or {}).items():
        rows.append([f"p99 {metric[:-2].upper()} [95% CI] (by seed)",
                     f"{_ms(p['pooled'])}{_ci(p['ci95'])} ({', '.join(_ms(v) for v in p['by_seed'])})"
                     + (f"; SLO {_ms(p['slo'])}" if p.get("slo") else "")])
    for s in c.get("sensitivity", []):
        rows.append([f"at load x{s['load_factor']:g}", f"{_plural(s['replicas'], 'replica')}, "
                     f"{_usd(s.get('monthly_usd'), priced)}{'/month' if priced else ''}"
                     if s["replicas"] else s["status"]])
    points = c.get("search_points", [])
    if points:
        rows.append(["search (one replica; seed: rate -> result)", "; ".join(
            f"{p['seed_index']}: {_num(p['rate_per_s'], 4)} -> {'pass' if p['passes'] else p['reason']}"
            for p in points)])
    return _table(c["label"], ["", ""], rows)


def _load_section(result: Mapping, figs: Mapping) -> dict:
    paras = ["Latency of one replica at the rates the search tried (first seed). The dashed vertical line "
             "is the highest rate that met the SLOs; the horizontal line is the SLO. Crosses on the floor "
             "are overloaded runs (no latency: the queue grows without bound)."]
    return _section("load", "Latency vs load", paras, [], [n for n in ("latency_vs_load",) if n in figs])


def _sensitivity_section(result: Mapping) -> dict:
    factors = result["question"]["load_factors"]
    cols = ["candidate", "load x1"] + [f"load x{f:g}" for f in factors]
    rows = []
    for c in result["candidates"]:
        if c["status"] != "ok":
            rows.append([c["label"], c["status"]] + ["n/a"] * len(factors))
            continue
        priced = candidate_is_priced(result, c)
        per_month = "/mo" if priced else ""
        cells = [f"{c['replicas']} ({_usd(c['monthly']['usd'], priced)}{per_month})"]
        for s in c.get("sensitivity", []):
            cells.append(f"{s['replicas']} ({_usd(s.get('monthly_usd'), priced)}{per_month})" if s["replicas"]
                         else s["status"])
        rows.append([c["label"]] + cells)
    return _section("sensitivity", "Sensitivity to load growth",
                    ["Replicas (and monthly cost) needed as the load grows, each verified by a cluster simulation."],
                    [_table("replicas needed", cols, rows)], ["sensitivity"])


def _distribution_section(result: Mapping, figs: Mapping) -> dict:
    cols = ["candidate", "metric", "p50", "p90", "p99", "p99 95% CI", "SLO"]
    rows = []
    slo = result["question"]["slo"]
    for c in result["candidates"]:
        for metric, p in ((c.get("verification") or {}).get("p99") or {}).items():
            cdf = (c.get("cdf") or {}).get(metric) or {}
            rows.append([c["label"], metric[:-2].upper(), _ms(_cdf_at(cdf, 0.5)), _ms(_cdf_at(cdf, 0.9)),
                         _ms(p["pooled"]), _ci(p["ci95"]).strip() or "n/a", _ms(slo.get(metric))])
    return _section("distributions", "Latency distributions at the target load",
                    ["Requests of every seed's cluster run at the recommended size, pooled. The 95% confidence "
                     "interval of each p99 is a percentile bootstrap that resamples requests within each seed."],
                    [_table("percentiles", cols, rows)], [n for n in ("latency_cdfs", "timeline") if n in figs])


def _cdf_at(cdf: Mapping, p: float) -> float | None:
    ps, xs = cdf.get("p") or [], cdf.get("x") or []
    for pi, xi in zip(ps, xs):
        if pi >= p:
            return xi
    return xs[-1] if xs else None


def _assumptions_section(result: Mapping) -> dict:
    a = result.get("assumptions", {})
    econ = a.get("economics", {})
    rows = [["electricity", f"${econ.get('electricity_usd_per_kwh', 0):g}/kWh"
             + (" (0: included in the rental price)" if not econ.get("electricity_usd_per_kwh") else "")],
            ["PUE", _num(econ.get("pue"))], ["carbon intensity", f"{_num(econ.get('carbon_g_per_kwh'))} g CO2/kWh"],
            ["hardware purchase", f"{_usd(econ.get('hardware_usd_per_device', 0))}/device over "
                                  f"{_num(econ.get('amortization_years'))} years"],
            ["hours per month", _num(a.get("hours_per_month"), 5)]]
    if a.get("price_override") is not None:
        rows.append(["price override", f"{_usd(a['price_override'])}/device-hour for every candidate "
                                       "(economics.price_usd_per_device_h)"])
    price_rows = [[c["label"], _price_text(result, c), c.get("price_source") or "none",
                   c.get("price_date") or "n/a"] for c in result["candidates"]]
    return _section("assumptions", "Assumptions", list(a.get("notes", [])),
                    [_table("economics", ["", ""], rows),
                     _table("prices (from the profiles)", ["candidate", "price", "source", "date"], price_rows)])


def _provenance_section(result: Mapping) -> dict:
    tables = []
    seen = set()
    for c in result["candidates"]:
        prov = c.get("provenance") or {}
        name = c.get("profile_name", c["profile"])
        if name in seen or not prov:
            continue
        seen.add(name)
        rows = [["source", prov.get("source", "?")], ["file", plain_address(c.get("profile_path", ""))],
                ["device", c.get("device_name", "")], ["date", str(prov.get("date", "n/a"))],
                ["power model", f"{c.get('power_method')}" + (" (estimated)" if c.get("power_is_estimated") else "")]]
        for key in ("method", "host", "device_name", "torch_version", "driver", "notes"):
            if prov.get(key):
                rows.append([key, plain_address(prov[key])])
        for doc in prov.get("documents", []) or []:
            where = f"; {plain_address(doc['url'])}" if doc.get("url") else ""
            rows.append(["document", f"{plain_address(doc.get('title', ''))} ({doc.get('date_kind', 'date')} "
                                     f"{doc.get('date', 'n/a')}{where}); used for: {plain_address(doc.get('used_for', ''))}"])
        tables.append(_table(f"{name} ({prov.get('source', '?')})", ["", ""], rows))
    return _section("provenance", "Provenance of the profiles",
                    ["Measured profiles come from infercast's PyTorch runner on the machine named; datasheet "
                     "profiles from the documents listed (addresses shown as plain text)."], tables)


def _method_section(result: Mapping) -> dict:
    crit = result["criterion"]
    if result["kind"] == "plan":
        text = [f"Criterion: {crit['text']}.",
                f"Search: one replica, {crit['requests_per_run']} requests per run; start at half a cost-model "
                f"estimate of saturation, x4 steps to bracket the answer, then bisection in log(rate) until the "
                f"bracket is within {crit['rel_tol']:.0%}. Every seed is searched on its own.",
                "Sizing: replicas per seed = ceil(target / that seed's max rate); the plan takes the count that "
                "holds for the confidence level across seeds and verifies it with a cluster simulation (the "
                "scenario's router) at the target load for every seed, adding replicas until enough seeds meet "
                "the SLOs. This never searches downwards, so a well-balancing router may need fewer.",
                "Runs are pure functions of (scenario, seed): the same inputs give the same plan on any executor."]
    else:
        text = [f"Criterion: {crit['text']}.",
                "Saturation: the deployment is overloaded when its waiting queue grows through the measurement "
                "window; the saturation point is the geometric midpoint between the highest rate that was not "
                "overloaded and the lowest that was (the throughput measured in the overloaded run is shown too)."]
    return _section("method", "Method", text)


def _sweep_sections(result: Mapping, figs: Mapping) -> list[dict]:
    cols = ["candidate", "saturation (req/s)", "bracket", "throughput at saturation (req/s)",
            "max rate meeting SLOs (req/s)"]
    rows = [[c["label"], _num(c.get("saturation_rate_per_s"), 4), _range(c.get("saturation_bracket")),
             _num(c.get("saturation_throughput_per_s"), 4), _num(c.get("max_rate_meeting_slo_per_s"), 4)]
            for c in result["candidates"]]
    summary = _section("saturation", "Saturation", [
        "n/a: not reached within the rates swept." if any(c.get("saturation_rate_per_s") is None
                                                           for c in result["candidates"]) else ""],
        [_table("per candidate", cols, rows)], ["latency_vs_load", "throughput_vs_load"]
        + [n for n in figs if n.startswith("latency_vs_load_")])
    summary["paragraphs"] = [p for p in summary["paragraphs"] if p]
    point_cols = ["rate (req/s)", "overloaded", "meets SLOs", "p50 TTFT", "p99 TTFT", "p50 TPOT", "p99 TPOT",
                  "p99 E2E", "output tok/s", "goodput (req/s)", "$ / 1M tokens", "J / token"]
    tables = []
    for c in result["candidates"]:
        priced = candidate_is_priced(result, c)
        prow = []
        for p in sorted(c.get("points", []), key=lambda p: p["rate_per_s"]):
            lat = p.get("latency", {})
            prow.append([_num(p["rate_per_s"], 4), _num(p.get("overloaded")), _num(p.get("passes")),
                         _ms(lat.get("ttft_s", {}).get("p50")), _ms(lat.get("ttft_s", {}).get("p99")),
                         _ms(lat.get("tpot_s", {}).get("p50")), _ms(lat.get("tpot_s", {}).get("p99")),
                         _ms(lat.get("e2e_s", {}).get("p99")), _num(p["throughput"]["output_tokens_per_s"], 4),
                         _num(p["goodput"]["requests_per_s"], 4), _per_1m(p["cost"]["usd_per_1m_tokens"], priced),
                         _num(p["energy"]["j_per_token"], 4)])
        tables.append(_table(c["label"], point_cols, prow))
    points = _section("points", "Every point", [], tables)
    return [summary, points]


def build_report(result: Mapping, figs: Mapping | None = None) -> dict:
    """The report's content as plain data: {"title", "kind", "sections": [...]}."""
    kind = result.get("kind")
    if kind not in ("plan", "sweep"):
        raise InputError("result", "kind", f"expected a plan or sweep result, got {kind!r}")
    figs = figs if figs is not None else {}
    q = result["question"]
    if kind == "plan":
        title = f"Capacity plan: {q['model']} at {_num(q['target_rate_per_s'], 4)} requests/s"
        sections = [_question_section(result), _recommendation_section(result), _candidates_section(result),
                    _load_section(result, figs), _sensitivity_section(result), _distribution_section(result, figs),
                    _assumptions_section(result), _provenance_section(result), _method_section(result)]
    else:
        title = f"Load sweep: {q['model']}"
        sections = [_question_section(result), *_sweep_sections(result, figs), _assumptions_section(result),
                    _provenance_section(result), _method_section(result)]
    for s in sections:
        s["figures"] = [n for n in s["figures"] if not figs or n in figs]
    return {"title": title, "kind": kind, "sections": sections}


def result_figures(result: Mapping) -> dict:
    from sim.report import figures

    return figures.plan_figures(result) if result.get("kind") == "plan" else figures.sweep_figures(result)


# ---- renderings ---------------------------------------------------------------------------------

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0 auto;max-width:1200px;padding:1em 2em;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}h3{font-size:1.05em}
table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:.9em}td,th{border:1px solid #ddd;padding:.25em .6em;
text-align:left;vertical-align:top}th{background:#f4f4f4}nav a{margin-right:1em}.chart{width:100%;min-height:380px}
.note{color:#555}
"""


def _md_inline(text: str) -> str:
    """**bold** to <strong> in already-escaped HTML text."""
    return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)


def render_html(result: Mapping) -> str:
    result = unpriced_as_null(result)
    from plotly.offline import get_plotlyjs

    figs = result_figures(result)
    report = build_report(result, figs)
    esc = html.escape
    out = ["<!DOCTYPE html>", "<html lang=\"en\"><head><meta charset=\"utf-8\">",
           f"<title>{esc(report['title'])}</title>", f"<style>{_CSS}</style>", PLOTLY_BEGIN,
           "<script type=\"text/javascript\">" + get_plotlyjs() + "</script>", PLOTLY_END,
           "</head><body>", f"<h1>{esc(report['title'])}</h1>", "<nav>"]
    out += [f"<a href=\"#{s['id']}\">{esc(s['title'])}</a>" for s in report["sections"]]
    out.append("</nav>")
    fig_ids = []
    for s in report["sections"]:
        out.append(f"<section id=\"{s['id']}\"><h2>{esc(s['title'])}</h2>")
        out += [f"<p>{_md_inline(esc(plain_address(p)))}</p>" for p in s["paragraphs"]]
        for name in s["figures"]:
            fig_ids.append(name)
            data = json.dumps(figs[name].to_plotly_json(), default=_json_default, allow_nan=False)
            data = data.replace("</", "<\\/")
            out.append(f"<div class=\"chart\" id=\"chart-{name}\" data-chart=\"{name}\"></div>")
            out.append(f"<script type=\"application/json\" id=\"chart-data-{name}\">{data}</script>")
        for t in s["tables"]:
            out.append(_html_table(t))
        out.append("</section>")
    out.append("<script type=\"text/javascript\">"
               "document.querySelectorAll('div.chart').forEach(function(div){"
               "var fig=JSON.parse(document.getElementById('chart-data-'+div.dataset.chart).textContent);"
               "Plotly.newPlot(div,fig.data,fig.layout,{responsive:true,displaylogo:false,showLink:false});});"
               "</script>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _html_table(t: Mapping) -> str:
    esc = html.escape
    head = "" if not any(t["columns"]) else "<tr>" + "".join(f"<th>{esc(c)}</th>" for c in t["columns"]) + "</tr>"
    body = "".join("<tr>" + "".join(f"<td>{esc(plain_address(c))}</td>" for c in row) + "</tr>" for row in t["rows"])
    title = f"<h3>{esc(t['title'])}</h3>" if t["title"] else ""
    return f"{title}<table>{head}{body}</table>"


def _md_cell(text: str) -> str:
    return plain_address(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(result: Mapping) -> str:
    result = unpriced_as_null(result)
    figs_titles = _figure_titles(result)
    report = build_report(result, figs_titles)
    out = [f"# {report['title']}", ""]
    for s in report["sections"]:
        out += [f"## {s['title']}", ""]
        for p in s["paragraphs"]:
            out += [plain_address(p), ""]
        for name in s["figures"]:
            out += [f"*Chart: {figs_titles[name]} (interactive in the HTML report; its numbers are in the "
                    f"tables here).*", ""]
        for t in s["tables"]:
            if t["title"]:
                out += [f"### {t['title']}", ""]
            cols = t["columns"] if any(t["columns"]) else [" ", " "]
            out.append("| " + " | ".join(_md_cell(c) for c in cols) + " |")
            out.append("|" + "---|" * len(cols))
            out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in t["rows"]]
            out.append("")
    return "\n".join(out).rstrip() + "\n"


def _figure_titles(result: Mapping) -> dict[str, str]:
    """Chart names and titles without building them (Markdown needs no plotly)."""
    if result.get("kind") == "plan":
        names = {"latency_vs_load": "latency vs load per candidate (one replica)",
                 "candidates": "replicas, monthly cost, $ and J per 1M tokens per candidate",
                 "sensitivity": "replicas needed as load grows",
                 "latency_cdfs": "TTFT/TPOT/E2E CDFs at the target load", "timeline": "the recommended deployment over time"}
        has = {"latency_vs_load": any(c.get("search_points") for c in result["candidates"]),
               "candidates": bool(result["candidates"]),
               "sensitivity": any(c.get("sensitivity") for c in result["candidates"]),
               "latency_cdfs": any(c.get("cdf") for c in result["candidates"]),
               "timeline": any(c.get("timeline") and c["label"] == (result.get("recommendation") or {}).get("label")
                               for c in result["candidates"])}
        return {n: t for n, t in names.items() if has[n]}
    return {"latency_vs_load": "latency vs load", "throughput_vs_load": "throughput and goodput vs load"}


def render_json(result: Mapping) -> str:
    result = unpriced_as_null(result)
    figs = result_figures(result)
    report = build_report(result, figs)
    for s in report["sections"]:
        s["figures"] = [{"name": n, "figure": figs[n].to_plotly_json()} for n in s["figures"]]
    report["result"] = result
    return json.dumps(report, indent=1, default=_json_default, allow_nan=False) + "\n"


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__}")


def report_format(path: str) -> str:
    fmt = FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise InputError(path, "", f"unknown report format; expected a name ending in {', '.join(FORMATS)}")
    return fmt


def render(result: Mapping, fmt: str) -> str:
    return {"html": render_html, "md": render_markdown, "json": render_json}[fmt](result)


def write_report(result: Mapping, path: str | Path) -> str:
    """Render by the path's suffix and write atomically; returns the format."""
    fmt = report_format(str(path))
    write_text_atomic(path, render(result, fmt))
    return fmt


def load_result(path: str | Path) -> dict:
    """A plan or sweep result JSON (as `infercast plan --json` writes), or a report.json holding one,
    with the fields a report reads (InputError naming the first one missing)."""
    from sim.spec.profile import parse_json

    data = parse_json(read_text(path, "plan or sweep result"), str(path))
    if isinstance(data, dict) and "result" in data and "sections" in data:
        data = data["result"]
    if not isinstance(data, dict) or data.get("kind") not in ("plan", "sweep"):
        raise InputError(str(path), "kind", "expected a plan or sweep result (from `infercast plan --json` "
                         "or `infercast sweep --json`)")
    check_result(data, str(path))
    return data


_RESULT_FIELDS = {  # kind -> {section: fields every report reads}
    "plan": {"question": ("model", "workload", "target_rate_per_s", "slo", "router", "scheduler", "seeds",
                          "confidence", "load_factors"),
             "criterion": ("stat", "text", "rel_tol", "requests_per_run")},
    "sweep": {"question": ("model", "workload", "slo", "router"), "criterion": ("stat", "text")},
}
_CANDIDATE_FIELDS = ("label", "profile", "tp", "status")
_OK_CANDIDATE_FIELDS = {"plan": ("replicas", "devices", "monthly", "usd_per_1m_tokens", "usd_per_1m_output_tokens",
                                 "j_per_token", "headroom", "verification"),
                        "sweep": ("points",)}
_POINT_FIELDS = ("rate_per_s", "throughput", "goodput", "cost", "energy")


def _require(obj: Any, fields: Sequence[str], where: str, prefix: str) -> None:
    if not isinstance(obj, dict):
        raise InputError(where, prefix.rstrip("."), f"expected an object, got {type(obj).__name__}")
    for name in fields:
        if name not in obj:
            raise InputError(where, f"{prefix}{name}", "missing (not a complete plan or sweep result)")


def check_result(result: Mapping, where: str) -> None:
    """The fields a report reads are there (a result written by another version, or edited, may
    lack some): InputError naming the first one missing."""
    kind = result["kind"]
    _require(result, (*_RESULT_FIELDS[kind], "candidates"), where, "")
    for section, fields in _RESULT_FIELDS[kind].items():
        _require(result[section], fields, where, f"{section}.")
    if not isinstance(result["question"]["slo"], dict):
        raise InputError(where, "question.slo", "expected an object of SLOs")
    if not isinstance(result["candidates"], list):
        raise InputError(where, "candidates", "expected a list of candidates")
    for i, c in enumerate(result["candidates"]):
        _require(c, _CANDIDATE_FIELDS, where, f"candidates[{i}].")
        if c["status"] == "ok" or kind == "sweep":
            _require(c, _OK_CANDIDATE_FIELDS[kind], where, f"candidates[{i}].")
        if kind == "plan" and c["status"] == "ok":
            _require(c["monthly"], ("usd", "kwh", "co2_kg"), where, f"candidates[{i}].monthly.")
            _require(c["headroom"], ("fraction", "max_load_factor"), where, f"candidates[{i}].headroom.")
        if kind == "sweep":
            if not isinstance(c["points"], list):
                raise InputError(where, f"candidates[{i}].points", "expected a list of points")
            for j, point in enumerate(c["points"]):
                _require(point, _POINT_FIELDS, where, f"candidates[{i}].points[{j}].")


# ---- terminal text ------------------------------------------------------------------------------

def result_text(result: Mapping) -> str:
    """A short plain-text rendering for the terminal: the recommendation and the main table."""
    result = unpriced_as_null(result)
    report = build_report(result, _figure_titles(result))
    wanted = ("recommendation", "candidates") if result["kind"] == "plan" else ("saturation",)
    lines = [report["title"]]
    if result.get("interrupted"):
        lines.append("INTERRUPTED: partial result")
    for s in report["sections"]:
        if s["id"] not in wanted:
            continue
        for p in s["paragraphs"]:
            lines.append(p.replace("**", ""))
        for t in s["tables"][:1]:
            lines.append(_text_table(t))
    return "\n".join(lines)


def _text_table(t: Mapping) -> str:
    rows = ([t["columns"]] if any(t["columns"]) else []) + t["rows"]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)
