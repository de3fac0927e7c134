"""Cost model: the closed-form decode line equals step-by-step costs; roofline physics."""

from __future__ import annotations

import dataclasses

import pytest

from sim.cost_model import CostModel, line_total, matmul_efficiency, steps_within
from sim.errors import InputError
from sim.spec.model import get_preset
from sim.plan import PrefillChunk, StepPlan, StepShape
from sim.spec.profile import profile_from_dict


@pytest.mark.parametrize("cached_efficiency", [None, 0.01, 1.0])  # cached attention KV- or FLOP-bound
@pytest.mark.parametrize("model", ["llama-3-8b", "mixtral-8x7b", "llama-3-70b"])
def test_decode_line_equals_each_step(toy_profile, model, cached_efficiency):
    tp = 4 if model == "llama-3-70b" else 1
    profile = dataclasses.replace(toy_profile, cost=dataclasses.replace(
        toy_profile.cost, cached_attention_efficiency=cached_efficiency))
    cost = CostModel(get_preset(model), profile, tp)
    a, b, ea, eb = cost.decode_line(12, 12, 12 * 900)
    for j in (0, 1, 7, 300):
        step = cost.step_cost(StepShape.for_decode(12, 12 * 900 + 12 * j))
        assert a + b * j == pytest.approx(step.time_s, rel=1e-12)
        assert ea + eb * j == pytest.approx(step.energy_j, rel=1e-12)


def test_steps_within_inverts_line_total():
    a, b = 0.01, 1e-5
    for k in (1, 5, 1000):
        total = line_total(a, b, k)
        assert steps_within(a, b, total, 10_000) == k
        assert steps_within(a, b, total * (1 - 1e-9), 10_000) == k - 1


def test_plan_shape_counts_chunks_and_decodes():
    plan = StepPlan(prefill=(PrefillChunk(1, 0, 100, True), PrefillChunk(2, 50, 30, False)),
                    decode_ids=(3, 4), decode_context_tokens=500)
    shape = plan.shape()
    assert shape.num_tokens == 132 and shape.num_seqs == 4 and shape.num_sampled == 3
    assert shape.context_tokens == 100 + 80 + 502
    assert shape.attention_pairs == 100 * 101 // 2 + (30 * 50 + 30 * 31 // 2) + 502
    # pairs whose key an earlier step computed: the second chunk's prefix, the decoders' contexts
    assert shape.cached_pairs == 30 * 50 + 500
    assert shape.prefix_tokens == 50  # cached keys the chunks (not the decodes) attend
    assert (StepShape.for_prefill([100]) + StepShape.for_prefill([30], [50], sampling=False)
            + StepShape.for_decode(2, 500)) == shape
    # a record stored before cached_pairs existed: one query per cached key
    record = {f.name: getattr(StepShape.for_decode(3, 900), f.name) for f in dataclasses.fields(StepShape)}
    del record["cached_pairs"]
    assert StepShape.from_record(record) == StepShape.for_decode(3, 900)


def test_attention_over_the_cache_runs_at_its_own_rate(toy_profile):
    """A chunk's pairs with its prefix's keys run at cached_attention_efficiency; a fresh prompt's
    causal triangle, and decodes whose cached attention is KV-bound, do not change with it."""
    m = get_preset("llama-3-8b")
    faster = dataclasses.replace(toy_profile, cost=dataclasses.replace(
        toy_profile.cost, cached_attention_efficiency=1.0))  # attention_efficiency is 0.5
    base, fast = CostModel(m, toy_profile), CostModel(m, faster)
    chunk = StepShape.for_prefill([512], [8192])
    per_pair_s = m.attention_flops_per_pair / 300e12
    saved = base.step_time(chunk) - fast.step_time(chunk)
    assert saved == pytest.approx(512 * 8192 * per_pair_s * (1 / 0.5 - 1 / 1.0), rel=1e-9)
    assert fast.step_time(StepShape.for_prefill([4096])) == base.step_time(StepShape.for_prefill([4096]))
    decode = StepShape.for_decode(32, 32 * 4000)
    assert fast.step_cost(decode).kv_s > base.step_cost(decode).attention_flops_s  # KV-bound
    assert fast.step_time(decode) == base.step_time(decode)
    # a runner that gathers a chunk's prefix K/V pays per layer per prefix key; decodes do not
    gathering = dataclasses.replace(toy_profile, cost=dataclasses.replace(
        toy_profile.cost, prefix_key_layer_overhead_s=1e-8))
    slow = CostModel(m, gathering)
    assert slow.step_time(chunk) - base.step_time(chunk) == pytest.approx(1e-8 * m.num_layers * 8192)
    assert slow.step_time(decode) == base.step_time(decode)


def test_roofline_physics(toy_profile, toy_profile_dict):
    m = get_preset("llama-3-8b")
    cost = CostModel(m, toy_profile)
    # batch-1 decode is bound by streaming the weights
    b1 = cost.step_cost(StepShape.for_decode(1, 1000))
    assert b1.weights_s > b1.matmul_s
    assert b1.weights_s == pytest.approx((m.layer_weight_bytes + m.lm_head_bytes) / (2e12 * 0.8), rel=1e-9)
    # a long prefill is bound by compute
    pre = cost.step_cost(StepShape.for_prefill([4096]))
    assert pre.matmul_s > pre.weights_s
    # more bandwidth => faster batch-1 decode; fp8 weights => faster memory-bound decode
    fast = dict(toy_profile_dict)
    fast["device"] = dict(fast["device"], memory_bandwidth_bytes_per_s=4e12)
    assert CostModel(m, profile_from_dict(fast, "fast")).decode_time(1, 1000) < cost.decode_time(1, 1000)
    assert CostModel(m.with_dtypes(weight_dtype="fp8"), toy_profile).decode_time(1, 1000) < cost.decode_time(1, 1000)
    # a compute-bound prefill draws more power than a memory-bound decode
    assert pre.energy_j / pre.time_s > b1.energy_j / b1.time_s


def test_efficiency_curve_interpolates_in_log_tokens(toy_profile):
    params = dataclasses.replace(toy_profile.cost, matmul_efficiency_curve=((1, 0.1), (100, 0.9)))
    assert matmul_efficiency(params, 1) == 0.1 and matmul_efficiency(params, 1000) == 0.9
    assert matmul_efficiency(params, 10) == pytest.approx(0.5)


def test_tp_beyond_the_machine_is_an_input_error(toy_profile):
    with pytest.raises(InputError, match="tensor parallelism 16"):
        CostModel(get_preset("llama-3-70b"), toy_profile, 16)


def test_a_machine_at_time_factor_takes_that_much_longer_for_every_step(toy_profile):
    from sim.spec.profile import at_time_factor

    slow = at_time_factor(toy_profile, 1.25)
    assert slow.device.memory_bytes == toy_profile.device.memory_bytes  # capacity unchanged
    for model, tp in (("llama-3-8b", 1), ("mixtral-8x7b", 1), ("llama-3-70b", 4)):
        base, moved = CostModel(get_preset(model), toy_profile, tp), CostModel(get_preset(model), slow, tp)
        for shape in (StepShape.for_decode(1, 900), StepShape.for_decode(64, 64 * 2000),
                      StepShape.for_prefill([4096]), StepPlan(prefill=(PrefillChunk(1, 0, 300, True),),
                                                              decode_ids=(2, 3), decode_context_tokens=900).shape()):
            assert moved.step_time(shape) == pytest.approx(1.25 * base.step_time(shape), rel=1e-12)
    with pytest.raises(ValueError):
        at_time_factor(toy_profile, 0.0)
    # memory and compute apart: streaming slows by one factor, FLOPs and overheads by the other
    base = CostModel(get_preset("llama-3-8b"), toy_profile)
    moved = CostModel(get_preset("llama-3-8b"), at_time_factor(toy_profile, 2.0, 1.5))
    for shape in (StepShape.for_decode(1, 900), StepShape.for_prefill([4096])):
        a, b = base.step_cost(shape), moved.step_cost(shape)
        assert (b.weights_s, b.kv_s) == pytest.approx((2 * a.weights_s, 2 * a.kv_s), rel=1e-12)
        assert (b.matmul_s, b.overhead_s) == pytest.approx((1.5 * a.matmul_s, 1.5 * a.overhead_s), rel=1e-12)


def test_kind_scaled_cost_scales_decode_and_prefill_steps_apart(toy_profile):
    from sim.cost_model import KindScaledCost, line_total

    base = CostModel(get_preset("llama-3-8b"), toy_profile)
    scaled = KindScaledCost(base, 0.8, 1.3)
    decode, prefill = StepShape.for_decode(4, 4 * 700), StepShape.for_prefill([512])
    mixed = StepPlan(prefill=(PrefillChunk(1, 0, 300, True),), decode_ids=(2, 3), decode_context_tokens=900).shape()
    assert scaled.step_time(decode) == pytest.approx(0.8 * base.step_time(decode), rel=1e-12)
    for shape in (prefill, mixed):  # any step with prefill tokens
        a, b = base.step_cost(shape), scaled.step_cost(shape)
        assert (b.time_s, b.energy_j) == pytest.approx((1.3 * a.time_s, 1.3 * a.energy_j), rel=1e-12)
    # the closed-form decode run the simulator advances in one go is scaled as its steps are
    alpha, beta, _, _ = scaled.decode_line(4, 4, 4 * 699)
    steps = [scaled.step_time(StepShape.for_decode(4, 4 * (699 + j))) for j in range(5)]
    assert line_total(alpha, beta, 5) == pytest.approx(sum(steps), rel=1e-9)
    with pytest.raises(ValueError):
        KindScaledCost(base, 1.0, float("nan"))


def test_a_call_per_sequence_per_layer_costs_sequences_times_layers(toy_profile):
    """sequence_layer_overhead_s: each sequence's attention is a call of its own in every layer, so
    a step pays it num_seqs x num_layers times (decode runs in closed form included), and a machine
    whose overheads take longer scales it too."""
    from sim.spec.profile import at_time_factor

    per_call_s = 2e-5
    calls = dataclasses.replace(toy_profile, cost=dataclasses.replace(
        toy_profile.cost, sequence_layer_overhead_s=per_call_s))
    for name in ("llama-3-8b", "llama-2-7b", "mixtral-8x7b"):
        model = get_preset(name)
        base, with_calls = CostModel(model, toy_profile), CostModel(model, calls)
        for shape in (StepShape.for_decode(1, 900), StepShape.for_decode(12, 12 * 700),
                      StepShape.for_prefill([300, 40])):
            extra = with_calls.step_time(shape) - base.step_time(shape)
            assert extra == pytest.approx(per_call_s * shape.num_seqs * model.num_layers, rel=1e-9)
        a, b, _, _ = with_calls.decode_line(12, 12, 12 * 700)
        step = with_calls.step_time(StepShape.for_decode(12, 12 * 700 + 12 * 5))
        assert a + 5 * b == pytest.approx(step, rel=1e-12)
    slow = at_time_factor(calls, 1.0, 1.5)
    assert slow.cost.sequence_layer_overhead_s == pytest.approx(1.5 * per_call_s)


def test_the_wake_up_grows_with_the_idle_and_is_no_step_cost(toy_profile):
    """The wake-up curve slows the first step after an idle wait (the engine applies it): longer
    idle, larger slowdown, interpolated in log(idle), flat beyond the longest measured idle and
    none without idle. No step's cost includes it; a machine at another speed and a run-speed
    scaled model keep it (it is a share of the step's time)."""
    from sim.cost_model import KindScaledCost
    from sim.spec.profile import at_time_factor

    curve = ((0.005, 0.02), (0.2, 0.06))
    woken = dataclasses.replace(toy_profile, cost=dataclasses.replace(toy_profile.cost, wake_slowdown_curve=curve))
    model = get_preset("llama-3-8b")
    base, with_wake = CostModel(model, toy_profile), CostModel(model, woken)
    shape = StepShape.for_prefill([300])
    assert base.wake_slowdown(1.0) == 0.0 and with_wake.wake_slowdown(0.0) == 0.0
    assert with_wake.wake_slowdown(0.0025) == pytest.approx(0.01)  # in proportion below the first idle
    assert with_wake.wake_slowdown((0.005 * 0.2) ** 0.5) == pytest.approx(0.04)  # log-midpoint: midway
    assert with_wake.wake_slowdown(0.2) == with_wake.wake_slowdown(30.0) == pytest.approx(0.06)
    assert with_wake.step_time(shape) == base.step_time(shape)
    assert CostModel(model, at_time_factor(woken, 1.0, 1.5)).wake_slowdown(1.0) == pytest.approx(0.06)
    assert KindScaledCost(with_wake, 1.2, 2.0).wake_slowdown(1.0) == pytest.approx(0.06)


def test_the_lm_head_is_a_roofline_of_its_own(toy_profile):
    """A long prefill's layers are compute-bound while its one sampled row streams the whole LM
    head: the step pays both (not the larger of their sums), so sampling adds the head's read."""
    model = get_preset("llama-3-8b")
    cost = CostModel(model, toy_profile)
    sampled = cost.step_cost(StepShape.for_prefill([2048]))
    silent = cost.step_cost(StepShape.for_prefill([2048], sampling=False))
    assert silent.matmul_s > silent.weights_s  # the layers are compute-bound
    head_s = model.lm_head_bytes / cost.effective_bandwidth
    assert sampled.time_s - silent.time_s == pytest.approx(head_s, rel=1e-9)
    # a decode's head has as many rows as its layers' GEMMs: both memory-bound at batch 1
    b1 = cost.step_cost(StepShape.for_decode(1, 1000))
    assert b1.time_s == pytest.approx(b1.overhead_s + b1.weights_s + max(b1.attention_flops_s, b1.kv_s),
                                      rel=1e-12)
