"""Batching policies: static/dynamic (Triton-style), continuous (vLLM v0 / Orca), chunked prefill
(vLLM v1 / Sarathi). Each is a small class over `BatchScheduler`; both engines drive them.

* Static: a batch forms when `max_batch_size` requests wait or the oldest has waited
  `max_queue_delay_s`; its prompts are prefilled together and it decodes until its longest
  request finishes. KV for prompt + output is reserved up front (no preemption); finished
  sequences stay in the batch as padding, computed but discarded, until the batch ends.
* Continuous: iteration-level scheduling, prefill-first: while waiting requests fit
  (`max_num_seqs`, `max_num_batched_tokens`, KV blocks above a watermark), a step prefills them
  (decodes pause for that step); otherwise all running requests decode. A prompt longer than
  `max_num_batched_tokens` can never be scheduled and is rejected (counted), as vLLM refuses it.
* Chunked prefill: a token budget of `max_num_batched_tokens` per step: every running decode
  first, then the continuing partial prefill(s), then new requests, the last one chunked to fill
  the budget. Steps mix prefill chunks and decodes.
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.kv_cache import KVCacheManager
from sim.plan import PrefillChunk, StepPlan
from sim.prefix_cache import PrefixCache
from sim.request import Request
from sim.scheduler import BatchScheduler, TokenSink

WATERMARK_FRACTION = 0.01
TIME_EPSILON_S = 1e-9  # clock values that differ by float rounding only are the same instant  # vLLM keeps 1% of blocks free when admitting, to avoid thrashing


@dataclass(frozen=True)
class SchedulerConfig:
    policy: str = "continuous"  # static | continuous | chunked
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    block_size_tokens: int = 16
    max_batch_size: int = 8  # static
    max_queue_delay_s: float = 0.0  # static
    enable_prefix_caching: bool = False  # continuous and chunked; needs a trace with prefix hashes

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"policy: expected one of {', '.join(POLICIES)}, got {self.policy!r}")
        for name in ("max_num_seqs", "max_num_batched_tokens", "block_size_tokens", "max_batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}: expected a positive integer, got {value!r}")
        if self.enable_prefix_caching and self.policy == "static":
            raise ValueError("enable_prefix_caching: not available with static batching")
        if not self.max_queue_delay_s >= 0:
            raise ValueError(f"max_queue_delay_s: expected >= 0, got {self.max_queue_delay_s!r}")


class _TokenBudgetScheduler(BatchScheduler):
    """Iteration-level policies with a per-step token budget and a cap on running sequences."""

    def __init__(self, kv: KVCacheManager, sink: TokenSink | None = None, *, max_num_seqs: int = 256,
                 max_num_batched_tokens: int = 8192, max_model_len: int | None = None,
                 prefix_cache: PrefixCache | None = None) -> None:
        super().__init__(kv, sink, max_num_seqs=max_num_seqs, max_model_len=max_model_len,
                         prefix_cache=prefix_cache)
        self.max_num_batched_tokens = max_num_batched_tokens
        self.watermark_blocks = int(WATERMARK_FRACTION * kv.num_blocks)

    def wants_wakeup_on_arrival(self) -> bool:
        return len(self.decoding) + len(self.prefilling) < self.max_num_seqs

    def _admit_head(self, num_tokens: int, has_other_work: bool, now_s: float) -> Request | None:
        """Start prefilling the first waiting request's next num_tokens, unless that would take the
        free blocks below the watermark while other work exists, or the cache is full."""
        need = self.kv.blocks_for(num_tokens)
        if self.available_blocks - need < self.watermark_blocks and has_other_work:
            return None
        req = self.waiting[0]
        if not self.start_prefill(req, num_tokens, now_s):
            return None
        return self.waiting.popleft()


class ContinuousScheduler(_TokenBudgetScheduler):
    name = "continuous"

    def rejection_reason(self, req: Request) -> str:
        if req.prompt_tokens > self.max_num_batched_tokens:
            return "prompt_exceeds_max_num_batched_tokens"
        return super().rejection_reason(req)

    def _schedule(self, now_s: float) -> StepPlan | None:
        chunks = self._admit_prefills(now_s)
        if chunks:
            return StepPlan(prefill=tuple(chunks))
        return self.decode_plan()

    def _admit_prefills(self, now_s: float) -> list[PrefillChunk]:
        chunks: list[PrefillChunk] = []
        tokens = 0
        while self.waiting and len(self.decoding) + len(chunks) < self.max_num_seqs:
            req = self.waiting[0]
            n = self.remaining_prefill_tokens(req)
            # a recomputed request longer than the budget may run alone
            if tokens + n > self.max_num_batched_tokens and chunks:
                break
            if self._admit_head(n, bool(chunks or self.decoding), now_s) is None:
                break
            chunks.append(PrefillChunk(req.request_id, req.num_computed_tokens, n, True))
            tokens += n
        return chunks


class ChunkedPrefillScheduler(_TokenBudgetScheduler):
    name = "chunked"

    def _schedule(self, now_s: float) -> StepPlan | None:
        if not (self.waiting or self.prefilling):
            return self.decode_plan()
        # decodes first: one step of growth for every decoder, preempting while it does not fit
        while self.decoding and not self.grow_decoders(1):
            self.preempt_latest()
        budget = self.max_num_batched_tokens - len(self.decoding)
        chunks = self._prefill_chunks(budget, now_s)
        if not chunks:
            if self.decoding:
                self._release_one_step_growth()
                return self.decode_plan()
            return None
        return StepPlan(prefill=tuple(chunks), decode_ids=tuple(self.decoding),
                        decode_context_tokens=self.decode_context_tokens(), max_repeats=1)

    def _prefill_chunks(self, budget: int, now_s: float) -> list[PrefillChunk]:
        chunks: list[PrefillChunk] = []
        for req in list(self.prefilling.values()):  # continue partial prefills first (FCFS)
            if budget <= 0:
                return chunks
            n = min(req.num_known_tokens - req.num_computed_tokens, budget)
            if not self.start_prefill(req, n, now_s):
                return chunks
            chunks.append(self._chunk(req, n))
            budget -= n
        while self.waiting and budget > 0 and len(self.decoding) + len(self.prefilling) < self.max_num_seqs:
            req = self.waiting[0]
            n = min(self.remaining_prefill_tokens(req), budget)
            if self._admit_head(n, bool(chunks or self.decoding), now_s) is None:
                break
            chunks.append(self._chunk(req, n))
            budget -= n
        return chunks

    @staticmethod
    def _chunk(req: Request, n: int) -> PrefillChunk:
        start = req.num_computed_tokens
        return PrefillChunk(req.request_id, start, n, start + n == req.num_known_tokens)

    def _release_one_step_growth(self) -> None:
        self._release_unused_growth(1, 0)


class StaticBatchScheduler(BatchScheduler):
    name = "static"

    def __init__(self, kv: KVCacheManager, sink: TokenSink | None = None, *, max_batch_size: int = 8,
                 max_queue_delay_s: float = 0.0, max_model_len: int | None = None) -> None:
        super().__init__(kv, sink, max_num_seqs=max_batch_size, max_model_len=max_model_len)
        self.max_batch_size = max_batch_size
        self.max_queue_delay_s = max_queue_delay_s
        self._batch_blocks = 0  # reserved for the running batch (prompt + output of each)
        self._padding_count = 0  # finished requests still computed until the batch ends
        self._padding_offset_sum = 0

    def wants_wakeup_on_arrival(self) -> bool:
        return not (self.decoding or self.prefilling)

    def _schedule(self, now_s: float) -> StepPlan | None:
        self.next_wakeup_s = None
        if self.decoding:
            steps = self.steps_to_first_finish()
            return StepPlan(decode_ids=tuple(self.decoding),
                            decode_context_tokens=self.decode_context_tokens(),
                            num_padding_seqs=self._padding_count,
                            padding_context_tokens=self._padding_context(),
                            max_repeats=steps)
        self._end_batch()
        if not self.waiting:
            return None
        deadline_s = self.waiting[0].arrival_s + self.max_queue_delay_s
        if len(self.waiting) < self.max_batch_size and now_s + TIME_EPSILON_S < deadline_s:
            self.next_wakeup_s = deadline_s
            return None
        chunks = []
        while self.waiting and len(chunks) < self.max_batch_size:
            req = self.waiting[0]
            reserve = self.kv.blocks_for(req.prompt_tokens + req.output_tokens)
            if not self.kv.allocate(reserve):
                break
            self.waiting.popleft()
            self._batch_blocks += reserve
            req.scheduled_s = now_s
            self.prefilling[req.request_id] = req
            chunks.append(PrefillChunk(req.request_id, 0, req.prompt_tokens, True))
        return StepPlan(prefill=tuple(chunks)) if chunks else None

    def _padding_context(self) -> int:
        return self._padding_offset_sum + self._padding_count * self.counter

    def grow_decoders(self, max_steps: int) -> int:
        return max_steps  # KV was reserved for the whole batch up front

    def _release_unused_growth(self, granted: int, used: int) -> None:
        pass

    def _on_finished(self, req: Request, end_s: float, finished: list[Request]) -> None:
        req.finish_s = end_s
        self.sink.finished(req)
        finished.append(req)
        self._padding_count += 1  # computed on as padding, one token a step, until the batch ends
        self._padding_offset_sum += req.num_computed_tokens - self.counter

    def _end_batch(self) -> None:
        if self._batch_blocks:
            self.kv.free(self._batch_blocks)
        self._batch_blocks = 0
        self._padding_count = 0
        self._padding_offset_sum = 0

    def _extra_held_blocks(self) -> int:
        held = 0
        for req in self.prefilling.values():
            held += self.kv.blocks_for(req.num_computed_tokens)
        for req in self.decoding.values():
            held += self.kv.blocks_for(req.num_computed_tokens + self.counter - req.join_counter)
        return self._batch_blocks - held


POLICIES = ("static", "continuous", "chunked")


def make_scheduler(config: SchedulerConfig, kv: KVCacheManager, sink: TokenSink | None = None,
                   max_model_len: int | None = None, prefix_block_tokens: int | None = None
                   ) -> BatchScheduler:
    if config.policy == "static":
        return StaticBatchScheduler(kv, sink, max_batch_size=config.max_batch_size,
                                    max_queue_delay_s=config.max_queue_delay_s,
                                    max_model_len=max_model_len)
    cache = None
    if config.enable_prefix_caching and prefix_block_tokens:
        cache = PrefixCache(prefix_block_tokens, config.block_size_tokens)
    if config.policy == "chunked":
        return ChunkedPrefillScheduler(kv, sink, max_num_seqs=config.max_num_seqs,
                                       max_num_batched_tokens=config.max_num_batched_tokens,
                                       max_model_len=max_model_len, prefix_cache=cache)
    return ContinuousScheduler(kv, sink, max_num_seqs=config.max_num_seqs,
                               max_num_batched_tokens=config.max_num_batched_tokens,
                               max_model_len=max_model_len, prefix_cache=cache)
