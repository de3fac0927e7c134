"""What-if: change a knob, the simulation re-runs (cached on the whole scenario), see the numbers move."""

from __future__ import annotations

import streamlit as st

from dashboard import runs, state, uploads, views
from sim.report import figures
from sim.engine import ROUTERS
from sim.errors import InputError
from sim.spec.model import KV_DTYPES, PRESETS, WEIGHT_DTYPES
from sim.policies import POLICIES
from sim.traffic.traces import BUILTIN_TRACES

K = state.widget_key
ss = st.session_state
for key, value in state.widget_defaults(ss.get(state.SAVED_KEY)).items():
    ss.setdefault(key, value)


def _model_and_hardware() -> None:
    with st.sidebar.expander("Model and hardware", expanded=True):
        st.selectbox("model", sorted(PRESETS), key=K("model"))
        names = runs.profile_names()
        ss[K("profiles")] = [p for p in ss[K("profiles")] if p in names]  # a profile file may be gone
        st.multiselect("hardware profiles", names, key=K("profiles"),
                       help="Choose several to compare them side by side.")
        c1, c2 = st.columns(2)
        c1.selectbox("weights", WEIGHT_DTYPES, key=K("weight_dtype"), help="quantization of the weights")
        c2.selectbox("KV cache", KV_DTYPES, key=K("kv_dtype"), help="dtype of the KV cache")
        c1, c2 = st.columns(2)
        c1.number_input("replicas", min_value=1, max_value=256, step=1, key=K("replicas"))
        c2.selectbox("TP per replica", (1, 2, 4, 8), key=K("tp"), help="tensor-parallel degree")
        st.selectbox("router", ROUTERS, key=K("router"))
        st.slider("GPU memory utilization", 0.5, 1.0, step=0.01, key=K("gpu_memory_utilization"))


def _lengths(prefix: str, label: str) -> None:
    st.markdown(f"**{label} tokens**")
    c1, c2 = st.columns(2)
    c1.selectbox("distribution", state.LENGTH_DISTS, key=K(f"{prefix}_dist"), label_visibility="collapsed")
    c2.number_input("tokens" if ss[K(f"{prefix}_dist")] == "fixed" else "mean tokens", min_value=1,
                    max_value=1_000_000, step=50, key=K(f"{prefix}_tokens"))
    if ss[K(f"{prefix}_dist")] == "lognormal":
        c1, c2 = st.columns(2)
        c1.number_input("sigma", min_value=0.0, max_value=5.0, step=0.1, key=K(f"{prefix}_sigma"),
                        help="standard deviation of log(tokens)")
        c2.number_input("cap (tokens)", min_value=1, max_value=1_000_000, step=100, value=None,
                        key=K(f"{prefix}_max_tokens"), help="empty: no cap; capped draws are counted")


def _upload() -> str | None:
    # No `type=` filter: uploads.store_trace checks the name itself and says why on the page
    # (Streamlit's own check would end the run with an exception instead).
    file = st.file_uploader(
        f"trace file (.csv or .jsonl, up to {uploads.MAX_TRACE_MB} MB)", key="upload.trace",
        max_upload_size=uploads.MAX_TRACE_MB,
        help="Azure, BurstGPT, Mooncake or plain columns: " + uploads.expected_columns()
             + ". Read as data only; never executed.")
    if file is None:  # keep the last good upload (the uploader itself forgets it on a page switch)
        stored = ss.get("upload.stored")
        if stored:
            st.caption(f"using {stored.name} ({stored.num_requests:,} requests), uploaded earlier")
        return stored.path if stored else None
    try:
        stored = uploads.store_trace(file.name, file.getvalue())
    except InputError as exc:
        ss.pop("upload.stored", None)
        st.error(f"Trace refused: {exc}")
        return None
    ss["upload.stored"] = stored
    st.caption(f"{stored.name}: {stored.num_requests:,} requests over {views.number(stored.span_s)} s")
    return stored.path


def _workload() -> str | None:
    uploaded = None
    with st.sidebar.expander("Workload", expanded=True):
        st.radio("requests from", state.WORKLOAD_SOURCES, key=K("workload_source"), horizontal=True)
        source = ss[K("workload_source")]
        st.number_input("load (requests/s)", min_value=0.01, max_value=100_000.0, step=0.5, format="%.2f",
                        key=K("rate_per_s"), disabled=source != "synthetic" and ss[K("trace_keeps_timing")],
                        help="mean arrival rate; a trace is rescaled to it")
        st.number_input("requests" if source == "synthetic" else "max requests", min_value=10,
                        max_value=200_000, step=500, key=K("num_requests"),
                        help=f"{state.DEFAULT_NUM_REQUESTS:,} re-simulate in about a second")
        if source == "synthetic":
            st.selectbox("arrivals", state.ARRIVALS, key=K("arrival"))
            if ss[K("arrival")] == "gamma":
                st.number_input("burstiness (CV of gaps)", min_value=0.05, max_value=20.0, step=0.25,
                                key=K("arrival_cv"), help="1 = Poisson; above 1 = burstier")
            _lengths("input", "Input")
            _lengths("output", "Output")
        else:
            if source == "built-in trace":
                st.selectbox("trace", sorted(BUILTIN_TRACES), key=K("trace"),
                             help="\n\n".join(f"{t.name}: {t.description}" for t in BUILTIN_TRACES.values()))
            else:
                uploaded = _upload()
            st.checkbox("keep the trace's own arrival times", key=K("trace_keeps_timing"))
    return uploaded


def _scheduler() -> None:
    with st.sidebar.expander("Scheduler"):
        st.selectbox("batching policy", POLICIES, key=K("policy"))
        policy = ss[K("policy")]
        st.number_input("max running sequences", min_value=1, max_value=65_536, step=16, key=K("max_num_seqs"))
        st.number_input("max batched tokens per step", min_value=1, max_value=1_000_000, step=256, value=None,
                        key=K("max_num_batched_tokens"),
                        placeholder=f"policy default ({state.default_batched_tokens(policy)})")
        if policy == "static":
            st.number_input("static batch size", min_value=1, max_value=4096, step=1, key=K("max_batch_size"))
            st.number_input("max queue delay (s)", min_value=0.0, max_value=60.0, step=0.05,
                            key=K("max_queue_delay_s"))
        else:
            st.checkbox("prefix caching", key=K("enable_prefix_caching"),
                        help="reuses shared prefixes; needs a trace with prefix hashes (Mooncake)")
        st.checkbox("speculative decoding", key=K("speculative"),
                    help="a small draft model proposes tokens that the model verifies in one step")
        if ss[K("speculative")]:
            st.selectbox("draft model", sorted(PRESETS), key=K("draft_model"))
            c1, c2 = st.columns(2)
            c1.number_input("tokens / round", min_value=1, max_value=16, step=1, key=K("num_speculative_tokens"))
            c2.number_input("acceptance", min_value=0.0, max_value=1.0, step=0.05, key=K("acceptance_rate"),
                            help="probability that each proposed token is accepted")


def _slo_and_economics() -> None:
    with st.sidebar.expander("SLOs"):
        st.number_input("TTFT target (s)", min_value=0.001, step=0.05, format="%.3f", value=None,
                        key=K("slo_ttft_s"), placeholder="none")
        st.number_input("TPOT target (s)", min_value=0.0001, step=0.005, format="%.4f", value=None,
                        key=K("slo_tpot_s"), placeholder="none")
        st.number_input("E2E target (s)", min_value=0.001, step=1.0, format="%.3f", value=None,
                        key=K("slo_e2e_s"), placeholder="none")
    with st.sidebar.expander("Economics"):
        st.number_input("price ($ per device-hour)", min_value=0.0, step=0.1, value=None,
                        key=K("price_usd_per_device_h"), placeholder="the profile's price")
        st.number_input("electricity ($/kWh)", min_value=0.0, step=0.01, format="%.3f",
                        key=K("electricity_usd_per_kwh"), help="0: included in the rental price")
        st.number_input("PUE", min_value=1.0, max_value=3.0, step=0.01, key=K("pue"))
        st.number_input("carbon (g CO2/kWh)", min_value=0.0, step=10.0, key=K("carbon_g_per_kwh"))
        st.number_input("hardware ($ per device, owned)", min_value=0.0, step=1000.0,
                        key=K("hardware_usd_per_device"))
        st.number_input("amortization (years)", min_value=0.25, step=0.5, key=K("amortization_years"))
    with st.sidebar.expander("Run"):
        st.number_input("seed", min_value=0, step=1, key=K("seed"))


def _side_by_side(results: dict[str, dict]) -> None:
    summaries = {name: r["summary"] for name, r in results.items()}
    st.subheader("Side by side")
    st.dataframe(views.comparison_table(summaries), hide_index=True, width="stretch")
    rows = [{"label": name, "is_recommended": False, "meets_slo": not s.get("overloaded"),
             "output_tokens_per_s": views.get(s, "throughput", "output_tokens_per_s"),
             "goodput_requests_per_s": views.get(s, "goodput", "requests_per_s"),
             "j_per_output_token": views.get(s, "energy", "j_per_output_token"),
             "usd_per_1m_output_tokens": views.get(s, "cost", "usd_per_1m_output_tokens")}
            for name, s in summaries.items()]
    st.plotly_chart(figures.candidate_bars(rows, metrics={
        "output_tokens_per_s": "output tokens/s", "goodput_requests_per_s": "goodput (req/s)",
        "j_per_output_token": "J per output token", "usd_per_1m_output_tokens": "$ per 1M output tokens"},
        title="per profile (hatched: overloaded)"), key="chart.side_by_side")


def _downloads(scenarios: dict[str, dict]) -> None:
    st.subheader("Reproduce this view")
    fmt = st.radio("format", state.EXPORT_FORMATS, horizontal=True, key="export.format")
    cols = st.columns(max(len(scenarios), 1))
    for col, (name, scenario) in zip(cols, scenarios.items()):
        file_name, text, mime = state.export_scenario(scenario, fmt)
        col.download_button(f"scenario for {name}", text, file_name=file_name, mime=mime,
                            key=f"download.scenario.{name}", on_click="ignore")
    st.caption("`infercast simulate FILE` prints the same numbers."
               + (" Save the uploaded trace next to the scenario file."
                  if ss[K("workload_source")] == "uploaded trace" else ""))


def main() -> None:
    _model_and_hardware()
    uploaded = _workload()
    _scheduler()
    _slo_and_economics()
    what_if = state.from_session(ss, ss.get(state.SAVED_KEY))
    ss[state.SAVED_KEY] = what_if

    st.title("What-if")
    if not what_if.profiles:
        st.info("Choose one or more hardware profiles in the sidebar.")
        return
    try:
        scenarios = {p: state.scenario_dict(what_if, p, uploaded) for p in what_if.profiles}
    except ValueError as exc:
        st.info(str(exc).partition(": ")[2] or str(exc))
        return
    results = {p: runs.simulate(state.scenario_json(s), runs.profile_stamp([p])) for p, s in scenarios.items()}
    ok = {p: r for p, r in results.items() if "error" not in r}
    for name, r in results.items():
        if "error" in r:
            st.error(f"{name}: {r['error']}")
    for name, r in ok.items():
        summary = r["summary"]
        st.markdown(f"#### {name}" if len(results) > 1 else views.provenance_note(summary))
        if len(results) > 1:
            st.caption(views.provenance_note(summary))
        views.show_headline(summary)
        note = views.overload_note(summary)
        if note:
            st.warning(note)
        for note in views.request_notes(summary):
            st.caption(note)
    if not ok:
        return
    slo = views.get(next(iter(ok.values()))["summary"], "goodput", "slo")
    if len(ok) > 1:
        _side_by_side(ok)
    st.subheader("Latency")
    st.plotly_chart(figures.latency_cdfs({name: r["cdf"] for name, r in ok.items()}, slo=slo),
                    key="chart.cdf")
    st.subheader("Over time")
    tabs = st.tabs(list(ok)) if len(ok) > 1 else [st.container()]
    for tab, (name, r) in zip(tabs, ok.items()):
        tab.plotly_chart(figures.timeseries(r["timeline"], title=f"{name}: queue, batch, KV cache, power"),
                         key=f"chart.timeseries.{name}")
    _downloads({p: scenarios[p] for p in ok})
    with st.expander("Full summaries (JSON)"):
        for name, r in ok.items():
            st.json(r["summary"], expanded=False)


main()
