"""A readable plain-text rendering of a run summary (the CLI prints it)."""

from __future__ import annotations


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
        lines.append(f"OVERLOADED: arrivals {_fmt(ov['arrival_rate_per_s'])} req/s exceed the sustainable "
                     f"{_fmt(ov['sustainable_rate_per_s'])} req/s (queue grew by {ov['queue_growth_requests']:.0f} "
                     f"requests); latency figures are not meaningful and are omitted")
    else:
        lines.append(f"{'latency':<10}{'mean':>10}{'p50':>10}{'p90':>10}{'p95':>10}{'p99':>10}")
        for key, label in (("ttft_s", "TTFT"), ("tpot_s", "TPOT"), ("itl_s", "ITL"), ("e2e_s", "E2E")):
            st = s["latency"][key]
            lines.append(f"{label + ' (ms)':<10}" + "".join(
                f"{_fmt(st[k], scale=1e3, digits=4):>10}" for k in ("mean", "p50", "p90", "p95", "p99")))
    pc = s.get("prefix_cache") or {}
    if pc.get("active"):
        lines.append(f"prefix cache: {_fmt(pc['hit_rate'], '%', 100)} of prompt tokens served from cache "
                     f"({pc['evictions']} evictions)")
    tp = s["throughput"]
    lines.append(f"throughput: {_fmt(tp['requests_per_s'])} req/s, {_fmt(tp['output_tokens_per_s'], digits=4)} "
                 f"output tok/s, {_fmt(tp['input_tokens_per_s'], digits=4)} input tok/s")
    gp = s["goodput"]
    lines.append(f"goodput: {_fmt(gp['requests_per_s'])} req/s meeting SLOs "
                 f"(attainment {_fmt(gp['slo_attainment'], '%', 100)})")
    en = s["energy"]
    tag = " (estimated power model)" if en.get("is_estimated") else ""
    lines.append(f"energy: {_fmt(en['j_per_output_token'])} J/output token, {_fmt(en['j_per_token'])} J/token, "
                 f"{_fmt(en['kwh'])} kWh{tag}")
    co = s["cost"]
    lines.append(f"cost: ${_fmt(co['usd_per_1m_output_tokens'], digits=4)} per 1M output tokens, "
                 f"${_fmt(co['usd_per_1m_tokens'], digits=4)} per 1M tokens "
                 f"(${co['price_usd_per_device_h']:.3g}/device-h); CO2 {_fmt(s['co2_g'])} g")
    return "\n".join(lines)
