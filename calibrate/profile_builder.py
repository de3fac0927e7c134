"""Assemble a measured hardware-profile document (the JSON of `profiles/*.json`) from a calibration.

The document follows `sim.spec.profile` (schema version 1): identity, device capacities (measured
bandwidth and achieved large-GEMM FLOP/s), provenance, the cost model (fitted by `calibrate.fit`),
the power model, an optional price and the raw measurements. The power model is derived here from
the energy readings of the decode and prefill sweeps: busy power = joules / seconds over all points
of that kind. Readings from an estimating meter keep `is_estimated: true`.
"""

from __future__ import annotations

import datetime as _dt
import re
import socket
from typing import Any

from sim.spec.profile import SCHEMA_VERSION

INFERCAST_VERSION = "0.1.0"


def slug(text: str) -> str:
    """Lower-case letters, digits and dashes: 'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3'."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "device"


def host_slug() -> str:
    return slug(socket.gethostname().split(".")[0]) or "host"


def default_profile_name(device_kind: str, device_name: str) -> str:
    """<host>-<device>: device is "cpu" on CPUs, a slug of the GPU's name otherwise."""
    return f"{host_slug()}-{'cpu' if device_kind == 'cpu' else slug(device_name)}"


def power_section(meter_method: str, is_estimated: bool, idle_w: float, points: list[dict],
                  details: dict) -> dict:
    """Per-device power from the sweep readings: decode_w from decode points, prefill_w from
    prefill points (their joules over their seconds, i.e. time-weighted mean power)."""

    def busy_w(kind: str) -> float | None:  # each point's joules are per step, like its seconds
        read = [p for p in points if p["kind"] == kind and p.get("joules") is not None]
        seconds = sum(p["seconds"] for p in read)
        return sum(p["joules"] for p in read) / seconds if seconds > 0 else None

    decode_w = busy_w("decode")
    prefill_w = busy_w("prefill")
    decode_w = decode_w if decode_w is not None else prefill_w
    prefill_w = prefill_w if prefill_w is not None else decode_w
    if decode_w is None or prefill_w is None:
        raise ValueError("no energy readings in the sweeps")
    # The profile catalogue wants idle <= decode <= prefill (a compute-bound step draws at least
    # what a memory-bound one does); a noisy meter, or a TDP estimate from a busier decode sweep
    # (9.80 W against 9.79 W on 2026-11-22), can break either by a hair.
    idle_w = min(idle_w, decode_w)
    prefill_w = max(prefill_w, decode_w)
    return {"method": meter_method, "idle_w": round(idle_w, 3), "decode_w": round(decode_w, 3),
            "prefill_w": round(prefill_w, 3), "is_estimated": is_estimated,
            "per": "device", "details": details}


def build_document(*, name: str, device: dict, provenance: dict, compute_dtype: str, power: dict,
                   price_usd_per_h: float | None, microbench: dict, points: list[dict],
                   models: dict[str, dict], limits: list[dict], grid: dict) -> dict[str, Any]:
    """A profile document with a placeholder cost model (to be fitted by `calibrate.fit`)."""
    today = _dt.date.today().isoformat()
    price = None
    if price_usd_per_h is not None:
        price = {"usd_per_device_h": price_usd_per_h, "source": "--price-usd-per-h", "date": today}
    return {
        "schema_version": SCHEMA_VERSION,
        "name": name,
        "device": device,
        "provenance": provenance,
        "cost_model": {
            "compute_dtype": compute_dtype,
            "matmul_efficiency": 0.5,
            "matmul_half_tokens": 16.0,
            "memory_efficiency": 0.7,
            "attention_efficiency": 0.3,
            "step_overhead_s": 0.0,
            "layer_overhead_s": 0.0,
            "sequence_overhead_s": 0.0,
            "matmul_efficiency_curve": [],
            "fit": None,
        },
        "power": power,
        "price": price,
        "measurements": {
            "microbench": microbench,
            "grid": grid,
            "models": models,
            "limits": limits,
            "points": points,
        },
    }


def provenance_section(*, device_info: dict, command: str, model_name: str, dtype: str,
                       grid: dict, seconds: float) -> dict:
    return {
        "source": "measured",
        "date": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "host": socket.gethostname(),
        "tool": f"infercast {INFERCAST_VERSION} calibrate",
        "infercast_version": INFERCAST_VERSION,
        "command": command,
        "torch_version": device_info.get("torch_version"),
        "device_name": device_info.get("name"),
        "driver_version": device_info.get("driver_version"),
        "cuda_version": device_info.get("cuda_version"),
        "num_cores": device_info.get("num_cores"),
        "calibration_model": model_name,
        "calibration_dtype": dtype,
        "grid": grid,
        "calibration_seconds": round(seconds, 1),
    }
