"""Prefix caching (KV reuse) at the granularity of a trace's prefix-hash blocks.

Modelled as vLLM's automatic prefix caching: a request whose leading prefix blocks (Mooncake's
`hash_ids`, one per `block_tokens` tokens; equal ids = equal prefix) are cached skips computing
them. Cached blocks stay in the KV cache after their requests finish, as evictable blocks in LRU
order, until an allocation needs their room. Each entry holds `kv_blocks_per_entry` KV blocks and
a reference count (running requests using it). The scheduler keeps the block accounting:
blocks used = blocks requests own + blocks the cache holds.
Assumed: a request computes at least its last prompt token (to sample), so a hit covers at most
whole entries below the prompt length; entries are added when a request's prefill completes.
"""

from __future__ import annotations

from collections import OrderedDict


class PrefixCache:
    __slots__ = ("block_tokens", "kv_blocks_per_entry", "_refs", "_evictable", "hit_tokens",
                 "lookup_tokens", "num_evictions")

    def __init__(self, block_tokens: int, kv_block_size: int) -> None:
        if block_tokens < 1:
            raise ValueError(f"prefix block_tokens: expected >= 1, got {block_tokens}")
        if block_tokens % kv_block_size:
            raise ValueError(f"prefix block_tokens {block_tokens} must be a multiple of the KV block "
                             f"size {kv_block_size}")
        self.block_tokens = block_tokens
        self.kv_blocks_per_entry = block_tokens // kv_block_size
        self._refs: dict[int, int] = {}
        self._evictable: OrderedDict[int, None] = OrderedDict()
        self.hit_tokens = 0  # prompt tokens served from the cache
        self.lookup_tokens = 0  # prompt tokens of requests that looked up the cache
        self.num_evictions = 0

    @property
    def num_entries(self) -> int:
        return len(self._refs)

    @property
    def held_blocks(self) -> int:
        return len(self._refs) * self.kv_blocks_per_entry

    @property
    def evictable_blocks(self) -> int:
        return len(self._evictable) * self.kv_blocks_per_entry

    def match(self, hashes: tuple[int, ...], max_entries: int) -> int:
        """Leading entries of `hashes` that are cached (at most max_entries)."""
        n = 0
        refs = self._refs
        for h in hashes[:max_entries]:
            if h not in refs:
                break
            n += 1
        return n

    def acquire(self, hashes: tuple[int, ...]) -> None:
        for h in hashes:
            if self._refs[h] == 0:
                del self._evictable[h]
            self._refs[h] += 1

    def release(self, hashes: tuple[int, ...]) -> None:
        for h in hashes:
            self._refs[h] -= 1
            if self._refs[h] == 0:
                self._evictable[h] = None

    def insert(self, h: int) -> bool:
        """Take over a request's computed block as a cache entry (held by that request)."""
        if h in self._refs:
            return False
        self._refs[h] = 1
        return True

    def evict_one(self) -> int:
        """Drop the least recently released unreferenced entry; returns the KV blocks freed."""
        h, _ = self._evictable.popitem(last=False)
        del self._refs[h]
        self.num_evictions += 1
        return self.kv_blocks_per_entry
