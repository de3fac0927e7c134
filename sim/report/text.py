"""A readable plain-text rendering of a run summary (the CLI prints it), and the summary as the
CLI writes it: money figures of a run without a price are null, not 0 (`unpriced_as_null`)."""

from __future__ import annotations

import copy

NO_PRICE = "no price"
# the money figures of a summary's "cost" that only a price per device-hour (or owned hardware) gives
PRICED_COST_KEYS = ("usd", "usd_per_1m_output_tokens", "usd_per_1m_tokens", "rental_usd", "electricity_usd",
                    "hardware_usd", "price_usd_per_device_h")


def is_priced(summary: dict) -> bool:
    """False when the run had no price per device-hour and no owned hardware (sim.scenario)."""
    return summary.get("cost", {}).get("is_priced", True) is not False


def unpriced_as_null(summary: dict) -> dict:
    """The summary with the money figures of an unpriced run as None (JSON null), not 0."""
    if is_priced(summary):
        return summary
    out = copy.deepcopy(summary)
    for key in PRICED_COST_KEYS:
        if key in out["cost"]:
            out["cost"][key] = None
    return out


def has_slo(summary: dict) -> bool:
    slo = summary.get("goodput", {}).get("slo")
    return slo is None or any(v is not None for v in slo.values())


def _fmt(value: float | None, unit: str = "", scale: float = 1.0, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    return f"{value * scale:.{digits}g}{unit}"


def format_summary(s: dict) -> str:
    lines = []
    dep, model = s.get("deployment", {}), s.get("model", {})
    if dep:
        lines.append(f"{model.get('name')} ({model.get('weight_dtype')} weights, {model.get('kv_dtype')} KV) on "
                     f"{dep['replicas']} x {dep['profile']} (tp={dep['tp']}, {dep['profile_source']} profile), "
                     f"{dep['scheduler']} batching")
    req = s["requests"]
    lines.append(f"requests: {req['arrived']} arrived, {req['completed']} completed, {req['rejected']} rejected, "
                 f"{req['in_flight']} in flight, {req['preempted']} preemptions; "
                 f"{req['measured']} measured over a {s['window_s']:.4g} s window")
    if req["rejected"]:
        lines.append("  rejected: " + ", ".join(f"{k} {v}" for k, v in req["rejected_by_reason"].items()))
    if s["overloaded"]:
        ov = s["overload"]
        why = "; ".join(ov.get("reasons") or []) or f"queue grew by {ov['queue_growth_requests']:.0f} requests"
        lines.append(f"OVERLOADED: arrivals {_fmt(ov['arrival_rate_per_s'])} req/s exceed the sustainable "
                     f"{_fmt(ov['sustainable_rate_per_s'])} req/s ({why}); latency figures are not meaningful "
                     f"and are omitted")
    else:
        lines.append(f"{'latency':<10}{'mean':>10}{'p50':>10}{'p90':>10}{'p95':>10}{'p99':>10}")
        for key, label in (("ttft_s", "TTFT"), ("tpot_s", "TPOT"), ("itl_s", "ITL"), ("e2e_s", "E2E")):
            st = s["latency"][key]
            lines.append(f"{label + ' (ms)':<10}" + "".join(
                f"{_fmt(st[k], scale=1e3, digits=4):>10}" for k in ("mean", "p50", "p90", "p95", "p99")))
    for warning in (s.get("window") or {}).get("warnings", []):
        lines.append(f"warning: measurement window too short: {warning}")
    pc = s.get("prefix_cache") or {}
    if pc.get("active"):
        lines.append(f"prefix cache: {_fmt(pc['hit_rate'], '%', 100)} of prompt tokens served from cache "
                     f"({pc['evictions']} evictions)")
    tp = s["throughput"]
    lines.append(f"throughput: {_fmt(tp['requests_per_s'])} req/s, {_fmt(tp['output_tokens_per_s'], digits=4)} "
                 f"output tok/s, {_fmt(tp['input_tokens_per_s'], digits=4)} input tok/s")
    gp = s["goodput"]
    if has_slo(s):
        lines.append(f"goodput: {_fmt(gp['requests_per_s'])} req/s meeting SLOs "
                     f"(attainment {_fmt(gp['slo_attainment'], '%', 100)})")
    else:
        lines.append("goodput: no SLO set")
    en = s["energy"]
    tag = " (estimated power model)" if en.get("is_estimated") else ""
    lines.append(f"energy: {_fmt(en['j_per_output_token'])} J/output token, {_fmt(en['j_per_token'])} J/token, "
                 f"{_fmt(en['kwh'])} kWh{tag}")
    co = s["cost"]
    if is_priced(s):
        lines.append(f"cost: {_usd(co['usd_per_1m_output_tokens'])} per 1M output tokens, "
                     f"{_usd(co['usd_per_1m_tokens'])} per 1M tokens "
                     f"({_usd(co['price_usd_per_device_h'], 3)}/device-h); CO2 {_fmt(s['co2_g'])} g")
    else:
        lines.append(f"cost: {NO_PRICE} (the profile has none: set economics.price_usd_per_device_h); "
                     f"CO2 {_fmt(s['co2_g'])} g")
    return "\n".join(lines)


def _usd(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"${value:.{digits}g}"
