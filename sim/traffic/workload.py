"""Workloads: when requests arrive and how many tokens each one carries.

Modelled:
* open-loop arrival processes: Poisson, a gamma renewal process (burstiness set by the coefficient
  of variation of the gaps: cv = 1 is Poisson, cv > 1 is burstier), constant spacing, a
  piecewise-constant time-varying Poisson rate (optionally repeating with a period, e.g. a diurnal
  curve; sampled exactly by inverting the cumulative rate), and "all at once" (offline batch);
* a closed loop (a fixed number of users, each sending its next request when the previous one
  finished, after a think time): a plain config object, the engine drives it;
* prompt and output lengths drawn independently from fixed, uniform, lognormal or empirical
  distributions, or replayed from a real trace (`sim.traffic.traces`), which keeps each request's
  input/output pairing and prefix hashes.

Assumed:
* stationary processes put the first request at t = 0 and then draw n - 1 gaps (as `vllm bench
  serve` does, and as trace replay does: its first request defines t = 0). The piecewise process
  runs on the clock of its rate curve (t = 0 is the curve's start), so its first arrival is wherever
  the process puts it.
* lengths are whole tokens >= 1. A value moved by a bound (a lognormal draw rounding below 1, or
  above its `max` cap) is counted, never silently: `LengthDist.sample_counted` returns the count and
  `generate` records it in `RequestTable.notes`.

Randomness: `generate` splits the Generator it is given into three independent streams (arrivals,
input lengths, output lengths), so a sweep over the arrival rate with one seed keeps the very same
lengths (common random numbers).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from sim.errors import InputError
from sim.request import RequestSpec

TRACE_FORMATS = ("auto", "azure", "mooncake", "burstgpt", "plain")
ZERO_OUTPUT_POLICIES = ("auto", "error", "drop", "one")
# What a run can model: arrivals spread over at most MAX_ARRIVAL_SPAN_S (about 3 years; beyond it
# energy and cost figures overflow) at a mean rate of at most MAX_ARRIVAL_RATE_PER_S (gaps below a
# tenth of a microsecond are all-at-once arrivals: say rate_per_s = "inf" or process "all_at_once").
MAX_ARRIVAL_SPAN_S = 1e8
MAX_ARRIVAL_RATE_PER_S = 1e7


# ------------------------------------------------------------------------------------------------
# Validation helpers: raise ValueError("field: problem"); parsers turn it into an InputError.

def _is_number(value: object) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _check_float(obj: object, name: str, *, minimum: float = 0.0, strict: bool = True,
                 allow_inf: bool = False, optional: bool = False) -> None:
    """Check a float field (ints accepted and stored as float)."""
    value = getattr(obj, name)
    if value is None and optional:
        return
    is_ok = (_is_number(value) and not math.isnan(value)
             and (allow_inf or math.isfinite(value))
             and (value > minimum if strict else value >= minimum))
    if not is_ok:
        bound = f"{'>' if strict else '>='} {minimum:g}"
        extra = " (or inf)" if allow_inf else ""
        raise ValueError(f"{name}: expected a number {bound}{extra}, got {value!r}")
    object.__setattr__(obj, name, float(value))


def _check_int(obj: object, name: str, *, minimum: int = 1, optional: bool = False) -> None:
    """Check an integer field (a float with an integral value, e.g. JSON's 1e6, is accepted)."""
    value = getattr(obj, name)
    if value is None and optional:
        return
    number = int(value) if isinstance(value, float) and value.is_integer() else value
    if not isinstance(number, (int, np.integer)) or isinstance(number, bool) or number < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    object.__setattr__(obj, name, int(number))


def _readonly(values: object, dtype: type, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array, got shape {array.shape}")
    if dtype is np.int64 and array.size and not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name}: expected integers, got dtype {array.dtype}")
    view = array.astype(dtype, copy=False).view()
    view.flags.writeable = False
    return view


def _plain(value: object) -> object:
    """A value as TOML/YAML/JSON can hold it: tuples as lists, infinity as the string "inf"."""
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def _fields_dict(obj: object, tag_key: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {tag_key: obj.kind} if tag_key else {}  # type: ignore[attr-defined]
    for f in dataclasses.fields(obj):  # type: ignore[arg-type]
        value = getattr(obj, f.name)
        if value is not None:
            out[f.name] = _plain(value)
    return out


def _describe(obj: object, tag_key: str) -> str:
    params = {k: v for k, v in obj.to_dict().items() if k != tag_key}  # type: ignore[attr-defined]
    text = ", ".join(f"{k}={v:g}" if _is_number(v) else f"{k}={v}" for k, v in params.items())
    return f"{obj.kind}({text})"  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------------------------
# The columnar table of requests.

@dataclass(frozen=True, eq=False)
class RequestTable:
    """Requests as columns (one row per request, sorted by arrival), cheap for millions of rows.

    prefix_hashes: one tuple of KV-block ids per request (Mooncake `hash_ids`), or None.
    prefix_block_tokens: how many prompt tokens one prefix hash covers (512 for Mooncake), if known.
    notes: counters saying how the table was made (clipped lengths, dropped or re-ordered rows, ...).
    """

    arrival_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    prefix_hashes: tuple[tuple[int, ...], ...] | None = None
    source: str = ""
    prefix_block_tokens: int | None = None
    notes: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        arrival = _readonly(self.arrival_s, np.float64, "arrival_s")
        prompt = _readonly(self.prompt_tokens, np.int64, "prompt_tokens")
        output = _readonly(self.output_tokens, np.int64, "output_tokens")
        n = arrival.size
        for name, column in (("prompt_tokens", prompt), ("output_tokens", output)):
            if column.size != n:
                raise ValueError(f"{name}: expected {n} rows (as arrival_s), got {column.size}")
            if n and column.min() < 1:
                row = int(np.argmax(column < 1))
                raise ValueError(f"{name}: expected >= 1 in every row, got {column[row]} in row {row}")
        if n and not (np.isfinite(arrival).all() and arrival[0] >= 0):
            raise ValueError("arrival_s: expected finite times >= 0")
        if n > 1 and (np.diff(arrival) < 0).any():
            row = int(np.argmax(np.diff(arrival) < 0)) + 1
            raise ValueError(f"arrival_s: expected non-decreasing times, row {row} arrives before row {row - 1}")
        object.__setattr__(self, "arrival_s", arrival)
        object.__setattr__(self, "prompt_tokens", prompt)
        object.__setattr__(self, "output_tokens", output)
        object.__setattr__(self, "prefix_hashes", self._checked_hashes(n))
        object.__setattr__(self, "notes", dict(self.notes))
        _check_int(self, "prefix_block_tokens", optional=True)
        if not isinstance(self.source, str):
            raise ValueError(f"source: expected a string, got {self.source!r}")

    def _checked_hashes(self, n: int) -> tuple[tuple[int, ...], ...] | None:
        if self.prefix_hashes is None:
            return None
        hashes = tuple(tuple(h) for h in self.prefix_hashes)
        if len(hashes) != n:
            raise ValueError(f"prefix_hashes: expected {n} rows (as arrival_s), got {len(hashes)}")
        return hashes

    def __len__(self) -> int:
        return int(self.arrival_s.size)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RequestTable):
            return NotImplemented
        return (np.array_equal(self.arrival_s, other.arrival_s)
                and np.array_equal(self.prompt_tokens, other.prompt_tokens)
                and np.array_equal(self.output_tokens, other.output_tokens)
                and self.prefix_hashes == other.prefix_hashes and self.source == other.source
                and self.prefix_block_tokens == other.prefix_block_tokens
                and self.notes == other.notes)

    __hash__ = None  # type: ignore[assignment]

    @property
    def span_s(self) -> float:
        """Time from the first to the last arrival."""
        return float(self.arrival_s[-1] - self.arrival_s[0]) if len(self) else 0.0

    def specs(self) -> list[RequestSpec]:
        """One RequestSpec per row; request_id is the row index."""
        hashes = self.prefix_hashes or ((),) * len(self)
        return [RequestSpec(i, t, p, o, h) for i, (t, p, o, h) in enumerate(zip(
            self.arrival_s.tolist(), self.prompt_tokens.tolist(), self.output_tokens.tolist(), hashes))]

    def slice(self, start: int, stop: int | None = None) -> RequestTable:
        """Rows [start, stop) as a new table; arrival times are kept as they are (not shifted)."""
        rows = slice(start, stop)
        hashes = None if self.prefix_hashes is None else self.prefix_hashes[rows]
        return dataclasses.replace(
            self, arrival_s=self.arrival_s[rows], prompt_tokens=self.prompt_tokens[rows],
            output_tokens=self.output_tokens[rows], prefix_hashes=hashes,
            source=f"{self.source}[{start}:{'' if stop is None else stop}]")


# ------------------------------------------------------------------------------------------------
# Length distributions. `sample_counted` returns (tokens, number of values moved by a bound).

class _Lengths:
    kind: ClassVar[str]

    def sample_counted(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, int]:
        raise NotImplementedError

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """n token counts (int64, each >= 1)."""
        return self.sample_counted(rng, n)[0]

    def to_dict(self) -> dict[str, Any]:
        return _fields_dict(self, "dist")

    def describe(self) -> str:
        return _describe(self, "dist")


@dataclass(frozen=True)
class Fixed(_Lengths):
    """Every request has exactly `value` tokens."""

    kind: ClassVar[str] = "fixed"
    value: int

    def __post_init__(self) -> None:
        _check_int(self, "value")

    def sample_counted(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, int]:
        return np.full(n, self.value, dtype=np.int64), 0


@dataclass(frozen=True)
class Uniform(_Lengths):
    """Whole numbers of tokens, uniform on [min, max] (both included)."""

    kind: ClassVar[str] = "uniform"
    min: int
    max: int

    def __post_init__(self) -> None:
        _check_int(self, "min")
        _check_int(self, "max")
        if self.max < self.min:
            raise ValueError(f"max: expected >= min ({self.min}), got {self.max}")

    def sample_counted(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, int]:
        return rng.integers(self.min, self.max, size=n, endpoint=True, dtype=np.int64), 0


@dataclass(frozen=True, kw_only=True)
class LogNormal(_Lengths):
    """tokens = max(1, round(X)), X lognormal; optionally capped at `max` tokens.

    sigma is the standard deviation of log X. Give exactly one of `mean` (the mean of X, before
    rounding and capping: mu = ln(mean) - sigma^2 / 2) or `median` (the median of X: mu =
    ln(median)). Values raised to 1 or lowered to `max` are counted by `sample_counted`.
    sigma is limited to 5 (p99/median = e^11.6 there), which keeps every draw a sane int64.
    """

    kind: ClassVar[str] = "lognormal"
    sigma: float
    mean: float | None = None
    median: float | None = None
    max: int | None = None

    def __post_init__(self) -> None:
        _check_float(self, "sigma", strict=False)
        if self.sigma > 5:
            raise ValueError(f"sigma: expected a number in [0, 5], got {self.sigma!r}")
        if (self.mean is None) == (self.median is None):
            raise ValueError("mean: give exactly one of mean or median")
        _check_float(self, "mean", optional=True)
        _check_float(self, "median", optional=True)
        _check_int(self, "max", optional=True)

    @property
    def mu(self) -> float:
        """Mean of log X."""
        if self.median is not None:
            return math.log(self.median)
        return math.log(self.mean) - self.sigma ** 2 / 2  # type: ignore[arg-type]

    def sample_counted(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, int]:
        x = np.rint(rng.lognormal(self.mu, self.sigma, n))
        num_clipped = int(np.count_nonzero(x < 1))
        if self.max is not None:
            num_clipped += int(np.count_nonzero(x > self.max))
        np.clip(x, 1, self.max, out=x)
        return x.astype(np.int64), num_clipped


@dataclass(frozen=True, eq=False)
class Empirical(_Lengths):
    """Resample observed lengths uniformly, with replacement.

    values: the observed token counts. trace/column: where they were read from (a trace path or
    built-in name and the column "prompt_tokens" or "output_tokens"), None for an inline list.
    Note: sampling input and output independently loses their pairing; replay the trace for that.
    """

    kind: ClassVar[str] = "empirical"
    values: np.ndarray
    trace: str | None = None
    column: str | None = None

    def __post_init__(self) -> None:
        try:
            values = _readonly(np.asarray(self.values), np.int64, "values")
        except (TypeError, ValueError) as exc:
            raise ValueError(f"values: expected a list of whole token counts ({exc})") from None
        if values.size == 0 or values.min() < 1:
            raise ValueError("values: expected a non-empty list of token counts >= 1")
        object.__setattr__(self, "values", values)
        if (self.trace is None) != (self.column is None):
            raise ValueError("column: give both trace and column, or neither")
        if self.column not in (None, "prompt_tokens", "output_tokens"):
            raise ValueError(f"column: expected 'prompt_tokens' or 'output_tokens', got {self.column!r}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Empirical):
            return NotImplemented
        return (self.trace, self.column) == (other.trace, other.column) and np.array_equal(
            self.values, other.values)

    def __hash__(self) -> int:
        return hash((self.trace, self.column, self.values.size, int(self.values.sum())))

    def sample_counted(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, int]:
        return self.values[rng.integers(0, self.values.size, size=n)], 0

    def to_dict(self) -> dict[str, Any]:
        if self.trace is not None:
            return {"dist": self.kind, "trace": self.trace, "column": self.column}
        return {"dist": self.kind, "values": self.values.tolist()}

    def describe(self) -> str:
        origin = f" from {self.trace}:{self.column}" if self.trace else ""
        return f"empirical({self.values.size} values{origin})"


LengthDist = Fixed | Uniform | LogNormal | Empirical
LENGTH_DISTS: dict[str, type] = {c.kind: c for c in (Fixed, Uniform, LogNormal, Empirical)}


# ------------------------------------------------------------------------------------------------
# Arrival processes. `sample_times(rng, n)` returns n non-decreasing arrival times in seconds.

def _times_from_gaps(n: int, gaps_s: np.ndarray) -> np.ndarray:
    """First arrival at 0, then the n - 1 gaps accumulated."""
    times = np.zeros(n)
    if n > 1:
        np.cumsum(gaps_s, out=times[1:])
    return times


class _Arrivals:
    kind: ClassVar[str]

    def to_dict(self) -> dict[str, Any]:
        return _fields_dict(self, "process")

    def describe(self) -> str:
        return _describe(self, "process")


@dataclass(frozen=True)
class Poisson(_Arrivals):
    """Exponential gaps with mean 1 / rate. rate_per_s = inf: all requests at t = 0."""

    kind: ClassVar[str] = "poisson"
    rate_per_s: float

    def __post_init__(self) -> None:
        _check_float(self, "rate_per_s", allow_inf=True)

    @property
    def mean_rate_per_s(self) -> float:
        return self.rate_per_s

    def sample_times(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if math.isinf(self.rate_per_s):
            return np.zeros(n)
        return _times_from_gaps(n, rng.exponential(1.0 / self.rate_per_s, max(n - 1, 0)))


@dataclass(frozen=True)
class Gamma(_Arrivals):
    """Gamma-distributed gaps with mean 1 / rate and coefficient of variation cv (shape 1/cv^2).

    cv = 1 is Poisson; cv > 1 is bursty (many short gaps, a few long ones); cv < 1 is smoother.
    """

    kind: ClassVar[str] = "gamma"
    rate_per_s: float
    cv: float

    def __post_init__(self) -> None:
        _check_float(self, "rate_per_s", allow_inf=True)
        _check_float(self, "cv")

    @property
    def mean_rate_per_s(self) -> float:
        return self.rate_per_s

    def sample_times(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if math.isinf(self.rate_per_s):
            return np.zeros(n)
        shape = 1.0 / self.cv ** 2
        scale_s = 1.0 / (self.rate_per_s * shape)
        return _times_from_gaps(n, rng.gamma(shape, scale_s, max(n - 1, 0)))


@dataclass(frozen=True)
class Constant(_Arrivals):
    """Evenly spaced arrivals, 1 / rate apart. rate_per_s = inf: all requests at t = 0."""

    kind: ClassVar[str] = "constant"
    rate_per_s: float

    def __post_init__(self) -> None:
        _check_float(self, "rate_per_s", allow_inf=True)

    @property
    def mean_rate_per_s(self) -> float:
        return self.rate_per_s

    def sample_times(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if math.isinf(self.rate_per_s):
            return np.zeros(n)
        return np.arange(n, dtype=np.float64) / self.rate_per_s


@dataclass(frozen=True)
class AllAtOnce(_Arrivals):
    """Every request arrives at t = 0 (offline throughput); same as rate_per_s = inf."""

    kind: ClassVar[str] = "all_at_once"

    @property
    def mean_rate_per_s(self) -> float:
        return math.inf

    def sample_times(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.zeros(n)


def _segment(item: object, index: int) -> tuple[float, float]:
    """One (start_s, rate_per_s) pair from a 2-item list or a {start_s, rate_per_s} mapping."""
    name = f"segments[{index}]"
    if isinstance(item, Mapping):
        unknown = set(item) - {"start_s", "rate_per_s"}
        if unknown or len(item) != 2:
            raise ValueError(f"{name}: expected keys start_s and rate_per_s, got {sorted(item)}")
        item = (item["start_s"], item["rate_per_s"])
    if isinstance(item, (str, bytes)) or not hasattr(item, "__len__") or len(item) != 2:
        raise ValueError(f"{name}: expected [start_s, rate_per_s], got {item!r}")
    start_s, rate_per_s = item  # type: ignore[misc]
    for key, value in (("start_s", start_s), ("rate_per_s", rate_per_s)):
        if not (_is_number(value) and math.isfinite(value) and value >= 0):
            raise ValueError(f"{name}.{key}: expected a finite number >= 0, got {value!r}")
    return float(start_s), float(rate_per_s)


@dataclass(frozen=True)
class Piecewise(_Arrivals):
    """A Poisson process whose rate is piecewise constant in time.

    segments: (start_s, rate_per_s) pairs; the first starts at 0, starts increase; each rate holds
    until the next start. With period_s the curve repeats every period_s seconds (the last segment
    lasts until period_s); without it the last rate holds for ever. Sampled exactly: unit-rate
    Poisson epochs mapped through the inverse of the cumulative rate.
    """

    kind: ClassVar[str] = "piecewise"
    segments: tuple[tuple[float, float], ...]
    period_s: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.segments, (str, bytes, Mapping)) or not hasattr(self.segments, "__iter__"):
            raise ValueError(f"segments: expected a list of [start_s, rate_per_s], got {self.segments!r}")
        segments = tuple(_segment(item, i) for i, item in enumerate(self.segments))
        object.__setattr__(self, "segments", segments)
        if not segments or segments[0][0] != 0:
            raise ValueError("segments: expected at least one segment, the first starting at 0")
        for i in range(1, len(segments)):
            if segments[i][0] <= segments[i - 1][0]:
                raise ValueError(f"segments[{i}].start_s: expected > {segments[i - 1][0]:g}, "
                                 f"got {segments[i][0]:g}")
        _check_float(self, "period_s", optional=True)
        if self.period_s is not None and self.period_s <= segments[-1][0]:
            raise ValueError(f"period_s: expected > the last start ({segments[-1][0]:g}), got {self.period_s:g}")
        if self.period_s is None and segments[-1][1] == 0:
            raise ValueError(f"segments[{len(segments) - 1}].rate_per_s: the last rate holds for ever "
                             "without period_s, expected > 0")
        if self.period_s is not None and self._cumulative()[1] == 0:
            raise ValueError("segments: every rate is 0; expected some rate > 0")

    def _arrays(self) -> tuple[np.ndarray, np.ndarray]:
        starts_s = np.array([s for s, _ in self.segments])
        rates_per_s = np.array([r for _, r in self.segments])
        return starts_s, rates_per_s

    def _cumulative(self) -> tuple[np.ndarray, float]:
        """Expected arrivals before each segment start, and in one whole period (inf if none)."""
        starts_s, rates_per_s = self._arrays()
        at_starts = np.concatenate([[0.0], np.cumsum(rates_per_s[:-1] * np.diff(starts_s))])
        if self.period_s is None:
            return at_starts, math.inf
        return at_starts, float(at_starts[-1] + rates_per_s[-1] * (self.period_s - starts_s[-1]))

    @property
    def mean_rate_per_s(self) -> float:
        """Average over a period; without a period, the long-run (last) rate."""
        if self.period_s is None:
            return self.segments[-1][1]
        return self._cumulative()[1] / self.period_s

    def sample_times(self, rng: np.random.Generator, n: int) -> np.ndarray:
        starts_s, rates_per_s = self._arrays()
        at_starts, per_period = self._cumulative()
        epochs = np.cumsum(rng.exponential(1.0, n))
        offset_s: np.ndarray | float = 0.0
        if self.period_s is not None:
            cycles = np.floor(epochs / per_period)
            offset_s = cycles * self.period_s
            # keep the remainder inside [0, per_period) despite rounding, so it never lands in a
            # trailing zero-rate segment
            epochs = np.clip(epochs - cycles * per_period, 0.0, np.nextafter(per_period, 0.0))
        index = np.clip(np.searchsorted(at_starts, epochs, side="right") - 1, 0, len(starts_s) - 1)
        times = offset_s + starts_s[index] + (epochs - at_starts[index]) / rates_per_s[index]
        return np.maximum.accumulate(times) if n else times  # guards 1-ulp dips at period edges

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"process": self.kind, "segments": [
            {"start_s": s, "rate_per_s": r} for s, r in self.segments]}
        if self.period_s is not None:
            out["period_s"] = self.period_s
        return out

    def describe(self) -> str:
        period = "" if self.period_s is None else f", period_s={self.period_s:g}"
        return f"piecewise({len(self.segments)} segments{period})"


@dataclass(frozen=True)
class ClosedLoop(_Arrivals):
    """`concurrency` users; each sends its next request think_time_s after its previous one ends.

    A config object only: the engine issues requests as users become free.
    """

    kind: ClassVar[str] = "closed"
    concurrency: int
    think_time_s: float = 0.0

    def __post_init__(self) -> None:
        _check_int(self, "concurrency")
        _check_float(self, "think_time_s", strict=False)
        if self.think_time_s > MAX_ARRIVAL_SPAN_S:
            raise ValueError(f"think_time_s: expected at most {MAX_ARRIVAL_SPAN_S:g} s, got {self.think_time_s:g}")


ArrivalProcess = Poisson | Gamma | Constant | Piecewise | AllAtOnce
ARRIVAL_PROCESSES: dict[str, type] = {c.kind: c for c in (
    Poisson, Gamma, Constant, Piecewise, AllAtOnce, ClosedLoop)}


# ------------------------------------------------------------------------------------------------
# Trace replay and the whole workload.

@dataclass(frozen=True)
class TraceSpec:
    """Replay a trace file (or built-in trace, see `sim.traffic.traces.list_builtin_traces`).

    Applied in this order: keep requests arriving at or after start_s (seconds after the trace's
    first request), then the first max_requests of them, shift to t = 0, then rescale time:
    time_scale multiplies every inter-arrival gap (0.5 = twice as fast), or rate_per_s rescales so
    that the mean rate, (n - 1) / span, is this (give one of the two).
    zero_output: what to do with rows of 0 output tokens: "error", "drop" (counted), "one" (keep
    with 1 output token, counted); "auto" = "drop" for BurstGPT (failed requests), else "error".
    """

    path: str
    format: str = "auto"
    time_scale: float = 1.0
    rate_per_s: float | None = None
    start_s: float = 0.0
    max_requests: int | None = None
    zero_output: str = "auto"

    def __post_init__(self) -> None:
        if not isinstance(self.path, str) or not self.path:
            raise ValueError(f"path: expected a file path or built-in trace name, got {self.path!r}")
        if self.format not in TRACE_FORMATS:
            raise ValueError(f"format: expected one of {', '.join(TRACE_FORMATS)}, got {self.format!r}")
        if self.zero_output not in ZERO_OUTPUT_POLICIES:
            raise ValueError(f"zero_output: expected one of {', '.join(ZERO_OUTPUT_POLICIES)}, "
                             f"got {self.zero_output!r}")
        _check_float(self, "time_scale")
        _check_float(self, "rate_per_s", optional=True)
        _check_float(self, "start_s", strict=False)
        _check_int(self, "max_requests", optional=True)
        if self.rate_per_s is not None and self.time_scale != 1.0:
            raise ValueError("rate_per_s: give either time_scale or rate_per_s, not both")

    def to_dict(self) -> dict[str, Any]:
        return _fields_dict(self, None)


@dataclass(frozen=True)
class WorkloadSpec:
    """Arrivals plus lengths, or a trace (whose arrivals an `arrival` process may replace).

    * synthetic open loop: arrival, input_tokens, output_tokens, num_requests;
    * closed loop: arrival=ClosedLoop, input/output_tokens; num_requests optional (the engine may
      stop on time instead);
    * trace: trace; with an open-loop `arrival` the trace's lengths (and prefix hashes) keep their
      order and pairing but arrive by that process; with ClosedLoop the engine issues them in order.
    """

    arrival: ArrivalProcess | ClosedLoop | None = None
    input_tokens: LengthDist | None = None
    output_tokens: LengthDist | None = None
    num_requests: int | None = None
    trace: TraceSpec | None = None

    def __post_init__(self) -> None:
        _check_int(self, "num_requests", optional=True)
        if self.arrival is not None and not isinstance(self.arrival, tuple(ARRIVAL_PROCESSES.values())):
            raise ValueError(f"arrival: expected an arrival process, got {self.arrival!r}")
        if self.trace is not None:
            self._check_trace()
            return
        if self.arrival is None:
            raise ValueError("arrival: required unless a trace is given")
        for name in ("input_tokens", "output_tokens"):
            if not isinstance(getattr(self, name), tuple(LENGTH_DISTS.values())):
                raise ValueError(f"{name}: expected a length distribution, got {getattr(self, name)!r}")
        if self.num_requests is None and not self.is_closed_loop:
            raise ValueError("num_requests: required for an open-loop workload")

    def _check_trace(self) -> None:
        if not isinstance(self.trace, TraceSpec):
            raise ValueError(f"trace: expected a TraceSpec, got {self.trace!r}")
        for name in ("input_tokens", "output_tokens"):
            if getattr(self, name) is not None:
                raise ValueError(f"{name}: not allowed with a trace (the trace gives the lengths)")
        if self.num_requests is not None:
            raise ValueError("num_requests: not allowed with a trace; use trace.max_requests")

    @property
    def is_closed_loop(self) -> bool:
        return isinstance(self.arrival, ClosedLoop)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.num_requests is not None:
            out["num_requests"] = self.num_requests
        for name in ("arrival", "input_tokens", "output_tokens", "trace"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value.to_dict()
        return out

    def describe(self) -> str:
        parts = [p.describe() for p in (self.arrival, self.input_tokens, self.output_tokens) if p]
        if self.trace is not None:
            parts.insert(0, f"trace {self.trace.path}")
        return "; ".join(parts)


def _arrival_times(arrival: ArrivalProcess | ClosedLoop, rng: np.random.Generator, n: int) -> np.ndarray:
    """ClosedLoop has no arrival times of its own: zeros, the engine assigns them."""
    return np.zeros(n) if isinstance(arrival, ClosedLoop) else arrival.sample_times(rng, n)


def _load_trace(trace: TraceSpec) -> RequestTable:
    from sim.traffic import traces  # deferred: sim.traffic.traces builds RequestTables, so it imports this module

    return traces.load_trace_spec(trace)


def generate(spec: WorkloadSpec, rng: np.random.Generator) -> RequestTable:
    """The workload's requests as a table.

    For ClosedLoop the table's arrival_s are all 0 (placeholders): the engine issues rows in order
    as users become free; num_requests (or a trace) must say how many rows.
    """
    arrival_rng, input_rng, output_rng = rng.spawn(3)
    if spec.trace is not None:
        table = _load_trace(spec.trace)
        if spec.arrival is None:
            return table
        arrival_s = _arrival_times(spec.arrival, arrival_rng, len(table))
        return dataclasses.replace(table, arrival_s=arrival_s,
                                   source=f"{table.source} lengths; {spec.arrival.describe()}")
    if spec.num_requests is None:
        raise ValueError("num_requests: needed to generate a table; a closed loop without it "
                         "uses sample_lengths")
    assert spec.arrival is not None and spec.input_tokens is not None and spec.output_tokens is not None
    n = spec.num_requests
    prompt, num_prompt_clipped = spec.input_tokens.sample_counted(input_rng, n)
    output, num_output_clipped = spec.output_tokens.sample_counted(output_rng, n)
    return RequestTable(_arrival_times(spec.arrival, arrival_rng, n), prompt, output,
                        source=spec.describe(),
                        notes={"num_input_tokens_clipped": num_prompt_clipped,
                               "num_output_tokens_clipped": num_output_clipped})


# notes key -> the warning a CLI prints when it is non-zero (the count goes where {n} is)
NOTE_WARNINGS = {
    "num_zero_output_dropped": "dropped {n} trace rows with 0 output tokens (workload.trace.zero_output = "
                               "\"drop\"; \"one\" replays them with 1 token)",
    "num_zero_output_set_to_1": "replayed {n} trace rows with 0 output tokens as 1 output token "
                                "(workload.trace.zero_output = \"one\")",
    "num_out_of_order": "sorted {n} trace rows that arrived before the row above them",
    "num_input_tokens_clipped": "moved {n} drawn prompt lengths to the distribution's bounds (1 or max)",
    "num_output_tokens_clipped": "moved {n} drawn output lengths to the distribution's bounds (1 or max)",
}


def arrival_problem(arrival_s: np.ndarray) -> str | None:
    """Why a table's arrival times are beyond what a run models (None: they are not)."""
    n = arrival_s.size
    span_s = float(arrival_s[-1] - arrival_s[0]) if n else 0.0
    if span_s > MAX_ARRIVAL_SPAN_S:
        return (f"the arrivals span {span_s:.3g} s; a run models at most {MAX_ARRIVAL_SPAN_S:g} s "
                "(MAX_ARRIVAL_SPAN_S): raise the rate")
    if span_s > 0 and (n - 1) / span_s > MAX_ARRIVAL_RATE_PER_S:
        return (f"{n} arrivals within {span_s:.3g} s ({(n - 1) / span_s:.3g} requests/s) is beyond "
                f"{MAX_ARRIVAL_RATE_PER_S:g} requests/s (MAX_ARRIVAL_RATE_PER_S): for arrivals all at once "
                "use rate_per_s = \"inf\" or process = \"all_at_once\"")
    return None


def workload_warnings(notes: Mapping[str, int]) -> list[str]:
    """One line per note of a RequestTable that changed what was asked for (rows dropped, sorted or
    lengths clipped), with its count."""
    return [text.format(n=f"{notes[key]:,}") for key, text in NOTE_WARNINGS.items() if notes.get(key)]


def sample_lengths(spec: WorkloadSpec, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """n (input, output) token counts, e.g. for a closed loop; the first n rows of a trace.

    Uses the same random streams as `generate`, so both give the same lengths for one seed. Clipping
    counts are not returned here; use `LengthDist.sample_counted` or `generate` for them.
    """
    _, input_rng, output_rng = rng.spawn(3)
    if spec.trace is not None:
        table = _load_trace(spec.trace)
        if n > len(table):
            raise ValueError(f"n: the trace has {len(table)} requests, {n} were asked for")
        return table.prompt_tokens[:n].copy(), table.output_tokens[:n].copy()
    assert spec.input_tokens is not None and spec.output_tokens is not None  # WorkloadSpec checked
    return spec.input_tokens.sample(input_rng, n), spec.output_tokens.sample(output_rng, n)


# ------------------------------------------------------------------------------------------------
# Parsing a scenario's [workload] section.

_INF_STRINGS = {"inf", "+inf", "infinity", "+infinity"}


def _build(cls: type, kwargs: dict[str, Any], where: str, path: str) -> Any:
    """cls(**kwargs), with a ValueError "field: problem" turned into an InputError at path.field."""
    try:
        return cls(**kwargs)
    except ValueError as exc:
        name, _, problem = str(exc).partition(": ")
        raise InputError(where, f"{path}.{name}" if problem else path, problem or str(exc)) from None


def _mapping(d: object, where: str, path: str, what: str) -> Mapping[str, Any]:
    if not isinstance(d, Mapping):
        raise InputError(where, path, f"expected a table of {what}, got {d!r}")
    return d


def _kwargs(cls: type, d: Mapping[str, Any], where: str, path: str, tag_key: str | None,
            extra_keys: tuple[str, ...] = ()) -> dict[str, Any]:
    """The dataclass's keyword arguments from d: unknown keys and missing required ones are errors."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    allowed = set(fields) | set(extra_keys) | ({tag_key} if tag_key else set())
    for key in d:
        if key not in allowed:
            raise InputError(where, f"{path}.{key}", f"unknown key; expected one of: {', '.join(sorted(allowed))}")
    for name, f in fields.items():
        is_required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if is_required and name not in d and name not in extra_keys:
            raise InputError(where, f"{path}.{name}", "missing (required)")
    kwargs = {k: v for k, v in d.items() if k in fields}
    for key, value in kwargs.items():
        if key.endswith("_per_s") and isinstance(value, str) and value.strip().lower() in _INF_STRINGS:
            kwargs[key] = math.inf
    return kwargs


def _kind(d: Mapping[str, Any], tag_key: str, registry: dict[str, type], where: str, path: str) -> type:
    name = d.get(tag_key)
    if not isinstance(name, str) or name not in registry:
        got = "missing" if name is None else f"got {name!r}"
        raise InputError(where, f"{path}.{tag_key}", f"expected one of: {', '.join(registry)}; {got}")
    return registry[name]


def arrival_from_dict(d: object, where: str, path: str = "workload.arrival") -> ArrivalProcess | ClosedLoop:
    """{"process": "poisson"|"gamma"|"constant"|"piecewise"|"all_at_once"|"closed", ...}."""
    d = _mapping(d, where, path, "arrival settings")
    cls = _kind(d, "process", ARRIVAL_PROCESSES, where, path)
    return _build(cls, _kwargs(cls, d, where, path, "process"), where, path)


def lengths_from_dict(d: object, where: str, path: str, column: str = "prompt_tokens") -> LengthDist:
    """{"dist": "fixed"|"uniform"|"lognormal"|"empirical", ...}, or a bare integer for fixed.

    An empirical dist may name a trace instead of values; `column` is its default column.
    """
    if _is_number(d):
        return _build(Fixed, {"value": d}, where, path)
    d = _mapping(d, where, path, "length settings (or a whole number of tokens)")
    cls = _kind(d, "dist", LENGTH_DISTS, where, path)
    if cls is not Empirical:
        return _build(cls, _kwargs(cls, d, where, path, "dist"), where, path)
    kwargs = _kwargs(cls, d, where, path, "dist", extra_keys=("values",))
    if ("values" in d) == ("trace" in d):
        raise InputError(where, f"{path}.values", "give either values or trace")
    if "trace" in d:
        from sim.traffic import traces  # deferred, see _load_trace

        kwargs.setdefault("column", column)
        if kwargs["column"] not in ("prompt_tokens", "output_tokens"):
            raise InputError(where, f"{path}.column",
                             f"expected prompt_tokens or output_tokens, got {kwargs['column']!r}")
        table = traces.load_trace(kwargs["trace"])
        kwargs["values"] = getattr(table, kwargs["column"])
    return _build(cls, kwargs, where, path)


def trace_from_dict(d: object, where: str, path: str = "workload.trace",
                    base_dir: str | Path | None = None) -> TraceSpec:
    """{"path": ..., "format", "time_scale" | "rate_per_s", "start_s", "max_requests", "zero_output"}
    or just the path/name as a string. A relative path is taken relative to base_dir when given."""
    from sim.traffic import traces  # deferred, see _load_trace

    d = {"path": d} if isinstance(d, str) else _mapping(d, where, path, "trace settings")
    spec = _build(TraceSpec, _kwargs(TraceSpec, d, where, path, None), where, path)
    if not traces.is_builtin_trace(spec.path):
        file_path = Path(spec.path).expanduser()
        if base_dir is not None and not file_path.is_absolute():
            file_path = Path(base_dir) / file_path
        if not file_path.is_file():
            raise InputError(where, f"{path}.path", f"no such file, and not a built-in trace "
                             f"({', '.join(traces.list_builtin_traces())}): {spec.path!r}")
        spec = dataclasses.replace(spec, path=str(file_path))
    return spec


_WORKLOAD_KEYS = ("num_requests", "arrival", "input_tokens", "output_tokens", "trace")


def workload_from_dict(d: Mapping[str, Any], where: str, *, path: str = "workload",
                       base_dir: str | Path | None = None) -> WorkloadSpec:
    """Parse a scenario's [workload] section (already loaded from TOML/YAML/JSON).

    Every problem raises InputError(where, "workload.<dotted field>", what was expected).
    """
    d = _mapping(d, where, path, "workload settings")
    for key in d:
        if key not in _WORKLOAD_KEYS:
            raise InputError(where, f"{path}.{key}", f"unknown key; expected one of: {', '.join(_WORKLOAD_KEYS)}")
    kwargs: dict[str, Any] = {}
    if "num_requests" in d:
        kwargs["num_requests"] = d["num_requests"]
    if "trace" in d:
        kwargs["trace"] = trace_from_dict(d["trace"], where, f"{path}.trace", base_dir)
    if "arrival" in d:
        kwargs["arrival"] = arrival_from_dict(d["arrival"], where, f"{path}.arrival")
    for key, column in (("input_tokens", "prompt_tokens"), ("output_tokens", "output_tokens")):
        if key in d:
            kwargs[key] = lengths_from_dict(d[key], where, f"{path}.{key}", column)
    return _build(WorkloadSpec, kwargs, where, path)
