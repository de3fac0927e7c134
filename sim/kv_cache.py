"""Paged KV cache: block accounting and the capacity a device leaves for it.

Modelled as vLLM's block manager: the cache is `num_blocks` blocks of `block_size_tokens` tokens;
a sequence of c computed tokens holds ceil(c / block_size) blocks; allocation is all-or-nothing
(it returns False when the cache is full, and the scheduler preempts). Capacity is derived, never
an arbitrary default: device memory x utilisation - weights - activation reserve, divided by the
KV bytes of a block (per device of the TP group).

Activation reserve (what vLLM measures with a profiling forward pass at max_num_batched_tokens):
per token of the largest step, the residual stream and normed input (2 x hidden), q/k/v and the
attention output ((2 q_size + 2 kv_size) / tp), and the MLP's gate, up and activation (3 x
intermediate x experts-per-token / tp), in the compute dtype; plus fp32 logits for up to
max_num_seqs sampled rows (vocab / tp).
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.errors import InputError
from sim.spec.model import BYTES_PER_ELEMENT, ModelSpec
from sim.spec.profile import Profile


class KVCacheManager:
    """Counts blocks; the scheduler knows which request holds how many (ceil(tokens / block))."""

    __slots__ = ("num_blocks", "block_size_tokens", "num_free_blocks")

    def __init__(self, num_blocks: int, block_size_tokens: int) -> None:
        if num_blocks < 1:
            raise ValueError(f"num_blocks: expected >= 1, got {num_blocks}")
        if block_size_tokens < 1:
            raise ValueError(f"block_size_tokens: expected >= 1, got {block_size_tokens}")
        self.num_blocks = num_blocks
        self.block_size_tokens = block_size_tokens
        self.num_free_blocks = num_blocks

    @property
    def num_used_blocks(self) -> int:
        return self.num_blocks - self.num_free_blocks

    @property
    def usage(self) -> float:
        return self.num_used_blocks / self.num_blocks

    def blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size_tokens)

    def can_allocate(self, num_blocks: int) -> bool:
        return num_blocks <= self.num_free_blocks

    def allocate(self, num_blocks: int) -> bool:
        if num_blocks > self.num_free_blocks:
            return False
        self.num_free_blocks -= num_blocks
        return True

    def free(self, num_blocks: int) -> None:
        self.num_free_blocks += num_blocks
        if self.num_free_blocks > self.num_blocks:
            raise AssertionError("KV cache: freed more blocks than were allocated")


@dataclass(frozen=True)
class KVCapacity:
    num_blocks: int
    block_size_tokens: int
    bytes_per_block: float  # per device
    weight_bytes_per_device: float
    activation_reserve_bytes: float
    usable_bytes: float  # memory x utilisation per device

    @property
    def num_tokens(self) -> int:
        return self.num_blocks * self.block_size_tokens


def activation_reserve_bytes(model: ModelSpec, tp: int, max_num_batched_tokens: int,
                             max_num_seqs: int) -> float:
    act = BYTES_PER_ELEMENT["bf16" if model.weight_dtype in ("fp8", "int8", "int4") else model.weight_dtype]
    experts = model.num_experts_per_token if model.is_moe else 1
    per_token = (2 * model.hidden_size + (2 * model.q_size + 2 * model.kv_size) / tp
                 + 3 * model.intermediate_size * experts / tp)
    logits = max_num_seqs * model.vocab_size / tp * 4.0
    return max_num_batched_tokens * per_token * act + logits


def kv_capacity(model: ModelSpec, profile: Profile, tp: int, gpu_memory_utilization: float,
                block_size_tokens: int, max_num_batched_tokens: int, max_num_seqs: int,
                draft: ModelSpec | None = None) -> KVCapacity:
    """Blocks of KV cache one replica (a TP group) holds. Raises InputError if the model does not fit.
    A speculative-decoding draft model's weights and KV (one draft KV token per target token)
    share the same memory."""
    usable = profile.device.memory_bytes * gpu_memory_utilization
    weights = (model.weight_bytes + (draft.weight_bytes if draft else 0.0)) / tp
    reserve = activation_reserve_bytes(model, tp, max_num_batched_tokens, max_num_seqs)
    kv_share = max(1.0 / tp, 1.0 / model.num_kv_heads)
    bytes_per_block = model.kv_bytes_per_token * kv_share * block_size_tokens
    if draft is not None:
        bytes_per_block += draft.kv_bytes_per_token * max(1.0 / tp, 1.0 / draft.num_kv_heads) * block_size_tokens
    free = usable - weights - reserve
    num_blocks = int(free // bytes_per_block) if free > 0 else 0
    if num_blocks < 1:
        smallest = smallest_fitting_tp(model, profile, gpu_memory_utilization, block_size_tokens,
                                       max_num_batched_tokens, max_num_seqs)
        hint = (f"; the smallest TP that fits is {smallest}" if smallest
                else f"; it does not fit even on all {profile.device.count} devices of this profile")
        raise InputError(profile.path, "device.memory_bytes",
                         f"{model.name} ({weights / 1e9:.1f} GB weights per device at tp={tp}, "
                         f"{reserve / 1e9:.2f} GB activations) leaves no room for a KV cache in "
                         f"{usable / 1e9:.1f} GB{hint}")
    return KVCapacity(num_blocks, block_size_tokens, bytes_per_block, weights, reserve, usable)


def smallest_fitting_tp(model: ModelSpec, profile: Profile, gpu_memory_utilization: float,
                        block_size_tokens: int, max_num_batched_tokens: int, max_num_seqs: int,
                        min_kv_tokens: int | None = None) -> int | None:
    """The smallest power-of-two TP (up to the profile's device count) that holds the weights,
    the activation reserve and KV for min_kv_tokens (default: one max-length sequence)."""
    need_tokens = min_kv_tokens or min(model.max_position_embeddings, 4096)
    tp = 1
    while tp <= profile.device.count:
        if model.num_attention_heads % tp == 0:
            usable = profile.device.memory_bytes * gpu_memory_utilization
            kv_share = max(1.0 / tp, 1.0 / model.num_kv_heads)
            kv = model.kv_bytes_per_token * kv_share * need_tokens
            reserve = activation_reserve_bytes(model, tp, max_num_batched_tokens, max_num_seqs)
            if usable - model.weight_bytes / tp - reserve >= kv:
                return tp
        tp *= 2
    return None


def blocks_needed_to_grow(residue_counts: list[int], counter: int, num_steps: int,
                          block_size: int) -> int:
    """New blocks a set of decoding sequences needs to advance num_steps steps together.

    residue_counts[r] = number of sequences whose (context - counter) % block_size == r. A sequence
    with context c needs a new block before a step when c % block_size == 0 (its blocks are full).
    """
    full, rem = divmod(num_steps, block_size)
    total = full * sum(residue_counts)  # every sequence crosses once per block_size steps
    if rem:  # and once more in the remaining steps if its next crossing comes before they end
        for r, n in enumerate(residue_counts):
            if n and (block_size - (r + counter) % block_size) % block_size < rem:
                total += n
    return total


def max_steps_with_blocks(residue_counts: list[int], counter: int, max_steps: int,
                          block_size: int, free_blocks: int) -> int:
    """The largest k <= max_steps whose growth fits in free_blocks (monotone: binary search)."""
    if blocks_needed_to_grow(residue_counts, counter, max_steps, block_size) <= free_blocks:
        return max_steps
    lo, hi = 0, max_steps  # fits(lo) and not fits(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if blocks_needed_to_grow(residue_counts, counter, mid, block_size) <= free_blocks:
            lo = mid
        else:
            hi = mid
    return lo

