"""What the what-if widgets hold, and the scenario dict they stand for.

Pure Python (no Streamlit): the pages keep a `WhatIf` in session state under `wi.<field>` keys and
call `scenario_dict` to get the exact `sim.scenario` document that is simulated, cached and
offered for download, so the CLI (`infercast simulate FILE`) reproduces the numbers shown.

The defaults are either the traffic we try first (a workload choice, not physics) or read from
sim's own dataclasses (scheduler limits, deployment, economics, model dtypes), so nothing here
restates a price, an efficiency or a formula.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sim.metrics import SLO, Economics
from sim.spec.model import PRESETS
from sim.planning.capacity import PlanSettings
from sim.policies import SchedulerConfig
from sim.scenario import DEFAULT_BATCHED_TOKENS, Deployment
from sim.speculative import SpeculativeConfig
from sim.report.toml_writer import dumps as toml_dumps

KEY_PREFIX = "wi."  # session-state keys of the what-if widgets: "wi.<WhatIf field>"
SAVED_KEY = "saved.what_if"  # the last WhatIf, which outlives the widgets when the page changes
DEFAULT_MODEL = "llama-3-8b"
DEFAULT_PROFILE = "h100-sxm"
# 2,000 requests re-simulate in about 0.2 s on a 2-core machine (the tests hold it under 2 s) and
# still give a p99 from 1,600 measured requests.
DEFAULT_NUM_REQUESTS = 2000
WORKLOAD_SOURCES = ("synthetic", "built-in trace", "uploaded trace")
ARRIVALS = ("poisson", "gamma", "constant")
LENGTH_DISTS = ("lognormal", "fixed")
EXPORT_FORMATS = ("toml", "json")

_SCHED = SchedulerConfig()
_DEP = Deployment(profile=DEFAULT_PROFILE)
_ECON = Economics()
_SLO = SLO()
DEFAULT_DRAFT_MODEL = "llama-3.2-1b"
_SPEC = SpeculativeConfig(DEFAULT_DRAFT_MODEL)


@dataclass(frozen=True)
class WhatIf:
    """Every knob of the what-if page; one scenario per chosen profile."""

    model: str = DEFAULT_MODEL
    profiles: tuple[str, ...] = (DEFAULT_PROFILE,)
    weight_dtype: str = PRESETS[DEFAULT_MODEL].weight_dtype
    kv_dtype: str = PRESETS[DEFAULT_MODEL].kv_dtype
    replicas: int = _DEP.replicas
    tp: int = _DEP.tp
    router: str = _DEP.router
    gpu_memory_utilization: float = _DEP.gpu_memory_utilization
    # workload
    workload_source: str = "synthetic"
    arrival: str = "poisson"
    rate_per_s: float = 4.0
    arrival_cv: float = 2.0  # gamma only
    num_requests: int = DEFAULT_NUM_REQUESTS
    input_dist: str = "lognormal"
    input_tokens: int = 1000  # the mean for lognormal, the value for fixed
    input_sigma: float = 0.8
    input_max_tokens: int | None = 7000
    output_dist: str = "lognormal"
    output_tokens: int = 200
    output_sigma: float = 0.8
    output_max_tokens: int | None = 1000
    trace: str = "azure-conv-2023"
    trace_keeps_timing: bool = False  # False: the trace is rescaled to rate_per_s
    # scheduler
    policy: str = _SCHED.policy
    max_num_seqs: int = _SCHED.max_num_seqs
    max_num_batched_tokens: int | None = None  # None: the policy's default
    max_batch_size: int = _SCHED.max_batch_size  # static
    max_queue_delay_s: float = _SCHED.max_queue_delay_s  # static
    enable_prefix_caching: bool = _SCHED.enable_prefix_caching
    # speculative decoding (a draft model proposes tokens the target model verifies)
    speculative: bool = False
    draft_model: str = DEFAULT_DRAFT_MODEL
    num_speculative_tokens: int = _SPEC.num_speculative_tokens
    acceptance_rate: float = _SPEC.acceptance_rate
    # service-level objectives: the user's targets (None: no target)
    slo_ttft_s: float | None = 0.5
    slo_tpot_s: float | None = 0.05
    slo_e2e_s: float | None = _SLO.e2e_s
    # economics (None price: the profile's own)
    price_usd_per_device_h: float | None = _ECON.price_usd_per_device_h
    electricity_usd_per_kwh: float = _ECON.electricity_usd_per_kwh
    pue: float = _ECON.pue
    carbon_g_per_kwh: float = _ECON.carbon_g_per_kwh
    hardware_usd_per_device: float = _ECON.hardware_usd_per_device
    amortization_years: float = _ECON.amortization_years
    seed: int = 1


FIELDS = tuple(f.name for f in dataclasses.fields(WhatIf))


def widget_key(field_name: str) -> str:
    return KEY_PREFIX + field_name


def widget_defaults(what_if: WhatIf | None = None) -> dict[str, Any]:
    """Session-state key -> initial widget value (lists where a multiselect expects one)."""
    values = dataclasses.asdict(what_if or WhatIf())
    values["profiles"] = list(values["profiles"])
    return {widget_key(name): value for name, value in values.items()}


def from_session(session: Mapping[str, Any], base: WhatIf | None = None) -> WhatIf:
    """The WhatIf the widgets currently hold; fields without a widget keep `base`'s values.

    Streamlit forgets the state of widgets a run did not draw (another page, a hidden option), so
    a page keeps its last WhatIf and starts its widgets from it (`widget_defaults(base)`).
    """
    values = {name: session[widget_key(name)] for name in FIELDS if widget_key(name) in session}
    if "profiles" in values:
        values["profiles"] = tuple(values["profiles"])
    return dataclasses.replace(base or WhatIf(), **values)


def default_batched_tokens(policy: str) -> int:
    return DEFAULT_BATCHED_TOKENS[policy]


def _lengths(dist: str, tokens: int, sigma: float, max_tokens: int | None) -> dict[str, Any]:
    if dist == "fixed":
        return {"dist": "fixed", "value": int(tokens)}
    out: dict[str, Any] = {"dist": "lognormal", "mean": float(tokens), "sigma": float(sigma)}
    if max_tokens:
        out["max"] = int(max_tokens)
    return out


def _arrival(w: WhatIf) -> dict[str, Any]:
    if w.arrival == "gamma":
        return {"process": "gamma", "rate_per_s": float(w.rate_per_s), "cv": float(w.arrival_cv)}
    return {"process": w.arrival, "rate_per_s": float(w.rate_per_s)}


def _workload(w: WhatIf, uploaded_trace_path: str | None) -> dict[str, Any]:
    if w.workload_source == "synthetic":
        return {"num_requests": int(w.num_requests), "arrival": _arrival(w),
                "input_tokens": _lengths(w.input_dist, w.input_tokens, w.input_sigma, w.input_max_tokens),
                "output_tokens": _lengths(w.output_dist, w.output_tokens, w.output_sigma, w.output_max_tokens)}
    path = w.trace if w.workload_source == "built-in trace" else uploaded_trace_path
    if not path:
        raise ValueError("workload: upload a trace file first")
    trace: dict[str, Any] = {"path": path, "max_requests": int(w.num_requests)}
    if not w.trace_keeps_timing:
        trace["rate_per_s"] = float(w.rate_per_s)
    return {"trace": trace}


def scenario_dict(w: WhatIf, profile: str, uploaded_trace_path: str | None = None) -> dict[str, Any]:
    """The scenario document for one profile; `scenario_from_dict` accepts it as it is."""
    scheduler: dict[str, Any] = {"policy": w.policy, "max_num_seqs": int(w.max_num_seqs)}
    if w.max_num_batched_tokens:
        scheduler["max_num_batched_tokens"] = int(w.max_num_batched_tokens)
    if w.policy == "static":
        scheduler.update(max_batch_size=int(w.max_batch_size), max_queue_delay_s=float(w.max_queue_delay_s))
    elif w.enable_prefix_caching:
        scheduler["enable_prefix_caching"] = True
    slo = {k: float(v) for k, v in (("ttft_s", w.slo_ttft_s), ("tpot_s", w.slo_tpot_s),
                                      ("e2e_s", w.slo_e2e_s)) if v}
    economics: dict[str, Any] = {
        "electricity_usd_per_kwh": float(w.electricity_usd_per_kwh), "pue": float(w.pue),
        "carbon_g_per_kwh": float(w.carbon_g_per_kwh),
        "hardware_usd_per_device": float(w.hardware_usd_per_device),
        "amortization_years": float(w.amortization_years)}
    if w.price_usd_per_device_h is not None:
        economics["price_usd_per_device_h"] = float(w.price_usd_per_device_h)
    out = {
        "seed": int(w.seed),
        "model": {"name": w.model, "weight_dtype": w.weight_dtype, "kv_dtype": w.kv_dtype},
        "deployment": {"profile": profile, "replicas": int(w.replicas), "tp": int(w.tp),
                       "router": w.router, "gpu_memory_utilization": float(w.gpu_memory_utilization)},
        "scheduler": scheduler,
        "workload": _workload(w, uploaded_trace_path),
        "slo": slo,
        "economics": economics,
    }
    if w.speculative:
        out["speculative"] = {"draft_model": w.draft_model, "num_speculative_tokens": int(w.num_speculative_tokens),
                              "acceptance_rate": float(w.acceptance_rate)}
    return out


def scenario_json(scenario: Mapping[str, Any]) -> str:
    """The cache key and the payload of a cached run: the whole scenario, canonical JSON."""
    return json.dumps(scenario, sort_keys=True, allow_nan=False)


def portable(scenario: Mapping[str, Any]) -> dict[str, Any]:
    """The scenario as a file to share: an uploaded trace is named by its file name only, so the
    scenario finds it when the trace is saved next to it (relative paths are read from there)."""
    out = json.loads(json.dumps(scenario))
    trace = out.get("workload", {}).get("trace")
    if isinstance(trace, dict) and Path(trace["path"]).is_absolute():
        trace["path"] = Path(trace["path"]).name
    return out


def export_scenario(scenario: Mapping[str, Any], fmt: str = "toml") -> tuple[str, str, str]:
    """(file name, text, MIME type) of the scenario file that reproduces a run."""
    data = portable(scenario)
    stem = f"scenario-{data['deployment']['profile']}"
    if fmt == "json":
        return f"{stem}.json", json.dumps(data, indent=1) + "\n", "application/json"
    if fmt == "toml":
        return f"{stem}.toml", toml_dumps(data), "application/toml"
    raise ValueError(f"format: expected one of {', '.join(EXPORT_FORMATS)}, got {fmt!r}")


# ---- capacity plan ---------------------------------------------------------------------------------

TP_DEGREES = (1, 2, 4, 8)
# the load slider's stops (requests/s): roughly 1-1.5-2-3-5 per decade, a plan per stop is cached
LOAD_STOPS = (0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 12.0, 15.0, 20.0, 25.0, 30.0, 40.0,
              50.0, 60.0, 80.0, 100.0, 120.0, 150.0, 200.0, 250.0, 300.0, 400.0, 500.0, 600.0, 800.0, 1000.0)
PLAN_STATS = ("p50", "p90", "p95", "p99", "mean")
# interactive defaults: one seed of 500 requests per probe keeps a 3-candidate plan to a few
# seconds; more seeds give the confidence intervals
PLAN_SEEDS = 1
PLAN_REQUESTS_PER_RUN = 500
# a quicker plan than the CLI's (search runs of 300 simulated seconds, verification runs of 10,000
# requests), still long enough for a backlog to show (sim.overload)
PLAN_RUN_DURATION_S = 300.0
PLAN_VERIFY_REQUESTS = 10000


def candidate_options(device_counts: Mapping[str, int]) -> list[str]:
    """PROFILE and PROFILE:tpN for every TP degree the profile's machine can host."""
    return [name if tp == 1 else f"{name}:tp{tp}"
            for name, count in sorted(device_counts.items()) for tp in TP_DEGREES if tp <= count]


def plan_settings(target_rate_per_s: float, seeds: int, stat: str, requests_per_run: int,
                  sensitivity: bool = False) -> dict[str, Any]:
    """The [plan] table (less candidates) that `sim.planning.capacity.settings_from_dict` reads. Without
    `sensitivity` the plan skips re-sizing at the planner's load factors (about twice as fast;
    the load slider answers the same question)."""
    return {"target_rate_per_s": float(target_rate_per_s), "seeds": int(seeds), "stat": stat,
            "requests_per_run": int(requests_per_run), "run_duration_s": PLAN_RUN_DURATION_S,
            "verify_requests": PLAN_VERIFY_REQUESTS,
            "load_factors": list(PlanSettings().load_factors) if sensitivity else []}


def with_slo(scenario: Mapping[str, Any], ttft_s: float | None, tpot_s: float | None,
             e2e_s: float | None) -> dict[str, Any]:
    out = json.loads(json.dumps(scenario))
    out["slo"] = {k: float(v) for k, v in (("ttft_s", ttft_s), ("tpot_s", tpot_s), ("e2e_s", e2e_s)) if v}
    return out


def export_plan(scenario: Mapping[str, Any], candidates: list[str], settings: Mapping[str, Any],
                fmt: str = "toml") -> tuple[str, str, str]:
    """(file name, text, MIME type) of the scenario with its [plan] table: `infercast plan FILE`."""
    data = portable(scenario)
    data["plan"] = {"candidates": list(candidates), **settings}
    if fmt == "json":
        return "plan.json", json.dumps(data, indent=1) + "\n", "application/json"
    if fmt == "toml":
        return "plan.toml", toml_dumps(data), "application/toml"
    raise ValueError(f"format: expected one of {', '.join(EXPORT_FORMATS)}, got {fmt!r}")
