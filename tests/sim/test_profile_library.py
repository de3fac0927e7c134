"""The shipped profile library: every profile loads and validates, bad files are rejected with the
field named, the datasheet method is applied uniformly, and the physics moves the right way."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.cost_model import CostModel
from sim.errors import InputError
from sim.spec.model import get_preset
from sim.spec.profile import REPO_PROFILES_DIR, load_profile, profile_from_dict
from sim.report.catalog import (fits_report, format_table, is_iso_date, list_rows, show,
                                 validate_data, validate_file)

SHIPPED = sorted(REPO_PROFILES_DIR.glob("*.json"))


def _source(path: Path) -> str | None:
    try:
        return json.loads(path.read_text())["provenance"]["source"]
    except (ValueError, KeyError, TypeError):
        return None  # a broken file fails test_every_shipped_profile_loads_and_validates


DATASHEET = [p for p in SHIPPED if _source(p) == "datasheet"]
REQUIRED_DEVICES = ("h100-sxm", "h100-pcie", "h200", "a100-40gb", "a100-80gb", "l4", "l40s", "a10g",
                    "b200", "mi300x")
REQUIRED_NODES = ("h100-sxm-x8", "h100-pcie-x2", "h200-x8", "a100-80gb-x8", "b200-x8", "mi300x-x8",
                  "l40s-x4", "l4-x8")
LLAMA_8B = get_preset("llama-3-8b")
LLAMA_70B = get_preset("llama-3-70b")


def _good() -> dict:
    data = json.loads((REPO_PROFILES_DIR / "h100-sxm-x8.json").read_text())
    data["cost_model"]["wake_slowdown_curve"] = [[0.005, 0.02], [0.2, 0.06]]  # optional: fuzzed too
    data["cost_model"]["engine_step_overhead_s"] = 0.00014  # optional: fuzzed too
    return data


def _write(tmp_path: Path, data: dict, name: str = "bad.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


# ---- the library ------------------------------------------------------------------------------
def test_library_has_the_required_profiles():
    names = {p.stem for p in SHIPPED}
    assert set(REQUIRED_DEVICES) <= names
    assert set(REQUIRED_NODES) <= names


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_shipped_profile_loads_and_validates(path: Path):
    profile = load_profile(path)
    assert profile.name == path.stem
    assert validate_file(path) == []


@pytest.mark.parametrize("path", DATASHEET, ids=lambda p: p.stem)
def test_datasheet_profiles_follow_the_documented_method(path: Path):
    """profiles/README.md: one method for every device; nothing tuned per device."""
    data = json.loads(path.read_text())
    prof = load_profile(path)
    cm, pw, prov = prof.cost, prof.power, prof.provenance
    assert prov["date"] == "2026-11-21"
    assert prov["notes"] and "derived" in prov["notes"].lower() and "published" in prov["notes"].lower()
    assert all(isinstance(d, dict) and d["title"] and d["date"] for d in prov["documents"])
    assert cm.compute_dtype == "bf16"
    assert cm.matmul_efficiency in (0.87, 0.80, 0.78, 0.51, 0.70)
    assert cm.matmul_half_tokens == 64
    assert cm.memory_efficiency == 0.85
    assert cm.attention_efficiency == round(0.6 * cm.matmul_efficiency, 2)
    assert (cm.step_overhead_s, cm.layer_overhead_s, cm.sequence_overhead_s) == (5e-4, 4e-6, 5e-6)
    assert pw.method == "datasheet" and pw.is_estimated
    max_w = data["power"]["max_power_w"]
    assert pw.prefill_w == max_w
    if data["power"]["basis"].startswith("splitwise"):
        assert (pw.idle_w, pw.decode_w) in ((63, 250), (75, 380))
    else:
        assert pw.idle_w == pytest.approx(max_w * 75 / 700, abs=0.05)
        assert pw.decode_w == pytest.approx(max_w * 380 / 700, abs=0.05)
    assert data["power"]["notes"]
    if prof.device.count > 1:
        assert prof.device.interconnect is not None and prof.device.interconnect.bandwidth_bytes_per_s > 0
    if prof.price:
        assert prof.price.source and (prof.price.date == "undated" or is_iso_date(prof.price.date))


def test_published_figures_match_the_reference():
    h100, a100, mi = load_profile("h100-sxm"), load_profile("a100-80gb"), load_profile("mi300x")
    assert h100.device.memory_bytes == 80e9
    assert h100.device.memory_bandwidth_bytes_per_s == 3.35e12
    assert h100.device.peak_flops == {"bf16": 989e12, "fp16": 989e12, "fp8": 1979e12}
    assert (h100.power.idle_w, h100.power.decode_w, h100.power.prefill_w) == (75, 380, 700)
    assert (a100.power.idle_w, a100.power.decode_w, a100.power.prefill_w) == (63, 250, 400)
    assert "fp8" not in a100.device.peak_flops
    assert mi.cost.matmul_efficiency == 0.51
    assert load_profile("h100-sxm-x8").device.interconnect.bandwidth_bytes_per_s == 450e9
    assert load_profile("b200").price is None  # the reference has no B200 price


# ---- rejected files ---------------------------------------------------------------------------
def test_missing_field_is_named(tmp_path: Path):
    data = _good()
    del data["device"]["memory_bytes"]
    path = _write(tmp_path, data)
    problems = validate_file(path)
    assert any("device.memory_bytes" in p and "missing" in p for p in problems)
    with pytest.raises(InputError) as err:
        load_profile(path)
    assert err.value.field == "device.memory_bytes" and str(path) in str(err.value)


def test_idle_above_decode_power_is_rejected(tmp_path: Path):
    data = _good()
    data["power"]["idle_w"] = 500.0
    path = _write(tmp_path, data)
    assert any("power.idle_w" in p for p in validate_file(path))
    with pytest.raises(InputError, match="power.idle_w"):
        load_profile(path)


def test_decode_above_prefill_power_is_a_problem(tmp_path: Path):
    data = _good()
    data["power"]["decode_w"] = 800.0  # the loader tolerates up to 1.5x prefill; physics does not
    assert any("power.decode_w" in p for p in validate_file(_write(tmp_path, data)))


def test_count_without_interconnect_is_rejected(tmp_path: Path):
    data = _good()
    del data["device"]["interconnect"]
    path = _write(tmp_path, data)
    assert any("device.interconnect" in p for p in validate_file(path))
    with pytest.raises(InputError, match="device.interconnect"):
        load_profile(path)


def test_efficiency_above_one_is_rejected(tmp_path: Path):
    data = _good()
    data["cost_model"]["matmul_efficiency"] = 3.5  # beyond even a measured width-scaled one
    path = _write(tmp_path, data)
    assert any("cost_model.matmul_efficiency" in p for p in validate_file(path))
    with pytest.raises(InputError, match="cost_model.matmul_efficiency"):
        load_profile(path)
    data["cost_model"]["matmul_efficiency"] = 1.2  # the loader allows <= 1.5; physics says <= 1
    assert any("cost_model.matmul_efficiency" in p for p in validate_data(data, "x.json"))


def test_validate_reports_every_problem_not_just_the_first(tmp_path: Path):
    data = _good()
    data["power"]["idle_w"] = 500.0
    del data["device"]["interconnect"]
    data["cost_model"]["memory_efficiency"] = 0.0
    data["device"]["peak_flops"]["fp6"] = 1e15
    data["provenance"]["date"] = "21/11/2026"
    data["price"]["usd_per_device_h"] = -1.0
    data["device"]["memory_bandwidth_bytes_per_s"] = -5
    problems = validate_file(_write(tmp_path, data))
    for field in ("power.idle_w", "device.interconnect", "cost_model.memory_efficiency",
                  "device.peak_flops.fp6", "provenance.date", "price.usd_per_device_h",
                  "device.memory_bandwidth_bytes_per_s"):
        assert any(f": {field}:" in p for p in problems), (field, problems)
    assert all(p.startswith(str(tmp_path)) for p in problems)


def test_validate_checks_documents_and_sections_independently(tmp_path: Path):
    data = _good()
    data["provenance"]["documents"] = []
    data["cost_model"]["compute_dtype"] = "int4"
    del data["power"]
    problems = validate_data(data, "p.json")
    assert any("provenance.documents" in p for p in problems)
    assert any("cost_model.compute_dtype" in p for p in problems)
    assert any("p.json: power: missing section" == p for p in problems)


def test_validate_file_unreadable_and_bad_json(tmp_path: Path):
    assert "cannot read" in validate_file(tmp_path / "nope.json")[0]
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert "not valid JSON" in validate_file(bad)[0]
    assert validate_data([1, 2], "x.json") == ["x.json: expected a JSON object"]


def test_anything_the_loader_rejects_is_reported(tmp_path: Path):
    data = _good()
    data["schema_version"] = 99
    problems = validate_data(data, "x.json")
    assert problems and "schema_version" in problems[0]
    with pytest.raises(InputError):
        profile_from_dict(data, "x.json")


def test_dates():
    assert is_iso_date("2026-11-21") and is_iso_date("2026-06") and is_iso_date("2026")
    assert is_iso_date("2026-Q1")
    assert not is_iso_date("2026-13") and not is_iso_date("21/11/2026") and not is_iso_date(None)


# ---- catalogue --------------------------------------------------------------------------------
def test_list_rows_and_table():
    rows = list_rows(DATASHEET)
    assert len(rows) == len(DATASHEET)
    row = next(r for r in rows if r["name"] == "h100-sxm-x8")
    assert row["source"] == "datasheet" and row["count"] == 8 and row["memory_bytes"] == 80e9
    assert row["bf16_flops"] == 989e12 and row["price_usd_per_device_h"] == 3.78 and row["fit_error"] is None
    table = format_table(rows)
    assert "h100-sxm-x8" in table and "bf16 TFLOP/s" in table and "low confidence" in table


def test_list_rows_keeps_a_broken_file(tmp_path: Path):
    data = _good()
    del data["cost_model"]
    path = _write(tmp_path, data)
    rows = list_rows([path])
    assert rows[0]["error"] and "cost_model" in rows[0]["error"]
    assert "INVALID" in format_table(rows)


def test_show_includes_provenance_and_documents():
    text = show("mi300x-x8")
    assert "Infinity Fabric" in text and "documents:" in text and "ml-engineering" in text
    assert "undated" in text and "matmul_efficiency 0.51" in text


# ---- physics through the cost model -----------------------------------------------------------
def test_more_bandwidth_decodes_faster_at_batch_1():
    h100 = CostModel(LLAMA_8B, load_profile("h100-sxm")).decode_time(1, 1024)
    h200 = CostModel(LLAMA_8B, load_profile("h200")).decode_time(1, 1024)
    assert h200 < h100


def test_fp8_weights_decode_faster_and_leave_more_kv_room():
    prof = load_profile("h100-sxm")
    fp8 = LLAMA_8B.with_dtypes(weight_dtype="fp8")
    assert CostModel(fp8, prof).decode_time(1, 1024) < CostModel(LLAMA_8B, prof).decode_time(1, 1024)
    assert (fits_report(fp8, prof)["kv_capacity_tokens"]
            > fits_report(LLAMA_8B, prof)["kv_capacity_tokens"])


def test_tp8_decodes_70b_faster_than_tp4():
    node = load_profile("h100-sxm-x8")
    assert CostModel(LLAMA_70B, node, 8).decode_time(1, 1024) < CostModel(LLAMA_70B, node, 4).decode_time(1, 1024)


def test_70b_does_not_fit_on_one_l4_and_the_smallest_tp_is_named():
    single = fits_report(LLAMA_70B, load_profile("l4"), 1)
    assert not single["fits"] and single["smallest_tp"] is None and single["smallest_tp_any_machine"] == 8
    assert "does not fit" in single["message"] and "smallest TP that fits is 8" in single["message"]
    node = fits_report(LLAMA_70B, load_profile("l4-x8"), 1)
    assert not node["fits"] and node["smallest_tp"] == 8
    assert fits_report(LLAMA_70B, load_profile("l4-x8"), 8)["fits"]


def test_fits_report_arithmetic():
    prof = load_profile("h100-sxm")
    rep = fits_report(LLAMA_8B, prof, 1, min_kv_tokens=1000, memory_utilization=0.5)
    assert rep["fits"]
    assert rep["usable_bytes_per_device"] == 40e9
    assert rep["weight_bytes_per_device"] == LLAMA_8B.weight_bytes
    assert rep["min_kv_bytes_per_device"] == 1000 * LLAMA_8B.kv_bytes_per_token
    assert rep["kv_capacity_tokens"] == int((40e9 - LLAMA_8B.weight_bytes) // LLAMA_8B.kv_bytes_per_token)
    # with 4 KV heads, TP8 replicates each KV head twice: a device holds 1/4 of a token's KV
    four_kv_heads = dataclasses.replace(LLAMA_8B, num_kv_heads=4)
    node = load_profile("h100-sxm-x8")
    assert fits_report(four_kv_heads, node, 8)["kv_bytes_per_token_per_device"] == four_kv_heads.kv_bytes_per_token / 4
    assert fits_report(LLAMA_8B, node, 8)["kv_bytes_per_token_per_device"] == LLAMA_8B.kv_bytes_per_token / 8


def test_fits_report_rejects_impossible_tp():
    with pytest.raises(InputError, match="device.count"):
        fits_report(LLAMA_8B, load_profile("h100-sxm"), 2)
    with pytest.raises(InputError, match="num_attention_heads"):
        fits_report(get_preset("qwen2.5-7b"), load_profile("h100-sxm-x8"), 8)


# ---- the validator never crashes, and agrees with the loader -----------------------------------
def _leaf_paths(node, prefix=()):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaf_paths(value, prefix + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _leaf_paths(value, prefix + (i,))
    yield prefix


_LEAVES = [p for p in _leaf_paths(_good()) if p]
_JUNK = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=True),
                  st.text(max_size=5), st.lists(st.integers(), max_size=2), st.just({}))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(_LEAVES), st.one_of(st.just("<delete>"), _JUNK)),
                min_size=1, max_size=4))
def test_validator_never_raises_and_accepts_only_loadable_files(edits):
    data = _good()
    for path, value in edits:
        parent = data
        try:
            for key in path[:-1]:
                parent = parent[key]
            if value == "<delete>":
                del parent[path[-1]]
            else:
                parent[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue  # an earlier edit removed or replaced this branch
    problems = validate_data(data, "fuzz.json")
    if not problems:
        profile_from_dict(data, "fuzz.json")  # must not raise
