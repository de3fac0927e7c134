"""Plotly figures the dashboard needs that `sim.figures` does not (yet) have.

Same conventions as `sim.figures` (plain data in, a Figure out, its palette and template), so
they can move there unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import plotly.graph_objects as go

from sim.figures import TEMPLATE, color_for


def measured_vs_predicted(rows: Sequence[Mapping], title: str | None = None) -> go.Figure:
    """Measured against predicted step time (ms, log-log), one colour per step kind; the diagonal
    is a perfect prediction. rows: {"kind", "model", "batch", "num_tokens", "measured_s", "predicted_s"}."""
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
                     title: str) -> go.Figure:
    """Predicted step time (ms) against a step size per profile, log-log.
    curves: {label: {"x": [...], "y_s": [...]}}."""
    fig = go.Figure()
    for i, (label, curve) in enumerate(curves.items()):
        fig.add_trace(go.Scatter(x=list(curve["x"]), y=[v * 1e3 for v in curve["y_s"]], mode="lines+markers",
                                 name=label, line={"color": color_for(i)},
                                 hovertemplate="%{x}: %{y:.4g} ms<extra>" + label + "</extra>"))
    fig.update_xaxes(type="log", title_text=x_title)
    fig.update_yaxes(type="log", title_text="step time (ms)")
    fig.update_layout(template=TEMPLATE, height=420, title=title, legend={"orientation": "h", "y": -0.2})
    return fig


def predicted_vs_measured_bars(rows: Sequence[Mapping], title: str | None = None) -> go.Figure:
    """Grouped bars of predicted and measured values (ms) per metric.
    rows: {"metric": str, "predicted_s": float | None, "measured_s": float | None}."""
    fig = go.Figure()
    labels = [r["metric"] for r in rows]
    for i, (key, name) in enumerate((("measured_s", "measured"), ("predicted_s", "predicted"))):
        fig.add_trace(go.Bar(x=labels, y=[None if r[key] is None else r[key] * 1e3 for r in rows], name=name,
                             marker={"color": color_for(i)}))
    fig.update_layout(template=TEMPLATE, barmode="group", height=380, yaxis_title="ms",
                      title=title or "predicted vs measured latency")
    return fig
