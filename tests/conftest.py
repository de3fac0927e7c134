"""Shared fixtures: a toy profile with round numbers, so exact timelines are easy to reason about."""

from __future__ import annotations

import copy

import pytest

from sim.spec.profile import profile_from_dict

TOY_PROFILE = {
    "schema_version": 1,
    "name": "toy-gpu",
    "device": {"kind": "gpu", "name": "Toy GPU", "count": 8, "memory_bytes": 80e9,
               "memory_bandwidth_bytes_per_s": 2e12, "peak_flops": {"bf16": 300e12, "fp8": 600e12},
               "interconnect": {"name": "toy-link", "bandwidth_bytes_per_s": 300e9, "latency_s": 5e-6}},
    "provenance": {"source": "datasheet", "date": "2026-11-21",
                   "documents": [{"title": "test fixture", "date": "2026-11-21"}]},
    "cost_model": {"compute_dtype": "bf16", "matmul_efficiency": 0.8, "matmul_half_tokens": 32,
                   "memory_efficiency": 0.8, "attention_efficiency": 0.5, "step_overhead_s": 2e-4,
                   "layer_overhead_s": 5e-6, "sequence_overhead_s": 1e-6},
    "power": {"method": "datasheet", "idle_w": 60, "decode_w": 250, "prefill_w": 400},
    "price": {"usd_per_device_h": 2.0, "source": "test", "date": "2026-11-21"},
}


@pytest.fixture
def toy_profile_dict() -> dict:
    return copy.deepcopy(TOY_PROFILE)


@pytest.fixture
def toy_profile():
    return profile_from_dict(copy.deepcopy(TOY_PROFILE), "toy-gpu.json")
