"""The fit recovers cost-model parameters from points the cost model itself generated."""

from __future__ import annotations

import dataclasses

import pytest

pytest.importorskip("scipy")

from calibrate.fit import curve_knots, fit_profile  # noqa: E402
from calibrate.profile_builder import build_document, power_section  # noqa: E402
from sim.cost_model import CostModel  # noqa: E402
from sim.spec.model import PRESETS, ModelSpec  # noqa: E402
from sim.plan import StepShape, PrefillChunk, StepPlan  # noqa: E402
from sim.spec.profile import profile_from_dict  # noqa: E402

SHAPE_FIELDS = ("num_tokens", "num_seqs", "num_sampled", "context_tokens", "attention_pairs",
                "num_prefill_tokens", "cached_pairs", "prefix_tokens")
TRUE_CURVE = [[1, 0.04], [2, 0.07], [4, 0.12], [8, 0.2], [16, 0.3], [32, 0.42], [64, 0.55],
              [128, 0.66], [256, 0.72], [512, 0.76], [1024, 0.78], [2048, 0.78]]
TRUE = {"memory_efficiency": 0.62, "kv_memory_efficiency": 0.3, "attention_efficiency": 0.18,
        "cached_attention_efficiency": 0.3, "prefix_key_layer_overhead_s": 3e-7,
        "step_overhead_s": 4e-4,
        "layer_overhead_s": 1.5e-4, "sequence_overhead_s": 3e-5, "sequence_layer_overhead_s": 2e-5}


def _document(specs: list[ModelSpec]) -> dict:
    device = {"kind": "cpu", "name": "synthetic", "count": 1, "memory_bytes": 24e9,
              "memory_bandwidth_bytes_per_s": 20e9, "peak_flops": {"fp32": 150e9, "bf16": 600e9},
              "interconnect": None}
    power = {"method": "estimated-from-tdp", "idle_w": 3.0, "decode_w": 9.0, "prefill_w": 10.0,
             "is_estimated": True}
    return build_document(name="synthetic", device=device,
                          provenance={"source": "measured", "date": "2026-01-01"},
                          compute_dtype="fp32", power=power, price_usd_per_h=None, microbench={},
                          points=[], models={s.name: s.to_dict() for s in specs}, limits=[],
                          grid={})


def _record(kind: str, spec: ModelSpec, batch: int, plan: StepPlan, model: CostModel) -> dict:
    shape = plan.shape()
    return {"kind": kind, "model": spec.name, "batch": batch,
            **{f: getattr(shape, f) for f in SHAPE_FIELDS},
            "seconds": model.step_time(shape), "repeats": 3, "joules": None}


def synthetic_points(specs: list[ModelSpec], truth: dict) -> list[dict]:
    profile = profile_from_dict(truth, "truth")
    points = []
    for spec in specs:
        model = CostModel(spec, profile)
        for b in (1, 2, 4, 8):
            for p in (16, 64, 256):
                plan = StepPlan(prefill=tuple(PrefillChunk(i, 0, p, True) for i in range(b)))
                points.append(_record("prefill", spec, b, plan, model))
            for c in (128, 512, 2048):
                plan = StepPlan(decode_ids=tuple(range(b)), decode_context_tokens=b * c)
                points.append(_record("decode", spec, b, plan, model))
            plan = StepPlan(prefill=(PrefillChunk(99, 512, 64, True),),
                            decode_ids=tuple(range(b)), decode_context_tokens=b * 512)
            points.append(_record("mixed", spec, b, plan, model))
        for p in (16, 64, 256):  # a chunk after a prefix: attention over the cache
            for start in (128, 1024):
                plan = StepPlan(prefill=(PrefillChunk(0, start, p, True),))
                points.append(_record("prefill", spec, 1, plan, model))
    return points


@pytest.fixture(scope="module")
def two_models() -> list[ModelSpec]:
    small = PRESETS["llama-small-150m"].with_dtypes("fp32", "fp32")
    return [small, dataclasses.replace(small, name="small-2layers", num_layers=2)]


def _truth(specs: list[ModelSpec]) -> dict:
    truth = _document(specs)
    truth["cost_model"].update(TRUE, matmul_efficiency_curve=TRUE_CURVE)
    return truth


def test_curve_knots_are_powers_of_two_up_to_the_largest() -> None:
    assert curve_knots(1) == [1]
    assert curve_knots(8) == [1, 2, 4, 8]
    assert curve_knots(100) == [1, 2, 4, 8, 16, 32, 64, 100]


def test_fit_recovers_known_parameters(two_models: list[ModelSpec]) -> None:
    document = _document(two_models)
    document["measurements"]["points"] = synthetic_points(two_models, _truth(two_models))
    fitted = fit_profile(document)
    cm = fitted["cost_model"]
    # The parameters are not unique (a roofline max() where one side never binds, overheads vs the
    # small-batch knots), so recovery is checked where it matters: predictions on held-out shapes.
    truth, fit = profile_from_dict(_truth(two_models), "truth"), profile_from_dict(fitted, "fitted")
    for spec in two_models:
        for shape in (StepShape.for_decode(3, 3 * 900), StepShape.for_decode(6, 6 * 1500),
                      StepShape.for_decode(16, 16 * 300),
                      StepShape.for_prefill([100, 40]), StepShape.for_prefill([700]),
                      StepShape.for_prefill([200], [1500])):
            assert CostModel(spec, fit).step_time(shape) == pytest.approx(
                CostModel(spec, truth).step_time(shape), rel=0.02), (spec.name, shape)
    assert cm["fit"]["max_rel_error"] < 0.02  # exact data: far inside the 3% target
    assert cm["fit"]["num_points"] == len(document["measurements"]["points"])
    assert cm["fit"]["layer_overhead"] == "fitted"
    for name in ("cached_attention_efficiency", "prefix_key_layer_overhead_s"):
        assert name in cm["fit"]["fitted"]
        assert cm[name] == pytest.approx(TRUE[name], rel=0.05), name
    for point in fitted["measurements"]["points"]:
        assert abs(point["rel_error"]) < 0.02
        assert point["predicted_s"] == pytest.approx(point["seconds"], rel=0.02)
    profile_from_dict(fitted, "fitted")  # the result is a valid profile


def test_single_model_folds_layer_overhead_into_step_overhead(two_models: list[ModelSpec]) -> None:
    spec = two_models[0]
    document = _document([spec])
    document["measurements"]["points"] = synthetic_points([spec], _truth([spec]))
    fitted = fit_profile(document)
    cm = fitted["cost_model"]
    assert cm["layer_overhead_s"] == 0.0 and cm["sequence_layer_overhead_s"] == 0.0
    assert "not separable" in cm["fit"]["layer_overhead"]
    # (with one model the fixed overhead trades off against the small-batch knots, so only the
    # predictions, not the split, are pinned down)
    assert cm["step_overhead_s"] > 0
    assert cm["fit"]["max_rel_error"] < 2e-3  # exact data; the curve's smoothness penalty costs a hair


def test_a_grid_without_chunks_after_a_prefix_leaves_cached_attention_unfitted(
        two_models: list[ModelSpec]) -> None:
    """Decodes' cached attention is KV-bound here: they cannot tell its rate, so the fit leaves it
    out (the cost model then uses attention_efficiency, and no per-prefix-key cost) rather than keep
    stale values."""
    document = _document(two_models)
    points = [p for p in synthetic_points(two_models, _truth(two_models))
              if p["cached_pairs"] <= p["context_tokens"] - p["num_tokens"]]
    document["measurements"]["points"] = points
    document["cost_model"]["cached_attention_efficiency"] = 0.5  # stale values from before
    document["cost_model"]["prefix_key_layer_overhead_s"] = 1e-6
    fitted = fit_profile(document)
    for name in ("cached_attention_efficiency", "prefix_key_layer_overhead_s"):
        assert name not in fitted["cost_model"] and name not in fitted["cost_model"]["fit"]["fitted"]


def test_fit_does_not_touch_the_input_document(two_models: list[ModelSpec]) -> None:
    document = _document(two_models)
    document["measurements"]["points"] = synthetic_points(two_models, _truth(two_models))
    before = repr(document)
    fit_profile(document)
    assert repr(document) == before


def test_power_section_averages_energy_per_phase() -> None:
    points = [{"kind": "decode", "seconds": 0.1, "repeats": 3, "joules": 1.0},
              {"kind": "decode", "seconds": 0.3, "repeats": 3, "joules": 3.0},
              {"kind": "prefill", "seconds": 1.0, "repeats": 3, "joules": 12.0}]
    power = power_section("rapl", False, 4.0, points, {})
    assert power["decode_w"] == pytest.approx(10.0)
    assert power["prefill_w"] == pytest.approx(12.0)
    assert power["idle_w"] == 4.0 and power["is_estimated"] is False
    # a decode sweep a hair busier than the prefill one (an estimate from CPU time, a noisy meter)
    # still gives a profile the catalogue accepts: prefill draws at least what decode does
    busier = points[:2] + [{"kind": "prefill", "seconds": 1.0, "repeats": 3, "joules": 9.99}]
    power = power_section("estimated-from-tdp", True, 12.0, busier, {})
    assert power["idle_w"] == power["decode_w"] == power["prefill_w"] == pytest.approx(10.0)
