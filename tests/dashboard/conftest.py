"""Dashboard test fixtures: a measured profile (with a recorded validation) in a profile folder of
its own, found through $INFERCAST_PROFILES; uploads kept under the test's tmp_path."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest

from sim.cost_model import CostModel
from sim.spec.model import get_preset
from sim.plan import StepShape
from sim.spec.profile import profile_from_dict
from tests.conftest import TOY_PROFILE

APP = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"
MEASURED_NAME = "test-measured"


def _latency(scale: float) -> dict:
    return {"mean": 0.1 * scale, "p50": 0.09 * scale, "p90": 0.15 * scale, "p95": 0.17 * scale,
            "p99": 0.2 * scale}


MEASURED_FACTORS = tuple(1.0 + 0.15 * math.sin(i) for i in range(12))  # measured / predicted


def measured_profile() -> dict:
    """The toy profile as if `calibrate` had measured it: points (model "llama-small-150m") off its
    cost model by MEASURED_FACTORS, and a validation result in its provenance."""
    doc = copy.deepcopy(TOY_PROFILE)
    doc["name"] = MEASURED_NAME
    doc["provenance"] = {"source": "measured", "date": "2026-11-21", "host": "test-host",
                         "tool": "dashboard test fixture"}
    doc["power"]["method"] = "rapl"
    model = get_preset("llama-small-150m")
    cost = CostModel(model, profile_from_dict(copy.deepcopy(doc), "fixture"))
    shapes = [("prefill", b, StepShape.for_prefill([n] * b)) for b in (1, 4) for n in (64, 512, 2048)]
    shapes += [("decode", b, StepShape.for_decode(b, b * c)) for b in (1, 16, 64) for c in (128, 2048)]
    points = []
    for (kind, batch, shape), factor in zip(shapes, MEASURED_FACTORS):
        point = {"kind": kind, "model": model.name, "batch": batch, "seconds": cost.step_time(shape) * factor}
        point.update({f: getattr(shape, f) for f in ("num_tokens", "num_seqs", "num_sampled", "context_tokens",
                                                     "attention_pairs", "num_prefill_tokens")})
        points.append(point)
    doc["measurements"] = {"models": {model.name: model.to_dict()}, "points": points}
    doc["cost_model"]["fit"] = {"median_rel_error": 0.1, "max_rel_error": 0.15,
                                "holdout": {"model": "llama-medium-400m", "num_points": 9,
                                            "median_rel_error": 0.063, "max_rel_error": 0.171}}
    doc["provenance"]["validation"] = {  # the shape calibrate.validate.Validation.to_dict writes
        "name": "llama-small-150m on test-measured, Poisson 2 req/s", "same_workload": True,
        "predicted": {"latency": {m: _latency(1.0) for m in ("ttft_s", "tpot_s", "e2e_s")},
                      "throughput": {"output_tokens_per_s": 100.0, "requests_per_s": 2.0}},
        "measured": {"latency": {m: _latency(1.1) for m in ("ttft_s", "tpot_s", "e2e_s")},
                     "throughput": {"output_tokens_per_s": 98.0, "requests_per_s": 2.0}},
        "comparison": [{"metric": "ttft_s.p50", "predicted": 0.09, "measured": 0.099, "rel_error": -0.0909}]}
    return doc


@pytest.fixture
def profiles_env(tmp_path, monkeypatch) -> dict[str, str]:
    """A profile folder holding the measured profile, and an upload folder, set in the environment."""
    import streamlit as st

    folder = tmp_path / "profiles"
    folder.mkdir()
    (folder / f"{MEASURED_NAME}.json").write_text(json.dumps(measured_profile(), indent=1))
    env = {"INFERCAST_PROFILES": str(folder), "INFERCAST_UPLOAD_DIR": str(tmp_path / "uploads")}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    st.cache_data.clear()  # the profile list is cached; this folder is new
    yield env
    st.cache_data.clear()
