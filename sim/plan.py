"""What one engine iteration computes: the contract between a batching policy and an engine.

A request is "computed tokens catching up to known tokens": its known tokens are the prompt plus
the output tokens sampled so far; a step computes the KV of some of the not-yet-computed ones. When
a request's computed tokens reach its known tokens, the step samples one new output token. Full
prefill, chunked prefill, decode and recompute-after-preemption are all this one loop.

A `StepPlan` names the prefill chunks (explicit start and length) and the decoding requests (one
token each, at their current context). The simulated engine may repeat a decode-only plan k times
(`max_repeats`) when the policy guarantees nothing but time changes in between; the real engine
always runs it once.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PrefillChunk:
    """Compute KV for tokens [start, start + num_tokens) of one request."""

    request_id: int
    start: int
    num_tokens: int
    is_sampling: bool  # the chunk reaches the request's last known token: sample one output token

    def __post_init__(self) -> None:
        if self.start < 0 or self.num_tokens <= 0:
            raise ValueError(f"PrefillChunk: bad start/num_tokens {self.start}/{self.num_tokens}")


@dataclass(frozen=True, slots=True)
class StepShape:
    """What the cost model needs of a step: counts only, no identities.

    num_tokens: tokens whose KV is computed this step (prefill + decode).
    num_seqs: sequences in the step.
    num_sampled: sequences that sample a token this step (the LM head runs for these only).
    context_tokens: KV tokens read by attention, summed over sequences (each sequence reads its
        whole context including the new tokens).
    attention_pairs: (query, key) pairs of causal attention, summed over sequences.
    num_prefill_tokens: the part of num_tokens that belongs to prefill chunks.
    num_padding_seqs: sequences computed only as padding (static batching after they finished).
    cached_pairs: the part of attention_pairs whose key was computed in an earlier step: a
        decode's context before it, a later chunk's prefix (n x start). The rest are the causal
        triangles among the step's own tokens. Attention over the cache is a full rectangle of
        tiles; the triangle is not, and kernels run the two at different rates (sim.cost_model).
        0 (the default) is right for fresh prompts; for_decode, for_prefill and StepPlan.shape set it.
    prefix_tokens: the prefill chunks' starts, summed: the cached keys that chunks (not decodes)
        attend. A runner that gathers a chunk's prefix K/V before its kernel pays per such key.
    """

    num_tokens: int
    num_seqs: int
    num_sampled: int
    context_tokens: int
    attention_pairs: int
    num_prefill_tokens: int = 0
    num_padding_seqs: int = 0
    cached_pairs: int = 0
    prefix_tokens: int = 0

    @staticmethod
    def for_decode(num_seqs: int, context_tokens_before: int) -> StepShape:
        """num_seqs sequences each computing one token; contexts (before the step) sum as given."""
        ctx = context_tokens_before + num_seqs
        return StepShape(num_seqs, num_seqs, num_seqs, ctx, ctx, cached_pairs=context_tokens_before)

    @staticmethod
    def for_prefill(lengths: list[int] | tuple[int, ...], starts: list[int] | tuple[int, ...] | None = None,
                    sampling: bool = True) -> StepShape:
        """Chunks of the given lengths at the given start positions (0 = fresh prompts)."""
        starts = starts or [0] * len(lengths)
        tokens = sum(lengths)
        ctx = sum(s + n for s, n in zip(starts, lengths))
        pairs = sum(n * s + n * (n + 1) // 2 for s, n in zip(starts, lengths))
        sampled = len(lengths) if sampling else 0
        cached = sum(n * s for s, n in zip(starts, lengths))
        return StepShape(tokens, len(lengths), sampled, ctx, pairs, num_prefill_tokens=tokens,
                         cached_pairs=cached, prefix_tokens=sum(starts))

    @staticmethod
    def from_record(record: dict) -> StepShape:
        """The shape stored in a measured point's record (its fields by name). A record written
        before cached_pairs existed gets context_tokens - num_tokens and prefix_tokens 0: exact for
        decode steps and fresh prompts (one query per cached key, or none), short for a chunk after
        a prefix."""
        fields = {f: int(record[f]) for f in ("num_tokens", "num_seqs", "num_sampled",
                                              "context_tokens", "attention_pairs")}
        fields["num_prefill_tokens"] = int(record.get("num_prefill_tokens", 0))
        fields["num_padding_seqs"] = int(record.get("num_padding_seqs", 0))
        cached = record.get("cached_pairs")
        fields["cached_pairs"] = (int(cached) if cached is not None
                                  else fields["context_tokens"] - fields["num_tokens"])
        fields["prefix_tokens"] = int(record.get("prefix_tokens", 0))
        return StepShape(**fields)

    def __add__(self, other: StepShape) -> StepShape:
        return StepShape(self.num_tokens + other.num_tokens, self.num_seqs + other.num_seqs,
                         self.num_sampled + other.num_sampled,
                         self.context_tokens + other.context_tokens,
                         self.attention_pairs + other.attention_pairs,
                         self.num_prefill_tokens + other.num_prefill_tokens,
                         self.num_padding_seqs + other.num_padding_seqs,
                         self.cached_pairs + other.cached_pairs,
                         self.prefix_tokens + other.prefix_tokens)


@dataclass(frozen=True, slots=True)
class StepPlan:
    """One iteration: prefill chunks, decoding requests, and requests preempted before it.

    decode_context_tokens: the decoders' contexts (computed tokens) before the step, summed.
    num_padding_seqs / padding_context_tokens: finished sequences a static batch still computes.
    max_repeats: how many consecutive times a decode-only plan may run before the policy must be
        asked again (first finish, KV blocks running out); 1 for plans with prefill chunks.
    """

    prefill: tuple[PrefillChunk, ...] = ()
    decode_ids: tuple[int, ...] = ()
    decode_context_tokens: int = 0
    preempted_ids: tuple[int, ...] = ()
    num_padding_seqs: int = 0
    padding_context_tokens: int = 0
    max_repeats: int = 1

    @property
    def is_empty(self) -> bool:
        return not self.prefill and not self.decode_ids

    @property
    def num_tokens(self) -> int:
        return sum(c.num_tokens for c in self.prefill) + len(self.decode_ids) + self.num_padding_seqs

    def shape(self, repeat_index: int = 0) -> StepShape:
        """The shape of this plan's step number `repeat_index` (decoders' contexts grow by one per step)."""
        n_dec = len(self.decode_ids) + self.num_padding_seqs
        ctx = self.decode_context_tokens + self.padding_context_tokens + (repeat_index + 1) * n_dec
        tokens, pairs, prefill_tokens, sampled = n_dec, ctx, 0, len(self.decode_ids)
        cached = ctx - n_dec  # each decoder's one query against its context before the step
        prefix = 0
        for c in self.prefill:  # one pass: this runs for every prefill or mixed step
            n, start = c.num_tokens, c.start
            prefill_tokens += n
            ctx += start + n
            pairs += n * start + n * (n + 1) // 2
            cached += n * start
            prefix += start
            sampled += c.is_sampling
        return StepShape(tokens + prefill_tokens, n_dec + len(self.prefill), sampled, ctx, pairs,
                         prefill_tokens, self.num_padding_seqs, cached, prefix)
