"""Fit the cost model's efficiencies and overheads to measured step times.

What is fitted (see `sim.cost_model` for the form; it is evaluated, never re-implemented here):
  * matmul_efficiency_curve: the fraction of the measured peak FLOP/s reached by a step's linear
    layers, one knot per token count 1, 2, 4, ... up to the largest measured step (interpolated in
    log tokens by the cost model, flat beyond its ends);
  * memory_efficiency: fraction of the measured stream bandwidth reached reading weights and KV;
  * attention_efficiency: fraction of peak FLOP/s reached by attention's (query, key) pairs;
  * step_overhead_s, layer_overhead_s, sequence_overhead_s, sequence_layer_overhead_s: fixed costs
    per step, per decoder layer, per sequence and per sequence per layer (an attention call);
  * cached_attention_efficiency and prefix_key_layer_overhead_s: attention over keys of earlier
    steps, per pair and per chunk's prefix key, where some point has a chunk after a prefix (a
    decode's one query per key is KV-bound and cannot tell them apart);
  * where `sim.spec.profile.CostParams` has them (proposed extensions): kv_memory_efficiency (bandwidth
    fraction of decode attention's KV reads) and matmul_width_exponent (GEMM efficiency growing
    with the model's width; needs points of two widths).
Peak FLOP/s and bandwidth come from the microbenchmarks and stay fixed; wake_slowdown_curve is
copied from measurements.wake where present (measured, not fitted: calibrate.wake), and
engine_step_overhead_s from measurements.engine_loop (calibrate.engine_loop), and
speed_variability from measurements.speed_reference (calibrate.speed_variability).

How: `scipy.optimize.least_squares` on log(predicted / measured) (relative errors, so a 2 ms decode
step weighs as much as a 2 s prefill), with bounds (efficiencies in (0, 1.5], overheads >= 0) and a
weak smoothness penalty on the curve (second differences of log efficiency in log tokens) so knots
between measured token counts are interpolated rather than left at their start value. Several
starts (memory-bound and compute-bound) guard against the local minima of the roofline's max().
If the measured models all have the same number of layers, step and layer overhead (and sequence
and sequence-layer overhead) cannot be told apart: layer_overhead_s and sequence_layer_overhead_s
are then fixed to 0 and the fit says so (`fit.layer_overhead`).

Input and output are profile documents (plain dicts, the JSON of `profiles/*.json`): the
measurements (points + model specs) go in, the `cost_model` section and each point's
`predicted_s` / `rel_error` come out, so a stored profile can be re-fitted (`calibrate fit`).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any

import numpy as np
from scipy.optimize import least_squares

from calibrate.speed_variability import measure_speed_variability
from sim.cost_model import CostModel
from sim.spec.model import ModelSpec
from sim.plan import StepShape
from sim.spec.profile import MAX_MEASURED_MATMUL_EFFICIENCY, CostParams, Profile, profile_from_dict

MIN_EFFICIENCY = 1e-4
MAX_EFFICIENCY = 1.5  # the profile schema's bound on memory and attention efficiencies
# The matmul curve is bounded by MAX_MEASURED_MATMUL_EFFICIENCY: it is stated for width 4096 (see
# sim.spec.profile), and a bound that binds is a form error (it held the width exponent down).
SMOOTHNESS_WEIGHT = 0.02  # per unit of second difference of log efficiency; weak on purpose
OVERHEAD_SCALE_S = 1e-3  # overheads are fitted in ms, so every unknown is O(1)


def curve_knots(max_tokens: int) -> list[int]:
    """1, 2, 4, ... up to the largest measured token count (which ends the list)."""
    knots = [1]
    while knots[-1] * 2 <= max_tokens:
        knots.append(knots[-1] * 2)
    if knots[-1] < max_tokens:
        knots.append(max_tokens)
    return knots


def spec_from_dict(data: dict) -> ModelSpec:
    fields = {f.name for f in dataclasses.fields(ModelSpec)}
    return ModelSpec(**{k: v for k, v in data.items() if k in fields})


# Efficiencies the fit knows; the optional ones (proposed additions to the cost model, see the
# calibration report) are fitted only where sim.spec.profile.CostParams has them.
EFFICIENCIES = ("memory_efficiency", "attention_efficiency")
OPTIONAL_EFFICIENCIES = ("kv_memory_efficiency",)
# attention over the cache: fitted only where some point has a chunk after a prefix (more than one
# query per cached key); decodes alone cannot tell it apart (their cached attention is KV-bound)
CACHED_ATTENTION = "cached_attention_efficiency"
PREFIX_KEY = "prefix_key_layer_overhead_s"  # with it: a chunk's per-prefix-key cost beside the math
OVERHEADS = ("step_overhead_s", "sequence_overhead_s", "layer_overhead_s",
             "sequence_layer_overhead_s")  # the last two need models of two layer counts
WIDTH_EXPONENT = "matmul_width_exponent"  # optional: efficiency x min(1, (hidden/ref)^exponent)


def cost_fields() -> set[str]:
    return {f.name for f in dataclasses.fields(CostParams)}


class _Problem:
    """Maps a parameter vector to cost-model predictions for every measured point.

    x = [log efficiency of each curve knot..., log of each scalar efficiency..., each linear
    parameter (overheads in ms, the width exponent) ...]."""

    def __init__(self, base: Profile, specs: dict[str, ModelSpec], points: list[dict],
                 knots: list[int], fit_layer_overhead: bool, fit_width: bool,
                 fit_cached: bool = False) -> None:
        self.base = base
        self.specs = specs
        self.knots = knots
        self.efficiencies = (EFFICIENCIES + tuple(e for e in OPTIONAL_EFFICIENCIES if e in cost_fields())
                             + ((CACHED_ATTENTION,) if fit_cached else ()))
        # (name, scale to the field's unit, upper bound)
        self.linear = [(name, OVERHEAD_SCALE_S, 1e4)
                       for name in (OVERHEADS if fit_layer_overhead else OVERHEADS[:2])]
        if fit_width:
            self.linear.append((WIDTH_EXPONENT, 1.0, 2.0))
        if fit_cached:
            self.linear.append((PREFIX_KEY, 1e-6, 1e4))  # fitted in us
        self.groups: dict[str, list[int]] = {}
        for i, point in enumerate(points):
            self.groups.setdefault(point["model"], []).append(i)
        self.shapes = [StepShape.from_record(p) for p in points]
        self.log_measured = np.log([p["seconds"] for p in points])
        self.num_knots = len(knots)
        self.log_knot_gaps = np.diff(np.log(knots)) if len(knots) > 1 else np.array([])

    @property
    def fitted_names(self) -> tuple[str, ...]:
        return self.efficiencies + tuple(name for name, _, _ in self.linear)

    def params(self, x: np.ndarray) -> CostParams:
        k, n_eff = self.num_knots, len(self.efficiencies)
        curve = tuple((float(t), float(math.exp(v))) for t, v in zip(self.knots, x[:k]))
        values = {name: float(math.exp(v)) for name, v in zip(self.efficiencies, x[k:k + n_eff])}
        values |= {name: float(v) * scale for (name, scale, _), v in zip(self.linear, x[k + n_eff:])}
        values.setdefault("layer_overhead_s", 0.0)
        values.setdefault("sequence_layer_overhead_s", 0.0)
        return dataclasses.replace(self.base.cost, matmul_efficiency=max(e for _, e in curve),
                                   matmul_half_tokens=_half_tokens(curve),
                                   matmul_efficiency_curve=curve, **values)

    def predict(self, x: np.ndarray) -> np.ndarray:
        profile = dataclasses.replace(self.base, cost=self.params(x))
        return predict_points(profile, self.specs, self.shapes, self.groups)

    def residuals(self, x: np.ndarray) -> np.ndarray:
        errors = np.log(self.predict(x)) - self.log_measured
        log_e = x[:self.num_knots]
        if self.num_knots < 3:
            return errors
        slopes = np.diff(log_e) / self.log_knot_gaps
        curvature = np.diff(slopes) * SMOOTHNESS_WEIGHT
        return np.concatenate([errors, curvature])

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        n_eff = self.num_knots + len(self.efficiencies)
        lo = [math.log(MIN_EFFICIENCY)] * n_eff + [0.0] * len(self.linear)
        hi = ([math.log(MAX_MEASURED_MATMUL_EFFICIENCY)] * self.num_knots
              + [math.log(MAX_EFFICIENCY)] * len(self.efficiencies)
              + [upper for _, _, upper in self.linear])
        return np.array(lo), np.array(hi)

    def start(self, peak_eff: float, half_tokens: float, mem_eff: float, attn_eff: float,
              overhead_ms: float) -> np.ndarray:
        log_curve = [math.log(max(peak_eff * t / (t + half_tokens), 2 * MIN_EFFICIENCY))
                     for t in self.knots]
        starts = {"memory_efficiency": mem_eff, "attention_efficiency": attn_eff,
                  CACHED_ATTENTION: attn_eff}
        log_eff = [math.log(starts.get(name, mem_eff / 2)) for name in self.efficiencies]
        linear = {"step_overhead_s": overhead_ms, "sequence_overhead_s": overhead_ms / 100.0,
                  "layer_overhead_s": overhead_ms / 10.0,
                  "sequence_layer_overhead_s": overhead_ms / 1000.0, WIDTH_EXPONENT: 0.2,
                  PREFIX_KEY: 0.1}
        return np.array(log_curve + log_eff + [linear[name] for name, _, _ in self.linear])


def _half_tokens(curve: tuple[tuple[float, float], ...]) -> float:
    """Token count where the curve first reaches half its maximum (for the scalar summary fields)."""
    top = max(e for _, e in curve)
    for (t0, e0), (t1, e1) in zip(curve, curve[1:]):
        if e1 >= top / 2 > e0:
            w = (top / 2 - e0) / (e1 - e0)
            return float(math.exp(math.log(t0) + w * (math.log(t1) - math.log(t0))))
    return 0.0


def predict_points(profile: Profile, specs: dict[str, ModelSpec], shapes: list[StepShape],
                   groups: dict[str, list[int]]) -> np.ndarray:
    """Cost-model step time of every shape; `groups` maps a model name to its shapes' indices."""
    out = np.empty(len(shapes))
    for name, indices in groups.items():
        model = CostModel(specs[name], profile)
        for i in indices:
            out[i] = model.step_time(shapes[i])
    return out


def fit_profile(document: dict, where: str = "profile", max_nfev: int = 400) -> dict:
    """A copy of a profile document with its cost_model fitted to measurements.points.

    The document must carry device (with measured peak_flops and bandwidth), measurements.points
    and measurements.models (name -> model spec dict, dtypes as calibrated).
    """
    doc = copy.deepcopy(document)
    points = doc["measurements"]["points"]
    if not points:
        raise ValueError("no measured points to fit")
    specs = {name: spec_from_dict(spec) for name, spec in doc["measurements"]["models"].items()}
    max_tokens = max(int(p["num_tokens"]) for p in points)
    knots = curve_knots(max_tokens)
    fit_layer = len({specs[p["model"]].num_layers for p in points}) > 1
    fit_width = (WIDTH_EXPONENT in cost_fields()
                 and len({specs[p["model"]].hidden_size for p in points}) > 1)
    fit_cached = any(StepShape.from_record(p).prefix_tokens for p in points)  # some chunk after a prefix
    for name in (CACHED_ATTENTION, PREFIX_KEY):  # fitted again below, or not at all
        doc["cost_model"].pop(name, None)
    base = profile_from_dict(doc, where)
    problem = _Problem(base, specs, points, knots, fit_layer, fit_width, fit_cached)
    lo, hi = problem.bounds()

    min_s = min(p["seconds"] for p in points)
    starts = [problem.start(0.6, 16.0, 0.7, 0.3, min_s * 1e3 * 0.1),
              problem.start(0.2, 64.0, 0.9, 0.05, min_s * 1e3 * 0.3),
              problem.start(0.9, 4.0, 0.3, 0.6, min_s * 1e3 * 0.05)]
    best = None
    for x0 in starts:
        result = least_squares(problem.residuals, np.clip(x0, lo + 1e-9, hi - 1e-9),
                               bounds=(lo, hi), x_scale="jac", max_nfev=max_nfev)
        if best is None or result.cost < best.cost:
            best = result
    assert best is not None
    params = problem.params(best.x)

    cm = doc["cost_model"]
    scalars = ("matmul_efficiency", "matmul_half_tokens") + problem.fitted_names + OVERHEADS
    cm.update({name: _round(getattr(params, name)) for name in dict.fromkeys(scalars)})
    cm["matmul_efficiency_curve"] = [[int(t), _round(e)] for t, e in params.matmul_efficiency_curve]
    wake = doc["measurements"].get("wake")
    if wake:  # measured beside the sweep, not fitted (calibrate.wake)
        cm["wake_slowdown_curve"] = wake["wake_slowdown_curve"]
    loop = doc["measurements"].get("engine_loop")
    if loop:  # measured on the real engine, not fitted (calibrate.engine_loop)
        cm["engine_step_overhead_s"] = loop["median_s"]
    variability = measure_speed_variability(doc["measurements"].get("speed_reference") or {})
    if variability is not None:  # how steps scatter about these medians (calibrate.speed_variability)
        cm["speed_variability"] = variability.to_dict()
    else:
        cm.pop("speed_variability", None)
    cm["fit"] = None
    # Score with the rounded parameters as written, through the same loader the simulator uses.
    fitted = profile_from_dict(doc, where)
    predicted = predict_points(fitted, specs, problem.shapes, problem.groups)
    rel = predicted / np.exp(problem.log_measured) - 1.0
    for point, pred, err in zip(points, predicted, rel):
        point["predicted_s"] = _round(float(pred))
        point["rel_error"] = round(float(err), 5)
    cm["fit"] = fit_quality(points, rel, best, knots, fit_layer)
    cm["fit"]["fitted"] = ["matmul_efficiency_curve", *problem.fitted_names]
    holdout = doc["measurements"].get("holdout")
    if holdout and holdout.get("points"):
        cm["fit"]["holdout"] = score_holdout(fitted, specs[holdout["model"]], holdout["points"])
    return doc


def score_holdout(profile: Profile, spec: ModelSpec, points: list[dict]) -> dict:
    """The fitted profile's error on a model it was not fitted to, measured in the same run
    (`calibrate --holdout`): each point gets predicted_s and rel_error, as the fitted points do."""
    predicted = predict_points(profile, {spec.name: spec}, [StepShape.from_record(p) for p in points],
                               {spec.name: list(range(len(points)))})
    rel = []
    for point, pred in zip(points, predicted):
        point["predicted_s"] = _round(float(pred))
        point["rel_error"] = round(float(pred) / point["seconds"] - 1.0, 5)
        rel.append(point["rel_error"])
    abs_err = np.abs(rel)
    worst = points[int(np.argmax(abs_err))]
    return {"model": spec.name, "num_points": len(points),
            "median_rel_error": round(float(np.median(abs_err)), 5),
            "max_rel_error": round(float(abs_err.max()), 5),
            "mean_signed_rel_error": round(float(np.mean(rel)), 5),
            "by_kind": errors_by_kind(points, abs_err),
            "worst_point": {k: worst[k] for k in ("kind", "batch", "num_tokens", "context_tokens",
                                                  "seconds", "predicted_s")}}


def fit_quality(points: list[dict], rel: np.ndarray, result: Any, knots: list[int],
                fit_layer: bool) -> dict:
    abs_err = np.abs(rel)
    worst = int(np.argmax(abs_err))
    return {
        "method": "scipy.optimize.least_squares on log(predicted/measured), bounded; "
                  f"smoothness weight {SMOOTHNESS_WEIGHT} on the curve",
        "num_points": len(points),
        "median_rel_error": round(float(np.median(abs_err)), 5),
        "max_rel_error": round(float(abs_err.max()), 5),
        "mean_rel_error": round(float(abs_err.mean()), 5),
        "by_kind": errors_by_kind(points, abs_err),
        "worst_point": {k: points[worst][k] for k in ("kind", "model", "batch", "num_tokens",
                                                      "context_tokens", "seconds", "predicted_s")},
        "curve_knots": knots,
        "layer_overhead": "fitted" if fit_layer else
                          "fixed at 0: all measured models have the same layer count, so per-layer "
                          "and per-step overhead are not separable (step_overhead_s holds both; "
                          "sequence_overhead_s holds the per-sequence-per-layer part)",
        "optimizer": {"status": int(result.status), "nfev": int(result.nfev),
                      "cost": float(result.cost)},
    }


def errors_by_kind(points: list[dict], abs_err: np.ndarray) -> dict:
    """Per step kind: how many points, median and max |relative error|."""
    out = {}
    for kind in sorted({p["kind"] for p in points}):
        errs = np.array([float(e) for p, e in zip(points, abs_err) if p["kind"] == kind])
        out[kind] = {"num_points": int(errs.size),
                     "median_rel_error": round(float(np.median(errs)), 5),
                     "max_rel_error": round(float(errs.max()), 5)}
    return out


def _round(value: float) -> float:
    """6 significant digits: plenty for a model of ~3 % accuracy, and a small JSON file."""
    return float(f"{value:.6g}")
