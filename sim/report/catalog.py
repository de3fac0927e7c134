"""Profile catalogue: list, show and validate hardware profiles, and check that a model fits.

Pure functions behind `infercast profiles list|show|validate [PATH]`; they return data or text
and never print.

`validate_file` runs independent checks, one per section, and returns every problem it finds
(the loader, `sim.spec.profile.profile_from_dict`, stops at the first); it adds physics sanity the
loader leaves out: efficiencies in (0, 1], prefill_w >= decode_w >= idle_w, dates that parse,
a non-negative price. Whatever the loader would still reject is appended, so an empty list
means the file loads.

`fits_report` answers "do the weights plus a minimum KV cache fit in device memory at this TP?".
Per device at TP t: weights / t (every weight, embeddings and LM head included, is split t ways)
plus the KV of `min_kv_tokens` tokens, each device holding max(1/t, 1/kv_heads) of a token's KV
(KV heads are replicated once t exceeds them, as in `sim.cost_model`). That must fit in
memory x `memory_utilization`. Assumed defaults, both overridable: min_kv_tokens = the model's
max_position_embeddings (a serving engine refuses to start unless one max-length sequence fits),
memory_utilization = 0.90 (vLLM's default gpu_memory_utilization, leaving room for the CUDA
context, activations and fragmentation). Candidate TP degrees are powers of two up to the
machine's device count that divide the attention heads.
"""

from __future__ import annotations

import math
import re
from datetime import date, datetime
from pathlib import Path
from typing import Any, Callable

from sim.errors import InputError
from sim.spec.model import ModelSpec
from sim.spec.profile import (DTYPES, MAX_MEASURED_MATMUL_EFFICIENCY, POWER_METHODS, SCHEMA_VERSION,
                         SOURCES, Profile, list_profiles, load_profile, parse_json, profile_from_dict)
from sim.files import read_text

DEVICE_KINDS = ("gpu", "cpu", "accelerator")
DEFAULT_MEMORY_UTILIZATION = 0.90
UNDATED = "undated"
FIT_ERROR_KEYS = ("mape", "mean_abs_rel_error", "median_abs_rel_error", "max_abs_rel_error",
                  "rel_error", "error")
_PARTIAL_DATE = re.compile(r"^(\d{4})(?:-(\d{2})|-Q([1-4]))?$")

Add = Callable[[str, str], None]


# ---- dates ----------------------------------------------------------------------------------
def is_iso_date(text: Any) -> bool:
    """YYYY-MM-DD (or a full ISO timestamp, as measured profiles record), or a coarser
    YYYY-MM / YYYY / YYYY-Qn as price sources print them."""
    if not isinstance(text, str):
        return False
    try:
        date.fromisoformat(text)
        return len(text) == 10
    except ValueError:
        pass
    try:
        datetime.fromisoformat(text)
        return "T" in text
    except ValueError:
        pass
    match = _PARTIAL_DATE.match(text)
    return bool(match) and (match.group(2) is None or 1 <= int(match.group(2)) <= 12)


# ---- validation -----------------------------------------------------------------------------
def _number(section: dict, key: str, prefix: str, add: Add, *, low: float = 0.0,
            low_inclusive: bool = False, high: float = math.inf, required: bool = True) -> float | None:
    name = prefix + key
    if key not in section:
        if required:
            add(name, "missing")
        return None
    value = section[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        add(name, f"expected a number, got {value!r}")
        return None
    too_low = value < low or (value == low and not low_inclusive)
    if too_low or value > high:
        lower = f">= {low:g}" if low_inclusive else f"> {low:g}"
        upper = f" and <= {high:g}" if high < math.inf else ""
        add(name, f"expected a number {lower}{upper}, got {value!r}")
        return None
    return float(value)


def _text(section: dict, key: str, prefix: str, add: Add, choices: tuple[str, ...] = (),
          required: bool = True) -> str | None:
    name = prefix + key
    if key not in section:
        if required:
            add(name, "missing")
        return None
    value = section[key]
    if not isinstance(value, str) or not value:
        add(name, f"expected a non-empty string, got {value!r}")
        return None
    if choices and value not in choices:
        add(name, f"expected one of {', '.join(choices)}, got {value!r}")
        return None
    return value


def _section(data: dict, key: str, add: Add, required: bool = True) -> dict | None:
    if key not in data or data[key] is None:
        if required:
            add(key, "missing section")
        return None
    if not isinstance(data[key], dict):
        add(key, f"expected an object, got {type(data[key]).__name__}")
        return None
    return data[key]


def _check_top(data: dict, add: Add) -> None:
    if data.get("schema_version") != SCHEMA_VERSION:
        add("schema_version", f"expected {SCHEMA_VERSION}, got {data.get('schema_version')!r}")
    _text(data, "name", "", add)


def _check_device(data: dict, add: Add) -> None:
    dev = _section(data, "device", add)
    if dev is None:
        return
    p = "device."
    _text(dev, "kind", p, add, DEVICE_KINDS)
    _text(dev, "name", p, add)
    count = dev.get("count", 1)
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        add(p + "count", f"expected a positive integer, got {count!r}")
        count = 1
    _number(dev, "memory_bytes", p, add)
    _number(dev, "memory_bandwidth_bytes_per_s", p, add)
    peaks = _section(dev, "peak_flops", lambda f, m: add(p + f, m))
    if peaks is not None:
        if not peaks:
            add(p + "peak_flops", "expected at least one dtype")
        for dtype in peaks:
            if dtype not in DTYPES:
                add(f"{p}peak_flops.{dtype}", f"unknown dtype; expected one of {', '.join(DTYPES)}")
            else:
                _number(peaks, dtype, p + "peak_flops.", add)
    link = _section(dev, "interconnect", lambda f, m: add(p + f, m), required=False)
    if link is not None:
        q = p + "interconnect."
        _text(link, "name", q, add, required=False)
        _number(link, "bandwidth_bytes_per_s", q, add)
        _number(link, "latency_s", q, add, low_inclusive=True)
    if count > 1 and link is None and dev.get("interconnect") is None:
        add(p + "interconnect", f"a machine of {count} devices needs its interconnect "
                                "(name, bandwidth_bytes_per_s per direction, latency_s)")


def _check_documents(prov: dict, add: Add) -> None:
    docs = prov.get("documents")
    if prov.get("source") == "datasheet" and not docs:
        add("provenance.documents", "a datasheet profile must list its source documents")
        return
    if docs is None:
        return
    if not isinstance(docs, list):
        add("provenance.documents", "expected a list of documents")
        return
    for i, doc in enumerate(docs):
        name = f"provenance.documents[{i}]"
        if isinstance(doc, str) and doc:
            if prov.get("source") == "datasheet":
                add(name, "expected an object with title and date")
            continue
        if not isinstance(doc, dict):
            add(name, f"expected an object with title and date, got {doc!r}")
            continue
        _text(doc, "title", name + ".", add)
        when = doc.get("date")
        if when is None:
            add(name + ".date", f"missing (an ISO date, or {UNDATED!r} when the source gives none)")
        elif when != UNDATED and not is_iso_date(when):
            add(name + ".date", f"expected an ISO date (YYYY-MM-DD, YYYY-MM) or {UNDATED!r}, got {when!r}")


def _check_provenance(data: dict, add: Add) -> None:
    prov = _section(data, "provenance", add)
    if prov is None:
        return
    _text(prov, "source", "provenance.", add, SOURCES)
    when = _text(prov, "date", "provenance.", add)
    if when is not None and not is_iso_date(when):
        add("provenance.date", f"expected an ISO date (YYYY-MM-DD), got {when!r}")
    _check_documents(prov, add)


def _check_cost_model(data: dict, add: Add) -> None:
    cm = _section(data, "cost_model", add)
    if cm is None:
        return
    p = "cost_model."
    dtype = _text(cm, "compute_dtype", p, add, DTYPES)
    peaks = (data.get("device") or {}).get("peak_flops") if isinstance(data.get("device"), dict) else None
    if dtype and isinstance(peaks, dict) and dtype not in peaks:
        add(p + "compute_dtype", f"{dtype} has no entry in device.peak_flops")
    # a datasheet efficiency is a fraction of the printed peak (<= 1); a measured one is relative
    # to the microbenchmark (a read-only weight stream can beat the measured copy bandwidth)
    prov = data.get("provenance")
    measured = isinstance(prov, dict) and prov.get("source") == "measured"
    high = 1.5 if measured else 1.0
    # a measured matmul efficiency is also stated for width 4096 (see matmul_width_exponent): a
    # narrower calibration model's measured efficiency over its width factor may exceed 1.5
    matmul_high = MAX_MEASURED_MATMUL_EFFICIENCY if measured else 1.0
    _number(cm, "matmul_efficiency", p, add, high=matmul_high)
    for key in ("memory_efficiency", "attention_efficiency"):
        _number(cm, key, p, add, high=high)
    for key in ("kv_memory_efficiency", "cached_attention_efficiency"):
        if cm.get(key) is not None:
            _number(cm, key, p, add, high=high)
    if "matmul_width_exponent" in cm:
        _number(cm, "matmul_width_exponent", p, add, low_inclusive=True, high=4.0)
    for key in ("matmul_half_tokens", "step_overhead_s", "layer_overhead_s", "sequence_overhead_s"):
        _number(cm, key, p, add, low_inclusive=True)
    _number(cm, "sequence_layer_overhead_s", p, add, low_inclusive=True, required=False)
    _number(cm, "prefix_key_layer_overhead_s", p, add, low_inclusive=True, required=False)
    _number(cm, "engine_step_overhead_s", p, add, low_inclusive=True, high=1.0, required=False)
    if not _is_wake_curve(cm.get("wake_slowdown_curve", [])):
        add(p + "wake_slowdown_curve", "expected [[idle_s > 0, slowdown >= 0], ...] with idle times increasing")
    curve = cm.get("matmul_efficiency_curve", [])
    if not isinstance(curve, list):
        add(p + "matmul_efficiency_curve", "expected a list of [tokens, efficiency] pairs")
        return
    last = 0.0
    for i, point in enumerate(curve):
        ok = (isinstance(point, (list, tuple)) and len(point) == 2
              and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in point))
        if not ok or point[0] < 1 or not 0 < point[1] <= matmul_high:
            add(f"{p}matmul_efficiency_curve[{i}]",
                f"expected [tokens >= 1, 0 < efficiency <= {matmul_high:g}], got {point!r}")
            continue
        if point[0] <= last:
            add(f"{p}matmul_efficiency_curve[{i}]", "token counts must increase")
        last = point[0]


def _is_wake_curve(wake) -> bool:
    """[[idle_s > 0, slowdown >= 0], ...] with idle times increasing (sim.spec.profile.wake_slowdown)."""
    def is_point(w) -> bool:
        return (isinstance(w, (list, tuple)) and len(w) == 2
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                        for v in w)
                and w[0] > 0 and w[1] >= 0)

    return (isinstance(wake, list) and all(is_point(w) for w in wake)
            and all(a[0] < b[0] for a, b in zip(wake, wake[1:])))


def _check_power(data: dict, add: Add) -> None:
    pw = _section(data, "power", add)
    if pw is None:
        return
    p = "power."
    _text(pw, "method", p, add, POWER_METHODS)
    idle = _number(pw, "idle_w", p, add, low_inclusive=True)
    decode = _number(pw, "decode_w", p, add)
    prefill = _number(pw, "prefill_w", p, add)
    if "is_estimated" in pw and not isinstance(pw["is_estimated"], bool):
        add(p + "is_estimated", f"expected true or false, got {pw['is_estimated']!r}")
    if idle is not None and decode is not None and idle > decode:
        add(p + "idle_w", f"idle {idle:g} W exceeds decode {decode:g} W (expected idle_w <= decode_w)")
    if decode is not None and prefill is not None and decode > prefill:
        add(p + "decode_w", f"decode {decode:g} W exceeds prefill {prefill:g} W (expected decode_w <= prefill_w)")


def _check_price(data: dict, add: Add) -> None:
    pr = _section(data, "price", add, required=False)
    if pr is None:
        return
    _number(pr, "usd_per_device_h", "price.", add, low_inclusive=True)
    _text(pr, "source", "price.", add)
    when = _text(pr, "date", "price.", add)
    if when is not None and when != UNDATED and not is_iso_date(when):
        add("price.date", f"expected an ISO date (YYYY-MM-DD, YYYY-MM) or {UNDATED!r}, got {when!r}")


def _check_measurements(data: dict, add: Add) -> None:
    if data.get("measurements") is not None and not isinstance(data["measurements"], dict):
        add("measurements", "expected an object")


CHECKS = (_check_top, _check_device, _check_provenance, _check_cost_model, _check_power,
          _check_price, _check_measurements)


def validate_data(data: Any, where: str) -> list[str]:
    """Every problem of a profile document, as 'file: field: problem' lines; [] when it is good."""
    if not isinstance(data, dict):
        return [f"{where}: expected a JSON object"]
    found: list[tuple[str, str]] = []

    def add(field_name: str, problem: str) -> None:
        if (field_name, problem) not in found:
            found.append((field_name, problem))

    for check in CHECKS:
        check(data, add)
    try:
        profile_from_dict(data, where)
    except InputError as exc:  # anything the loader rejects that a check above did not name
        if not any(f == exc.field or f.startswith(exc.field + ".") or exc.field.startswith(f + ".")
                   for f, _ in found):
            add(exc.field, exc.problem)
    return [f"{where}: {f}: {m}" if f else f"{where}: {m}" for f, m in found]


def validate_file(path: str | Path) -> list[str]:
    where = str(path)
    try:
        data = parse_json(read_text(path, "profile"), where)
    except InputError as exc:
        return [str(exc)]
    return validate_data(data, where)


# ---- listing --------------------------------------------------------------------------------
def _fit_error(profile: Profile) -> tuple[float | None, str | None]:
    fit = profile.cost.fit
    if not isinstance(fit, dict):
        return None, None
    for key in FIT_ERROR_KEYS:
        value = fit.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value), key
    return None, None


def profile_row(profile: Profile) -> dict[str, Any]:
    dev = profile.device
    fit_error, fit_metric = _fit_error(profile)
    return {
        "name": profile.name,
        "path": profile.path,
        "source": profile.source,
        "date": profile.provenance.get("date"),
        "device": dev.name,
        "kind": dev.kind,
        "count": dev.count,
        "memory_bytes": dev.memory_bytes,
        "memory_bandwidth_bytes_per_s": dev.memory_bandwidth_bytes_per_s,
        "bf16_flops": dev.peak_flops.get("bf16", dev.peak_flops.get("fp16")),
        "interconnect": dev.interconnect.name if dev.interconnect else None,
        "price_usd_per_device_h": profile.price.usd_per_device_h if profile.price else None,
        "confidence": profile.provenance.get("confidence"),
        "fit_error": fit_error,
        "fit_error_metric": fit_metric,
        "error": None,
    }


def list_rows(paths: list[str | Path] | None = None) -> list[dict[str, Any]]:
    """One row per profile (the search path's profiles by default). A file that does not load
    still gets a row, with its first problem in `error`."""
    rows = []
    for path in (list_profiles() if paths is None else [Path(p) for p in paths]):
        try:
            rows.append(profile_row(load_profile(path)))
        except InputError as exc:
            rows.append({"name": Path(path).stem, "path": str(path), "error": str(exc)})
    return rows


def _fmt(value: float | None, scale: float, digits: int) -> str:
    return "-" if value is None else f"{value / scale:.{digits}f}"


def format_table(rows: list[dict[str, Any]]) -> str:
    header = ("name", "source", "date", "device", "n", "mem GB", "BW TB/s", "bf16 TFLOP/s",
              "$/dev-h", "fit err", "path")
    lines = []
    for r in rows:
        if r.get("error"):
            lines.append((r["name"], "INVALID", "", r["error"], "", "", "", "", "", "", r["path"]))
            continue
        device = r["device"] + (" [low confidence]" if r.get("confidence") == "low" else "")
        fit = "-" if r.get("fit_error") is None else f"{r['fit_error']:.3g} ({r['fit_error_metric']})"
        price = "-" if r.get("price_usd_per_device_h") is None else f"{r['price_usd_per_device_h']:.2f}"
        lines.append((r["name"], r["source"], str(r["date"]), device, str(r["count"]),
                      _fmt(r["memory_bytes"], 1e9, 0), _fmt(r["memory_bandwidth_bytes_per_s"], 1e12, 2),
                      _fmt(r["bf16_flops"], 1e12, 0), price, fit, r["path"]))
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h)
              for i, h in enumerate(header)]
    numeric = {4, 5, 6, 7, 8}
    out = []
    for line in [header, tuple("-" * w for w in widths), *lines]:
        cells = [c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths))]
        out.append("  ".join(cells).rstrip())
    return "\n".join(out)


# ---- one profile ----------------------------------------------------------------------------
def _describe_documents(prov: dict) -> list[str]:
    lines = []
    for doc in prov.get("documents") or []:
        if isinstance(doc, dict):
            when = doc.get("date", "?")
            kind = f", {doc['date_kind']}" if doc.get("date_kind") and doc["date_kind"] != when else ""
            lines.append(f"  - {doc.get('title', '?')} ({when}{kind})")
        else:
            lines.append(f"  - {doc}")
    return lines


def show(name_or_path: str | Path) -> str:
    """A human-readable summary of one profile, provenance and documents included; InputError
    (its first problem) for a profile that does not validate."""
    prof = load_profile(name_or_path)
    problems = validate_data(prof.raw, prof.path)
    if problems:
        raise InputError(problems[0], "", f"not shown ({len(problems)} problem(s): `infercast profiles "
                         f"validate {prof.path}` lists them)")
    dev, cm, pw, prov = prof.device, prof.cost, prof.power, prof.provenance
    raw = prof.raw
    lines = [f"{prof.name}  ({prof.path})"]
    if raw.get("description"):
        lines.append(f"  {raw['description']}")
    confidence = "  [LOW CONFIDENCE]" if prov.get("confidence") == "low" else ""
    lines += [f"source: {prov['source']}, dated {prov['date']}{confidence}", "",
              f"device: {dev.count} x {dev.name} ({dev.kind})",
              f"  memory {dev.memory_bytes / 1e9:.0f} GB, bandwidth {dev.memory_bandwidth_bytes_per_s / 1e12:.3g} TB/s per device",
              "  peak (dense) " + ", ".join(f"{k} {v / 1e12:.4g} TFLOP/s" for k, v in dev.peak_flops.items())]
    if dev.interconnect:
        link = dev.interconnect
        lines.append(f"  interconnect {link.name}: {link.bandwidth_bytes_per_s / 1e9:.0f} GB/s per direction, "
                     f"latency {link.latency_s * 1e6:.3g} us")
    lines += ["", f"cost model (compute {cm.compute_dtype}):",
              f"  matmul_efficiency {cm.matmul_efficiency:g}, matmul_half_tokens {cm.matmul_half_tokens:g}",
              f"  memory_efficiency {cm.memory_efficiency:g}, attention_efficiency {cm.attention_efficiency:g}"
              + (f", over the cache {cm.cached_attention_efficiency:g}" if cm.cached_attention_efficiency else ""),
              f"  overheads: step {cm.step_overhead_s * 1e3:.3g} ms, layer {cm.layer_overhead_s * 1e6:.3g} us, "
              f"sequence {cm.sequence_overhead_s * 1e6:.3g} us, "
              f"sequence x layer {cm.sequence_layer_overhead_s * 1e6:.3g} us, "
              f"prefix key x layer {cm.prefix_key_layer_overhead_s * 1e9:.3g} ns, "
              f"engine loop {cm.engine_step_overhead_s * 1e3:.3g} ms a step, "
              "wake-up after idle " + (", ".join(f"{i * 1e3:g} ms: +{e * 100:.3g}%"
                                                 for i, e in cm.wake_slowdown_curve) or "none")]
    if cm.matmul_efficiency_curve:
        lines.append("  matmul efficiency curve: " + ", ".join(f"{t:g}:{e:.2f}" for t, e in cm.matmul_efficiency_curve))
    fit_error, metric = _fit_error(prof)
    if fit_error is not None:
        lines.append(f"  fit error: {fit_error:.3g} ({metric})")
    estimated = " (estimated)" if pw.is_estimated else ""
    lines += ["", f"power per device ({pw.method}{estimated}): idle {pw.idle_w:g} W, decode {pw.decode_w:g} W, "
                  f"prefill {pw.prefill_w:g} W"]
    if isinstance(raw.get("power"), dict) and raw["power"].get("notes"):
        lines.append(f"  {raw['power']['notes']}")
    if prof.price:
        lines.append(f"price: ${prof.price.usd_per_device_h:g} per device-hour ({prof.price.source}; {prof.price.date})")
        alternatives = raw["price"].get("alternatives")
        for alt in alternatives if isinstance(alternatives, list) else []:
            if isinstance(alt, dict):
                lines.append(f"  also: ${alt.get('usd_per_device_h')} ({alt.get('source')}; {alt.get('date')})")
    else:
        lines.append("price: none recorded")
    if prof.measurements:
        counts = {k: len(v) for k, v in prof.measurements.items() if isinstance(v, list)}
        lines.append("measurements: " + (", ".join(f"{k} {n} points" for k, n in counts.items()) or "present"))
    if prov.get("documents"):
        lines += ["", "documents:", *_describe_documents(prov)]
    if prov.get("notes"):
        lines += ["", f"notes: {prov['notes']}"]
    return "\n".join(lines)


# ---- does the model fit? --------------------------------------------------------------------
def _kv_share(model: ModelSpec, tp: int) -> float:
    return max(1.0 / tp, 1.0 / model.num_kv_heads)


def _needs(model: ModelSpec, tp: int, kv_tokens: int) -> tuple[float, float]:
    weights = model.weight_bytes / tp
    kv = model.kv_bytes_per_token * _kv_share(model, tp) * kv_tokens
    return weights, kv


def _tp_candidates(model: ModelSpec, limit: int) -> list[int]:
    tps, tp = [], 1
    while tp <= limit:
        if model.num_attention_heads % tp == 0:
            tps.append(tp)
        tp *= 2
    return tps


def fits_report(model: ModelSpec, profile: Profile, tp: int = 1, *, min_kv_tokens: int | None = None,
                memory_utilization: float = DEFAULT_MEMORY_UTILIZATION) -> dict[str, Any]:
    """Whether weights + a minimum KV fit per device at this TP, and the smallest TP that fits."""
    count = profile.device.count
    if not isinstance(tp, int) or tp < 1 or tp > count:
        raise InputError(profile.path, "device.count",
                         f"tensor parallelism {tp} needs {tp} devices; this profile has {count}")
    if model.num_attention_heads % tp:
        raise InputError("model", "num_attention_heads",
                         f"{model.num_attention_heads} heads cannot be split over tp={tp}")
    if not 0 < memory_utilization <= 1:
        raise InputError("fits_report", "memory_utilization", f"expected 0 < value <= 1, got {memory_utilization}")
    kv_tokens = model.max_position_embeddings if min_kv_tokens is None else min_kv_tokens
    if kv_tokens < 0:
        raise InputError("fits_report", "min_kv_tokens", f"expected >= 0, got {kv_tokens}")
    usable = profile.device.memory_bytes * memory_utilization

    def fits_at(t: int) -> bool:
        weights, kv = _needs(model, t, kv_tokens)
        return weights + kv <= usable

    weights, kv = _needs(model, tp, kv_tokens)
    kv_per_token = model.kv_bytes_per_token * _kv_share(model, tp)
    fits = weights + kv <= usable
    smallest = next((t for t in _tp_candidates(model, count) if fits_at(t)), None)
    smallest_any = next((t for t in _tp_candidates(model, model.num_attention_heads) if fits_at(t)), None)
    gb = 1e9
    need = f"{(weights + kv) / gb:.1f} GB per device (weights {weights / gb:.1f} GB + KV for {kv_tokens} tokens {kv / gb:.2f} GB)"
    where = f"{model.name} on {profile.name} at TP{tp}"
    if fits:
        message = (f"{where} fits: {need} of {usable / gb:.1f} GB usable; "
                   f"room for {int((usable - weights) // kv_per_token)} KV tokens")
    else:
        message = f"{where} does not fit: needs {need} of {usable / gb:.1f} GB usable"
        if smallest is not None:
            message += f"; smallest TP that fits is {smallest}"
        elif smallest_any is not None:
            message += (f"; no TP up to {count} on this machine fits; smallest TP that fits is {smallest_any} "
                        f"(a machine of {smallest_any} such devices)")
        else:
            message += f"; it fits at no TP up to {model.num_attention_heads} on this device"
    return {
        "model": model.name,
        "profile": profile.name,
        "tp": tp,
        "fits": fits,
        "memory_bytes_per_device": profile.device.memory_bytes,
        "memory_utilization": memory_utilization,
        "usable_bytes_per_device": usable,
        "weight_bytes_per_device": weights,
        "min_kv_tokens": kv_tokens,
        "min_kv_bytes_per_device": kv,
        "needed_bytes_per_device": weights + kv,
        "kv_bytes_per_token_per_device": kv_per_token,
        "kv_capacity_tokens": max(0, int((usable - weights) // kv_per_token)),
        "smallest_tp": smallest,
        "smallest_tp_any_machine": smallest_any,
        "message": message,
    }
