"""What-ifs a planner asks about: quantization, speculative decoding, prefix caching."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.kv_cache import KVCacheManager
from sim.spec.model import get_preset
from sim.plan import StepShape
from sim.policies import ChunkedPrefillScheduler, ContinuousScheduler
from sim.prefix_cache import PrefixCache
from sim.request import Request
from sim.scenario import run_scenario, scenario_from_dict
from sim.speculative import SpeculativeConfig, SpeculativeCostModel
from sim.cost_model import CostModel
from tests.sim.driver import drive


@pytest.fixture
def profile_path(tmp_path, toy_profile_dict):
    path = tmp_path / "toy-gpu.json"
    path.write_text(json.dumps(toy_profile_dict))
    return str(path)


def base(profile_path, **extra):
    data = {"seed": 2, "model": {"name": "llama-3-8b"}, "deployment": {"profile": profile_path},
            "workload": {"num_requests": 300, "arrival": {"process": "poisson", "rate_per_s": 3},
                         "input_tokens": 800, "output_tokens": 128}}
    data.update(extra)
    return run_scenario(scenario_from_dict(data))


def test_fp8_weights_decode_faster_and_leave_more_kv_room(profile_path):
    bf16 = base(profile_path)
    fp8 = base(profile_path, model={"name": "llama-3-8b", "weight_dtype": "fp8", "kv_dtype": "fp8"})
    assert fp8.summary["latency"]["tpot_s"]["mean"] < 0.75 * bf16.summary["latency"]["tpot_s"]["mean"]
    assert fp8.kv.num_blocks > 2 * bf16.kv.num_blocks
    int4 = base(profile_path, model={"name": "llama-3-8b", "weight_dtype": "int4"})
    assert int4.summary["latency"]["tpot_s"]["mean"] < fp8.summary["latency"]["tpot_s"]["mean"]


def test_speculation_gain_grows_with_acceptance_and_vanishes_at_zero(toy_profile):
    target, draft = get_preset("llama-3-8b"), get_preset("llama-3.2-1b")
    plain = CostModel(target, toy_profile).decode_time(1, 1000)
    per_token = {a: SpeculativeCostModel(target, toy_profile, 1, draft, SpeculativeConfig("llama-3.2-1b", 4, a))
                 .decode_line(1, 1, 1000)[0] for a in (0.0, 0.5, 0.9)}
    assert per_token[0.0] > plain  # acceptance 0: the draft and verify work buys nothing
    assert per_token[0.9] < per_token[0.5] < per_token[0.0]
    assert per_token[0.9] < plain
    assert SpeculativeConfig("x", 4, 1.0).tokens_per_round == 5.0
    assert SpeculativeConfig("x", 4, 0.0).tokens_per_round == 1.0


def test_speculative_decode_line_is_exact_for_each_step(toy_profile):
    spec = SpeculativeCostModel(get_preset("llama-3-8b"), toy_profile, 1, get_preset("llama-3.2-1b"),
                                SpeculativeConfig("llama-3.2-1b", 3, 0.6))
    a, b, _, _ = spec.decode_line(4, 4, 4000)
    for j in (0, 5, 50):
        assert a + b * j == pytest.approx(spec.step_time(StepShape.for_decode(4, 4000 + 4 * j)), rel=1e-9)


def test_speculation_in_a_scenario(profile_path):
    plain = base(profile_path).summary
    spec = base(profile_path, speculative={"draft_model": "llama-3.2-1b", "num_speculative_tokens": 4,
                                           "acceptance_rate": 0.8}).summary
    assert spec["latency"]["tpot_s"]["mean"] < 0.7 * plain["latency"]["tpot_s"]["mean"]
    none = base(profile_path, speculative={"draft_model": "llama-3.2-1b", "acceptance_rate": 0.0}).summary
    assert none["latency"]["tpot_s"]["mean"] > plain["latency"]["tpot_s"]["mean"]


def test_a_prefix_cache_hit_shortens_ttft():
    cache = PrefixCache(block_tokens=8, kv_block_size=4)
    sched = ContinuousScheduler(KVCacheManager(64, 4), max_num_seqs=4, max_num_batched_tokens=64,
                                prefix_cache=cache)
    first = Request(0, 0.0, 20, 2, prefix_hashes=(7, 8))
    second = Request(1, 10.0, 20, 2, prefix_hashes=(7, 8))
    other = Request(2, 20.0, 20, 2, prefix_hashes=(9, 10))
    log = drive(sched, None, [first, second, other])
    prefills = [p for _, chunks, _, _ in log for p in chunks]
    assert prefills == [(0, 0, 20), (1, 16, 4), (2, 0, 20)]  # the second skips 2 cached blocks of 8
    assert second.cached_tokens == 16 and other.cached_tokens == 0
    assert cache.hit_tokens == 16 and cache.lookup_tokens == 60


def infinite_cache_hit_rate(table) -> float:
    """Prompt tokens an unbounded cache would serve: leading blocks seen before, one token computed."""
    seen, hit, total = set(), 0, 0
    for prompt, hashes in zip(table.prompt_tokens.tolist(), table.prefix_hashes):
        n = 0
        for h in hashes[:(prompt - 1) // 512]:
            if h not in seen:
                break
            n += 1
        hit, total = hit + n * 512, total + prompt
        seen.update(hashes)
    return hit / total


@pytest.mark.parametrize("memory_bytes", [80e9, 800e9])
def test_prefix_caching_on_the_mooncake_trace(tmp_path, toy_profile_dict, memory_bytes):
    from sim.traffic.traces import load_trace

    toy_profile_dict["device"]["memory_bytes"] = memory_bytes
    path = tmp_path / "toy.json"
    path.write_text(json.dumps(toy_profile_dict))
    data = {"seed": 1, "model": {"name": "llama-3.1-8b"}, "deployment": {"profile": str(path)},
            "scheduler": {"policy": "chunked"}, "workload": {"trace": {"path": "mooncake-conversation",
                                                                      "max_requests": 600, "rate_per_s": 0.25}}}
    off = run_scenario(scenario_from_dict(data)).summary
    data["scheduler"]["enable_prefix_caching"] = True
    on = run_scenario(scenario_from_dict(data)).summary
    ceiling = infinite_cache_hit_rate(load_trace("mooncake-conversation", max_requests=600))
    assert off["prefix_cache"]["hit_rate"] is None
    assert 0 < on["prefix_cache"]["hit_rate"] <= ceiling
    if memory_bytes > 100e9:  # room for the whole working set: every reusable prefix hits
        assert on["prefix_cache"]["hit_rate"] == pytest.approx(ceiling, rel=0.02)
    assert on["latency"]["ttft_s"]["mean"] < off["latency"]["ttft_s"]["mean"]
    assert on["requests"]["completed"] == off["requests"]["completed"]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.floats(0, 20, allow_nan=False), st.integers(1, 60), st.integers(1, 20),
                          st.lists(st.integers(0, 3), max_size=6)), min_size=1, max_size=20),
       st.sampled_from(["continuous", "chunked"]), st.integers(8, 80), st.integers(1, 6))
def test_invariants_with_prefix_caching(specs, policy, blocks, seqs):
    cache = PrefixCache(block_tokens=8, kv_block_size=4)
    kv = KVCacheManager(blocks, 4)
    cls = ContinuousScheduler if policy == "continuous" else ChunkedPrefillScheduler
    sched = cls(kv, max_num_seqs=seqs, max_num_batched_tokens=64, prefix_cache=cache)
    reqs = []
    for i, (t, prompt, out, hashes) in enumerate(specs):
        chain = tuple(hash(tuple(hashes[:k + 1])) for k in range(len(hashes)))  # ids name whole prefixes
        reqs.append(Request(i, t, prompt, out, prefix_hashes=chain))
    drive(sched, None, reqs, step_s=0.3, check=True)
    for r in reqs:
        if r.finish_s >= 0:
            assert r.num_output_tokens == r.output_tokens
            assert r.num_computed_tokens == r.prompt_tokens + r.output_tokens - 1
    assert kv.num_used_blocks == cache.held_blocks == cache.evictable_blocks  # only cached blocks left
