"""Workload generation: statistics match parameters, tables validate, scenarios parse and round-trip."""

from __future__ import annotations

import math
import re
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.errors import InputError
from sim.request import RequestSpec
from sim.traffic.workload import (
    AllAtOnce,
    ClosedLoop,
    Constant,
    Empirical,
    Fixed,
    Gamma,
    LogNormal,
    Piecewise,
    Poisson,
    RequestTable,
    TraceSpec,
    Uniform,
    WorkloadSpec,
    generate,
    sample_lengths,
    workload_from_dict,
)


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def gaps_cv(times: np.ndarray) -> float:
    gaps = np.diff(times)
    return float(gaps.std() / gaps.mean())


# ---------------------------------------------------------------------------------- arrivals

def test_poisson_rate_and_cv_match() -> None:
    times = Poisson(4.0).sample_times(rng(), 200_000)
    assert times[0] == 0.0 and (np.diff(times) >= 0).all()
    assert (times.size - 1) / times[-1] == pytest.approx(4.0, rel=0.01)
    assert gaps_cv(times) == pytest.approx(1.0, abs=0.02)


@pytest.mark.parametrize("cv", [0.5, 1.0, 3.0])
def test_gamma_rate_and_cv_match(cv: float) -> None:
    times = Gamma(10.0, cv).sample_times(rng(1), 400_000)
    assert (times.size - 1) / times[-1] == pytest.approx(10.0, rel=0.03)
    assert gaps_cv(times) == pytest.approx(cv, rel=0.03)


def test_constant_is_evenly_spaced() -> None:
    np.testing.assert_allclose(Constant(5.0).sample_times(rng(), 4), [0.0, 0.2, 0.4, 0.6])


@pytest.mark.parametrize("process", [Poisson(math.inf), Gamma(math.inf, 2.0), Constant(math.inf), AllAtOnce()])
def test_infinite_rate_puts_every_request_at_zero(process: object) -> None:
    times = process.sample_times(rng(), 1000)  # type: ignore[attr-defined]
    assert times.shape == (1000,) and not times.any()


def test_infinite_rate_from_a_scenario() -> None:
    spec = workload_from_dict({"num_requests": 50, "arrival": {"process": "poisson", "rate_per_s": "inf"},
                               "input_tokens": 10, "output_tokens": 5}, "s.toml")
    assert not generate(spec, rng()).arrival_s.any()
    assert spec.to_dict()["arrival"] == {"process": "poisson", "rate_per_s": "inf"}


def test_piecewise_counts_per_segment_match_the_rates() -> None:
    process = Piecewise(((0, 2.0), (100, 10.0), (200, 0.0), (300, 5.0)), period_s=400.0)
    assert process.mean_rate_per_s == pytest.approx((200 + 1000 + 0 + 500) / 400)
    times = process.sample_times(rng(2), 170_000)
    num_periods = int(times[-1] // 400)
    phase = times[times < num_periods * 400] % 400
    counts = np.histogram(phase, bins=[0, 100, 200, 300, 400])[0]
    expected = np.array([2.0, 10.0, 0.0, 5.0]) * 100 * num_periods
    assert counts[2] == 0
    for got, want in zip(counts, expected):
        assert abs(got - want) <= 5 * math.sqrt(want) + 1e-9


def test_piecewise_without_period_keeps_the_last_rate() -> None:
    process = Piecewise(((0, 1.0), (50, 20.0)))
    times = process.sample_times(rng(3), 100_000)
    assert (np.diff(times) >= 0).all()
    early = np.count_nonzero(times < 50)
    assert abs(early - 50) <= 5 * math.sqrt(50)
    late = times[times >= 60]
    assert (late.size - 1) / (late[-1] - late[0]) == pytest.approx(20.0, rel=0.02)


def test_piecewise_leading_zero_rate_delays_the_first_arrival() -> None:
    times = Piecewise(((0, 0.0), (10, 1000.0)), period_s=20.0).sample_times(rng(), 5000)
    assert (times % 20 >= 10).all()


@pytest.mark.parametrize("make, field", [
    (lambda: Piecewise(((5, 1.0),)), "segments"),
    (lambda: Piecewise(((0, 1.0), (0, 2.0))), "segments[1].start_s"),
    (lambda: Piecewise(((0, 1.0), (10, -2.0))), "segments[1].rate_per_s"),
    (lambda: Piecewise(((0, 1.0), (10, 0.0))), "segments[1].rate_per_s"),
    (lambda: Piecewise(((0, 1.0), (10, 2.0)), period_s=10), "period_s"),
    (lambda: Piecewise(((0, 0.0),), period_s=10), "segments"),
    (lambda: Poisson(0), "rate_per_s"),
    (lambda: Gamma(1.0, 0), "cv"),
    (lambda: ClosedLoop(0), "concurrency"),
    (lambda: ClosedLoop(2, -1.0), "think_time_s"),
])
def test_bad_arrival_parameters_name_the_field(make: object, field: str) -> None:
    with pytest.raises(ValueError, match=rf"^{re.escape(field)}: "):
        make()  # type: ignore[operator]


# ---------------------------------------------------------------------------------- lengths

def test_fixed_and_uniform() -> None:
    assert (Fixed(7).sample(rng(), 10) == 7).all()
    values = Uniform(10, 20).sample(rng(), 100_000)
    assert values.min() == 10 and values.max() == 20  # both ends included
    assert values.mean() == pytest.approx(15.0, rel=0.005)
    assert values.dtype == np.int64


def test_lognormal_mean_and_median_parametrisations() -> None:
    by_mean = LogNormal(mean=200.0, sigma=0.5).sample(rng(), 200_000)
    assert by_mean.mean() == pytest.approx(200.0, rel=0.01)
    by_median = LogNormal(median=150.0, sigma=0.8).sample(rng(), 200_000)
    assert np.median(by_median) == pytest.approx(150.0, rel=0.02)
    assert by_median.min() >= 1


def test_lognormal_cap_is_counted() -> None:
    dist = LogNormal(mean=200.0, sigma=1.0, max=300)
    values, num_clipped = dist.sample_counted(rng(5), 50_000)
    raw = np.rint(rng(5).lognormal(dist.mu, 1.0, 50_000))
    assert num_clipped == np.count_nonzero(raw > 300) + np.count_nonzero(raw < 1) > 0
    assert values.max() == 300


def test_lognormal_needs_exactly_one_of_mean_and_median() -> None:
    with pytest.raises(ValueError, match="^mean: "):
        LogNormal(mean=1.0, median=1.0, sigma=1.0)
    with pytest.raises(ValueError, match="^mean: "):
        LogNormal(sigma=1.0)


def test_empirical_resamples_the_values() -> None:
    values = Empirical(np.array([1, 5, 5, 9])).sample(rng(), 40_000)
    assert set(np.unique(values)) == {1, 5, 9}
    assert np.mean(values == 5) == pytest.approx(0.5, abs=0.02)
    with pytest.raises(ValueError, match="^values: "):
        Empirical(np.array([1, 0]))
    with pytest.raises(ValueError, match="^values: "):
        Empirical(np.array([1.5]))


# ---------------------------------------------------------------------------------- table

def test_table_validates_on_construction() -> None:
    ok = RequestTable(np.array([0.0, 1.0]), np.array([3, 4]), np.array([1, 2]), source="t")
    assert len(ok) == 2
    bad = [
        ({"prompt_tokens": np.array([3])}, "prompt_tokens"),
        ({"output_tokens": np.array([1, 0])}, "output_tokens"),
        ({"prompt_tokens": np.array([1.0, 2.0])}, "prompt_tokens"),
        ({"arrival_s": np.array([1.0, 0.5])}, "arrival_s"),
        ({"arrival_s": np.array([-1.0, 0.5])}, "arrival_s"),
        ({"arrival_s": np.array([0.0, np.nan])}, "arrival_s"),
        ({"prefix_hashes": ((1,),)}, "prefix_hashes"),
    ]
    base = {"arrival_s": np.array([0.0, 1.0]), "prompt_tokens": np.array([3, 4]),
            "output_tokens": np.array([1, 2])}
    for change, field in bad:
        with pytest.raises(ValueError, match=f"^{field}: "):
            RequestTable(**{**base, **change})


def test_table_is_read_only_specs_and_slice() -> None:
    table = RequestTable(np.array([0.0, 1.0, 2.5]), np.array([3, 4, 5]), np.array([1, 2, 3]),
                         prefix_hashes=((1,), (1, 2), ()), source="t")
    with pytest.raises(ValueError):
        table.arrival_s[0] = 9.0
    assert table.specs() == [RequestSpec(0, 0.0, 3, 1, (1,)), RequestSpec(1, 1.0, 4, 2, (1, 2)),
                             RequestSpec(2, 2.5, 5, 3, ())]
    part = table.slice(1, 3)
    assert len(part) == 2 and part.arrival_s.tolist() == [1.0, 2.5] and part.prefix_hashes == ((1, 2), ())
    assert part.specs()[0].request_id == 0


# ---------------------------------------------------------------------------------- generate

OPEN = {"num_requests": 2000, "arrival": {"process": "poisson", "rate_per_s": 4},
        "input_tokens": {"dist": "fixed", "value": 1000},
        "output_tokens": {"dist": "lognormal", "mean": 200, "sigma": 0.8}}


def test_generate_open_loop_from_the_brief_example() -> None:
    spec = workload_from_dict(OPEN, "s.toml")
    table = generate(spec, rng(7))
    assert len(table) == 2000 and (table.prompt_tokens == 1000).all()
    assert table.notes == {"num_input_tokens_clipped": 0, "num_output_tokens_clipped": 0}
    assert table.source.startswith("poisson(rate_per_s=4)")


def test_same_seed_same_table_and_lengths_independent_of_rate() -> None:
    spec = workload_from_dict(OPEN, "s.toml")
    assert generate(spec, rng(11)) == generate(spec, rng(11))
    assert generate(spec, rng(11)) != generate(spec, rng(12))
    faster = workload_from_dict({**OPEN, "arrival": {"process": "gamma", "rate_per_s": 9, "cv": 2}}, "s")
    a, b = generate(spec, rng(11)), generate(faster, rng(11))
    assert np.array_equal(a.output_tokens, b.output_tokens)  # common random numbers across a sweep


def test_closed_loop_lengths() -> None:
    d = {"arrival": {"process": "closed", "concurrency": 8, "think_time_s": 0},
         "input_tokens": {"dist": "uniform", "min": 10, "max": 50}, "output_tokens": 32}
    spec = workload_from_dict(d, "s.yaml")
    assert spec.is_closed_loop and spec.arrival == ClosedLoop(8, 0.0)
    prompt, output = sample_lengths(spec, rng(3), 100)
    assert prompt.shape == (100,) and (output == 32).all()
    with pytest.raises(ValueError, match="^num_requests: "):
        generate(spec, rng())
    table = generate(workload_from_dict({**d, "num_requests": 100}, "s"), rng(3))
    assert not table.arrival_s.any() and np.array_equal(table.prompt_tokens, prompt)


def test_trace_lengths_with_synthetic_arrivals() -> None:
    spec = workload_from_dict({"trace": {"path": "azure-code-2023", "max_requests": 500},
                               "arrival": {"process": "constant", "rate_per_s": 2}}, "s")
    table = generate(spec, rng())
    assert len(table) == 500 and table.arrival_s[-1] == pytest.approx(499 / 2)
    assert "constant" in table.source


def test_generate_one_million_requests_is_vectorised() -> None:
    spec = workload_from_dict({**OPEN, "num_requests": 1_000_000}, "s")
    generate(workload_from_dict({**OPEN, "num_requests": 10}, "s"), rng())
    start = time.perf_counter()
    table = generate(spec, rng())
    assert len(table) == 1_000_000
    assert time.perf_counter() - start < 2.0  # well under 0.2 s when vectorised


# ---------------------------------------------------------------------------------- parsing

ROUND_TRIPS = [
    OPEN,
    {"arrival": {"process": "closed", "concurrency": 8, "think_time_s": 0.5},
     "input_tokens": {"dist": "uniform", "min": 1, "max": 9},
     "output_tokens": {"dist": "empirical", "values": [3, 4]}},
    {"num_requests": 10,
     "arrival": {"process": "piecewise", "segments": [[0, 1], [3600, 4.5]], "period_s": 86400},
     "input_tokens": {"dist": "lognormal", "median": 100, "sigma": 1.2, "max": 4096}, "output_tokens": 50},
    {"num_requests": 1e6, "arrival": {"process": "all_at_once"}, "input_tokens": 1, "output_tokens": 1},
    {"trace": {"path": "azure-conv-2023", "time_scale": 1.0, "max_requests": 1000}},
    {"trace": "mooncake-conversation", "arrival": {"process": "gamma", "rate_per_s": 3, "cv": 4}},
    {"trace": {"path": "azure-code-2023", "rate_per_s": 2.5, "start_s": 60, "zero_output": "one"}},
    {"arrival": {"process": "poisson", "rate_per_s": 1}, "num_requests": 5,
     "input_tokens": {"dist": "empirical", "trace": "azure-code-2023"}, "output_tokens": 10},
]


@pytest.mark.parametrize("d", ROUND_TRIPS)
def test_scenario_round_trips(d: dict) -> None:
    spec = workload_from_dict(d, "s.toml")
    again = workload_from_dict(spec.to_dict(), "exported.toml")
    assert again == spec and again.to_dict() == spec.to_dict()


def error_of(d: object) -> InputError:
    with pytest.raises(InputError) as info:
        workload_from_dict(d, "scenario.toml")  # type: ignore[arg-type]
    assert str(info.value).startswith("scenario.toml: ")
    return info.value


def test_bad_rate_names_file_field_and_expectation() -> None:
    exc = error_of({**OPEN, "arrival": {"process": "poisson", "rate_per_s": -1}})
    assert str(exc) == "scenario.toml: workload.arrival.rate_per_s: expected a number > 0 (or inf), got -1"
    exc = error_of({**OPEN, "arrival": {"process": "gamma", "rate_per_s": 0, "cv": 1}})
    assert exc.field == "workload.arrival.rate_per_s"


@pytest.mark.parametrize("d, field", [
    ({**OPEN, "num_reqests": 5}, "workload.num_reqests"),
    ({**OPEN, "arrival": {"process": "poisson", "rate": 4}}, "workload.arrival.rate"),
    ({**OPEN, "arrival": {"process": "poisson"}}, "workload.arrival.rate_per_s"),
    ({**OPEN, "arrival": {"process": "weibull"}}, "workload.arrival.process"),
    ({**OPEN, "arrival": {"rate_per_s": 4}}, "workload.arrival.process"),
    ({**OPEN, "arrival": 4}, "workload.arrival"),
    ({**OPEN, "arrival": {"process": "poisson", "rate_per_s": "4"}}, "workload.arrival.rate_per_s"),
    ({**OPEN, "arrival": {"process": "piecewise", "segments": [[0, 1], [5, -1]]}},
     "workload.arrival.segments[1].rate_per_s"),
    ({**OPEN, "arrival": {"process": "closed", "concurrency": 2.5}}, "workload.arrival.concurrency"),
    ({**OPEN, "input_tokens": {"dist": "normal"}}, "workload.input_tokens.dist"),
    ({**OPEN, "input_tokens": {"dist": "fixed", "value": 0}}, "workload.input_tokens.value"),
    ({**OPEN, "output_tokens": {"dist": "lognormal", "mean": 200, "median": 150, "sigma": 1}},
     "workload.output_tokens.mean"),
    ({**OPEN, "output_tokens": {"dist": "uniform", "min": 5, "max": 2}}, "workload.output_tokens.max"),
    ({**OPEN, "output_tokens": {"dist": "empirical"}}, "workload.output_tokens.values"),
    ({k: v for k, v in OPEN.items() if k != "num_requests"}, "workload.num_requests"),
    ({**OPEN, "num_requests": 0}, "workload.num_requests"),
    ({"input_tokens": 5, "output_tokens": 5, "num_requests": 5}, "workload.arrival"),
    ({"trace": "azure-conv-2023", "input_tokens": 5}, "workload.input_tokens"),
    ({"trace": "no/such/trace.csv"}, "workload.trace.path"),
    ({"trace": {"path": "azure-conv-2023", "format": "parquet"}}, "workload.trace.format"),
    ({"trace": {"path": "azure-conv-2023", "time_scale": 2, "rate_per_s": 3}}, "workload.trace.rate_per_s"),
    ({"trace": {"path": "azure-conv-2023", "max_request": 3}}, "workload.trace.max_request"),
])
def test_bad_scenarios_name_the_field(d: dict, field: str) -> None:
    assert error_of(d).field == field


def test_trace_path_relative_to_base_dir(tmp_path: Path) -> None:
    folder = tmp_path
    (folder / "t.csv").write_text("arrival_s,prompt_tokens,output_tokens\n0,5,5\n")
    spec = workload_from_dict({"trace": "t.csv"}, "s.toml", base_dir=folder)
    assert spec.trace == TraceSpec(str(folder / "t.csv"))
    assert len(generate(spec, rng())) == 1


# ---------------------------------------------------------------------------------- properties

@st.composite
def piecewise(draw: st.DrawFn) -> Piecewise:
    rates = draw(st.lists(st.floats(0, 100), min_size=1, max_size=5))
    rates[-1] += 0.1  # some rate > 0 (and the last one, which holds for ever without a period)
    period_s = draw(st.one_of(st.none(), st.floats(10.0 * len(rates), 1e5)))
    return Piecewise(tuple((10.0 * i, r) for i, r in enumerate(rates)), period_s)


arrivals = st.one_of(
    st.floats(0.01, 1e4).map(Poisson),
    st.builds(Gamma, st.floats(0.01, 1e4), st.floats(0.05, 10)),
    st.floats(0.01, 1e4).map(Constant),
    st.just(AllAtOnce()),
    st.just(Poisson(math.inf)),
    piecewise(),
)
lengths = st.one_of(
    st.integers(1, 10**6).map(Fixed),
    st.integers(1, 5000).flatmap(lambda lo: st.builds(Uniform, st.just(lo), st.integers(lo, lo + 5000))),
    st.builds(lambda m, s, cap: LogNormal(mean=m, sigma=s, max=cap), st.floats(0.5, 1e5),
              st.floats(0, 5), st.one_of(st.none(), st.integers(1, 10**5))),
    st.lists(st.integers(1, 10**5), min_size=1, max_size=20).map(lambda v: Empirical(np.array(v))),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arrival=arrivals, prompt=lengths, output=lengths, n=st.integers(1, 300), seed=st.integers(0, 2**32))
def test_generated_tables_always_validate(arrival: object, prompt: object, output: object, n: int,
                                          seed: int) -> None:
    spec = WorkloadSpec(arrival, prompt, output, n)  # type: ignore[arg-type]
    table = generate(spec, rng(seed))
    assert len(table) == n
    assert (np.diff(table.arrival_s) >= 0).all() and table.arrival_s.min() >= 0
    assert table.prompt_tokens.min() >= 1 and table.output_tokens.min() >= 1
    RequestTable(table.arrival_s, table.prompt_tokens, table.output_tokens)  # re-validates
    assert len(table.specs()) == n
    assert workload_from_dict(spec.to_dict(), "x") == spec
