"""Run records and the summary: latency, throughput, goodput, energy, cost, overload.

Definitions (DESIGN.md, aligned with vLLM `bench serve` and AIPerf):
  TTFT = first token - arrival; E2E = last token - arrival; TPOT = (E2E - TTFT) / (output - 1)
  for requests with more than one output token; ITL = every gap between consecutive output
  tokens of a request, pooled (kept as weighted samples: all decoders of a step share its gap).
  Latency statistics cover the measured requests: all but the first `warmup_fraction` and the
  last `drain_fraction` by arrival. Rates, energy and cost cover the measurement window: from the
  first measured arrival to the last measured arrival (the steady state), or, when they all
  arrive at once (offline), to the last measured completion. Tokens and joules of steps that
  straddle the window edges are prorated by time.
Overload and the window's length are judged in `sim.overload`: a run is overloaded when the work
in the system (requests, and tokens still to compute) or its waiting queue grows through the
window. Its latency figures are then reported as null (they would only measure how long we
simulated), with the arrival rate and the sustainable (completion) rate instead. A window too
short for the latencies it measures is flagged (`window.is_too_short`) with its reasons.
SLO attainment is null when no SLO is set.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass

import numpy as np

from sim.overload import RequestTimes, overload_verdict, sustainable_rate, window_warnings
from sim.request import Request
from sim.scheduler import TokenSink

PERCENTILES = (50, 90, 95, 99)


@dataclass(frozen=True)
class SLO:
    ttft_s: float | None = None
    tpot_s: float | None = None
    e2e_s: float | None = None

    def __post_init__(self) -> None:
        for name in ("ttft_s", "tpot_s", "e2e_s"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name}: expected a number > 0, got {value!r}")


@dataclass(frozen=True)
class Economics:
    """Money and carbon. Rental price per device-hour (cloud: includes power) and/or owned
    hardware: electricity x PUE plus amortised purchase price."""

    price_usd_per_device_h: float | None = None  # None: the profile's price (0 if it has none)
    electricity_usd_per_kwh: float = 0.0  # 0: included in the rental price
    pue: float = 1.56  # Uptime Institute 2024 industry average
    carbon_g_per_kwh: float = 367.0  # US grid average 2023 (EIA: 0.81 lb CO2/kWh)
    hardware_usd_per_device: float = 0.0
    amortization_years: float = 4.0

    def __post_init__(self) -> None:
        for name in ("electricity_usd_per_kwh", "carbon_g_per_kwh", "hardware_usd_per_device"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name}: expected a number >= 0, got {getattr(self, name)!r}")
        if self.price_usd_per_device_h is not None and not self.price_usd_per_device_h >= 0:
            raise ValueError(f"price_usd_per_device_h: expected >= 0, got {self.price_usd_per_device_h!r}")
        if not self.pue >= 1.0:
            raise ValueError(f"pue: expected a number >= 1, got {self.pue!r}")
        if not self.amortization_years > 0:
            raise ValueError(f"amortization_years: expected > 0, got {self.amortization_years!r}")


class RunRecorder(TokenSink):
    """Collects what a run produced; plain arrays, summarised once at the end."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.rejected_reasons: dict[int, str] = {}
        self.num_preemptions = 0
        self._gap_s = array("d")
        self._gap_w = array("d")
        self._lines = [array("d") for _ in range(5)]  # alpha, beta, j_from, j_to, weight
        # one record per executed plan (a decode segment of several steps is one record)
        self.seg_replica = array("l")
        self.seg_start_s = array("d")
        self.seg_end_s = array("d")
        self.seg_busy_s = array("d")  # the device's seconds within it (not the engine loop's between)
        self.seg_energy_j = array("d")
        self.seg_output_tokens = array("d")
        self.seg_prompt_tokens = array("d")
        self.seg_num_steps = array("d")
        self.seg_batch_tokens = array("d")  # sum over steps of tokens computed
        # waiting-queue samples at each arrival (for overload detection)
        self.queue_t_s = array("d")
        self.queue_len = array("d")
        # timelines, sampled
        self.timeline: dict[str, array] = {k: array("d") for k in
                                           ("t_s", "replica", "waiting", "running", "kv_usage", "power_w")}

    # ---- TokenSink ----------------------------------------------------------------------
    def gap(self, gap_s: float, weight: int) -> None:
        self._gap_s.append(gap_s)
        self._gap_w.append(weight)

    def gap_line(self, alpha_s: float, beta_s: float, j_from: int, j_to: int, weight: int) -> None:
        for arr, value in zip(self._lines, (alpha_s, beta_s, j_from, j_to, weight)):
            arr.append(value)

    def gaps(self, gaps_s: np.ndarray, weight: int) -> None:
        values = np.ascontiguousarray(gaps_s, dtype=np.float64)
        self._gap_s.frombytes(values.tobytes())
        self._gap_w.frombytes(np.full(len(values), float(weight)).tobytes())

    def rejected(self, request: Request, reason: str) -> None:
        self.rejected_reasons[request.request_id] = reason

    def preempted(self, request: Request) -> None:
        self.num_preemptions += 1

    # ---- engine records -------------------------------------------------------------------
    def segment(self, replica: int, start_s: float, end_s: float, energy_j: float,
                output_tokens: int, prompt_tokens: int, num_steps: int, batch_tokens: float,
                busy_s: float | None = None) -> None:
        """One executed plan; busy_s: the device's seconds in it where the engine's loop between
        its steps took the rest (default: all of it)."""
        self.seg_replica.append(replica)
        self.seg_start_s.append(start_s)
        self.seg_end_s.append(end_s)
        self.seg_busy_s.append(end_s - start_s if busy_s is None else busy_s)
        self.seg_energy_j.append(energy_j)
        self.seg_output_tokens.append(output_tokens)
        self.seg_prompt_tokens.append(prompt_tokens)
        self.seg_num_steps.append(num_steps)
        self.seg_batch_tokens.append(batch_tokens)

    def sample(self, t_s: float, replica: int, waiting: int, running: int, kv_usage: float,
               power_w: float) -> None:
        tl = self.timeline
        tl["t_s"].append(t_s)
        tl["replica"].append(replica)
        tl["waiting"].append(waiting)
        tl["running"].append(running)
        tl["kv_usage"].append(kv_usage)
        tl["power_w"].append(power_w)

    # ---- ITL ------------------------------------------------------------------------------
    def itl_samples(self) -> tuple[np.ndarray, np.ndarray]:
        """All inter-token gaps of measured requests as (values, weights)."""
        values = [np.frombuffer(self._gap_s, dtype=np.float64)]
        weights = [np.frombuffer(self._gap_w, dtype=np.float64)]
        alpha, beta, j0, j1, w = (np.frombuffer(a, dtype=np.float64) for a in self._lines)
        if len(alpha):
            counts = (j1 - j0).astype(np.int64)
            total = int(counts.sum())
            seg = np.repeat(np.arange(len(alpha)), counts)
            offsets = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
            j = j0[seg] + offsets
            values.append(alpha[seg] + beta[seg] * j)
            weights.append(w[seg])
        return np.concatenate(values), np.concatenate(weights)


def weighted_percentiles(values: np.ndarray, weights: np.ndarray, qs: tuple[int, ...]) -> list[float]:
    """np.percentile (linear) of the sample in which each value appears weight times."""
    keep = weights > 0
    values, weights = values[keep], weights[keep]
    order = np.argsort(values, kind="stable")
    values, weights = values[order], weights[order]
    cum = np.cumsum(weights)
    n = cum[-1]
    out = []
    for q in qs:
        pos = q / 100.0 * (n - 1)
        lo, hi = math.floor(pos), math.ceil(pos)
        v_lo = values[np.searchsorted(cum, lo + 1)]
        v_hi = values[np.searchsorted(cum, hi + 1)]
        out.append(float(v_lo + (v_hi - v_lo) * (pos - lo)))
    return out


def _stats(values: np.ndarray, weights: np.ndarray | None = None) -> dict[str, float | None]:
    if values.size == 0 or (weights is not None and weights.sum() <= 0):
        return {"mean": None, **{f"p{q}": None for q in PERCENTILES}}
    if weights is None:
        pcts = np.percentile(values, PERCENTILES).tolist()
        mean = float(values.mean())
    else:
        pcts = weighted_percentiles(values, weights, PERCENTILES)
        mean = float(np.average(values, weights=weights))
    return {"mean": mean, **{f"p{q}": float(v) for q, v in zip(PERCENTILES, pcts)}}


def _clip_sum(start: np.ndarray, end: np.ndarray, value: np.ndarray, t0: float, t1: float) -> float:
    """Sum of values of intervals prorated by their overlap with [t0, t1]."""
    if start.size == 0:
        return 0.0
    dur = end - start
    overlap = np.clip(np.minimum(end, t1) - np.maximum(start, t0), 0.0, None)
    frac = np.where(dur > 0, overlap / np.where(dur > 0, dur, 1.0), ((start >= t0) & (start <= t1)) * 1.0)
    return float((value * frac).sum())


@dataclass(frozen=True)
class RunContext:
    """What the summary needs to know about the deployment."""

    num_replicas: int
    devices_per_replica: int
    idle_power_w_per_replica: float
    price_usd_per_device_h: float
    power_method: str
    power_is_estimated: bool
    is_offline: bool  # every request arrived at once
    is_closed_loop: bool


def summarize(rec: RunRecorder, ctx: RunContext, slo: SLO, econ: Economics,
              warmup_fraction: float, drain_fraction: float) -> dict:
    reqs = rec.requests
    n = len(reqs)
    arrival = np.fromiter((r.arrival_s for r in reqs), np.float64, n)
    first = np.fromiter((r.first_token_s for r in reqs), np.float64, n)
    finish = np.fromiter((r.finish_s for r in reqs), np.float64, n)
    n_out = np.fromiter((r.output_tokens for r in reqs), np.float64, n)
    measured = np.fromiter((r.is_measured for r in reqs), bool, n)
    rejected = np.fromiter((r.request_id in rec.rejected_reasons for r in reqs), bool, n)
    done = finish >= 0
    n_warm = int(math.floor(warmup_fraction * n))
    n_drain = int(math.floor(drain_fraction * n))

    # window
    m_idx = np.flatnonzero(measured)
    if m_idx.size:
        t0 = float(arrival[m_idx].min())
        t1 = float(arrival[m_idx].max())
        if ctx.is_offline or t1 <= t0:
            done_m = finish[m_idx][done[m_idx]]
            t1 = float(done_m.max()) if done_m.size else t0
    else:
        t0 = t1 = 0.0
    window_s = max(t1 - t0, 0.0)

    # overload: does the work in the system grow through the window?
    q_t = np.frombuffer(rec.queue_t_s, dtype=np.float64)
    q_n = np.frombuffer(rec.queue_len, dtype=np.float64)
    served = ~rejected
    n_in = np.fromiter((r.prompt_tokens for r in reqs), np.float64, n)
    times = RequestTimes(arrival[served], first[served], finish[served], n_in[served], n_out[served])
    verdict = overload_verdict(times, t0, t1, q_t, q_n, not ctx.is_offline and not ctx.is_closed_loop)
    overloaded = verdict.is_overloaded
    # latency over measured, completed requests
    ok = measured & done
    ttft = first[ok] - arrival[ok]
    e2e = finish[ok] - arrival[ok]
    multi = n_out[ok] > 1
    tpot = (e2e[multi] - ttft[multi]) / (n_out[ok][multi] - 1)
    itl_v, itl_w = rec.itl_samples()
    latency = {"ttft_s": _stats(ttft), "tpot_s": _stats(tpot), "itl_s": _stats(itl_v, itl_w),
               "e2e_s": _stats(e2e)}
    if overloaded:
        latency = {k: {s: None for s in v} for k, v in latency.items()}

    # SLOs
    meets = np.ones(int(ok.sum()), bool)
    if slo.ttft_s is not None:
        meets &= ttft <= slo.ttft_s
    if slo.e2e_s is not None:
        meets &= e2e <= slo.e2e_s
    if slo.tpot_s is not None:
        tpot_all = np.where(n_out[ok] > 1, (e2e - ttft) / np.maximum(n_out[ok] - 1, 1), 0.0)
        meets &= tpot_all <= slo.tpot_s
    has_slo = any(v is not None for v in (slo.ttft_s, slo.tpot_s, slo.e2e_s))
    attainment = float(meets.mean()) if meets.size and has_slo else None

    # window rates
    s_start = np.frombuffer(rec.seg_start_s, dtype=np.float64)
    s_end = np.frombuffer(rec.seg_end_s, dtype=np.float64)
    out_tokens = _clip_sum(s_start, s_end, np.frombuffer(rec.seg_output_tokens, dtype=np.float64), t0, t1)
    in_tokens = _clip_sum(s_start, s_end, np.frombuffer(rec.seg_prompt_tokens, dtype=np.float64), t0, t1)
    busy_j = _clip_sum(s_start, s_end, np.frombuffer(rec.seg_energy_j, dtype=np.float64), t0, t1)
    busy_s = _clip_sum(s_start, s_end, np.frombuffer(rec.seg_busy_s, dtype=np.float64), t0, t1)
    completed_in_window = (done & (finish >= t0) & (finish <= t1))
    good_in_window = np.zeros(n, bool)
    good_in_window[np.flatnonzero(ok)[meets]] = True
    good_in_window &= completed_in_window
    rate = (lambda x: x / window_s) if window_s > 0 else (lambda x: None)
    idle_s = max(ctx.num_replicas * window_s - busy_s, 0.0)
    joules = busy_j + idle_s * ctx.idle_power_w_per_replica
    kwh = joules / 3.6e6
    total_tokens = out_tokens + in_tokens

    device_h = ctx.num_replicas * ctx.devices_per_replica * window_s / 3600.0
    price = econ.price_usd_per_device_h if econ.price_usd_per_device_h is not None else ctx.price_usd_per_device_h
    rental = device_h * price
    electricity = kwh * econ.pue * econ.electricity_usd_per_kwh
    hardware = device_h * econ.hardware_usd_per_device / (econ.amortization_years * 8766.0)
    usd = rental + electricity + hardware

    def per(value: float, tokens: float, scale: float = 1.0) -> float | None:
        return value / tokens * scale if tokens > 0 else None

    arrived = n
    completed = int(done.sum())
    n_rejected = int(rejected.sum())
    reasons: dict[str, int] = {}
    for reason in rec.rejected_reasons.values():
        reasons[reason] = reasons.get(reason, 0) + 1
    arrival_rate = (m_idx.size - 1) / (float(arrival[m_idx].max()) - t0) if (
        m_idx.size > 1 and float(arrival[m_idx].max()) > t0) else None
    completions_rate = rate(float(completed_in_window.sum()))
    warnings = [] if overloaded or ctx.is_offline or not m_idx.size else window_warnings(
        float(arrival.min()), t0, t1, float(arrival.max()), latency["e2e_s"]["mean"],
        has_warmup=n_warm > 0, has_drain=n_drain > 0 and not ctx.is_closed_loop)
    return {
        "overloaded": overloaded,
        "overload": {"arrival_rate_per_s": arrival_rate,
                     "sustainable_rate_per_s": sustainable_rate(times, t0, t1),
                     "reasons": list(verdict.reasons),
                     "queue_growth_requests": verdict.queue_growth_requests,
                     "in_system_growth_requests": verdict.in_system_growth_requests,
                     "work_growth_tokens": verdict.work_growth_tokens,
                     "completion_shortfall_requests": verdict.completion_shortfall_requests},
        "window_s": window_s,
        "window": {"start_s": t0, "end_s": t1, "warmup_requests": n_warm, "drain_requests": n_drain,
                   "is_too_short": bool(warnings), "warnings": warnings,
                   "definition": "first to last measured arrival (offline: to last measured completion); "
                                 "warm-up and drain requests excluded from latency statistics"},
        "requests": {"arrived": arrived, "completed": completed,
                     "in_flight": arrived - completed - n_rejected, "rejected": n_rejected,
                     "rejected_by_reason": reasons, "preempted": rec.num_preemptions,
                     "preempted_requests": int(sum(1 for r in reqs if r.num_preemptions)),
                     "measured": int(m_idx.size), "measured_completed": int(ok.sum())},
        "latency": latency,
        "throughput": {"requests_per_s": completions_rate, "input_tokens_per_s": rate(in_tokens),
                       "output_tokens_per_s": rate(out_tokens)},
        "goodput": {"requests_per_s": rate(float(good_in_window.sum())), "slo_attainment": attainment,
                    "slo": {"ttft_s": slo.ttft_s, "tpot_s": slo.tpot_s, "e2e_s": slo.e2e_s}},
        "energy": {"joules": joules, "j_per_output_token": per(joules, out_tokens),
                   "j_per_token": per(joules, total_tokens), "kwh": kwh,
                   "power_method": ctx.power_method, "is_estimated": ctx.power_is_estimated},
        "cost": {"usd": usd, "usd_per_1m_output_tokens": per(usd, out_tokens, 1e6),
                 "usd_per_1m_tokens": per(usd, total_tokens, 1e6), "rental_usd": rental,
                 "electricity_usd": electricity, "hardware_usd": hardware,
                 "price_usd_per_device_h": price, "device_hours": device_h},
        "co2_g": kwh * econ.pue * econ.carbon_g_per_kwh,
        "utilisation": {"busy_fraction": busy_s / (ctx.num_replicas * window_s) if window_s > 0 else None,
                        "mean_batch_tokens": float(np.sum(np.frombuffer(rec.seg_batch_tokens, dtype=np.float64))
                                                   / max(np.sum(np.frombuffer(rec.seg_num_steps, dtype=np.float64)), 1))},
    }
