"""Hardware profiles: load, validate and write the JSON documents in `profiles/`.

A profile describes one machine (device kind x count x interconnect): per-device capacities,
the fitted cost-model parameters (see `sim.cost_model`), the power model, an optional price, its
provenance (measured / datasheet / imported) and, for measured profiles, the raw measurements.
Every problem is reported as `InputError(file, field, what was expected)`.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sim.errors import InputError
from sim.files import read_text
from sim.speed_variability import SpeedVariability, Wander

SCHEMA_VERSION = 1
SOURCES = ("measured", "datasheet", "imported")
POWER_METHODS = ("nvml", "rapl", "estimated-from-tdp", "datasheet", "imported")
DTYPES = ("fp32", "bf16", "fp16", "fp8", "int8")
REPO_PROFILES_DIR = Path(__file__).resolve().parent.parent.parent / "profiles"


@dataclass(frozen=True)
class Interconnect:
    name: str
    bandwidth_bytes_per_s: float  # per device, one direction
    latency_s: float


@dataclass(frozen=True)
class Device:
    kind: str  # "gpu" | "cpu" | "accelerator"
    name: str
    count: int  # devices in one machine (the largest tensor-parallel degree it can host)
    memory_bytes: float  # per device
    memory_bandwidth_bytes_per_s: float  # per device
    peak_flops: dict[str, float]  # per device, dense, by compute dtype
    interconnect: Interconnect | None


# Efficiencies are fractions of the profile's peak FLOP/s and bandwidth; a measured profile's are
# relative to its microbenchmarks, which real steps can beat (up to 1.5x). Its matmul efficiency
# is moreover stated for width 4096 (matmul_width_exponent scales narrower models down), so a
# narrower calibration model's efficiency over its width factor may reach higher still.
MAX_MEASURED_MATMUL_EFFICIENCY = 3.0


@dataclass(frozen=True)
class CostParams:
    """Roofline efficiencies and overheads, shared by every model on this hardware.

    matmul_efficiency_curve: [(tokens_per_step, fraction_of_peak)], interpolated in log(tokens),
    flat beyond its ends. If empty, matmul_efficiency * T / (T + matmul_half_tokens) is used.
    """

    compute_dtype: str
    matmul_efficiency: float
    matmul_half_tokens: float
    memory_efficiency: float
    attention_efficiency: float
    step_overhead_s: float
    layer_overhead_s: float
    sequence_overhead_s: float
    matmul_efficiency_curve: tuple[tuple[float, float], ...] = ()
    fit: dict[str, Any] | None = None
    kv_memory_efficiency: float | None = None  # KV reads, if they stream slower than weights
    # attention over keys computed in earlier steps (a decode's context, a chunk's prefix): full
    # tiles, often faster per pair than a fresh prompt's causal triangle; None: attention_efficiency
    cached_attention_efficiency: float | None = None
    # per decoder layer, for each cached key a prefill chunk attends (StepShape.prefix_tokens): a
    # runner that gathers a chunk's prefix K/V before its kernel, not overlapped with the math
    # (the CPU runner's strided cache slice); 0 where the kernel reads the cache in place
    prefix_key_layer_overhead_s: float = 0.0
    matmul_width_exponent: float = 0.0  # narrower matrices reach less: x min(1, (hidden/4096)^e)
    # per sequence per decoder layer: each sequence's attention is its own call (kernel launch or,
    # on a CPU, one scaled_dot_product_attention of ~20 us), so it grows with both
    sequence_layer_overhead_s: float = 0.0
    # [(idle_s, slowdown)]: the first step after the engine sat idle for idle_s takes (1 + slowdown)
    # times its time (parked threads, a descheduled vCPU, a GPU's idle clocks; longer idle, slower
    # wake-up): measured by calibrate beside back-to-back steps; see wake_slowdown
    wake_slowdown_curve: tuple[tuple[float, float], ...] = ()
    # the serving engine's own host seconds between two steps (committing the step's tokens,
    # bookkeeping, admitting arrivals, scheduling the next): measured by calibrate serving a short
    # workload on its real engine (calibrate.engine_loop); 0 where not measured
    engine_step_overhead_s: float = 0.0
    # how step times scatter around their cost-model (median) time: the machine's slow spells and
    # a step's own jitter, measured by calibrate (sim.speed_variability); None: every step takes
    # its cost-model time (a datasheet profile)
    speed_variability: SpeedVariability | None = None


@dataclass(frozen=True)
class PowerModel:
    """Per-device power: idle, and busy power from memory-bound (decode) to compute-bound (prefill)."""

    method: str
    idle_w: float
    decode_w: float
    prefill_w: float
    is_estimated: bool


@dataclass(frozen=True)
class Price:
    usd_per_device_h: float
    source: str
    date: str


@dataclass(frozen=True)
class Profile:
    name: str
    path: str
    device: Device
    provenance: dict[str, Any]
    cost: CostParams
    power: PowerModel
    price: Price | None
    measurements: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def source(self) -> str:
        return self.provenance["source"]

    def peak_flops_for(self, dtype: str) -> float:
        """Compute rate for a dtype; fp16 and bf16 stand in for each other; weight-only int
        formats and fp8 on devices without fp8 units compute in bf16/fp16."""
        peaks = self.device.peak_flops
        for candidate in (dtype, {"bf16": "fp16", "fp16": "bf16"}.get(dtype, ""), "bf16", "fp16", "fp32"):
            if candidate and candidate in peaks:
                return peaks[candidate]
        raise InputError(self.path, "device.peak_flops", f"no compute rate for {dtype}")


class _Reader:
    """Typed access to a nested dict that names the file and dotted field on every error."""

    def __init__(self, where: str) -> None:
        self.where = where

    def fail(self, field_name: str, problem: str) -> InputError:
        return InputError(self.where, field_name, problem)

    def section(self, data: dict, key: str, prefix: str = "", optional: bool = False) -> dict | None:
        name = f"{prefix}{key}"
        if key not in data or data[key] is None:
            if optional:
                return None
            raise self.fail(name, "missing section")
        if not isinstance(data[key], dict):
            raise self.fail(name, f"expected an object, got {type(data[key]).__name__}")
        return data[key]

    def number(self, data: dict, key: str, prefix: str = "", *, minimum: float = 0.0,
               strict: bool = True, maximum: float = math.inf, default: float | None = None) -> float:
        name = f"{prefix}{key}"
        if key not in data:
            if default is not None:
                return default
            raise self.fail(name, "missing")
        value = data[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self.fail(name, f"expected a number, got {value!r}")
        if value < minimum or (strict and value == minimum) or value > maximum:
            bound = f"> {minimum}" if strict else f">= {minimum}"
            if maximum < math.inf:
                bound += f" and <= {maximum}"
            raise self.fail(name, f"expected a number {bound}, got {value!r}")
        return float(value)

    def text(self, data: dict, key: str, prefix: str = "", choices: tuple[str, ...] = (),
             default: str | None = None) -> str:
        name = f"{prefix}{key}"
        if key not in data:
            if default is not None:
                return default
            raise self.fail(name, "missing")
        value = data[key]
        if not isinstance(value, str) or not value:
            raise self.fail(name, f"expected a non-empty string, got {value!r}")
        if choices and value not in choices:
            raise self.fail(name, f"expected one of {', '.join(choices)}, got {value!r}")
        return value


def profile_from_dict(data: Any, where: str) -> Profile:
    r = _Reader(where)
    if not isinstance(data, dict):
        raise r.fail("", "expected a JSON object")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise r.fail("schema_version", f"expected {SCHEMA_VERSION}, got {version!r}")
    name = r.text(data, "name")

    dev = r.section(data, "device")
    peaks_raw = r.section(dev, "peak_flops", "device.")
    if not peaks_raw:
        raise r.fail("device.peak_flops", "expected at least one dtype")
    peaks = {}
    for dtype in peaks_raw:
        if dtype not in DTYPES:
            raise r.fail(f"device.peak_flops.{dtype}", f"unknown dtype; expected one of {', '.join(DTYPES)}")
        peaks[dtype] = r.number(peaks_raw, dtype, "device.peak_flops.")
    link_raw = r.section(dev, "interconnect", "device.", optional=True)
    link = None
    if link_raw is not None:
        link = Interconnect(
            name=r.text(link_raw, "name", "device.interconnect.", default="link"),
            bandwidth_bytes_per_s=r.number(link_raw, "bandwidth_bytes_per_s", "device.interconnect."),
            latency_s=r.number(link_raw, "latency_s", "device.interconnect.", strict=False),
        )
    count = dev.get("count", 1)
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise r.fail("device.count", f"expected a positive integer, got {count!r}")
    if count > 1 and link is None:
        raise r.fail("device.interconnect", f"a machine of {count} devices needs its interconnect")
    device = Device(
        kind=r.text(dev, "kind", "device.", ("gpu", "cpu", "accelerator")),
        name=r.text(dev, "name", "device."),
        count=count,
        memory_bytes=r.number(dev, "memory_bytes", "device."),
        memory_bandwidth_bytes_per_s=r.number(dev, "memory_bandwidth_bytes_per_s", "device."),
        peak_flops=peaks,
        interconnect=link,
    )

    prov = r.section(data, "provenance")
    r.text(prov, "source", "provenance.", SOURCES)
    r.text(prov, "date", "provenance.")
    if prov["source"] == "datasheet" and not prov.get("documents"):
        raise r.fail("provenance.documents", "a datasheet profile must list its source documents")

    cm = r.section(data, "cost_model")
    p = "cost_model."
    curve = _curve(r, cm, p, "matmul_efficiency_curve", "tokens, efficiency", "token counts",
                   f"tokens >= 1, 0 < efficiency <= {MAX_MEASURED_MATMUL_EFFICIENCY:g}",
                   lambda tokens, eff: tokens >= 1 and 0 < eff <= MAX_MEASURED_MATMUL_EFFICIENCY)
    wake = _curve(r, cm, p, "wake_slowdown_curve", "idle_s, slowdown", "idle times",
                  "idle_s > 0, slowdown >= 0",
                  lambda idle, slow: idle > 0 and slow >= 0 and math.isfinite(idle) and math.isfinite(slow))
    compute_dtype = r.text(cm, "compute_dtype", p, DTYPES)
    if compute_dtype not in peaks:
        raise r.fail(p + "compute_dtype", f"{compute_dtype} has no entry in device.peak_flops")
    cost = CostParams(
        compute_dtype=compute_dtype,
        matmul_efficiency=r.number(cm, "matmul_efficiency", p, maximum=MAX_MEASURED_MATMUL_EFFICIENCY),
        matmul_half_tokens=r.number(cm, "matmul_half_tokens", p, strict=False),
        memory_efficiency=r.number(cm, "memory_efficiency", p, maximum=1.5),
        attention_efficiency=r.number(cm, "attention_efficiency", p, maximum=1.5),
        step_overhead_s=r.number(cm, "step_overhead_s", p, strict=False),
        layer_overhead_s=r.number(cm, "layer_overhead_s", p, strict=False),
        sequence_overhead_s=r.number(cm, "sequence_overhead_s", p, strict=False),
        matmul_efficiency_curve=curve,
        fit=cm.get("fit"),
        kv_memory_efficiency=(r.number(cm, "kv_memory_efficiency", p, maximum=1.5)
                              if cm.get("kv_memory_efficiency") is not None else None),
        cached_attention_efficiency=(r.number(cm, "cached_attention_efficiency", p, maximum=1.5)
                                     if cm.get("cached_attention_efficiency") is not None else None),
        matmul_width_exponent=r.number(cm, "matmul_width_exponent", p, strict=False, maximum=4.0,
                                       default=0.0),
        sequence_layer_overhead_s=r.number(cm, "sequence_layer_overhead_s", p, strict=False,
                                           default=0.0),
        prefix_key_layer_overhead_s=r.number(cm, "prefix_key_layer_overhead_s", p, strict=False,
                                             default=0.0),
        wake_slowdown_curve=wake,
        engine_step_overhead_s=r.number(cm, "engine_step_overhead_s", p, strict=False,
                                        maximum=1.0, default=0.0),
        speed_variability=_speed_variability(r, cm, p),
    )

    pw = r.section(data, "power")
    power = PowerModel(
        method=r.text(pw, "method", "power.", POWER_METHODS),
        idle_w=r.number(pw, "idle_w", "power.", strict=False),
        decode_w=r.number(pw, "decode_w", "power."),
        prefill_w=r.number(pw, "prefill_w", "power."),
        is_estimated=bool(pw.get("is_estimated", pw.get("method") != "nvml" and pw.get("method") != "rapl")),
    )
    if power.idle_w > power.decode_w:
        raise r.fail("power.idle_w", f"idle {power.idle_w} W exceeds decode {power.decode_w} W")
    if power.decode_w > power.prefill_w * 1.5:
        raise r.fail("power.decode_w", f"decode {power.decode_w} W is far above prefill {power.prefill_w} W")

    price = None
    pr = r.section(data, "price", optional=True)
    if pr is not None:
        price = Price(usd_per_device_h=r.number(pr, "usd_per_device_h", "price.", strict=False),
                      source=r.text(pr, "source", "price."), date=r.text(pr, "date", "price."))
    measurements = data.get("measurements") or {}
    if not isinstance(measurements, dict):
        raise r.fail("measurements", "expected an object")
    return Profile(name=name, path=where, device=device, provenance=prov, cost=cost, power=power,
                   price=price, measurements=measurements, raw=data)


def _speed_variability(r: _Reader, cm: dict, p: str) -> SpeedVariability | None:
    sv = r.section(cm, "speed_variability", p, optional=True)
    if sv is None:
        return None
    p += "speed_variability."
    wanders = []
    for resource in ("memory", "compute"):
        w = r.section(sv, resource, p)
        q = f"{p}{resource}."
        wanders.append(Wander(fast_sd=r.number(w, "fast_sd", q, strict=False, maximum=2.0),
                              wander_sd=r.number(w, "wander_sd", q, strict=False, maximum=2.0),
                              wander_time_s=r.number(w, "wander_time_s", q),
                              reference_step_s=r.number(w, "reference_step_s", q)))
    shape = sv.get("fast_shape")
    if not isinstance(shape, list) or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in shape):
        raise r.fail(p + "fast_shape", f"expected a list of numbers, got {shape!r}")
    method = sv.get("method", "")
    try:  # SpeedVariability checks the shape's length, finiteness and order itself
        return SpeedVariability(wanders[0], wanders[1], tuple(float(v) for v in shape),
                                method if isinstance(method, str) else "")
    except ValueError as exc:
        raise r.fail(p + "fast_shape", str(exc).removeprefix("fast_shape: ")) from None


def interpolate_log(curve: tuple[tuple[float, float], ...], x: float) -> float:
    """A curve [(x, y)] with x increasing, interpolated linearly in log(x), flat beyond its ends
    (the matmul efficiency curve, the wake-up curve)."""
    if x <= curve[0][0]:
        return curve[0][1]
    if x >= curve[-1][0]:
        return curve[-1][1]
    log_x = math.log(x)
    for (x0, y0), (x1, y1) in zip(curve, curve[1:]):
        if x <= x1:
            w = (log_x - math.log(x0)) / (math.log(x1) - math.log(x0))
            return y0 + w * (y1 - y0)
    return curve[-1][1]  # unreachable


def wake_slowdown(curve: tuple[tuple[float, float], ...], idle_s: float) -> float:
    """The share of its time a step takes more after the engine sat idle for idle_s, from a
    wake-up curve [(idle_s, slowdown)]: interpolated in log(idle), flat beyond the longest idle,
    and falling in proportion to zero below the shortest (no idle, no wake-up)."""
    if not curve or idle_s <= 0:
        return 0.0
    if idle_s <= curve[0][0]:
        return curve[0][1] * idle_s / curve[0][0]
    return interpolate_log(curve, idle_s)


def _curve(r, cm: dict, p: str, key: str, pair: str, increasing: str, expected: str,
           is_point) -> tuple[tuple[float, float], ...]:
    """cm[key]: an optional list of [x, y] number pairs with x increasing, each passing
    is_point(x, y); the first bad one is named."""
    name = p + key
    raw = cm.get(key, [])
    if not isinstance(raw, list):
        raise r.fail(name, f"expected a list of [{pair}] pairs")
    curve: list[tuple[float, float]] = []
    for i, point in enumerate(raw):
        ok = (isinstance(point, (list, tuple)) and len(point) == 2
              and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in point))
        if not ok or not is_point(*point):
            raise r.fail(f"{name}[{i}]", f"expected [{expected}], got {point!r}")
        if curve and point[0] <= curve[-1][0]:
            raise r.fail(f"{name}[{i}]", f"{increasing} must increase")
        curve.append((float(point[0]), float(point[1])))
    return tuple(curve)


def at_time_factor(profile: Profile, memory_factor: float, compute_factor: float | None = None) -> Profile:
    """The same machine with its memory streaming `memory_factor` times as long and its compute
    (and fixed, CPU-side overheads) `compute_factor` times as long (default: the same factor):
    bandwidths divided by the one, compute rates divided and overheads multiplied by the other. A
    shared cloud machine's neighbours take a share of its memory bandwidth or cores, and the two
    move apart: memory-bound decode slows more than compute-bound prefill. Capacities, power and
    price are unchanged. `calibrate validate` predicts at the speed it finds the machine in."""
    compute_factor = memory_factor if compute_factor is None else compute_factor
    for factor in (memory_factor, compute_factor):
        if not factor > 0 or not math.isfinite(factor):
            raise ValueError(f"time factor must be a positive number, got {factor}")
    dev, cost = profile.device, profile.cost
    link = dev.interconnect and replace(dev.interconnect,
                                        bandwidth_bytes_per_s=dev.interconnect.bandwidth_bytes_per_s / memory_factor,
                                        latency_s=dev.interconnect.latency_s * memory_factor)
    device = replace(dev, memory_bandwidth_bytes_per_s=dev.memory_bandwidth_bytes_per_s / memory_factor,
                     peak_flops={k: v / compute_factor for k, v in dev.peak_flops.items()}, interconnect=link)
    cost = replace(cost, step_overhead_s=cost.step_overhead_s * compute_factor,
                   layer_overhead_s=cost.layer_overhead_s * compute_factor,
                   sequence_overhead_s=cost.sequence_overhead_s * compute_factor,
                   sequence_layer_overhead_s=cost.sequence_layer_overhead_s * compute_factor,
                   prefix_key_layer_overhead_s=cost.prefix_key_layer_overhead_s * compute_factor)
    return replace(profile, device=device, cost=cost)


def profile_search_dirs() -> list[Path]:
    dirs = []
    if os.environ.get("INFERCAST_PROFILES"):
        dirs += [Path(p) for p in os.environ["INFERCAST_PROFILES"].split(os.pathsep) if p]
    dirs += [Path.cwd() / "profiles", REPO_PROFILES_DIR]
    return dirs


def resolve_profile_path(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix == ".json" or path.exists() or os.sep in name_or_path:
        return path
    for folder in profile_search_dirs():
        candidate = folder / f"{name_or_path}.json"
        if candidate.exists():
            return candidate
    known = sorted({p.stem for d in profile_search_dirs() if d.is_dir() for p in d.glob("*.json")})
    raise InputError(name_or_path, "profile", f"no such profile file or name; known: {', '.join(known) or 'none'}")


def load_profile(name_or_path: str | Path) -> Profile:
    path = resolve_profile_path(str(name_or_path))
    where = str(path)
    return profile_from_dict(parse_json(read_text(path, "profile"), where), where)


def parse_json(text: str, where: str) -> Any:
    """JSON text as data; InputError naming the file (and line) when it is not JSON."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(where, "", f"not valid JSON (line {exc.lineno}): {exc.msg}") from None
    except (ValueError, RecursionError) as exc:  # an integer of thousands of digits, deep nesting
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(where, "", f"not valid JSON: {first}") from None


def list_profiles() -> list[Path]:
    seen: dict[str, Path] = {}
    for folder in profile_search_dirs():
        if folder.is_dir():
            for path in sorted(folder.glob("*.json")):
                seen.setdefault(path.name, path)
    return list(seen.values())


def write_json_atomic(data: Any, path: str | Path) -> Path:
    """Write JSON to a temp file in the target folder, then rename: never a half-written file."""
    from sim.files import write_text_atomic

    return write_text_atomic(path, json.dumps(data, indent=1, sort_keys=False, allow_nan=False) + "\n")


def write_profile(data: dict, path: str | Path) -> Path:
    """Validate a profile document, then write it atomically."""
    profile_from_dict(data, str(path))
    return write_json_atomic(data, path)
