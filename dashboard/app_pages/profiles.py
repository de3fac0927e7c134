"""Profiles: where each hardware profile comes from, how well its cost model fits what was
measured, and how its predictions compare with other profiles."""

from __future__ import annotations

import streamlit as st

from sim.report import figures
from dashboard import profile_data, runs, state, views
from sim.errors import InputError
from sim.spec.model import KV_DTYPES, PRESETS, WEIGHT_DTYPES

ss = st.session_state


def _catalog() -> list[str]:
    rows = runs.catalog_rows()
    table = {
        "name": [r["name"] for r in rows],
        "source": [r.get("source") or "INVALID" for r in rows],
        "date": [str(r.get("date") or "") for r in rows],
        "device": [(r.get("device") or r.get("error") or "") + (" [low confidence]" if r.get("confidence") == "low"
                                                                else "") for r in rows],
        "devices": [r.get("count") for r in rows],
        "memory (GB)": [None if r.get("memory_bytes") is None else r["memory_bytes"] / 1e9 for r in rows],
        "bandwidth (TB/s)": [None if r.get("memory_bandwidth_bytes_per_s") is None
                             else r["memory_bandwidth_bytes_per_s"] / 1e12 for r in rows],
        "bf16 (TFLOP/s)": [None if r.get("bf16_flops") is None else r["bf16_flops"] / 1e12 for r in rows],
        "$ / device-h": [r.get("price_usd_per_device_h") for r in rows],
        "fit error": [r.get("fit_error") for r in rows],
    }
    st.dataframe(table, hide_index=True, width="stretch", height=260)
    return [r["name"] for r in rows if not r.get("error")]


def _provenance(name: str) -> None:
    prof = runs.profile(name)
    prov = prof.provenance
    power = prof.power.method + (" (estimated)" if prof.power.is_estimated else "")
    st.markdown(f"**source** {prov.get('source', '?')} &nbsp;·&nbsp; **dated** {prov.get('date', '?')} "
                f"&nbsp;·&nbsp; **power model** {power}")
    if prov.get("confidence") == "low":
        st.warning("Low confidence: the documents behind this profile disagree or are incomplete.")
    st.code(runs.profile_text(name), language=None, wrap_lines=True)
    with st.expander("provenance (raw)"):
        st.json(prov, expanded=True)


def _measured(name: str) -> None:
    prof = runs.profile(name)
    if prof.source != "measured":
        st.info(f"**{name}** is a {prof.source} profile: it was set from published figures, so there are no "
                "measured points to compare with. Run `calibrate` on a machine to get a measured profile.")
        return
    rows = profile_data.measured_points(prof)
    if not rows:
        st.info(f"**{name}** is measured but stores no `measurements.points`.")
        return
    fit = prof.cost.fit or {}
    cols = st.columns(3)
    cols[0].metric("measured points", len(rows))
    cols[1].metric("median |error| of the fit", views.number(fit.get("median_rel_error")))
    cols[2].metric("max |error| of the fit", views.number(fit.get("max_rel_error")))
    held = fit.get("holdout")
    if held:
        st.caption(f"Cross-model check: {held['model']}, measured in the same run but not fitted, is "
                   f"predicted with median |error| {views.number(held['median_rel_error'])} and max "
                   f"{views.number(held['max_rel_error'])} over {held['num_points']} steps.")
    st.plotly_chart(figures.measured_vs_predicted(rows, title=f"{name}: measured steps vs the fitted cost model"),
                    key="chart.measured")
    with st.expander("measured points"):
        st.dataframe(rows, hide_index=True, width="stretch")


def _compare(names: list[str], selected: str) -> None:
    ss.setdefault("pr.compare", [n for n in dict.fromkeys([selected, "h100-sxm", "a100-80gb", "l4"]) if n in names])
    ss.setdefault("pr.model", state.DEFAULT_MODEL)
    ss.setdefault("pr.weight_dtype", PRESETS[state.DEFAULT_MODEL].weight_dtype)
    ss.setdefault("pr.kv_dtype", PRESETS[state.DEFAULT_MODEL].kv_dtype)
    ss.setdefault("pr.context", 1024)
    ss["pr.compare"] = [n for n in ss["pr.compare"] if n in names]  # a profile file may be gone
    c1, c2, c3, c4 = st.columns([2, 1, 1, 1])
    c1.selectbox("model", sorted(PRESETS), key="pr.model")
    c2.selectbox("weights", WEIGHT_DTYPES, key="pr.weight_dtype")
    c3.selectbox("KV cache", KV_DTYPES, key="pr.kv_dtype")
    c4.number_input("decode context (tokens)", min_value=1, max_value=1_000_000, step=256, key="pr.context")
    st.multiselect("profiles", names, key="pr.compare")
    chosen = [runs.profile(n) for n in ss["pr.compare"]]
    if not chosen:
        st.info("Choose profiles to compare.")
        return
    try:
        decode, prefill, errors = profile_data.prediction_curves(
            ss["pr.model"], chosen, ss["pr.weight_dtype"], ss["pr.kv_dtype"], int(ss["pr.context"]))
    except InputError as exc:
        st.error(str(exc))
        return
    for prof_name, message in errors.items():
        st.warning(f"{prof_name}: {message}")
    c1, c2 = st.columns(2)
    c1.plotly_chart(figures.step_time_curves(
        decode, "batch (sequences)", f"decode step at {ss['pr.context']} tokens of context"), key="chart.decode")
    c2.plotly_chart(figures.step_time_curves(prefill, "prompt tokens", "prefill of one prompt"),
                    key="chart.prefill")
    st.caption("Predicted by each profile's cost model at TP 1 (sim.cost_model).")


def main() -> None:
    st.title("Profiles")
    names = _catalog()
    if not names:
        st.error("No loadable profiles found.")
        return
    ss.setdefault("pr.profile", state.DEFAULT_PROFILE if state.DEFAULT_PROFILE in names else names[0])
    if ss["pr.profile"] not in names:
        ss["pr.profile"] = names[0]
    selected = st.selectbox("profile", names, key="pr.profile")
    tab_prov, tab_meas, tab_cmp = st.tabs(["Provenance", "Measured vs fitted", "Compare predictions"])
    with tab_prov:
        _provenance(selected)
    with tab_meas:
        _measured(selected)
    with tab_cmp:
        _compare(names, selected)


main()
