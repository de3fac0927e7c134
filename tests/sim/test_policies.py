"""Exact small timelines for each batching policy, preemption, and invariants under hypothesis."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.kv_cache import KVCacheManager
from sim.policies import ChunkedPrefillScheduler, ContinuousScheduler, StaticBatchScheduler
from sim.scheduler import TokenSink
from tests.sim.driver import drive, req


class Sink(TokenSink):
    def __init__(self) -> None:
        self.gaps: list[tuple[float, int]] = []
        self.rejected_ids: dict[int, str] = {}

    def gap(self, gap_s, weight):
        self.gaps.append((gap_s, weight))

    def gap_line(self, alpha_s, beta_s, j_from, j_to, weight):
        for j in range(j_from, j_to):
            self.gaps.append((alpha_s + beta_s * j, weight))

    def rejected(self, request, reason):
        self.rejected_ids[request.request_id] = reason


def test_continuous_prefill_first_timeline():
    sched = ContinuousScheduler(KVCacheManager(100, 4), max_num_seqs=2, max_num_batched_tokens=64)
    reqs = [req(1, 0.0, 4, 3), req(2, 0.0, 4, 3), req(3, 0.0, 4, 3)]
    log = drive(sched, None, reqs)
    assert log == [
        (0.0, [(1, 0, 4), (2, 0, 4)], (), 1),
        (1.0, [], (1, 2), 2),  # request 3 waits: max_num_seqs is 2
        (3.0, [(3, 0, 4)], (), 1),
        (4.0, [], (3,), 2),
    ]
    assert [(r.first_token_s, r.finish_s) for r in reqs] == [(1.0, 3.0), (1.0, 3.0), (4.0, 6.0)]
    assert all(r.num_output_tokens == 3 and r.num_computed_tokens == 6 for r in reqs)
    assert sched.kv.num_used_blocks == 0


def test_continuous_arrival_interrupts_decode_run_and_pauses_decodes():
    sched = ContinuousScheduler(KVCacheManager(100, 4), max_num_seqs=4, max_num_batched_tokens=64)
    reqs = [req(1, 0.0, 4, 6), req(2, 2.5, 4, 2)]
    log = drive(sched, None, reqs)
    assert log == [
        (0.0, [(1, 0, 4)], (), 1),
        (1.0, [], (1,), 2),  # cut at the step in progress when request 2 arrives at 2.5
        (3.0, [(2, 0, 4)], (), 1),  # prefill-first: request 1's decode pauses
        (4.0, [], (1, 2), 1),
        (5.0, [], (1,), 2),
    ]
    r1, r2 = reqs
    assert (r1.first_token_s, r1.finish_s) == (1.0, 7.0)
    assert (r2.first_token_s, r2.finish_s) == (4.0, 5.0)


def test_chunked_prefill_mixes_chunks_and_decodes_within_budget():
    sched = ChunkedPrefillScheduler(KVCacheManager(100, 4), max_num_seqs=8, max_num_batched_tokens=4)
    reqs = [req(1, 0.0, 6, 2), req(2, 0.0, 3, 2)]
    log = drive(sched, None, reqs)
    assert log == [
        (0.0, [(1, 0, 4)], (), 1),
        (1.0, [(1, 4, 2), (2, 0, 2)], (), 1),
        (2.0, [(2, 2, 1)], (1,), 1),
        (3.0, [], (2,), 1),
    ]
    assert [(r.first_token_s, r.finish_s) for r in reqs] == [(2.0, 3.0), (3.0, 4.0)]


def test_static_batch_waits_for_batch_or_delay_and_runs_to_completion():
    sched = StaticBatchScheduler(KVCacheManager(100, 4), max_batch_size=2, max_queue_delay_s=0.5)
    reqs = [req(1, 0.0, 4, 3), req(2, 0.2, 4, 1), req(3, 0.3, 4, 2)]
    log = drive(sched, None, reqs)
    assert log == [
        (0.2, [(1, 0, 4), (2, 0, 4)], (), 1),  # batch full at 0.2
        (1.2, [], (1,), 2),  # request 2 finished at its prefill; it stays as padding
        (3.2, [(3, 0, 4)], (), 1),  # request 3 arrived at 0.3, waited for the batch to end
        (4.2, [], (3,), 1),
    ]
    assert reqs[1].finish_s == 1.2 and reqs[0].finish_s == 3.2 and reqs[2].finish_s == 5.2


def test_static_padding_is_computed():
    sched = StaticBatchScheduler(KVCacheManager(100, 4), max_batch_size=2, max_queue_delay_s=0.0)
    sched.add_request(req(1, 0.0, 4, 3))
    sched.add_request(req(2, 0.0, 4, 1))
    plan = sched.schedule(0.0)
    from sim.scheduler import StepTimes
    sched.commit(plan, StepTimes(0.0, 1.0, 0.0, 1))
    plan = sched.schedule(1.0)
    assert plan.decode_ids == (1,) and plan.num_padding_seqs == 1
    assert plan.padding_context_tokens == 4 and plan.decode_context_tokens == 4
    assert plan.shape().num_seqs == 2 and plan.shape().num_sampled == 1


def test_static_queue_delay_timer():
    sched = StaticBatchScheduler(KVCacheManager(100, 4), max_batch_size=4, max_queue_delay_s=0.5)
    reqs = [req(1, 0.0, 4, 1)]
    log = drive(sched, None, reqs)
    assert log == [(0.5, [(1, 0, 4)], (), 1)]
    assert reqs[0].first_token_s == 1.5


def test_preemption_by_recompute_when_kv_runs_out():
    sink = Sink()
    # 4 blocks of 4 tokens; each request needs ceil((4 + 8 - 1) / 4) = 3 blocks at its end
    sched = ContinuousScheduler(KVCacheManager(4, 4), sink, max_num_seqs=4, max_num_batched_tokens=64)
    reqs = [req(1, 0.0, 4, 8), req(2, 0.0, 4, 8)]
    log = drive(sched, None, reqs)
    assert sched.num_preemptions >= 1
    assert reqs[1].num_preemptions >= 1 and reqs[0].num_preemptions == 0  # LIFO: the newest goes
    assert all(r.num_output_tokens == 8 and r.num_computed_tokens == 11 for r in reqs)
    recompute = [p for _, prefill, _, _ in log for p in prefill if p[0] == 2 and p[2] > 4]
    assert recompute, "request 2 was recomputed with its generated tokens"
    assert sched.kv.num_used_blocks == 0


def test_requests_that_can_never_fit_are_rejected_and_counted():
    sink = Sink()
    sched = ContinuousScheduler(KVCacheManager(4, 4), sink, max_num_seqs=4, max_num_batched_tokens=8)
    assert not sched.add_request(req(1, 0.0, 9, 1))  # prompt over the token budget
    assert not sched.add_request(req(2, 0.0, 8, 10))  # needs 5 blocks of 4
    assert sink.rejected_ids == {1: "prompt_exceeds_max_num_batched_tokens", 2: "exceeds_kv_capacity"}


def test_itl_gaps_cover_every_token_once():
    sink = Sink()
    sched = ContinuousScheduler(KVCacheManager(100, 4), sink, max_num_seqs=4, max_num_batched_tokens=64)
    reqs = [req(1, 0.0, 4, 6), req(2, 2.5, 4, 3)]
    drive(sched, None, reqs)
    assert sum(w for _, w in sink.gaps) == sum(r.output_tokens - 1 for r in reqs)
    total = sum(g * w for g, w in sink.gaps)
    assert abs(total - sum(r.finish_s - r.first_token_s for r in reqs)) < 1e-9


request_lists = st.lists(
    st.tuples(st.floats(0, 20, allow_nan=False), st.integers(1, 40), st.integers(1, 30)),
    min_size=1, max_size=25)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request_lists, st.sampled_from(["continuous", "chunked", "static"]), st.integers(1, 8),
       st.integers(6, 60), st.integers(1, 6), st.integers(4, 64))
def test_invariants_hold_for_generated_scenarios(specs, policy, block, blocks, seqs, budget):
    sink = Sink()
    kv = KVCacheManager(blocks, block)
    if policy == "continuous":
        sched = ContinuousScheduler(kv, sink, max_num_seqs=seqs, max_num_batched_tokens=budget)
    elif policy == "chunked":
        sched = ChunkedPrefillScheduler(kv, sink, max_num_seqs=seqs, max_num_batched_tokens=budget)
    else:
        sched = StaticBatchScheduler(kv, sink, max_batch_size=seqs, max_queue_delay_s=0.5)
    reqs = [req(i, a, p, o) for i, (a, p, o) in enumerate(specs)]
    drive(sched, None, reqs, step_s=0.37, check=True)  # checks KV invariants after every step
    for r in reqs:
        if r.request_id in sink.rejected_ids:
            assert r.finish_s < 0
            continue
        assert r.finish_s >= r.first_token_s >= r.arrival_s  # every accepted request completed
        assert r.num_output_tokens == r.output_tokens  # tokens conserved
        if policy != "static":
            assert r.num_computed_tokens == r.prompt_tokens + r.output_tokens - 1
    assert kv.num_free_blocks == kv.num_blocks and sched.is_idle
    measured_tokens = sum(r.output_tokens - 1 for r in reqs if r.request_id not in sink.rejected_ids)
    assert sum(w for _, w in sink.gaps) == measured_tokens
