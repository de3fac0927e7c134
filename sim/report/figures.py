"""Plotly figure builders shared by the reports (`sim.report.document`) and the Streamlit dashboard.

Every builder is a function from plain data (lists, dicts, the run summary's JSON shape) to a
`plotly.graph_objects.Figure`; none reads files, runs simulations or prints. Plotly is imported
inside the functions, so `import sim.report.figures` works without it (only building a figure needs it).

Data helpers (no plotly needed) turn a run into the plain data the builders take:

* `latency_cdf_data(run_result)` -> {"ttft_s"|"tpot_s"|"e2e_s": {"p": [...], "x": [...]}}
* `timeline_data(run_result.recorder)` -> {"t_s", "replica", "waiting", "running", "kv_usage", "power_w"}
* `cdf_points(values)` -> {"p": [...], "x": [...]} (a compact empirical CDF, exact in the tail)

Builders (stable API; keyword arguments may grow, never be renamed):

* `latency_vs_load(curves, slo=None, metrics=("ttft_s", "tpot_s"), stat="p99", title=None, log_axes=True)`
    curves: [{"label": str, "points": [point, ...], "saturation_rate_per_s": float | None,
              "max_rate_per_s": float | None}], a point being any dict with "rate_per_s" and the
    run summary's "overloaded" and "latency" keys (a whole summary plus "rate_per_s" will do).
    One row per metric; the SLO as a horizontal line; each curve's saturation point (dotted) and
    the highest rate meeting the SLOs (dashed), when given, as vertical lines; overloaded points,
    which have no latency, as crosses on the panel's floor. Log-scale axes unless log_axes=False.
* `throughput_vs_load(curves, log_axes=True)`: achieved output tokens/s and goodput req/s against
    offered load.
* `latency_cdfs(cdfs, slo=None, metrics=("ttft_s", "tpot_s", "e2e_s"))`
    cdfs: {label: {metric: {"p": [...], "x": [...]}}}; one panel per metric, SLO as a vertical line.
* `timeseries(timeline, title=None, max_replicas=8)`
    timeline: the dict of `timeline_data`; panels for queue length, running batch, KV usage, power.
* `candidate_bars(rows, metrics=CANDIDATE_METRICS)`
    rows: [{"label": str, "replicas": int, "monthly_usd": float, "usd_per_1m_tokens": float,
            "j_per_1m_tokens": float, "is_recommended": bool, "meets_slo": bool,
            optional "<metric>_ci": [low, high]}]; one bar panel per metric.
* `sensitivity_bars(rows)`
    rows: [{"label": str, "load_factor": float, "replicas": int | None}]; grouped bars.
* `plan_figures(plan)` / `sweep_figures(sweep)`: every chart of a `sim.planning.capacity` plan result or
    a `sim.planning.sweep` sweep result, as {name: Figure} in report order.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

METRIC_LABELS = {"ttft_s": "TTFT", "tpot_s": "TPOT", "itl_s": "ITL", "e2e_s": "E2E latency"}
CANDIDATE_METRICS: dict[str, str] = {
    "replicas": "replicas",
    "monthly_usd": "monthly cost ($)",
    "usd_per_1m_tokens": "$ per 1M tokens",
    "j_per_1m_tokens": "J per 1M tokens",
}
TIMELINE_PANELS: dict[str, str] = {
    "waiting": "queue length (waiting requests)",
    "running": "batch (running requests)",
    "kv_usage": "KV cache usage (%)",
    "power_w": "power (W)",
}
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf")
TEMPLATE = "plotly_white"


# ---- data helpers (no plotly) ------------------------------------------------------------------

def color_for(index: int) -> str:
    """The colour of the index-th candidate, the same in every chart."""
    return PALETTE[index % len(PALETTE)]


def cdf_points(values: Iterable[float], max_points: int = 300) -> dict[str, list[float]]:
    """A compact empirical CDF: the values at probabilities dense near 0 and 1 (the tails keep
    their resolution: p99, p99.9 are on the grid when the sample has them). Empty in, empty out."""
    x = np.sort(np.asarray(list(values), dtype=np.float64))
    x = x[np.isfinite(x)]
    n = x.size
    if n == 0:
        return {"p": [], "x": []}
    if n <= max_points:
        p = np.arange(1, n + 1) / n
        return {"p": p.tolist(), "x": x.tolist()}
    body = np.linspace(0.0, 1.0, max_points // 2)
    tail = 1.0 - np.logspace(-1, math.log10(1.0 / n), max_points // 2)
    p = np.unique(np.concatenate([body, tail, [0.5, 0.9, 0.95, 0.99, 1.0]]))
    return {"p": p.tolist(), "x": np.quantile(x, p).tolist()}


def latency_cdf_data(run_result: Any, max_points: int = 300) -> dict[str, dict[str, list[float]]]:
    """TTFT, TPOT and E2E CDFs of a run's measured, completed requests (a `sim.scenario.RunResult`)."""
    ttft, tpot, e2e = [], [], []
    for r in run_result.recorder.requests:
        if not r.is_measured or r.finish_s < 0:
            continue
        ttft.append(r.first_token_s - r.arrival_s)
        e2e.append(r.finish_s - r.arrival_s)
        if r.output_tokens > 1:
            tpot.append((r.finish_s - r.first_token_s) / (r.output_tokens - 1))
    return {"ttft_s": cdf_points(ttft, max_points), "tpot_s": cdf_points(tpot, max_points),
            "e2e_s": cdf_points(e2e, max_points)}


def timeline_data(recorder: Any, max_points: int = 4000) -> dict[str, list[float]]:
    """The recorder's sampled timelines as plain lists, thinned evenly to at most max_points rows."""
    columns = {k: np.frombuffer(v, dtype=np.float64) if len(v) else np.zeros(0)
               for k, v in recorder.timeline.items()}
    n = len(columns["t_s"])
    keep = np.arange(n) if n <= max_points else np.unique(np.linspace(0, n - 1, max_points).astype(int))
    return {k: v[keep].tolist() for k, v in columns.items()}


def get_in(d: Mapping | None, *keys: str) -> Any:
    """d[k1][k2]...; None where a level is missing or not a mapping."""
    for key in keys:
        if not isinstance(d, Mapping):
            return None
        d = d.get(key)
    return d


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# ---- builders -----------------------------------------------------------------------------------

def _go():
    import plotly.graph_objects as go

    return go


def _subplots(**kwargs):
    from plotly.subplots import make_subplots

    return make_subplots(**kwargs)


def latency_vs_load(curves: Sequence[Mapping], slo: Mapping[str, float | None] | None = None,
                    metrics: Sequence[str] = ("ttft_s", "tpot_s"), stat: str = "p99",
                    title: str | None = None, log_axes: bool = True):
    """Latency `stat` against offered load per curve, one row per metric (see module doc).
    log_axes: log-scale rate and latency (candidates an order of magnitude apart stay readable);
    overloaded points then sit on each panel's floor (70% of its lowest latency)."""
    go = _go()
    fig = _subplots(rows=len(metrics), cols=1, shared_xaxes=True, vertical_spacing=0.06)
    floors = []
    for metric in metrics:
        values = [get_in(p, "latency", metric, stat) for c in curves for p in c.get("points", [])
                  if not p.get("overloaded")]
        values = [v * 1e3 for v in values if _finite(v) and v > 0]
        floors.append(0.7 * min(values) if (values and log_axes) else (1.0 if log_axes else 0.0))
    for i, curve in enumerate(curves):
        color = color_for(i)
        pts = sorted(curve.get("points", []), key=lambda p: p["rate_per_s"])
        for row, metric in enumerate(metrics, start=1):
            ok = [p for p in pts if not p.get("overloaded") and _finite(get_in(p, "latency", metric, stat))]
            fig.add_trace(go.Scatter(
                x=[p["rate_per_s"] for p in ok], y=[get_in(p, "latency", metric, stat) * 1e3 for p in ok],
                mode="lines+markers", name=curve["label"], legendgroup=curve["label"],
                showlegend=row == 1, line={"color": color},
                hovertemplate="%{x:.3g} req/s: %{y:.4g} ms<extra>" + curve["label"] + "</extra>"),
                row=row, col=1)
            over = [p for p in pts if p.get("overloaded")]
            if over:
                fig.add_trace(go.Scatter(
                    x=[p["rate_per_s"] for p in over], y=[floors[row - 1]] * len(over), mode="markers",
                    name=f"{curve['label']} overloaded", legendgroup=curve["label"], showlegend=False,
                    marker={"symbol": "x", "size": 9, "color": color},
                    hovertemplate="%{x:.3g} req/s: overloaded<extra>" + curve["label"] + "</extra>"),
                    row=row, col=1)
        for key, dash, text in (("saturation_rate_per_s", "dot", "sat."), ("max_rate_per_s", "dash", "")):
            rate = curve.get(key)
            if not _finite(rate) or (log_axes and rate <= 0):  # a log axis has no place for 0
                continue
            for row in range(1, len(metrics) + 1):
                fig.add_vline(x=rate, line={"color": color, "dash": dash, "width": 1.5}, row=row, col=1)
            # annotations on a log axis take log10 coordinates (shapes take data values)
            fig.add_annotation(x=math.log10(rate) if log_axes else rate, y=1.0, xref="x", yref="y domain",
                               text=f"{text} {rate:.3g}/s".strip(), showarrow=False, yanchor="bottom",
                               font={"size": 10, "color": color})
    for row, metric in enumerate(metrics, start=1):
        limit = get_in(slo, metric) if slo else None
        if _finite(limit):
            fig.add_hline(y=limit * 1e3, line={"color": "black", "dash": "dash"}, row=row, col=1)
            y = limit * 1e3
            fig.add_annotation(x=0.0, y=math.log10(y) if log_axes else y, xref=f"x{'' if row == 1 else row} domain",
                               yref=f"y{'' if row == 1 else row}", text=f"SLO {y:.4g} ms", showarrow=False,
                               xanchor="left", yanchor="bottom", font={"size": 11})
        fig.update_yaxes(title_text=f"{stat} {METRIC_LABELS.get(metric, metric)} (ms)", row=row, col=1,
                         **({"type": "log"} if log_axes else {"rangemode": "tozero"}))
    if log_axes:
        fig.update_xaxes(type="log")
    fig.update_xaxes(title_text="offered load (requests/s)", row=len(metrics), col=1)
    fig.update_layout(template=TEMPLATE, title=title or f"{stat} latency vs load",
                      height=300 * len(metrics) + 100, legend={"orientation": "h", "y": -0.12},
                      margin={"t": 110})
    return fig


def throughput_vs_load(curves: Sequence[Mapping], title: str | None = None, log_axes: bool = True):
    """Achieved output tokens/s and goodput (req/s meeting SLOs) against offered load (log rate
    axis by default)."""
    go = _go()
    fig = _subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.1,
                    subplot_titles=["output tokens/s", "goodput (requests/s meeting every SLO)"])
    for i, curve in enumerate(curves):
        color = color_for(i)
        pts = sorted(curve.get("points", []), key=lambda p: p["rate_per_s"])
        for row, keys in ((1, ("throughput", "output_tokens_per_s")), (2, ("goodput", "requests_per_s"))):
            ok = [p for p in pts if _finite(get_in(p, *keys))]
            fig.add_trace(go.Scatter(
                x=[p["rate_per_s"] for p in ok], y=[get_in(p, *keys) for p in ok], mode="lines+markers",
                name=curve["label"], legendgroup=curve["label"], showlegend=row == 1,
                line={"color": color},
                marker={"symbol": ["x" if p.get("overloaded") else "circle" for p in ok]}), row=row, col=1)
        rate = curve.get("saturation_rate_per_s")
        if _finite(rate):
            fig.add_vline(x=rate, line={"color": color, "dash": "dot", "width": 1.5})
    if log_axes:
        fig.update_xaxes(type="log")
    fig.update_xaxes(title_text="offered load (requests/s)", row=2, col=1)
    fig.update_yaxes(rangemode="tozero")
    fig.update_layout(template=TEMPLATE, title=title or "throughput vs load (x: overloaded)", height=620,
                      legend={"orientation": "h", "y": -0.12})
    return fig


def latency_cdfs(cdfs: Mapping[str, Mapping[str, Mapping[str, Sequence[float]]]],
                 slo: Mapping[str, float | None] | None = None,
                 metrics: Sequence[str] = ("ttft_s", "tpot_s", "e2e_s"), title: str | None = None):
    """Empirical CDFs per label, one panel per metric; x in ms, SLO as a vertical line."""
    go = _go()
    fig = _subplots(rows=1, cols=len(metrics), subplot_titles=[METRIC_LABELS.get(m, m) for m in metrics])
    for i, (label, per_metric) in enumerate(cdfs.items()):
        for col, metric in enumerate(metrics, start=1):
            cdf = per_metric.get(metric) or {"p": [], "x": []}
            fig.add_trace(go.Scatter(x=[v * 1e3 for v in cdf["x"]], y=list(cdf["p"]), mode="lines",
                                     name=label, legendgroup=label, showlegend=col == 1,
                                     line={"color": color_for(i), "shape": "hv"}), row=1, col=col)
    for col, metric in enumerate(metrics, start=1):
        limit = get_in(slo, metric) if slo else None
        if _finite(limit):
            fig.add_vline(x=limit * 1e3, line={"color": "black", "dash": "dash"}, row=1, col=col)
        fig.add_hline(y=0.99, line={"color": "grey", "dash": "dot", "width": 1}, row=1, col=col)
        fig.update_xaxes(title_text="ms", row=1, col=col)
    fig.update_yaxes(range=[0, 1.01], title_text="fraction of requests", row=1, col=1)
    fig.update_layout(template=TEMPLATE, title=title or "latency CDFs (dotted: p99; dashed: SLO)", height=420,
                      legend={"orientation": "h", "y": -0.2})
    return fig


def timeseries(timeline: Mapping[str, Sequence[float]], title: str | None = None, max_replicas: int = 8):
    """Queue length, running batch, KV usage and power over time, one line per replica (the first
    max_replicas replicas; the title says when more were left out)."""
    go = _go()
    panels = list(TIMELINE_PANELS)
    fig = _subplots(rows=len(panels), cols=1, shared_xaxes=True, vertical_spacing=0.05,
                    subplot_titles=list(TIMELINE_PANELS.values()))
    t = np.asarray(timeline.get("t_s", []), dtype=np.float64)
    rep = np.asarray(timeline.get("replica", [0] * len(t)), dtype=np.float64)
    replicas = sorted({int(r) for r in rep})
    shown = replicas[:max_replicas]
    for i, r in enumerate(shown):
        sel = rep == r
        for row, key in enumerate(panels, start=1):
            y = np.asarray(timeline.get(key, []), dtype=np.float64)
            if y.size != t.size:
                continue
            y = y[sel] * (100.0 if key == "kv_usage" else 1.0)
            fig.add_trace(go.Scatter(x=t[sel].tolist(), y=y.tolist(), mode="lines", name=f"replica {r}",
                                     legendgroup=f"r{r}", showlegend=row == 1,
                                     line={"color": color_for(i), "width": 1, "shape": "hv"}), row=row, col=1)
    fig.update_xaxes(title_text="time (s)", row=len(panels), col=1)
    fig.update_yaxes(rangemode="tozero")
    extra = f" (first {len(shown)} of {len(replicas)} replicas)" if len(replicas) > len(shown) else ""
    fig.update_layout(template=TEMPLATE, title=(title or "over time") + extra, height=220 * len(panels) + 80)
    return fig


def candidate_bars(rows: Sequence[Mapping], metrics: Mapping[str, str] | Sequence[str] = CANDIDATE_METRICS,
                   title: str | None = None):
    """One bar panel per metric across candidates; the recommendation outlined, candidates that
    cannot meet the SLOs hatched; `<metric>_ci` [low, high] drawn as error bars when present."""
    go = _go()
    names = dict(metrics) if isinstance(metrics, Mapping) else {m: CANDIDATE_METRICS.get(m, m) for m in metrics}
    fig = _subplots(rows=1, cols=len(names), subplot_titles=list(names.values()))
    labels = [r["label"] for r in rows]
    colors = [color_for(i) for i in range(len(rows))]
    for col, (metric, _) in enumerate(names.items(), start=1):
        values = [r.get(metric) if _finite(r.get(metric)) else None for r in rows]
        error = None
        cis = [r.get(f"{metric}_ci") for r in rows]
        if any(ci for ci in cis):
            plus = [(ci[1] - v) if ci and v is not None and _finite(ci[1]) else 0 for ci, v in zip(cis, values)]
            minus = [(v - ci[0]) if ci and v is not None and _finite(ci[0]) else 0 for ci, v in zip(cis, values)]
            error = {"type": "data", "symmetric": False, "array": plus, "arrayminus": minus}
        fig.add_trace(go.Bar(
            x=labels, y=values, error_y=error, showlegend=False,
            marker={"color": colors,
                    "line": {"color": ["black" if r.get("is_recommended") else "rgba(0,0,0,0)" for r in rows],
                             "width": 3},
                    "pattern": {"shape": ["" if r.get("meets_slo", True) else "/" for r in rows]}},
            text=[_short(v) for v in values], textposition="outside"), row=1, col=col)
        fig.update_yaxes(rangemode="tozero", row=1, col=col)
    fig.update_layout(template=TEMPLATE, height=420, width=None,
                      title=title or "per candidate (outlined: recommended; hatched: misses an SLO)")
    return fig


def sensitivity_bars(rows: Sequence[Mapping], title: str | None = None):
    """Replicas needed per candidate at each load factor (grouped bars)."""
    go = _go()
    fig = go.Figure()
    factors = sorted({float(r["load_factor"]) for r in rows})
    labels = list(dict.fromkeys(r["label"] for r in rows))
    for k, factor in enumerate(factors):
        by_label = {r["label"]: r for r in rows if float(r["load_factor"]) == factor}
        fig.add_trace(go.Bar(x=labels, y=[get_in(by_label.get(lb), "replicas") for lb in labels],
                             name=f"load x{factor:g}", marker={"color": PALETTE[(k + 4) % len(PALETTE)]}))
    fig.update_layout(template=TEMPLATE, barmode="group", height=380, yaxis_title="replicas",
                      title=title or "replicas needed as load grows")
    return fig


def _short(value: float | None) -> str:
    if value is None:
        return "n/a"
    if abs(value) >= 1e4:
        return f"{value:,.0f}"
    return f"{value:.4g}"


# ---- whole results ------------------------------------------------------------------------------

def plan_figures(plan: Mapping) -> dict[str, Any]:
    """Every chart of a plan result (`sim.planning.capacity.plan` as_dict), by name, in report order."""
    cands = plan.get("candidates", [])
    slo = get_in(plan, "question", "slo") or {}
    figs: dict[str, Any] = {}
    curves = [{"label": c["label"], "points": [p for p in c.get("search_points", []) if p.get("seed_index", 0) == 0],
               "saturation_rate_per_s": get_in(c, "saturation_rate_per_s"),
               "max_rate_per_s": c.get("max_rate_per_replica_per_s")} for c in cands]
    if any(c["points"] for c in curves):
        metrics = [m for m in ("ttft_s", "tpot_s", "e2e_s") if _finite(slo.get(m))] or ["ttft_s", "tpot_s"]
        figs["latency_vs_load"] = latency_vs_load(
            curves, slo, metrics=metrics, stat=plan.get("criterion", {}).get("stat", "p99"),
            title="one replica, first seed: latency vs load (dashed: max rate meeting the SLOs; x: overloaded)")
    rows = [bar_row(c, plan) for c in cands]
    if rows:
        figs["candidates"] = candidate_bars(rows)
    sens = [{"label": c["label"], "load_factor": s["load_factor"], "replicas": s.get("replicas")}
            for c in cands for s in c.get("sensitivity", [])]
    if sens:
        figs["sensitivity"] = sensitivity_bars(sens)
    cdfs = {c["label"]: c["cdf"] for c in cands if c.get("cdf")}
    if cdfs:
        figs["latency_cdfs"] = latency_cdfs(cdfs, slo, title="latency CDFs at the target load, sized deployment "
                                                              "(dotted: p99; dashed: SLO)")
    rec = get_in(plan, "recommendation", "label")
    for c in cands:
        if c["label"] == rec and c.get("timeline"):
            figs["timeline"] = timeseries(c["timeline"], title=f"{c['label']}: sized deployment at the target load")
    return figs


def bar_row(candidate: Mapping, plan: Mapping) -> dict[str, Any]:
    """The `candidate_bars` row of one plan candidate."""
    return {"label": candidate["label"], "replicas": candidate.get("replicas"),
            "monthly_usd": get_in(candidate, "monthly", "usd"),
            "usd_per_1m_tokens": candidate.get("usd_per_1m_tokens"),
            "j_per_1m_tokens": candidate.get("j_per_1m_tokens"),
            "replicas_ci": candidate.get("replicas_range"),
            "is_recommended": candidate["label"] == get_in(plan, "recommendation", "label"),
            "meets_slo": candidate.get("status") == "ok"}


def sweep_figures(sweep: Mapping) -> dict[str, Any]:
    """Every chart of a sweep result (`sim.planning.sweep.sweep` as_dict), by name, in report order."""
    slo = get_in(sweep, "question", "slo") or {}
    curves = [{"label": c["label"], "points": c.get("points", []),
               "saturation_rate_per_s": c.get("saturation_rate_per_s"),
               "max_rate_per_s": c.get("max_rate_meeting_slo_per_s")} for c in sweep.get("candidates", [])]
    metrics = [m for m in ("ttft_s", "tpot_s", "e2e_s") if _finite(slo.get(m))] or ["ttft_s", "tpot_s"]
    figs = {"latency_vs_load": latency_vs_load(curves, slo, metrics=metrics, title="latency vs load"),
            "throughput_vs_load": throughput_vs_load(curves)}
    for metric in ("ttft_s", "tpot_s"):
        if metric not in metrics:
            figs[f"latency_vs_load_{metric}"] = latency_vs_load(curves, slo, metrics=[metric],
                                                                title=f"{METRIC_LABELS[metric]} vs load")
    return figs


# ---- measured profiles and fidelity (used by the dashboard's Profiles and Validation pages) ----

def measured_vs_predicted(rows: Sequence[Mapping], title: str | None = None):
    """Measured against predicted step time (ms, log-log), one colour per step kind; the diagonal
    is a perfect prediction. rows: {"kind", "model", "batch", "num_tokens", "measured_s", "predicted_s"}."""
    go = _go()
    fig = go.Figure()
    kinds = list(dict.fromkeys(r["kind"] for r in rows))
    for i, kind in enumerate(kinds):
        sel = [r for r in rows if r["kind"] == kind]
        fig.add_trace(go.Scatter(
            x=[r["measured_s"] * 1e3 for r in sel], y=[r["predicted_s"] * 1e3 for r in sel], mode="markers",
            name=kind, marker={"color": color_for(i), "size": 7},
            text=[f"{r['model']} batch {r['batch']}, {r['num_tokens']} tokens" for r in sel],
            hovertemplate="%{text}<br>measured %{x:.4g} ms<br>predicted %{y:.4g} ms<extra></extra>"))
    values = [r[k] * 1e3 for r in rows for k in ("measured_s", "predicted_s") if r[k] > 0]
    if values:
        lo, hi = min(values) / 1.2, max(values) * 1.2
        fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", name="predicted = measured",
                                 line={"color": "black", "dash": "dash", "width": 1}))
    fig.update_xaxes(type="log", title_text="measured step time (ms)")
    fig.update_yaxes(type="log", title_text="cost model (ms)")
    fig.update_layout(template=TEMPLATE, height=480, title=title or "measured vs fitted cost model")
    return fig



def step_time_curves(curves: Mapping[str, Mapping[str, Sequence[float]]], x_title: str,
                     title: str):
    """Predicted step time (ms) against a step size per profile, log-log.
    curves: {label: {"x": [...], "y_s": [...]}}."""
    go = _go()
    fig = go.Figure()
    for i, (label, curve) in enumerate(curves.items()):
        fig.add_trace(go.Scatter(x=list(curve["x"]), y=[v * 1e3 for v in curve["y_s"]], mode="lines+markers",
                                 name=label, line={"color": color_for(i)},
                                 hovertemplate="%{x}: %{y:.4g} ms<extra>" + label + "</extra>"))
    fig.update_xaxes(type="log", title_text=x_title)
    fig.update_yaxes(type="log", title_text="step time (ms)")
    fig.update_layout(template=TEMPLATE, height=420, title=title, legend={"orientation": "h", "y": -0.2})
    return fig



def predicted_vs_measured_bars(rows: Sequence[Mapping], title: str | None = None):
    """Grouped bars of predicted and measured values (ms) per metric.
    rows: {"metric": str, "predicted_s": float | None, "measured_s": float | None}."""
    go = _go()
    fig = go.Figure()
    labels = [r["metric"] for r in rows]
    for i, (key, name) in enumerate((("measured_s", "measured"), ("predicted_s", "predicted"))):
        fig.add_trace(go.Bar(x=labels, y=[None if r[key] is None else r[key] * 1e3 for r in rows], name=name,
                             marker={"color": color_for(i)}))
    fig.update_layout(template=TEMPLATE, barmode="group", height=380, yaxis_title="ms",
                      title=title or "predicted vs measured latency")
    return fig
