"""Is a run in a steady state, and is its measurement window long enough to say so?

Overload. A run is *overloaded* when the work in the system keeps growing through the later half
of the measurement window (the earlier half may still hold the deployment filling up to its
steady occupancy, which is no overload):
  * the requests in the system (waiting or running: arrived, not finished, not rejected) grow by
    more than OVERLOAD_GROWTH_FRACTION of that half's arrivals (and by at least
    OVERLOAD_MIN_GROWTH requests): completions fall short of arrivals. The growth is the slope of a
    least-squares line through the count, sampled evenly, times the half's length: the endpoints
    alone would be as noisy as one moment's occupancy;
  * or the tokens still to compute (the work in the system, in tokens) grow by more than
    OVERLOAD_GROWTH_FRACTION of the tokens that arrived in that half: a running batch that absorbs
    the backlog (hundreds of sequences, each slower every step) grows the work, not the waiting
    queue;
  * or the waiting queue itself grows by more than OVERLOAD_GROWTH_FRACTION of that half's
    arrivals (and OVERLOAD_MIN_GROWTH requests).
The tokens still to compute are reconstructed from each request's record: before its first token,
its prompt and output; after it, its output prorated over its decode time (linear progress;
chunked prefill's partial progress and preemption's recompute are not tracked).
Offline (all at once) and closed-loop runs cannot be overloaded: their load adapts to the service.

The sustainable rate. Completions per second over the window (the throughput); where fewer than
OVERLOAD_MIN_GROWTH requests complete in it (latencies longer than the window), completions from
the window's start to the last completion: an overloaded server is busy over all of it (its
backlog drains after the last arrival). It is never 0 for a run that completes work.

The window. Latency statistics cover the measured requests (all but the warm-up and drain shares
by arrival), rates the window between the first and last measured arrival. Both are biased when
the window is short for the latencies it measures: a warm-up shorter than a request's end-to-end
latency starts the window while the deployment is still filling (completions lag arrivals, so
throughput is under-reported), a drain shorter than it measures requests that finish after the
arrivals stopped (optimistic latencies), and a window of a few latencies leaves its rates to its
edges. A run's window `is_too_short` when warm-up or drain lasts less than WARMUP_E2E_MULTIPLE
mean E2E latencies, or the window less than WINDOW_E2E_MULTIPLE; each reason is a warning line.
Overloaded runs are not checked (their latencies grow with the run and are not reported; the
overload test already leaves the window's first half to the filling), nor offline runs (their
window runs to the last completion).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

OVERLOAD_GROWTH_FRACTION = 0.05
OVERLOAD_MIN_GROWTH = 10
NUM_SAMPLES = 256
WARMUP_E2E_MULTIPLE = 1.0
WINDOW_E2E_MULTIPLE = 10.0


@dataclass(frozen=True)
class RequestTimes:
    """Per-request records as arrays (finish_s < 0: not finished; rejected requests excluded)."""

    arrival_s: np.ndarray
    first_token_s: np.ndarray
    finish_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray


def in_system(times: RequestTimes, at_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(requests in the system, tokens still to compute) at each moment of at_s."""
    is_done = times.finish_s >= 0
    end = np.where(is_done, times.finish_s, np.inf)
    first = np.where(times.first_token_s >= 0, times.first_token_s, np.inf)
    decode_s = np.where(is_done, np.maximum(times.finish_s - times.first_token_s, 1e-12), 1.0)
    whole = times.prompt_tokens + times.output_tokens
    count = np.empty(len(at_s))
    tokens = np.empty(len(at_s))
    for k, t in enumerate(at_s):
        present = (times.arrival_s <= t) & (t < end)
        before_first = present & (t < first)
        decoding = present & ~before_first
        count[k] = float(present.sum())
        left = np.where(is_done, (end - t) / decode_s, 1.0)  # unfinished: all of its output left
        tokens[k] = float(whole[before_first].sum() + (times.output_tokens * left)[decoding].sum())
    return count, tokens


def _growth(t_s: np.ndarray, values: np.ndarray, window_s: float) -> float:
    """The least-squares slope of values over t_s, times the window."""
    if t_s.size < 4 or window_s <= 0 or np.ptp(t_s) <= 0:
        return 0.0
    try:
        return float(np.polyfit(t_s, values, 1)[0] * window_s)
    except np.linalg.LinAlgError:  # times too close together to fit a line through
        return 0.0


@dataclass(frozen=True)
class OverloadVerdict:
    is_overloaded: bool
    reasons: tuple[str, ...]
    in_system_growth_requests: float
    work_growth_tokens: float
    queue_growth_requests: float
    completion_shortfall_requests: int


def overload_verdict(times: RequestTimes, t0_s: float, t1_s: float, queue_t_s: np.ndarray,
                     queue_len: np.ndarray, can_overload: bool) -> OverloadVerdict:
    """See the module docstring; t0_s..t1_s is the measurement window. The growths it reports are
    over its later half; the completion shortfall (arrivals - completions) over all of it."""
    arrived = (times.arrival_s >= t0_s) & (times.arrival_s <= t1_s)
    completed = (times.finish_s >= t0_s) & (times.finish_s <= t1_s)
    shortfall = int(arrived.sum()) - int(completed.sum())
    if not can_overload or t1_s <= t0_s:
        return OverloadVerdict(False, (), 0.0, 0.0, 0.0, shortfall)
    t0_s = (t0_s + t1_s) / 2.0
    window_s = t1_s - t0_s
    arrived = (times.arrival_s >= t0_s) & (times.arrival_s <= t1_s)
    at_s = np.linspace(t0_s, t1_s, NUM_SAMPLES)
    count, tokens = in_system(times, at_s)
    count_growth = _growth(at_s, count, window_s)
    token_growth = _growth(at_s, tokens, window_s)
    inside = (queue_t_s >= t0_s) & (queue_t_s <= t1_s)
    queue_growth = _growth(queue_t_s[inside], queue_len[inside], window_s)
    n_arrived = int(arrived.sum())
    tokens_arrived = float((times.prompt_tokens + times.output_tokens)[arrived].sum())
    count_limit = max(OVERLOAD_MIN_GROWTH, OVERLOAD_GROWTH_FRACTION * n_arrived)
    token_limit = OVERLOAD_GROWTH_FRACTION * tokens_arrived
    reasons = []
    if count_growth > count_limit:
        reasons.append(f"requests in the system grew by {count_growth:.0f} over the window's later half "
                       f"({n_arrived} arrived in it)")
    if token_growth > token_limit and count_growth > OVERLOAD_MIN_GROWTH / 2:
        reasons.append(f"tokens still to compute grew by {token_growth:.3g} over the window's later half "
                       f"({tokens_arrived:.3g} arrived in it)")
    if queue_growth > count_limit:
        reasons.append(f"the waiting queue grew by {queue_growth:.0f} requests over the window's later half")
    return OverloadVerdict(bool(reasons), tuple(reasons), count_growth, token_growth, queue_growth, shortfall)


def sustainable_rate(times: RequestTimes, t0_s: float, t1_s: float) -> float | None:
    """Completions per second (see the module docstring); None without a window or a completion."""
    if t1_s <= t0_s:
        return None
    done = times.finish_s[times.finish_s >= t0_s]
    in_window = int((done <= t1_s).sum())
    if in_window >= OVERLOAD_MIN_GROWTH or done.size == 0:
        return in_window / (t1_s - t0_s) if done.size else None
    end_s = max(float(done.max()), t1_s)  # a window shorter than the latencies: the whole run's rate
    return float(done.size) / (end_s - t0_s)


def window_warnings(first_arrival_s: float, t0_s: float, t1_s: float, last_arrival_s: float,
                    mean_e2e_s: float | None, has_warmup: bool = True, has_drain: bool = True) -> list[str]:
    """Why the measurement window is too short for the latencies it measures (empty: it is not).
    has_warmup / has_drain false: the scenario asked for none (a warm-up or drain fraction of 0),
    so its length is not held against the latencies."""
    if mean_e2e_s is None or mean_e2e_s <= 0:
        return []
    out = []
    need = WARMUP_E2E_MULTIPLE * mean_e2e_s
    warmup_s, drain_s, window_s = t0_s - first_arrival_s, last_arrival_s - t1_s, t1_s - t0_s
    if has_warmup and warmup_s < need:
        out.append(f"warm-up {warmup_s:.3g} s is shorter than {WARMUP_E2E_MULTIPLE:g} x the mean E2E latency "
                   f"{mean_e2e_s:.3g} s: the window starts before the deployment filled (rates under-reported)")
    if has_drain and drain_s < need:
        out.append(f"drain {drain_s:.3g} s is shorter than {WARMUP_E2E_MULTIPLE:g} x the mean E2E latency "
                   f"{mean_e2e_s:.3g} s: measured requests finish after the arrivals stop (latencies optimistic)")
    if window_s < WINDOW_E2E_MULTIPLE * mean_e2e_s:
        out.append(f"window {window_s:.3g} s is shorter than {WINDOW_E2E_MULTIPLE:g} x the mean E2E latency "
                   f"{mean_e2e_s:.3g} s: its rates depend on its edges")
    if out:
        out.append("simulate more requests (workload.num_requests or the trace's max_requests)")
    return out
