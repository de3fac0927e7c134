"""The simulator calls behind the pages, cached on their full inputs.

`simulate` is keyed on the canonical JSON of the whole scenario (`state.scenario_json`), so any
change of any field re-simulates and going back to an earlier setting is instant. Cached values
are plain data (the summary, CDF points, thinned timelines), never simulator objects. Bad input
comes back as {"error": message} for the page to show, not as an exception.
"""

from __future__ import annotations

import json
from typing import Any

import streamlit as st

from sim.report import catalog as profile_catalog, figures
from sim.errors import InputError
from sim.spec.profile import Profile, list_profiles, load_profile, resolve_profile_path
from sim.scenario import run_scenario, scenario_from_dict

TIMELINE_POINTS = 3000  # per run, all replicas together: enough for a 1000-px-wide chart


def profile_stamp(names: list[str] | tuple[str, ...]) -> str:
    """Where each profile's file is and when it last changed: part of every cache key, so a
    profile re-written by `calibrate` is simulated afresh."""
    parts = []
    for name in names:
        try:
            path = resolve_profile_path(name)
            stat = path.stat()
            parts.append(f"{path}:{stat.st_mtime_ns}:{stat.st_size}")
        except (InputError, OSError):
            parts.append(f"{name}:missing")
    return ";".join(parts)


@st.cache_data(max_entries=128, show_spinner="Simulating ...")
def simulate(scenario_json: str, profile_stamp: str = "") -> dict[str, Any]:
    """Run one scenario (canonical JSON) -> {"summary", "cdf", "timeline"} or {"error"}.
    `profile_stamp` (see `profile_stamp`) only keys the cache."""
    try:
        scenario = scenario_from_dict(json.loads(scenario_json), "what-if")
        result = run_scenario(scenario)
    except (InputError, ValueError) as exc:
        return {"error": str(exc)}
    return {"summary": result.summary, "cdf": figures.latency_cdf_data(result),
            "timeline": figures.timeline_data(result.recorder, max_points=TIMELINE_POINTS)}


@st.cache_data(ttl=60, show_spinner=False)
def profile_names() -> list[str]:
    """Every loadable profile's name (shipped ones and $INFERCAST_PROFILES), sorted."""
    return sorted({p.stem for p in list_profiles()})


@st.cache_data(ttl=60, show_spinner=False)
def catalog_rows() -> list[dict[str, Any]]:
    return profile_catalog.list_rows()


def profile(name: str) -> Profile:
    return load_profile(name)


@st.cache_data(ttl=60, show_spinner=False)
def profile_text(name: str) -> str:
    return profile_catalog.show(name)


@st.cache_data(max_entries=64, show_spinner="Planning: searching each candidate's capacity ...")
def capacity_plan(scenario_json: str, candidates: tuple[str, ...], settings_json: str,
                  profile_stamp: str = "") -> dict[str, Any]:
    """`sim.planning.capacity.plan` in this process (the serial executor), or {"error": message}.
    `profile_stamp` only keys the cache."""
    from sim.planning import capacity as planner

    where = "capacity plan"
    try:
        cands = [planner.parse_candidate(c, where, "candidates") for c in candidates]
        settings = planner.settings_from_dict(json.loads(settings_json), where)
        return planner.plan(json.loads(scenario_json), cands, settings, where=where)
    except (InputError, ValueError) as exc:
        return {"error": str(exc)}


def has_report() -> bool:
    import importlib.util

    return importlib.util.find_spec("sim.report.document") is not None


@st.cache_data(max_entries=16, show_spinner=False)
def report_html(plan_json: str) -> str:
    """The self-contained HTML capacity report of a plan result (`sim.report.document`)."""
    from sim.report import document as report

    return report.render_html(json.loads(plan_json))
