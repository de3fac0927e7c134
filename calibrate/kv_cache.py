"""A preallocated KV cache: one contiguous region per sequence slot, slots handed out per request.

Modelled: what a static-shape engine (gpt-fast) keeps on the device: for every layer, K and V of
`num_slots` sequences up to `max_seq_len` positions each, laid out
[num_layers, num_slots + 1, num_kv_heads, max_seq_len, head_dim] so that one sequence's keys of one
layer are a contiguous [num_kv_heads, context, head_dim] view (attention reads it in place, no
gather). Slot `num_slots` is a scratch slot that no request owns: padding rows of a step write and
read it.

Assumed: the cache is stored in the model's compute dtype (fp8 KV is not modelled); slots are
handed out lowest-first so that decoding sequences tend to occupy a contiguous slot range; the
cache starts zeroed and is never cleared (a freed slot keeps stale, finite values that attention
masks out).
"""

from __future__ import annotations

import heapq

import torch


class KVCache:
    """K and V tensors for all layers plus slot bookkeeping (request id -> slot)."""

    def __init__(self, num_layers: int, num_slots: int, num_kv_heads: int, max_seq_len: int,
                 head_dim: int, dtype: torch.dtype, device: torch.device | str) -> None:
        if num_slots <= 0 or max_seq_len <= 0:
            raise ValueError(f"KVCache: num_slots and max_seq_len must be > 0, "
                             f"got {num_slots} and {max_seq_len}")
        shape = (num_layers, num_slots + 1, num_kv_heads, max_seq_len, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.num_slots = num_slots
        self.max_seq_len = max_seq_len
        self._free: list[int] = list(range(num_slots))  # a heap: lowest slot first
        self._slot_of: dict[int, int] = {}

    @property
    def scratch_slot(self) -> int:
        """A slot owned by no request (padding rows write and read it)."""
        return self.num_slots

    @property
    def num_free_slots(self) -> int:
        return len(self._free)

    @property
    def num_bytes(self) -> int:
        return 2 * self.k.numel() * self.k.element_size()

    def slot_of(self, request_id: int) -> int | None:
        return self._slot_of.get(request_id)

    def allocate(self, request_id: int) -> int | None:
        """The request's slot (a new one if it has none); None when every slot is taken."""
        slot = self._slot_of.get(request_id)
        if slot is not None:
            return slot
        if not self._free:
            return None
        slot = heapq.heappop(self._free)
        self._slot_of[request_id] = slot
        return slot

    def free(self, request_id: int) -> bool:
        """Give the request's slot back; False if it held none."""
        slot = self._slot_of.pop(request_id, None)
        if slot is None:
            return False
        heapq.heappush(self._free, slot)
        return True
