"""The batching-policy base: waiting queue, decoding set, KV blocks, preemption, token times.

Plain Python, no simpy: the simulated engine and the real PyTorch engine both drive it through
`add_request`, `schedule(now_s) -> StepPlan | None` and `commit(plan, StepTimes | StepEnds) -> finished`.

Decoding requests advance together (one token per decode step), so their state is kept in closed
form: a decode-step counter, each request's counter and token counts when it (re)joined, the sum
of (context - counter) and its residues modulo the block size. Advancing k steps is O(1) plus the
requests that finish; a request's own counts are materialised only when it leaves. This is what
lets the simulator jump over runs of decode steps while keeping exact per-token times.

Preemption is by recompute (vLLM's default): the most recently joined decoder gives back all its
blocks and returns to the front of the queue; later its prompt and generated tokens are prefilled
again before it samples its next token.
"""

from __future__ import annotations

import dataclasses
import heapq
from collections import deque
from dataclasses import dataclass

import numpy as np

from sim.kv_cache import KVCacheManager, blocks_needed_to_grow, max_steps_with_blocks
from sim.plan import StepPlan
from sim.prefix_cache import PrefixCache
from sim.request import Request


@dataclass(frozen=True, slots=True)
class StepTimes:
    """End times of num_steps consecutive steps from start_s; step j lasts alpha_s + beta_s * j,
    and the engine's loop takes gap_s between two of them (after the last too, outside these)."""

    start_s: float
    alpha_s: float
    beta_s: float
    num_steps: int
    gap_s: float = 0.0

    def end(self, j: int) -> float:
        return self.start_s + (j + 1) * self.alpha_s + self.beta_s * j * (j + 1) / 2.0 + j * self.gap_s

    @property
    def end_s(self) -> float:
        return self.end(self.num_steps - 1)

    def report_gaps(self, sink: TokenSink, weight: int) -> None:
        """The gaps between consecutive steps' ends (steps 1..num_steps-1), each weight times."""
        sink.gap_line(self.alpha_s + self.gap_s, self.beta_s, 1, self.num_steps, weight)


@dataclass(frozen=True, slots=True)
class StepEnds:
    """End times of consecutive steps given one by one (steps whose times are no line: a machine
    whose speed varies); the engine's loop gaps lie between them."""

    start_s: float
    ends_s: np.ndarray

    @property
    def num_steps(self) -> int:
        return len(self.ends_s)

    def end(self, j: int) -> float:
        return float(self.ends_s[j])

    @property
    def end_s(self) -> float:
        return float(self.ends_s[-1])

    def report_gaps(self, sink: TokenSink, weight: int) -> None:
        sink.gaps(np.diff(self.ends_s), weight)


class TokenSink:
    """Where a scheduler reports token times (metrics implement it; tests may use it as is)."""

    def gap(self, gap_s: float, weight: int) -> None:  # one inter-token gap, `weight` times
        pass

    def gap_line(self, alpha_s: float, beta_s: float, j_from: int, j_to: int, weight: int) -> None:
        """Gaps alpha + beta * j for j in [j_from, j_to), each `weight` times."""

    def gaps(self, gaps_s: np.ndarray, weight: int) -> None:
        """Several gaps, each `weight` times."""
        for gap_s in gaps_s.tolist():
            self.gap(gap_s, weight)

    def finished(self, request: Request) -> None:
        pass

    def rejected(self, request: Request, reason: str) -> None:
        pass

    def preempted(self, request: Request) -> None:
        pass


class BatchScheduler:
    """State and mechanics shared by every batching policy; policies implement `schedule`."""

    name = "base"

    def __init__(self, kv: KVCacheManager, sink: TokenSink | None = None, *,
                 max_num_seqs: int = 256, max_model_len: int | None = None,
                 prefix_cache: PrefixCache | None = None) -> None:
        if max_num_seqs < 1:
            raise ValueError(f"max_num_seqs: expected >= 1, got {max_num_seqs}")
        self.kv = kv
        self.sink = sink or TokenSink()
        self.block_size = kv.block_size_tokens
        self.max_num_seqs = max_num_seqs
        self.max_model_len = max_model_len
        self.waiting: deque[Request] = deque()
        self.prefilling: dict[int, Request] = {}
        self.decoding: dict[int, Request] = {}
        self.counter = 0
        self._finish_heap: list[tuple[int, int]] = []
        self._offset_sum = 0  # sum over decoders of (context - counter)
        self._residues = [0] * self.block_size
        self._measured_decoders = 0
        self._synced_measured = 0  # measured decoders whose last token ended the last decode step
        self._fresh: dict[int, tuple[float, bool]] = {}  # joined since: first-token time, measured
        self.last_decode_end_s = 0.0
        self.num_preemptions = 0
        self.next_wakeup_s: float | None = None  # a time-based policy asks to be woken then
        self.prefix_cache = prefix_cache
        self._preempted_ids: list[int] = []

    # ---- what the engines call ---------------------------------------------------------
    def add_request(self, req: Request) -> bool:
        """Queue a request; False (and reported as rejected) if it can never be served."""
        reason = self.rejection_reason(req)
        if reason:
            self.sink.rejected(req, reason)
            return False
        self.waiting.append(req)
        return True

    def schedule(self, now_s: float) -> StepPlan | None:
        """The next step, or None when there is nothing to run (until an arrival or
        `next_wakeup_s`). Requests preempted while planning it are named in the plan."""
        plan = self._schedule(now_s)
        if self._preempted_ids:
            ids, self._preempted_ids = tuple(self._preempted_ids), []
            plan = dataclasses.replace(plan, preempted_ids=ids) if plan else StepPlan(preempted_ids=ids)
        return plan

    def _schedule(self, now_s: float) -> StepPlan | None:
        raise NotImplementedError

    def commit(self, plan: StepPlan, times: StepTimes | StepEnds) -> list[Request]:
        """Apply a plan executed num_steps times (decode-only plans only may repeat)."""
        m = times.num_steps
        if m < 1 or m > plan.max_repeats or (m > 1 and plan.prefill):
            raise ValueError(f"commit: {m} steps of a plan allowed {plan.max_repeats}")
        finished: list[Request] = []
        if plan.decode_ids:
            self._release_unused_growth(plan.max_repeats, m)
            self._advance_decoders(times, finished)
        for chunk in plan.prefill:
            req = self.prefilling[chunk.request_id]
            req.num_computed_tokens += chunk.num_tokens
            if chunk.is_sampling:
                del self.prefilling[chunk.request_id]
                self._sample_after_prefill(req, times.end(0), finished)
        return finished

    @property
    def num_in_flight(self) -> int:
        return len(self.waiting) + len(self.prefilling) + len(self.decoding)

    @property
    def is_idle(self) -> bool:
        return not self.num_in_flight

    def wants_wakeup_on_arrival(self) -> bool:
        return True

    # ---- policy helpers ----------------------------------------------------------------
    def rejection_reason(self, req: Request) -> str:
        total = req.prompt_tokens + req.output_tokens
        if self.max_model_len is not None and total > self.max_model_len:
            return "exceeds_max_model_len"
        if self.kv.blocks_for(total) > self.kv.num_blocks:
            return "exceeds_kv_capacity"
        return ""

    def decode_context_tokens(self) -> int:
        return self._offset_sum + len(self.decoding) * self.counter

    def steps_to_first_finish(self) -> int:
        heap = self._finish_heap
        while heap:
            finish, rid = heap[0]
            req = self.decoding.get(rid)
            if req is not None and self._finish_counter(req) == finish:
                return finish - self.counter
            heapq.heappop(heap)  # stale: that request left or rejoined
        return 0

    def grow_decoders(self, max_steps: int) -> int:
        """Reserve blocks for the decoders to advance up to max_steps; returns the steps granted."""
        steps = max_steps_with_blocks(self._residues, self.counter, max_steps, self.block_size,
                                      self.available_blocks)
        if steps:
            ok = self.allocate(blocks_needed_to_grow(self._residues, self.counter, steps, self.block_size))
            assert ok
        return steps

    @property
    def available_blocks(self) -> int:
        """Free blocks plus cached prefix blocks no running request uses (evictable)."""
        cache = self.prefix_cache
        return self.kv.num_free_blocks + (cache.evictable_blocks if cache else 0)

    def allocate(self, num_blocks: int) -> bool:
        """Allocate, evicting unreferenced prefix-cache entries (LRU) if that makes room."""
        cache = self.prefix_cache
        if cache is not None and num_blocks > self.kv.num_free_blocks:
            if num_blocks > self.available_blocks:
                return False
            while num_blocks > self.kv.num_free_blocks:
                self.kv.free(cache.evict_one())
        return self.kv.allocate(num_blocks)

    def decode_plan(self, max_steps: int | None = None) -> StepPlan | None:
        """All decoders for up to max_steps (default: until the first finishes), preempting by
        recompute while even one step does not fit in the KV cache."""
        while self.decoding:
            limit = self.steps_to_first_finish()
            if max_steps is not None:
                limit = min(limit, max_steps)
            steps = self.grow_decoders(limit)
            if steps:
                return StepPlan(decode_ids=tuple(self.decoding),
                                decode_context_tokens=self.decode_context_tokens(),
                                max_repeats=steps)
            self.preempt_latest()
        return None

    def preempt_latest(self) -> Request:
        """Preempt (recompute) the most recently joined decoder, else the newest prefill."""
        if self.decoding:
            rid = next(reversed(self.decoding))
            req = self.decoding[rid]
            self._leave_decoders(req)
        else:
            rid = next(reversed(self.prefilling))
            req = self.prefilling.pop(rid)
        self._free_request_blocks(req)
        req.num_computed_tokens = 0
        req.num_preemptions += 1
        self.num_preemptions += 1
        self._preempted_ids.append(req.request_id)
        self.waiting.appendleft(req)
        self.sink.preempted(req)
        return req

    def prefix_hit_tokens(self, req: Request) -> int:
        """Tokens a fresh (or recomputed) request would take from the prefix cache."""
        cache = self.prefix_cache
        if cache is None or req.num_computed_tokens or not req.prefix_hashes:
            return 0
        usable = (req.num_known_tokens - 1) // cache.block_tokens  # compute at least one token
        return cache.match(req.prefix_hashes, usable) * cache.block_tokens

    def remaining_prefill_tokens(self, req: Request) -> int:
        return req.num_known_tokens - max(req.num_computed_tokens, self.prefix_hit_tokens(req))

    def start_prefill(self, req: Request, num_tokens: int, now_s: float) -> bool:
        """Reserve blocks for the next num_tokens of req (after any prefix-cache hit);
        False (and nothing changed) if the KV cache is full."""
        hit = self.prefix_hit_tokens(req)
        if hit:
            cache = self.prefix_cache
            assert cache is not None
            refs = req.prefix_hashes[:hit // cache.block_tokens]
            cache.acquire(refs)  # before allocating, so eviction cannot take them
            req.prefix_refs = refs
            req.num_computed_tokens = hit
        need = (self.kv.blocks_for(req.num_computed_tokens + num_tokens)
                - self.kv.blocks_for(req.num_computed_tokens))
        if not self.allocate(need):
            if hit:
                self.prefix_cache.release(req.prefix_refs)
                req.prefix_refs = ()
                req.num_computed_tokens = 0
            return False
        if self.prefix_cache is not None and req.num_output_tokens == 0 and req.prefix_hashes \
                and req.request_id not in self.prefilling:
            self.prefix_cache.lookup_tokens += req.prompt_tokens
            self.prefix_cache.hit_tokens += hit
        req.cached_tokens += hit
        if req.scheduled_s < 0:
            req.scheduled_s = now_s
        self.prefilling[req.request_id] = req
        return True

    def _owned_blocks(self, req: Request, context_tokens: int) -> int:
        shared = len(req.prefix_refs) * self.prefix_cache.kv_blocks_per_entry if req.prefix_refs else 0
        return self.kv.blocks_for(context_tokens) - shared

    def _free_request_blocks(self, req: Request) -> None:
        self.kv.free(self._owned_blocks(req, req.num_computed_tokens))
        if req.prefix_refs:
            self.prefix_cache.release(req.prefix_refs)
            req.prefix_refs = ()

    def _donate_prefix(self, req: Request) -> None:
        """Hand the request's newly computed full prefix blocks to the cache (it keeps a reference)."""
        cache = self.prefix_cache
        if cache is None or not req.prefix_hashes:
            return
        full = min(len(req.prefix_hashes), req.prompt_tokens // cache.block_tokens)
        refs = list(req.prefix_refs)
        for h in req.prefix_hashes[len(refs):full]:
            if not cache.insert(h):
                break  # computed concurrently by another request: keep our copy, end the run
            refs.append(h)
        req.prefix_refs = tuple(refs)

    # ---- internals ---------------------------------------------------------------------
    def _finish_counter(self, req: Request) -> int:
        return req.join_counter + req.output_tokens - req.output_at_join

    def _join_decoders(self, req: Request, first_token_s: float) -> None:
        req.join_counter = self.counter
        req.output_at_join = req.num_output_tokens
        offset = req.num_computed_tokens - self.counter
        self._offset_sum += offset
        self._residues[offset % self.block_size] += 1
        self.decoding[req.request_id] = req
        heapq.heappush(self._finish_heap, (self._finish_counter(req), req.request_id))
        self._fresh[req.request_id] = (first_token_s, req.is_measured)
        if req.is_measured:
            self._measured_decoders += 1

    def _materialise(self, req: Request) -> None:
        steps = self.counter - req.join_counter
        req.num_computed_tokens += steps - (req.num_output_tokens - req.output_at_join)
        req.num_output_tokens = req.output_at_join + steps
        if req.request_id not in self._fresh:
            req.last_token_s = self.last_decode_end_s

    def _leave_decoders(self, req: Request) -> None:
        self._materialise(req)
        offset = req.num_computed_tokens - self.counter
        self._offset_sum -= offset
        self._residues[offset % self.block_size] -= 1
        del self.decoding[req.request_id]
        if req.is_measured:
            self._measured_decoders -= 1
        if self._fresh.pop(req.request_id, None) is None and req.is_measured:
            self._synced_measured -= 1
        # its stale heap entry is dropped lazily

    def _release_unused_growth(self, granted: int, used: int) -> None:
        if used < granted:
            before = blocks_needed_to_grow(self._residues, self.counter, granted, self.block_size)
            after = blocks_needed_to_grow(self._residues, self.counter, used, self.block_size)
            self.kv.free(before - after)

    def _advance_decoders(self, times: StepTimes | StepEnds, finished: list[Request]) -> None:
        m = times.num_steps
        first_end = times.end(0)
        if self._synced_measured:
            self.sink.gap(first_end - self.last_decode_end_s, self._synced_measured)
        for first_token_s, measured in self._fresh.values():
            if measured:
                self.sink.gap(first_end - first_token_s, 1)
        self._fresh.clear()
        if m > 1 and self._measured_decoders:
            times.report_gaps(self.sink, self._measured_decoders)
        self._synced_measured = self._measured_decoders
        start_counter = self.counter
        self.counter += m
        self.last_decode_end_s = times.end(m - 1)
        heap = self._finish_heap
        while heap and heap[0][0] <= self.counter:
            finish, rid = heapq.heappop(heap)
            req = self.decoding.get(rid)
            if req is None or self._finish_counter(req) != finish:
                continue
            end_s = times.end(finish - start_counter - 1)
            self._leave_decoders(req)
            req.last_token_s = end_s
            self._on_finished(req, end_s, finished)

    def _sample_after_prefill(self, req: Request, end_s: float, finished: list[Request]) -> None:
        self._donate_prefix(req)
        if req.num_output_tokens == 0:
            req.first_token_s = end_s
        elif req.is_measured:  # recompute after preemption: the gap since its last token
            self.sink.gap(end_s - req.last_token_s, 1)
        req.num_output_tokens += 1
        req.last_token_s = end_s
        if req.is_finished:
            self._on_finished(req, end_s, finished)
        else:
            self._join_decoders(req, end_s)

    def _on_finished(self, req: Request, end_s: float, finished: list[Request]) -> None:
        req.finish_s = end_s
        self._free_request_blocks(req)
        self.sink.finished(req)
        finished.append(req)

    def check_invariants(self) -> None:
        """Blocks held by requests == blocks used; every decoder's materialised state is sane."""
        held = self.prefix_cache.held_blocks if self.prefix_cache else 0
        for req in self.prefilling.values():
            held += self._owned_blocks(req, req.num_computed_tokens)
        for req in self.decoding.values():
            held += self._owned_blocks(req, req.num_computed_tokens + (self.counter - req.join_counter))
        extra = self._extra_held_blocks()
        assert held + extra == self.kv.num_used_blocks, (held, extra, self.kv.num_used_blocks)
        assert self.kv.num_used_blocks + self.kv.num_free_blocks == self.kv.num_blocks

    def _extra_held_blocks(self) -> int:
        """Blocks a policy holds beyond requests' computed tokens (e.g. static preallocation)."""
        return 0
