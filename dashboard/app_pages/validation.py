"""Validation: the simulator's predictions beside what the real engine measured (fidelity)."""

from __future__ import annotations

import streamlit as st

from sim.report import figures
from dashboard import runs, validation_data, views
from sim.errors import InputError


def _profiles() -> list:
    found = []
    for name in runs.profile_names():
        try:
            found.append(runs.profile(name))
        except InputError:
            continue
    return found


def _percent(value: float | None, spread: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"±{value * 100:.1f} %" if spread else f"{value * 100:+.1f} %"


def _show(result: dict) -> None:
    st.subheader(result["label"])
    same = {True: "; the same requests (ids, arrivals, lengths) in both", False: "; WARNING: the two runs did not "
            "serve the same requests"}.get(result.get("same_workload"), "")
    st.caption(f"from {result['source']}{same}")
    rows = validation_data.comparison_rows(result)
    latency = [{"metric": r["metric"], "predicted_s": r["predicted"], "measured_s": r["measured"]}
               for r in rows if r["key"].startswith("latency.") and r["key"].endswith((".p50", ".p99"))]
    if latency:
        st.plotly_chart(figures.predicted_vs_measured_bars(latency, title=f"{result['label']}: latency"),
                        key=f"chart.validation.{result['source']}")
    table = {"metric": [r["metric"] for r in rows],
             "predicted": [views.ms(r["predicted"]) if r["key"].startswith("latency.") else views.number(r["predicted"])
                           for r in rows],
             "measured": [views.ms(r["measured"]) if r["key"].startswith("latency.") else views.number(r["measured"])
                          for r in rows]}
    for column in ("relative error", "at speed", "run speed", "replay", "run spread"):
        if any(r[column] is not None for r in rows):
            table[column] = [_percent(r[column], spread=column == "run spread") for r in rows]
    st.dataframe(table, hide_index=True, width="stretch")
    if any(r["replay"] is not None for r in rows):
        st.caption("at speed: the prediction with the machine's memory and compute speed re-timed before the first "
                   "run and after each. run speed: the prediction at the speeds the run's own steps ran at (taken from "
                   "the run: what is left is the cost model's form and the machine's moves within the run). "
                   "replay: the simulator fed each real step's measured time; its error is what scheduling alone "
                   "leaves unexplained, the rest of the error lies in step times.")
    if result.get("repeats") and result["repeats"] > 1:
        st.caption(f"measured: the median of {result['repeats']} runs of the identical workload. run spread: the "
                   "farthest run from that median, the machine's own run-to-run noise (what a perfect prediction "
                   "would miss a single run by).")


def main() -> None:
    st.title("Validation")
    st.markdown("How far the simulator is from a real engine serving the same workload: "
                "`calibrate validate` runs both and records predicted vs measured.")
    results = validation_data.from_profiles(_profiles())
    with st.expander("Open a validation result file", expanded=not results):
        upload = st.file_uploader("validation result (.json)", key="upload.validation",
                                  max_upload_size=validation_data.MAX_RESULT_BYTES // (1024 * 1024),
                                  help="the JSON that `calibrate validate` writes; read as data only")
    if upload is not None:
        try:
            results += validation_data.from_upload(upload.name, upload.getvalue())
        except ValueError as exc:
            st.error(str(exc))
    if not results:
        st.info("No fidelity results yet: no profile records a validation (`provenance.validation`) and no "
                "result file is open. Run `calibrate validate --profile PROFILE` on the machine the profile "
                "was measured on, then come back; until then the simulator's error on your hardware is unknown.")
        return
    for result in results:
        _show(result)


main()
