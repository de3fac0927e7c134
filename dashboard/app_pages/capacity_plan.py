"""Capacity plan: target load + SLOs + candidates -> replicas, monthly cost and energy per
candidate, and the recommendation (`sim.planning.capacity`), with the load on a slider."""

from __future__ import annotations

import json

import streamlit as st

from dashboard import runs, state, views
from sim.report import figures
from sim.planning.capacity import PlanSettings

ss = st.session_state
DEFAULT_CANDIDATES = ("h100-sxm", "a100-80gb", "l40s")
DEFAULT_LOAD = 20.0


def _defaults(options: list[str], what_if: state.WhatIf) -> None:
    ss.setdefault("cp.candidates", [c for c in DEFAULT_CANDIDATES if c in options] or options[:1])
    ss.setdefault("cp.load", DEFAULT_LOAD)
    ss.setdefault("cp.slo_ttft_s", what_if.slo_ttft_s)
    ss.setdefault("cp.slo_tpot_s", what_if.slo_tpot_s)
    ss.setdefault("cp.slo_e2e_s", what_if.slo_e2e_s)
    ss.setdefault("cp.stat", "p99")
    ss.setdefault("cp.seeds", state.PLAN_SEEDS)
    ss.setdefault("cp.requests_per_run", state.PLAN_REQUESTS_PER_RUN)
    ss.setdefault("cp.sensitivity", False)
    ss["cp.candidates"] = [c for c in ss["cp.candidates"] if c in options]  # a profile file may be gone


def _inputs(options: list[str]) -> None:
    with st.sidebar:
        st.multiselect("candidates (PROFILE or PROFILE:tpN)", options, key="cp.candidates")
        st.select_slider("target load (requests/s)", state.LOAD_STOPS, key="cp.load")
        with st.expander("SLOs", expanded=True):
            st.number_input("TTFT target (s)", min_value=0.001, step=0.05, format="%.3f", value=None,
                            key="cp.slo_ttft_s", placeholder="none")
            st.number_input("TPOT target (s)", min_value=0.0001, step=0.005, format="%.4f", value=None,
                            key="cp.slo_tpot_s", placeholder="none")
            st.number_input("E2E target (s)", min_value=0.001, step=1.0, format="%.3f", value=None,
                            key="cp.slo_e2e_s", placeholder="none")
            st.selectbox("statistic that must meet them", state.PLAN_STATS, key="cp.stat")
        with st.expander("Search"):
            st.number_input("seeds (confidence intervals need several)", min_value=1, max_value=10, step=1,
                            key="cp.seeds")
            st.number_input("requests per probe run", min_value=100, max_value=20_000, step=100,
                            key="cp.requests_per_run")
            st.checkbox("sensitivity: re-size at load x" + ", x".join(f"{f:g}" for f in PlanSettings().load_factors),
                        key="cp.sensitivity", help="about doubles the planning time")


def _table(plan: dict) -> dict[str, list]:
    cands = plan["candidates"]
    rec = views.get(plan, "recommendation", "label")

    def col(fn):
        return [fn(c) for c in cands]

    return {
        "candidate": col(lambda c: ("★ " if c["label"] == rec else "") + c["label"]),
        "status": col(lambda c: c["status"] + (f": {c['message']}" if c.get("message") else "")),
        "replicas": col(lambda c: c.get("replicas")),
        "replicas across seeds": col(lambda c: "–".join(str(v) for v in c.get("replicas_range") or []) or None),
        "devices": col(lambda c: c.get("devices")),
        "max req/s per replica": col(lambda c: views.number(c.get("max_rate_per_replica_per_s"))),
        "$ / month": col(lambda c: views.number(views.get(c, "monthly", "usd"))),
        "kWh / month": col(lambda c: views.number(views.get(c, "monthly", "kwh"))),
        "CO2 kg / month": col(lambda c: views.number(views.get(c, "monthly", "co2_kg"))),
        "$ / 1M tokens": col(lambda c: views.number(c.get("usd_per_1m_tokens"))),
        "J / output token": col(lambda c: views.number(c.get("j_per_output_token"))),
        "headroom": col(lambda c: views.number(views.get(c, "headroom", "fraction"))),
        "price source": col(lambda c: c.get("price_source")),
    }


def _recommended(plan: dict) -> None:
    rec = plan.get("recommendation")
    if not rec:
        st.error("No candidate meets the SLOs at this load: relax the SLOs, add candidates or lower the load.")
        return
    st.success(f"Recommendation: {rec['reason']}")
    best = next(c for c in plan["candidates"] if c["label"] == rec["label"])
    cols = st.columns(5)
    cols[0].metric(f"replicas of {best['label']}", best["replicas"],
                   help=f"across seeds: {best.get('replicas_range')}; {best['devices']} devices in all")
    cols[1].metric("monthly cost", f"${views.number(views.get(best, 'monthly', 'usd'))}")
    cols[2].metric("energy / month", f"{views.number(views.get(best, 'monthly', 'kwh'))} kWh")
    cols[3].metric("CO2 / month", f"{views.number(views.get(best, 'monthly', 'co2_kg'))} kg")
    cols[4].metric("$ / 1M tokens", f"${views.number(best.get('usd_per_1m_tokens'))}")


def _downloads(plan: dict, scenario: dict, candidates: list[str], settings: dict) -> None:
    st.subheader("Take it with you")
    fmt = st.radio("scenario format", state.EXPORT_FORMATS, horizontal=True, key="export.plan_format")
    name, text, mime = state.export_plan(scenario, candidates, settings, fmt)
    cols = st.columns(3)
    cols[0].download_button("scenario + plan settings", text, file_name=name, mime=mime,
                            key="download.plan_scenario", on_click="ignore")
    cols[1].download_button("plan result (JSON)", json.dumps(plan, indent=1, default=str), file_name="plan-result.json",
                            mime="application/json", key="download.plan_json", on_click="ignore")
    if not runs.has_report():
        cols[2].caption("HTML report: not available in this version (sim/report/document.py).")
    else:
        plan_json = json.dumps(plan, sort_keys=True, default=str)
        cols[2].download_button("capacity report (HTML)", lambda: runs.report_html(plan_json),
                                file_name="capacity-report.html", mime="text/html", key="download.report",
                                on_click="ignore")
    st.caption("`infercast plan FILE` re-runs this plan from the scenario file.")


def main() -> None:
    rows = runs.catalog_rows()
    options = state.candidate_options({r["name"]: r["count"] for r in rows if not r.get("error")})
    what_if = ss.get(state.SAVED_KEY) or state.WhatIf()
    _defaults(options, what_if)
    _inputs(options)
    st.title("Capacity plan")
    candidates = list(ss["cp.candidates"])
    if not candidates:
        st.info("Choose one or more candidates in the sidebar.")
        return
    st.caption(f"{what_if.model}; workload, scheduler and economics as on the What-if page; "
               f"target load {views.number(ss['cp.load'])} requests/s.")
    first = candidates[0].partition(":")[0]
    try:
        stored = ss.get("upload.stored")
        base = state.scenario_dict(what_if, first, stored.path if stored else None)
    except ValueError as exc:
        st.info(str(exc).partition(": ")[2] or str(exc))
        return
    scenario = state.with_slo(base, ss["cp.slo_ttft_s"], ss["cp.slo_tpot_s"], ss["cp.slo_e2e_s"])
    settings = state.plan_settings(ss["cp.load"], ss["cp.seeds"], ss["cp.stat"], ss["cp.requests_per_run"],
                                   ss["cp.sensitivity"])
    plan = runs.capacity_plan(state.scenario_json(scenario), tuple(candidates), json.dumps(settings, sort_keys=True),
                              runs.profile_stamp([c.partition(":")[0] for c in candidates]))
    if "error" in plan:
        st.error(plan["error"])
        return
    _recommended(plan)
    st.caption(plan["criterion"]["text"])
    st.dataframe(_table(plan), hide_index=True, width="stretch")
    figs = figures.plan_figures(plan)
    for name, title in (("latency_vs_load", "Latency vs load (one replica)"), ("candidates", "Per candidate"),
                        ("sensitivity", "If the load grows"), ("latency_cdfs", "Latency at the target load"),
                        ("timeline", "The recommended deployment over time")):
        if name in figs:
            st.subheader(title)
            st.plotly_chart(figs[name], key=f"chart.plan.{name}")
    _downloads(plan, scenario, candidates, settings)
    with st.expander("assumptions"):
        st.json(plan.get("assumptions", {}), expanded=True)


main()
