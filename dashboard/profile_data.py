"""Plain data for the Profiles page, every number from sim: measured step times beside the fitted
cost model's prediction (`sim.cost_model.CostModel`), and predicted step times across profiles.

A measured profile stores `measurements.points` (one per timed step: kind, model, the StepShape
fields, seconds) and `measurements.models` (name -> the ModelSpec fields as calibrated).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from sim.cost_model import CostModel
from sim.errors import InputError
from sim.spec.model import ModelSpec, resolve_model
from sim.plan import StepShape
from sim.spec.profile import Profile

DECODE_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
PREFILL_TOKENS = (128, 256, 512, 1024, 2048, 4096, 8192)


def _spec(name: str, models: dict[str, Any]) -> ModelSpec:
    stored = models.get(name)
    if isinstance(stored, dict):
        names = {f.name for f in dataclasses.fields(ModelSpec)}
        return ModelSpec(**{k: v for k, v in stored.items() if k in names})
    return resolve_model(name)


def measured_points(profile: Profile) -> list[dict[str, Any]]:
    """One row per measured point: what was timed and what the profile's cost model predicts."""
    meas = profile.measurements or {}
    points = meas.get("points") or []
    models = meas.get("models") or {}
    costs: dict[str, CostModel] = {}
    rows = []
    for point in points:
        if not isinstance(point, dict) or "seconds" not in point or "model" not in point:
            continue
        name = str(point["model"])
        if name not in costs:
            costs[name] = CostModel(_spec(name, models), profile)
        try:
            shape = StepShape.from_record(point)
        except (KeyError, TypeError, ValueError):  # not a timed step's record
            continue
        rows.append({"kind": point.get("kind", "?"), "model": name, "batch": point.get("batch"),
                     "num_tokens": shape.num_tokens, "context_tokens": shape.context_tokens,
                     "measured_s": float(point["seconds"]),
                     "predicted_s": costs[name].step_time(shape),
                     "stored_predicted_s": point.get("predicted_s")})
    return rows


def prediction_curves(model: str, profiles: list[Profile], weight_dtype: str | None = None,
                      kv_dtype: str | None = None, context_tokens: int = 1024
                      ) -> tuple[dict[str, dict], dict[str, dict], dict[str, str]]:
    """Decode step time vs batch (each sequence at `context_tokens`) and prefill time vs prompt
    tokens (batch 1) per profile at TP 1; profiles the model cannot run on go to the third dict."""
    spec = resolve_model(model).with_dtypes(weight_dtype, kv_dtype)
    decode, prefill, errors = {}, {}, {}
    for prof in profiles:
        try:
            cost = CostModel(spec, prof)
        except InputError as exc:
            errors[prof.name] = str(exc)
            continue
        decode[prof.name] = {"x": list(DECODE_BATCHES),
                             "y_s": [cost.decode_time(b, context_tokens) for b in DECODE_BATCHES]}
        prefill[prof.name] = {"x": list(PREFILL_TOKENS), "y_s": [cost.prefill_time(t) for t in PREFILL_TOKENS]}
    return decode, prefill, errors
