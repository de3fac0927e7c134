"""Fidelity results for the Validation page: what the simulator predicted beside what the real
engine measured on the same workload (`calibrate validate`).

Read as data from two places: a profile's `provenance.validation` (or `provenance.fidelity`), and
JSON files the user uploads (parsed with `json.loads` only, size-capped). One result is
{"predicted": <run summary>, "measured": <run summary>, optional "name" | "label", "scenario",
"same_workload", and the relative errors as the validation computed them: "comparison" (rows of
{"metric": "ttft_s.p50", "rel_error"}, as `calibrate.validate.Validation.to_dict` writes) or
"errors" (dotted keys or the summary's nesting)}. A result recorded in a profile by
`calibrate validate --record` has no summaries: its "comparison" rows carry the predicted and
measured values themselves, and are read as such. Where given, the errors of the prediction at the
machine's measured speed ("comparison_at_machine_speed"), at the speed the run's own steps ran at
("comparison_at_run_speed") and of the replay (the simulator fed the real engine's step times,
"comparison_of_replay") are shown beside; a validation that served the workload several times
("repeats", compared with the runs' median) gives the farthest run from that median ("run_spread"),
the machine's own noise. A file may hold one result, a
list of them, or {"results" | "runs" | "cases" | "validations": [...]}. Summaries have the
simulator's summary shape, so predicted and measured compare field by field; the page shows errors
as given and computes none.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from sim.spec.profile import Profile

MAX_RESULT_BYTES = 5 * 1024 * 1024
PROVENANCE_KEYS = ("validation", "fidelity")
LIST_KEYS = ("results", "runs", "cases", "validations")
COMPARED = tuple((f"latency.{metric}.{stat}", f"{label} {stat}")
                 for metric, label in (("ttft_s", "TTFT"), ("tpot_s", "TPOT"), ("itl_s", "ITL"), ("e2e_s", "E2E"))
                 for stat in ("mean", "p50", "p90", "p99"))
COMPARED_OTHER = (("throughput.output_tokens_per_s", "output tokens/s"),
                  ("throughput.requests_per_s", "requests/s"),
                  ("energy.j_per_output_token", "J / output token"))


def get_path(d: Any, dotted: str) -> Any:
    for key in dotted.split("."):
        if not isinstance(d, Mapping):
            return None
        d = d.get(key)
    return d


def _row_errors(rows: Any) -> dict[str, Any]:
    """Comparison rows as {dotted metric: relative error}."""
    if not isinstance(rows, list):
        return {}
    return {str(r["metric"]): r.get("rel_error") for r in rows if isinstance(r, Mapping) and "metric" in r}


def _errors(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The result's relative errors as {dotted metric: error}."""
    if isinstance(obj.get("comparison"), list):
        return _row_errors(obj["comparison"])
    errors = obj.get("errors") or obj.get("relative_errors")
    return dict(errors) if isinstance(errors, Mapping) else {}


def _summaries_of_rows(rows: Any) -> tuple[dict, dict] | None:
    """(predicted, measured) in the summary's nesting, from comparison rows that carry the values
    ("ttft_s.p50" is read as latency.ttft_s.p50); None if the rows carry none."""
    if not isinstance(rows, list):
        return None
    out: tuple[dict, dict] = ({}, {})
    for row in rows:
        if not (isinstance(row, Mapping) and isinstance(row.get("metric"), str)):
            continue
        head = row["metric"].split(".")[0]
        path = (["latency"] if head.endswith("_s") else []) + row["metric"].split(".")
        for summary, side in zip(out, ("predicted", "measured")):
            value = row.get(side)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                node = summary
                for key in path[:-1]:
                    node = node.setdefault(key, {})
                node[path[-1]] = value
    return out if out[0] or out[1] else None


def _error_of(errors: Mapping[str, Any], dotted: str) -> Any:
    for key in (dotted, dotted.removeprefix("latency.")):
        value = errors[key] if key in errors else get_path(errors, key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value
    return None


def results_in(obj: Any, source: str) -> list[dict[str, Any]]:
    """Every result found in a loaded JSON value, labelled with where it came from."""
    if isinstance(obj, list):
        return [r for i, item in enumerate(obj) for r in results_in(item, f"{source}[{i}]")]
    if not isinstance(obj, Mapping):
        return []
    for key in LIST_KEYS:
        if isinstance(obj.get(key), list):
            return results_in(obj[key], f"{source}.{key}")
    if isinstance(obj.get("predicted"), Mapping) and isinstance(obj.get("measured"), Mapping):
        summaries = obj["predicted"], obj["measured"]
    else:
        summaries = _summaries_of_rows(obj.get("comparison"))
    if summaries is None:
        return []
    label = obj.get("name") or obj.get("label") or source
    return [{"label": str(label), "source": source, "predicted": summaries[0], "measured": summaries[1],
             "errors": _errors(obj), "at_speed_errors": _row_errors(obj.get("comparison_at_machine_speed")),
             "run_speed_errors": _row_errors(obj.get("comparison_at_run_speed")),
             "replay_errors": _row_errors(obj.get("comparison_of_replay")),
             "spread_errors": _row_errors(obj.get("run_spread")), "repeats": obj.get("repeats"),
             "same_workload": obj.get("same_workload")}]


def from_profiles(profiles: list[Profile]) -> list[dict[str, Any]]:
    found = []
    for prof in profiles:
        for key in PROVENANCE_KEYS:
            if prof.provenance.get(key) is not None:
                found += results_in(prof.provenance[key], f"{prof.name}: provenance.{key}")
    return found


def from_upload(name: str, data: bytes) -> list[dict[str, Any]]:
    """Results in an uploaded JSON file; ValueError with a readable message when there are none."""
    if len(data) > MAX_RESULT_BYTES:
        raise ValueError(f"{name}: {len(data) / 1e6:.1f} MB; validation results up to "
                         f"{MAX_RESULT_BYTES // (1024 * 1024)} MB are accepted")
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{name}: not a JSON file ({exc})") from None
    found = results_in(obj, name)
    if not found:
        raise ValueError(f"{name}: no validation result in it; expected objects with \"predicted\" and "
                         "\"measured\" run summaries")
    return found


def comparison_rows(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """metric, predicted, measured and the validation's own errors (if it gave them: of the
    prediction, of the prediction at the machine's speed and at the run's own speed, of the
    replay; the runs' spread), per metric."""
    rows = []
    for dotted, label in COMPARED + COMPARED_OTHER:
        predicted = get_path(result["predicted"], dotted)
        measured = get_path(result["measured"], dotted)
        if predicted is None and measured is None:
            continue
        rows.append({"metric": label, "key": dotted, "predicted": predicted, "measured": measured,
                     "relative error": _error_of(result.get("errors") or {}, dotted),
                     "at speed": _error_of(result.get("at_speed_errors") or {}, dotted),
                     "run speed": _error_of(result.get("run_speed_errors") or {}, dotted),
                     "replay": _error_of(result.get("replay_errors") or {}, dotted),
                     "run spread": _error_of(result.get("spread_errors") or {}, dotted)})
    return rows
