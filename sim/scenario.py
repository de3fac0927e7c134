"""Scenario: one file (TOML, YAML or JSON) that fully determines a run, and `run_scenario`.

    seed = 1
    [model]        name = "llama-3-8b" (a preset or a path to a config.json), weight_dtype, kv_dtype
    [deployment]   profile = "h100-sxm", replicas, tp, gpu_memory_utilization, router,
                   speed_variability = true (the profile's measured step-time scatter, if it has one)
    [scheduler]    policy = "continuous" | "chunked" | "static", max_num_seqs,
                   max_num_batched_tokens, block_size_tokens, max_batch_size, max_queue_delay_s
    [workload]     see sim.traffic.workload.workload_from_dict (arrivals + lengths, closed loop, or a trace)
    [slo]          ttft_s, tpot_s, e2e_s
    [economics]    price_usd_per_device_h, electricity_usd_per_kwh, pue, carbon_g_per_kwh,
                   hardware_usd_per_device, amortization_years
    [measurement]  warmup_fraction, drain_fraction, timeline_interval_s
    [plan], [sweep] settings of `infercast plan` / `infercast sweep` (sim.planning.capacity); a run ignores them

A run is refused up front (InputError) when its workload asks for more than MAX_REQUESTS_PER_RUN
requests, or its deployment for more than MAX_REPLICAS replicas: a simulation of that size takes
longer than anyone waits for without a progress bar.

A scenario round-trips: `scenario_from_dict(s.to_dict())` is `s`, so the dashboard can export the
scenario it ran and the CLI reproduces its numbers. Same scenario and seed => identical results.
Defaults: max_num_batched_tokens 8192 for continuous batching, 2048 for chunked prefill (vLLM's
defaults for online serving); gpu_memory_utilization 0.9 (vLLM's default); block size 16.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from sim.cost_model import CostModel
from sim.engine import ROUTERS, Cluster, ClosedLoopLoad, OpenLoop
from sim.errors import InputError
from sim.files import read_text
from sim.kv_cache import KVCacheManager, KVCapacity, kv_capacity
from sim.metrics import SLO, Economics, RunContext, RunRecorder, summarize
from sim.spec.model import KV_DTYPES, WEIGHT_DTYPES, ModelSpec, resolve_model
from sim.policies import POLICIES, SchedulerConfig, make_scheduler
from sim.spec.profile import Profile, load_profile
from sim.speculative import SpeculativeConfig, SpeculativeCostModel
from sim.speed_variability import SpeedProcess
from sim.traffic.workload import (ClosedLoop, WorkloadSpec, arrival_problem, generate, workload_from_dict,
                          workload_warnings)

DEFAULT_BATCHED_TOKENS = {"continuous": 8192, "chunked": 2048, "static": 8192}
MAX_REQUESTS_PER_RUN = 2_000_000  # beyond it a run takes many minutes, with no progress shown
MAX_SEED = 2**63 - 1
MAX_REPLICAS = 10_000  # one engine process and KV manager each: a larger cluster takes minutes to set up


@dataclass(frozen=True)
class Deployment:
    profile: str
    replicas: int = 1
    tp: int = 1
    gpu_memory_utilization: float = 0.9
    router: str = "round_robin"
    # steps scatter as the profile's measured machine did (sim.speed_variability); false: every
    # step takes its cost-model (median) time
    speed_variability: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.speed_variability, bool):
            raise ValueError(f"speed_variability: expected true or false, got {self.speed_variability!r}")
        for name in ("replicas", "tp"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}: expected a positive integer, got {value!r}")
        if self.replicas > MAX_REPLICAS:
            raise ValueError(f"replicas: expected at most {MAX_REPLICAS:,} (MAX_REPLICAS), got {self.replicas:,}")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError(f"gpu_memory_utilization: expected 0 < x <= 1, got {self.gpu_memory_utilization!r}")
        if self.router not in ROUTERS:
            raise ValueError(f"router: expected one of {', '.join(ROUTERS)}, got {self.router!r}")


@dataclass(frozen=True)
class Measurement:
    warmup_fraction: float = 0.1
    drain_fraction: float = 0.1
    timeline_interval_s: float | None = None

    def __post_init__(self) -> None:
        if not (0 <= self.warmup_fraction < 1 and 0 <= self.drain_fraction < 1
                and self.warmup_fraction + self.drain_fraction < 1):
            raise ValueError("warmup_fraction: warmup_fraction and drain_fraction must be in [0, 1) "
                             "and sum to less than 1")
        if self.timeline_interval_s is not None and not self.timeline_interval_s > 0:
            raise ValueError(f"timeline_interval_s: expected > 0, got {self.timeline_interval_s!r}")


@dataclass(frozen=True)
class Scenario:
    model: str
    deployment: Deployment
    workload: WorkloadSpec
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    weight_dtype: str | None = None
    kv_dtype: str | None = None
    slo: SLO = field(default_factory=SLO)
    economics: Economics = field(default_factory=Economics)
    measurement: Measurement = field(default_factory=Measurement)
    speculative: SpeculativeConfig | None = None
    seed: int = 0
    source: str = "<scenario>"

    def model_spec(self) -> ModelSpec:
        return resolve_model(self.model).with_dtypes(self.weight_dtype, self.kv_dtype)

    def to_dict(self) -> dict[str, Any]:
        model: dict[str, Any] = {"name": self.model}
        if self.weight_dtype:
            model["weight_dtype"] = self.weight_dtype
        if self.kv_dtype:
            model["kv_dtype"] = self.kv_dtype
        plain = lambda obj: {k: v for k, v in dataclasses.asdict(obj).items() if v is not None}  # noqa: E731
        return {"seed": self.seed, "model": model, "deployment": plain(self.deployment),
                "scheduler": plain(self.scheduler), "workload": self.workload.to_dict(),
                "slo": plain(self.slo), "economics": plain(self.economics),
                "measurement": plain(self.measurement),
                **({"speculative": plain(self.speculative)} if self.speculative else {})}


_SECTIONS = {"seed", "model", "deployment", "scheduler", "workload", "slo", "economics", "measurement",
             "speculative"}
_OTHER_COMMANDS_SECTIONS = {"plan", "sweep"}  # read by sim.planning.capacity / sim.planning.sweep; a run ignores them


def _section(data: dict, key: str, where: str, cls: type, required: bool = False,
             overrides: dict[str, Any] | None = None) -> Any:
    raw = data.get(key)
    if raw is None:
        if required:
            raise InputError(where, key, "missing section")
        raw = {}
    if not isinstance(raw, dict):
        raise InputError(where, key, f"expected a table of settings, got {type(raw).__name__}")
    fields = dataclasses.fields(cls)
    names = {f.name for f in fields}
    for name in raw:
        if name not in names:
            raise InputError(where, f"{key}.{name}", f"unknown key; expected one of: {', '.join(sorted(names))}")
    for name, value in raw.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise InputError(where, f"{key}.{name}", f"expected a finite number, got {value!r}")
    kwargs = {**(overrides or {}), **raw}
    for f in fields:
        if f.name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise InputError(where, f"{key}.{f.name}", "missing (required)")
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise InputError(where, key, str(exc)) from None
    except ValueError as exc:
        fname, _, problem = str(exc).partition(": ")
        raise InputError(where, f"{key}.{fname}", problem or str(exc)) from None


def scenario_from_dict(data: Any, where: str = "<scenario>", base_dir: str | Path | None = None) -> Scenario:
    if not isinstance(data, dict):
        raise InputError(where, "", "expected a table of settings")
    for key in data:
        if key in _OTHER_COMMANDS_SECTIONS:
            if not isinstance(data[key], dict):
                raise InputError(where, key, f"expected a table of settings, got {type(data[key]).__name__}")
        elif key not in _SECTIONS:
            raise InputError(where, str(key), "unknown section; expected one of: "
                             f"{', '.join(sorted(_SECTIONS | _OTHER_COMMANDS_SECTIONS))}")
    seed = data.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED:
        raise InputError(where, "seed", f"expected an integer from 0 to 2^63 - 1, got {seed!r}")
    model = data.get("model")
    if isinstance(model, str):
        model = {"name": model}
    if not isinstance(model, dict) or not isinstance(model.get("name"), str):
        raise InputError(where, "model.name", "expected a preset name or a path to a config.json")
    for key in model:
        if key not in ("name", "weight_dtype", "kv_dtype"):
            raise InputError(where, f"model.{key}", "unknown key; expected name, weight_dtype, kv_dtype")
    if model.get("weight_dtype") not in (None, *WEIGHT_DTYPES):
        raise InputError(where, "model.weight_dtype", f"expected one of {', '.join(WEIGHT_DTYPES)}")
    if model.get("kv_dtype") not in (None, *KV_DTYPES):
        raise InputError(where, "model.kv_dtype", f"expected one of {', '.join(KV_DTYPES)}")
    try:
        resolve_model(model["name"])
    except InputError as exc:
        raise InputError(where, "model.name", exc.problem) from None
    sched_raw = data.get("scheduler") or {}
    policy = sched_raw.get("policy", "continuous") if isinstance(sched_raw, dict) else "continuous"
    if policy not in POLICIES:
        raise InputError(where, "scheduler.policy", f"expected one of {', '.join(POLICIES)}, got {policy!r}")
    scheduler = _section(data, "scheduler", where, SchedulerConfig,
                         overrides={"max_num_batched_tokens": DEFAULT_BATCHED_TOKENS[policy]})
    workload_raw = data.get("workload")
    if workload_raw is None:
        raise InputError(where, "workload", "missing section")
    workload = workload_from_dict(workload_raw, where, base_dir=base_dir)
    speculative = None
    if data.get("speculative") is not None:
        speculative = _section(data, "speculative", where, SpeculativeConfig)
        if not isinstance(speculative.draft_model, str):
            raise InputError(where, "speculative.draft_model", f"expected a preset name or a path to a "
                             f"config.json, got {speculative.draft_model!r}")
        try:
            resolve_model(speculative.draft_model)
        except InputError as exc:
            raise InputError(where, "speculative.draft_model", exc.problem) from None
    return Scenario(
        speculative=speculative,
        model=model["name"], weight_dtype=model.get("weight_dtype"), kv_dtype=model.get("kv_dtype"),
        deployment=_section(data, "deployment", where, Deployment, required=True),
        scheduler=scheduler, workload=workload,
        slo=_section(data, "slo", where, SLO), economics=_section(data, "economics", where, Economics),
        measurement=_section(data, "measurement", where, Measurement), seed=seed, source=where)


def load_scenario_dict(path: str | Path) -> dict:
    path = Path(path)
    text = read_text(path, "scenario")
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            return tomllib.loads(text)
        if suffix in (".yaml", ".yml"):
            return yaml.safe_load(text) or {}
        return json.loads(text)
    except (ValueError, yaml.YAMLError, RecursionError) as exc:  # JSON and TOML errors are ValueErrors
        lines = str(exc).splitlines() or [type(exc).__name__]
        raise InputError(str(path), "", f"cannot parse: {lines[0]}") from None


def load_scenario(path: str | Path) -> Scenario:
    return scenario_from_dict(load_scenario_dict(path), str(path), base_dir=Path(path).parent)


@dataclass
class RunResult:
    scenario: Scenario
    summary: dict
    recorder: RunRecorder
    kv: KVCapacity

    def request_rows(self) -> list[dict]:
        reasons = self.recorder.rejected_reasons
        rows = []
        for r in self.recorder.requests:
            done = r.finish_s >= 0
            rows.append({
                "request_id": r.request_id, "replica": r.replica, "arrival_s": r.arrival_s,
                "prompt_tokens": r.prompt_tokens, "output_tokens": r.output_tokens,
                "first_token_s": r.first_token_s if done else None,
                "finish_s": r.finish_s if done else None,
                "ttft_s": r.first_token_s - r.arrival_s if done else None,
                "e2e_s": r.finish_s - r.arrival_s if done else None,
                "tpot_s": ((r.finish_s - r.first_token_s) / (r.output_tokens - 1)
                           if done and r.output_tokens > 1 else None),
                "preemptions": r.num_preemptions, "cached_tokens": r.cached_tokens,
                "measured": r.is_measured,
                "rejected": reasons.get(r.request_id, ""),
            })
        return rows


@dataclass
class Prepared:
    """Everything a run needs, built from a scenario; shared by the simulated and the real engine."""

    scenario: Scenario
    model: ModelSpec
    profile: Profile
    cost: CostModel
    kv: KVCapacity
    load: OpenLoop | ClosedLoopLoad
    prefix_block_tokens: int | None
    timeline_interval_s: float
    router_rng: np.random.Generator
    is_offline: bool
    # how the request table was made (sim.traffic.workload.RequestTable.notes: rows dropped or moved, ...)
    workload_notes: dict[str, int] = field(default_factory=dict)

    def make_schedulers(self, recorder: RunRecorder) -> list:
        cfg = self.scenario.scheduler
        return [make_scheduler(cfg, KVCacheManager(self.kv.num_blocks, cfg.block_size_tokens), recorder,
                               self.model.max_position_embeddings, self.prefix_block_tokens)
                for _ in range(self.scenario.deployment.replicas)]

    def run_context(self) -> RunContext:
        dep, profile = self.scenario.deployment, self.profile
        price = profile.price.usd_per_device_h if profile.price else 0.0
        return RunContext(dep.replicas, dep.tp, self.cost.idle_power_w, price, profile.power.method,
                          profile.power.is_estimated, self.is_offline, self.scenario.workload.is_closed_loop)


def requested_size(workload: WorkloadSpec) -> tuple[str, int | None]:
    """The field that sets how many requests a run has, and its value (None: a whole trace)."""
    if workload.trace is not None:
        return "workload.trace.max_requests", workload.trace.max_requests
    return "workload.num_requests", workload.num_requests


def check_run_size(where: str, field_name: str, count: int | None, limit: int = MAX_REQUESTS_PER_RUN,
                   why: str = "MAX_REQUESTS_PER_RUN") -> None:
    """Refuse a run of more than `limit` requests before any of them is made."""
    if count is not None and count > limit:
        raise InputError(where, field_name, f"{count:,} requests; a run is limited to {limit:,} ({why}); "
                         "ask for fewer")


def prepare(sc: Scenario, profile: Profile | None = None) -> Prepared:
    model = sc.model_spec()
    profile = profile or load_profile(sc.deployment.profile)
    dep, cfg = sc.deployment, sc.scheduler
    draft = None
    if sc.speculative is not None:
        draft = resolve_model(sc.speculative.draft_model).with_dtypes(model.weight_dtype, model.kv_dtype)
        cost: CostModel = SpeculativeCostModel(model, profile, dep.tp, draft, sc.speculative)
    else:
        cost = CostModel(model, profile, dep.tp)
    cap = kv_capacity(model, profile, dep.tp, dep.gpu_memory_utilization, cfg.block_size_tokens,
                      cfg.max_num_batched_tokens, cfg.max_num_seqs, draft)
    workload_rng, router_rng = np.random.default_rng(sc.seed).spawn(2)
    workload = sc.workload
    if workload.is_closed_loop and workload.num_requests is None and workload.trace is None:
        raise InputError(sc.source, "workload.num_requests", "required for a closed loop")
    field_name, count = requested_size(workload)
    check_run_size(sc.source, field_name, count)
    table = generate(workload, workload_rng)
    if len(table) == 0:
        raise InputError(sc.source, "workload", "the workload has no requests")
    check_run_size(sc.source, field_name, len(table))  # a whole trace
    problem = arrival_problem(table.arrival_s)
    if problem:
        raise InputError(sc.source, "workload.arrival" if workload.arrival is not None else "workload.trace",
                         problem)
    if workload.is_closed_loop:  # rows in issue order; arrival times come from the users
        arrival = workload.arrival
        assert isinstance(arrival, ClosedLoop)
        load: OpenLoop | ClosedLoopLoad = ClosedLoopLoad(arrival.concurrency, arrival.think_time_s,
                                                         table.prompt_tokens, table.output_tokens,
                                                         table.prefix_hashes)
        span = None
    else:
        load = OpenLoop(table.arrival_s, table.prompt_tokens, table.output_tokens, table.prefix_hashes)
        span = float(table.arrival_s[-1])
    interval = sc.measurement.timeline_interval_s or (max(span / 2000.0, 0.01) if span else 0.5)
    return Prepared(sc, model, profile, cost, cap, load, table.prefix_block_tokens, interval, router_rng,
                    is_offline=span == 0.0, workload_notes=dict(table.notes))


def finish_summary(prep: Prepared, recorder: RunRecorder, schedulers: list) -> dict:
    """The run summary (sim.metrics) plus what the deployment was."""
    sc, model, profile, cap = prep.scenario, prep.model, prep.profile, prep.kv
    dep, cfg = sc.deployment, sc.scheduler
    summary = summarize(recorder, prep.run_context(), sc.slo, sc.economics, sc.measurement.warmup_fraction,
                        sc.measurement.drain_fraction)
    summary["model"] = {"name": model.name, "weight_dtype": model.weight_dtype, "kv_dtype": model.kv_dtype,
                        "params": model.num_params, "weight_bytes": model.weight_bytes}
    summary["deployment"] = {"profile": profile.name, "profile_source": profile.source,
                             "profile_path": profile.path, "replicas": dep.replicas, "tp": dep.tp,
                             "devices": dep.replicas * dep.tp, "scheduler": cfg.policy}
    summary["kv_cache"] = {"num_blocks_per_replica": cap.num_blocks, "block_size_tokens": cap.block_size_tokens,
                           "tokens_per_replica": cap.num_tokens,
                           "activation_reserve_bytes": cap.activation_reserve_bytes}
    caches = [sch.prefix_cache for sch in schedulers if sch.prefix_cache is not None]
    looked_up = sum(c.lookup_tokens for c in caches)
    summary["prefix_cache"] = {
        "enabled": cfg.enable_prefix_caching, "active": bool(caches),
        "block_tokens": caches[0].block_tokens if caches else None,
        "hit_tokens": sum(c.hit_tokens for c in caches), "lookup_tokens": looked_up,
        "hit_rate": sum(c.hit_tokens for c in caches) / looked_up if looked_up else None,
        "evictions": sum(c.num_evictions for c in caches)}
    summary["workload"] = {"description": sc.workload.describe(), "notes": dict(prep.workload_notes),
                           "warnings": workload_warnings(prep.workload_notes)}
    # No price per device-hour (the profile has none, the scenario sets none), no electricity price
    # and no owned hardware: the run has no cost (the one place this is decided). sim.metrics counts its rental as 0 (the planner sums it); outputs show
    # "no price" / null (sim.report.text.unpriced_as_null).
    summary["cost"]["is_priced"] = bool(
        sc.economics.price_usd_per_device_h is not None or profile.price is not None
        or sc.economics.hardware_usd_per_device > 0 or sc.economics.electricity_usd_per_kwh > 0)
    summary["seed"] = sc.seed
    return summary


REJECTION_FIELDS = {  # a scheduler's rejection reason -> the setting that causes it
    "prompt_exceeds_max_num_batched_tokens": "scheduler.max_num_batched_tokens",
    "exceeds_max_model_len": "model.name",
    "exceeds_kv_capacity": "deployment.gpu_memory_utilization",
}


def rejections(result: RunResult) -> str | None:
    """None when every request could be served; a warning (one line) when some could never be
    (they are counted as rejected, and the summary leaves them out); InputError when none could:
    the run measured nothing, and the setting that rejects them is named."""
    requests = result.summary["requests"]
    if not requests["rejected"]:
        return None
    by_reason = requests["rejected_by_reason"]
    detail = ", ".join(f"{count} {reason}" for reason, count in by_reason.items())
    if requests["rejected"] < requests["arrived"]:
        return (f"{requests['rejected']} of {requests['arrived']} requests can never be served with "
                f"this configuration ({detail}); they are counted as rejected and left out of the figures")
    sc = result.scenario
    reason = max(by_reason, key=by_reason.get)
    prompts = _span([r.prompt_tokens for r in result.recorder.requests])
    totals = _span([r.prompt_tokens + r.output_tokens for r in result.recorder.requests])
    if reason == "prompt_exceeds_max_num_batched_tokens":
        problem = (f"{sc.scheduler.max_num_batched_tokens} tokens a step is less than every prompt "
                   f"({prompts} tokens), and {sc.scheduler.policy} batching does not split prompts: every "
                   "request would be rejected; raise it or use policy = \"chunked\"")
    elif reason == "exceeds_max_model_len":
        problem = (f"{sc.model} holds {sc.model_spec().max_position_embeddings} tokens a sequence "
                   f"(max_position_embeddings), fewer than every request's prompt + output ({totals} tokens): "
                   "every request would be rejected")
    elif reason == "exceeds_kv_capacity":
        problem = (f"the KV cache holds {result.kv.num_tokens} tokens a replica, fewer than every request's "
                   f"prompt + output ({totals} tokens): every request would be rejected")
    else:
        problem = f"every request would be rejected ({detail})"
    raise InputError(sc.source, REJECTION_FIELDS.get(reason, "workload"), problem)


def _span(values: list[int]) -> str:
    return f"{min(values)}" if min(values) == max(values) else f"{min(values)} to {max(values)}"


SPEED_STREAM = 0x5BEED  # keeps the speed draws' generators apart from the workload's and the router's


def has_speed_variability(prep: Prepared) -> bool:
    return prep.scenario.deployment.speed_variability and prep.profile.cost.speed_variability is not None


def speed_processes(prep: Prepared, speed_draw: int | None) -> list[SpeedProcess | None]:
    """One machine-speed process per replica (sim.speed_variability), or None each."""
    replicas = prep.scenario.deployment.replicas
    if speed_draw is None or not has_speed_variability(prep):
        return [None] * replicas
    variability = prep.profile.cost.speed_variability
    assert variability is not None
    return [SpeedProcess(variability, np.random.default_rng([SPEED_STREAM, prep.scenario.seed, speed_draw, i]))
            for i in range(replicas)]


def run_scenario(sc: Scenario, profile: Profile | None = None) -> RunResult:
    prep = prepare(sc, profile)
    return run_prepared(prep, prep.cost)


def run_prepared(prep: Prepared, cost: CostModel, speed_draw: int | None = 0) -> RunResult:
    """Simulate a prepared scenario with this cost model on every replica (prep.cost, or one
    that wraps it, as `sim.replay` does). speed_draw: which draw of the profile's speed
    variability the replicas run with, where it has one and the scenario keeps it on (the
    workload is the same in every draw); None: none (measured step times replayed)."""
    sc = prep.scenario
    recorder = RunRecorder()
    schedulers = prep.make_schedulers(recorder)
    dep, ms = sc.deployment, sc.measurement
    Cluster(schedulers, [cost] * dep.replicas, dep.router, prep.router_rng, recorder,
            ms.warmup_fraction, ms.drain_fraction, prep.timeline_interval_s,
            speed_processes(prep, speed_draw)).run(prep.load)
    return RunResult(sc, finish_summary(prep, recorder, schedulers), recorder, prep.kv)
