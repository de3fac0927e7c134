"""Shared page pieces: how a run summary is shown (headline metrics, comparison table).

Display only: numbers are read from the summary's public JSON shape (DESIGN.md, Results) and
formatted; seconds are shown as milliseconds, nothing else is computed here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import streamlit as st

from sim.report.figures import get_in as get  # noqa: F401 - the pages call views.get

LATENCY_METRICS = (("ttft_s", "TTFT"), ("tpot_s", "TPOT"), ("e2e_s", "E2E"))


def number(value: float | None, digits: int = 3) -> str:
    """A readable number: `digits` significant digits, never scientific notation below 1e9."""
    if value is None:
        return "n/a"
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 10 ** digits:
        return f"{value:,.0f}"
    decimals = max(digits - 1 - int(f"{magnitude:e}".split("e")[1]), 0)
    return f"{value:,.{decimals}f}"


def ms(value_s: float | None) -> str:
    return "n/a" if value_s is None else f"{number(value_s * 1e3)} ms"


def headline(summary: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(label, value, help) of the headline numbers of one run, in display order."""
    rows: list[tuple[str, str, str]] = []
    overloaded = summary.get("overloaded")
    for key, name in LATENCY_METRICS:
        for stat in ("p50", "p99"):
            value = "overloaded" if overloaded else ms(get(summary, "latency", key, stat))
            rows.append((f"{name} {stat}", value, f"{stat} of {name} over the measured requests"))
    rows += [
        ("throughput", f"{number(get(summary, 'throughput', 'output_tokens_per_s'))} tok/s",
         f"output tokens per second ({number(get(summary, 'throughput', 'requests_per_s'))} requests/s)"),
        ("goodput", f"{number(get(summary, 'goodput', 'requests_per_s'))} req/s",
         "requests per second meeting every SLO; attainment "
         f"{number(_percent(get(summary, 'goodput', 'slo_attainment')))} %"),
        ("J / output token", number(get(summary, "energy", "j_per_output_token")),
         f"joules of the whole deployment (idle included) per output token; "
         f"{number(get(summary, 'energy', 'j_per_token'))} J per input+output token"),
        ("$ / 1M output tokens", f"${number(get(summary, 'cost', 'usd_per_1m_output_tokens'))}",
         f"${number(get(summary, 'cost', 'usd_per_1m_tokens'))} per 1M input+output tokens"),
    ]
    return rows


def _percent(fraction: float | None) -> float | None:
    return None if fraction is None else fraction * 100


def show_headline(summary: Mapping[str, Any], per_row: int = 5) -> None:
    rows = headline(summary)
    for start in range(0, len(rows), per_row):
        cols = st.columns(per_row)
        for col, (label, value, help_text) in zip(cols, rows[start:start + per_row]):
            col.metric(label, value, help=help_text)


def comparison_table(summaries: Mapping[str, Mapping[str, Any]]) -> dict[str, list[str]]:
    """Columns for st.dataframe: one row per headline number, one column per run."""
    labels = [label for label, _, _ in headline(next(iter(summaries.values())))]
    table: dict[str, list[str]] = {"metric": labels}
    for name, summary in summaries.items():
        table[name] = [value for _, value, _ in headline(summary)]
    return table


def overload_note(summary: Mapping[str, Any]) -> str | None:
    if not summary.get("overloaded"):
        return None
    ov = summary.get("overload") or {}
    return (f"Overloaded: arrivals of {number(ov.get('arrival_rate_per_s'))} req/s exceed the "
            f"{number(ov.get('sustainable_rate_per_s'))} req/s this deployment sustains (the queue grew by "
            f"{number(ov.get('queue_growth_requests'))} requests). Latency would only measure how long we "
            "simulated, so it is not shown: lower the load or add replicas.")


def provenance_note(summary: Mapping[str, Any]) -> str:
    dep, energy, cost = summary.get("deployment", {}), summary.get("energy", {}), summary.get("cost", {})
    price = cost.get("price_usd_per_device_h")
    parts = [f"profile **{dep.get('profile')}** ({dep.get('profile_source')})",
             f"{dep.get('replicas')} replica(s) x TP {dep.get('tp')}",
             f"KV cache {number(get(summary, 'kv_cache', 'tokens_per_replica'))} tokens per replica",
             f"power model {energy.get('power_method')}" + (" (estimated)" if energy.get("is_estimated") else ""),
             f"${number(price)}/device-h" if price else "no price: set one under Economics"]
    return "; ".join(parts)


def request_notes(summary: Mapping[str, Any]) -> list[str]:
    """What happened to requests that a latency figure does not show: rejections, preemptions."""
    req = summary.get("requests", {})
    notes = []
    if req.get("rejected"):
        reasons = ", ".join(f"{k} ({v})" for k, v in (req.get("rejected_by_reason") or {}).items())
        notes.append(f"{req['rejected']:,} of {req.get('arrived', 0):,} requests were rejected: {reasons}")
    if req.get("preempted"):
        notes.append(f"{req['preempted']:,} preemptions ({req.get('preempted_requests', 0):,} requests "
                     "recomputed after their KV cache was taken back)")
    return notes

