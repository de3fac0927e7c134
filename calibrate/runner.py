"""The real engine's step executor: runs a `sim.plan.StepPlan` on real tensors.

Modelled: an engine iteration exactly as the simulator's scheduler emits it. Each request is
"computed tokens catching up to known tokens" (prompt + sampled outputs). One step is ONE forward
pass: the tokens of all prefill chunks and all decodes are packed together, so every linear layer
runs one GEMM over [step tokens, hidden]; attention runs per prefill chunk (causal, offset by the
chunk's cached prefix) and, for decodes, per run of contiguous cache slots (batched, each sequence
masked to its own context, K/V read in place from the cache; a run whose contexts differ is split
where the padded K/V saved outweighs one more call, `split_padding`; on a CPU every decode attends
alone, so attention costs a call per sequence plus its own context, the cost model's form).
Logits are computed only for rows that sample (a chunk reaching its request's last known token,
and every decode); sampling is greedy (argmax) and the token is appended to the request's known
tokens.

Padding (`plan.num_padding_seqs`, static batching) is executed as dummy decode rows: they go
through every linear layer like real rows and attend to a scratch cache slot at the padding's mean
context (`padding_context_tokens // num_padding_seqs`); they sample nothing (the LM head does not
run for them, as the cost model's StepShape says).

On CPU the weights of the larger linear layers are packed for oneDNN (`Transformer.pack_weights`),
which ran GEMMs ~2x faster than MKL on the AMD machine this was written on (MoE experts and small
layers stay dense, on MKL).

Assumed: greedy sampling; one cache slot of max_seq_len positions per running request; the KV
cache has the model's dtype. With `compile_decode=True` on CUDA, decode-only steps run a static-
shape path (batch padded to a power of two, context padded to a power of two >= 256) through
torch.compile(mode="reduce-overhead"), i.e. CUDA graphs; on other devices the same static path runs
eagerly (it is what gets compiled, so it is tested on CPU).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor

from calibrate.devices import resolve_device, synchronize
from calibrate.kv_cache import KVCache
from calibrate.model import (DecodeRun, SeqSpan, StepBatch, Transformer, load_safetensors,
                             weight_bytes)
from sim.spec.model import ModelSpec
from sim.plan import StepPlan

DEFAULT_MAX_SEQ_LEN = 2048
MIN_CONTEXT_BUCKET = 256


class Runner:
    """A model, its KV cache and the per-request token state; executes one StepPlan per call."""

    def __init__(self, spec: ModelSpec, dtype: str = "fp32", device: str = "cpu",
                 max_num_seqs: int = 8, max_seq_len: int | None = None, seed: int = 0,
                 compile_decode: bool = False, checkpoint: str | Path | None = None) -> None:
        max_seq_len = max_seq_len or min(DEFAULT_MAX_SEQ_LEN, spec.max_position_embeddings)
        if max_seq_len > spec.max_position_embeddings:
            raise ValueError(f"max_seq_len: {max_seq_len} exceeds the model's "
                             f"max_position_embeddings {spec.max_position_embeddings}")
        self.spec = spec
        self.device = resolve_device(device)
        self._decode_call_positions = (DECODE_CALL_POSITIONS_CPU if self.device.type == "cpu"
                                       else DECODE_CALL_POSITIONS_OTHER)
        self.model = Transformer(spec, dtype, self.device, seed, max_seq_len).eval()
        if checkpoint is not None:
            load_safetensors(self.model, checkpoint)
        if self.device.type == "cpu":
            self.model.pack_weights()
        self.cache = KVCache(spec.num_layers, max_num_seqs, spec.num_kv_heads, max_seq_len,
                             spec.head_dim, self.model.dtype, self.device)
        self._tokens: dict[int, list[int]] = {}
        self._num_computed: dict[int, int] = {}
        self._decode_fn = self._make_decode_fn() if compile_decode else None

    # ---- facts -------------------------------------------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    @property
    def max_seq_len(self) -> int:
        return self.cache.max_seq_len

    @property
    def weight_bytes(self) -> int:
        return weight_bytes(self.model)

    def known_tokens(self, request_id: int) -> list[int]:
        return list(self._known(request_id))

    def num_computed(self, request_id: int) -> int:
        self._known(request_id)
        return self._num_computed[request_id]

    # ---- request state -----------------------------------------------------------------------
    def add_request(self, request_id: int, prompt_token_ids: Sequence[int] | Tensor) -> None:
        tokens = (prompt_token_ids.flatten().tolist() if isinstance(prompt_token_ids, Tensor)
                  else [int(t) for t in prompt_token_ids])
        if request_id in self._tokens:
            raise ValueError(f"request {request_id}: already added")
        if not tokens:
            raise ValueError(f"request {request_id}: empty prompt")
        if len(tokens) > self.max_seq_len:
            raise ValueError(f"request {request_id}: prompt of {len(tokens)} tokens exceeds "
                             f"max_seq_len {self.max_seq_len}")
        if min(tokens) < 0 or max(tokens) >= self.spec.vocab_size:
            raise ValueError(f"request {request_id}: token ids must be in "
                             f"[0, {self.spec.vocab_size})")
        self._tokens[request_id] = tokens
        self._num_computed[request_id] = 0

    def append_token(self, request_id: int, token: int) -> None:
        """Append a known token by hand (teacher forcing in tests; execute() appends samples)."""
        self._known(request_id).append(int(token))

    def free(self, request_id: int) -> None:
        """Forget a request and give its cache slot back."""
        self._known(request_id)
        self.cache.free(request_id)
        del self._tokens[request_id], self._num_computed[request_id]

    def reserve_context(self, request_id: int, num_tokens: int) -> None:
        """Mark positions [0, num_tokens) as computed without computing them (their K/V is
        whatever the slot holds): lets a calibration sweep time a decode at that context. Known
        tokens are padded (repeating the last one) so that one uncomputed token remains."""
        tokens = self._known(request_id)
        if not 0 <= num_tokens < self.max_seq_len:
            raise ValueError(f"reserve_context: num_tokens must be in [0, {self.max_seq_len}), "
                             f"got {num_tokens}")
        if self.cache.allocate(request_id) is None:
            raise ValueError(f"reserve_context: no free cache slot for request {request_id} "
                             f"(max_num_seqs={self.cache.num_slots})")
        tokens.extend([tokens[-1]] * (num_tokens + 1 - len(tokens)))
        self._num_computed[request_id] = num_tokens

    def warm_shapes(self, max_rows: int, max_sampled_rows: int | None = None) -> int:
        """Build the GEMM kernels of every step size up to max_rows tokens now (see
        `Transformer.warm_shapes`); returns how many ran (0 on devices that pack nothing)."""
        sampled = self.cache.num_slots if max_sampled_rows is None else max_sampled_rows
        return self.model.warm_shapes(max_rows, min(sampled, max_rows))

    def synchronize(self) -> None:
        synchronize(self.device)

    # ---- steps -------------------------------------------------------------------------------
    def execute(self, plan: StepPlan) -> dict[int, int]:
        """Run one step; returns {request_id: sampled token} for every sampling request."""
        with torch.inference_mode():
            logits, row_ids = self._run(plan, all_rows=False)
            sampled = logits.argmax(dim=-1).tolist()
        for request_id, token in zip(row_ids, sampled):
            self._tokens[request_id].append(token)
        return dict(zip(row_ids, sampled))

    def forward_logits(self, plan: StepPlan) -> dict[int, Tensor]:
        """Run one step without sampling; fp32 logits [rows, vocab] for every computed token of
        every request in it. A request whose step reached its last known token needs a token
        (`append_token`) before it can decode."""
        with torch.inference_mode():
            logits, row_ids = self._run(plan, all_rows=True)
            logits = logits.clone()
        out: dict[int, list[Tensor]] = {}
        for index, request_id in enumerate(row_ids):
            out.setdefault(request_id, []).append(logits[index])
        return {rid: torch.stack(rows) for rid, rows in out.items()}

    def _run(self, plan: StepPlan, all_rows: bool) -> tuple[Tensor, list[int]]:
        """Check, preempt, allocate, forward; returns logits of the output rows and their ids."""
        self._check(plan)
        for request_id in plan.preempted_ids:
            self.cache.free(request_id)
            self._num_computed[request_id] = 0
        self._allocate(plan)
        if plan.is_empty:  # preemptions only (padding alone computes nothing anyone reads)
            return torch.empty(0, self.spec.vocab_size, device=self.device), []
        if self._decode_fn is not None and not plan.prefill and plan.decode_ids:
            logits = self._run_static_decode(plan)
            row_ids = list(plan.decode_ids)
        else:
            step, rows, row_ids = self._build_step(plan, all_rows)
            hidden = self.model(step, self.cache.k, self.cache.v)
            logits = self.model.logits(hidden[rows])
        for chunk in plan.prefill:
            self._num_computed[chunk.request_id] = chunk.start + chunk.num_tokens
        for request_id in plan.decode_ids:
            self._num_computed[request_id] += 1
        return logits, row_ids

    def _known(self, request_id: int) -> list[int]:
        tokens = self._tokens.get(request_id)
        if tokens is None:
            raise ValueError(f"request {request_id}: unknown to the runner (add_request first)")
        return tokens

    def _check(self, plan: StepPlan) -> None:
        """Reject a plan that disagrees with the runner's state, before changing anything."""
        preempted = set(plan.preempted_ids)
        for request_id in preempted:
            self._known(request_id)
        seen: set[int] = set()

        def computed(request_id: int) -> int:
            if request_id in seen:
                raise ValueError(f"StepPlan: request {request_id} appears twice in one step")
            seen.add(request_id)
            self._known(request_id)
            return 0 if request_id in preempted else self._num_computed[request_id]

        for chunk in plan.prefill:
            rid, end = chunk.request_id, chunk.start + chunk.num_tokens
            done, known = computed(rid), len(self._tokens[rid])
            if chunk.start != done:
                raise ValueError(
                    f"StepPlan: prefill chunk of request {rid} starts at token {chunk.start}, but "
                    f"the runner has computed {done} of its tokens (chunk.start must equal the "
                    "computed count)")
            if end > known or chunk.is_sampling != (end == known):
                raise ValueError(
                    f"StepPlan: prefill chunk of request {rid} covers tokens [{chunk.start}, {end})"
                    f" with is_sampling={chunk.is_sampling}, but the request has {known} known "
                    "tokens (a chunk may not pass them, and samples exactly when it reaches them)")
            if end > self.max_seq_len:
                raise ValueError(f"StepPlan: prefill chunk of request {rid} ends at {end}, "
                                 f"beyond max_seq_len {self.max_seq_len}")
        for rid in plan.decode_ids:
            done, known = computed(rid), len(self._tokens[rid])
            if done != known - 1:
                raise ValueError(
                    f"StepPlan: decode of request {rid} needs exactly one uncomputed token, but it "
                    f"has {known} known and {done} computed")
            if known > self.max_seq_len:
                raise ValueError(f"StepPlan: request {rid} reaches {known} tokens, beyond "
                                 f"max_seq_len {self.max_seq_len}")
        if plan.num_padding_seqs < 0:
            raise ValueError("StepPlan: num_padding_seqs must be >= 0")

    def _allocate(self, plan: StepPlan) -> None:
        request_ids = [c.request_id for c in plan.prefill] + list(plan.decode_ids)
        missing = [rid for rid in request_ids if self.cache.slot_of(rid) is None]
        if len(missing) > self.cache.num_free_slots:
            raise ValueError(f"StepPlan: needs {len(missing)} new cache slots, "
                             f"{self.cache.num_free_slots} free (max_num_seqs="
                             f"{self.cache.num_slots})")
        for rid in missing:
            self.cache.allocate(rid)

    # ---- the packed step ---------------------------------------------------------------------
    def _build_step(self, plan: StepPlan,
                    all_rows: bool) -> tuple[StepBatch, slice | Tensor, list[int]]:
        """Packed tokens (prefill chunks, then decodes by slot, then padding), attention groups,
        the rows whose logits are wanted and the request id of each of those rows."""
        ids: list[int] = []
        positions: list[int] = []
        slots: list[int] = []
        groups: list[SeqSpan | DecodeRun] = []
        out_rows: list[int] = []
        row_ids: list[int] = []
        for chunk in plan.prefill:
            rid, begin, end = chunk.request_id, len(ids), chunk.start + chunk.num_tokens
            slot = self.cache.slot_of(rid)
            ids += self._tokens[rid][chunk.start:end]
            positions += range(chunk.start, end)
            slots += [slot] * chunk.num_tokens
            groups.append(self._chunk_span(begin, chunk.num_tokens, slot, chunk.start))
            wanted = (range(begin, begin + chunk.num_tokens) if all_rows
                      else [begin + chunk.num_tokens - 1] if chunk.is_sampling else [])
            out_rows += wanted
            row_ids += [rid] * len(wanted)
        for run, contexts in self._decode_pieces(plan.decode_ids):
            begin = len(ids)
            ids += [self._tokens[rid][-1] for _, rid in run]
            positions += [c - 1 for c in contexts]
            slots += [slot for slot, _ in run]
            groups.append(self._decode_run(begin, run[0][0], contexts))
            out_rows += range(begin, begin + len(run))
            row_ids += [rid for _, rid in run]
        if plan.num_padding_seqs:
            count = plan.num_padding_seqs
            position = min(plan.padding_context_tokens // count, self.max_seq_len - 1)
            groups.append(SeqSpan(len(ids), count, self.cache.scratch_slot, position + 1, False))
            ids += [0] * count
            positions += [position] * count
            slots += [self.cache.scratch_slot] * count
        step = StepBatch(self._tensor(ids), self._tensor(positions), self._tensor(slots),
                         tuple(groups))
        is_range = out_rows == list(range(out_rows[0], out_rows[-1] + 1)) if out_rows else True
        rows = (slice(out_rows[0], out_rows[-1] + 1) if out_rows and is_range
                else self._tensor(out_rows))
        return step, rows, row_ids

    def _tensor(self, values: list[int]) -> Tensor:
        return torch.tensor(values, dtype=torch.long).to(self.device, non_blocking=True)

    def _chunk_span(self, begin: int, num_tokens: int, slot: int, start: int) -> SeqSpan:
        context = start + num_tokens
        if num_tokens == 1 or start == 0:  # one row sees everything; a fresh chunk is plain causal
            return SeqSpan(begin, num_tokens, slot, context, is_causal=num_tokens > 1)
        keys = torch.arange(context, device=self.device)
        queries = torch.arange(start, context, device=self.device)
        return SeqSpan(begin, num_tokens, slot, context, True, keys[None, :] <= queries[:, None])

    def _decode_pieces(self, decode_ids: Sequence[int]):
        """The decodes as runs of consecutive slots, each split where the padding saved outweighs
        one more attention call (split_padding), or one by one where the device's call_positions
        is None: (slot, request id) pairs and contexts per piece."""
        pairs = sorted((self.cache.slot_of(r), r) for r in decode_ids)
        if self._decode_call_positions is None:
            for pair in pairs:
                yield [pair], [self._num_computed[pair[1]] + 1]
            return
        for run in _slot_runs(pairs):
            contexts = [self._num_computed[rid] + 1 for _, rid in run]
            begin = 0
            for length in split_padding(contexts, self._decode_call_positions):
                yield run[begin:begin + length], contexts[begin:begin + length]
                begin += length

    def _decode_run(self, begin: int, slot_begin: int, contexts: list[int]) -> DecodeRun:
        longest = max(contexts)
        if min(contexts) == longest:
            return DecodeRun(begin, len(contexts), slot_begin, longest)
        lengths = torch.tensor(contexts, device=self.device)
        mask = torch.arange(longest, device=self.device)[None, :] < lengths[:, None]
        return DecodeRun(begin, len(contexts), slot_begin, longest, mask[:, None, None, :])

    # ---- static-shape decode (torch.compile / CUDA graphs) -----------------------------------
    def _make_decode_fn(self) -> Callable[..., Tensor]:
        if self.device.type != "cuda":
            return self.model.decode_static
        mark_static = getattr(torch._dynamo, "mark_static_address", None)
        if mark_static is not None:  # the cache is mutated in place inside the CUDA graph
            mark_static(self.cache.k)
            mark_static(self.cache.v)
        config = torch._dynamo.config
        for name in ("recompile_limit", "cache_size_limit"):  # a graph per (batch, context) bucket
            if hasattr(config, name):
                setattr(config, name, max(getattr(config, name), 64))
                break
        return torch.compile(self.model.decode_static, mode="reduce-overhead", dynamic=False)

    def _run_static_decode(self, plan: StepPlan) -> Tensor:
        """Decode rows padded to a power-of-two batch; padding rows use the scratch slot."""
        real = list(plan.decode_ids)
        contexts = [self._num_computed[rid] + 1 for rid in real]
        pad_position = 0
        if plan.num_padding_seqs:
            pad_position = min(plan.padding_context_tokens // plan.num_padding_seqs,
                               self.max_seq_len - 1)
        num_rows = _next_power_of_two(len(real) + plan.num_padding_seqs)
        num_pad = num_rows - len(real)
        ids = [self._tokens[rid][-1] for rid in real] + [0] * num_pad
        positions = [c - 1 for c in contexts] + [pad_position] * num_pad
        slots = [self.cache.slot_of(rid) for rid in real] + [self.cache.scratch_slot] * num_pad
        contexts += [pad_position + 1] * num_pad
        max_context = min(max(_next_power_of_two(max(contexts)), MIN_CONTEXT_BUCKET),
                          self.max_seq_len)
        logits = self._decode_fn(self._tensor(ids), self._tensor(positions), self._tensor(slots),
                                 self._tensor(contexts), max_context, self.cache.k, self.cache.v)
        return logits[:len(real)]


# Padded context positions one more attention call is worth. A run of decodes attends in one call
# with every sequence padded to the run's longest context, so mixed lengths read K/V that is masked
# away. On the AMD EPYC CPU a bf16 decode attention call cost ~20 us plus ~0.09 us per (sequence,
# position) of llama-small-150m, yet a batch of 8 contexts spread over 150-650 ran its step fastest
# with every sequence alone (0.91x one padded call, 0.94x split at 256 positions); and a padded or
# split step is one the cost model cannot see, since (sequences, context tokens) do not say how much
# was padded: served, such steps took 1.14x their cost-model time where unpadded single calls took
# 1.0x. So on a CPU (None) every decode attends alone, in calibration as in serving: a step's
# attention is a call per sequence plus its own K/V, linear in both, the cost model's form
# (sequence_layer_overhead_s). A GPU reads a position in nanoseconds against microseconds per
# launch: it rarely pays to split there.
DECODE_CALL_POSITIONS_CPU: int | None = None
DECODE_CALL_POSITIONS_OTHER = 16384


def split_padding(contexts: list[int], call_positions: int) -> list[int]:
    """Lengths of consecutive pieces of a decode run that minimise the attention work: each piece
    costs call_positions plus its size x its longest context (the padded K/V it reads); exact
    dynamic programming over the split points (a run has at most max_num_seqs decodes). Of equal
    costs the fewest pieces win, so call_positions 0 splits exactly where padding would be read."""
    n = len(contexts)
    # best[i]: (work, pieces) of the cheapest split of the first i
    best = [(0, 0)] + [(math.inf, 0)] * n
    cut = [0] * (n + 1)
    for end in range(1, n + 1):
        longest = 0
        for start in range(end - 1, -1, -1):
            longest = max(longest, contexts[start])
            work, pieces = best[start]
            cost = (work + call_positions + (end - start) * longest, pieces + 1)
            if cost < best[end]:
                best[end], cut[end] = cost, start
    lengths, end = [], n
    while end > 0:
        lengths.append(end - cut[end])
        end = cut[end]
    return lengths[::-1]


def _slot_runs(pairs: list[tuple[int, int]]) -> list[list[tuple[int, int]]]:
    """Split (slot, request id) pairs sorted by slot into runs of consecutive slots."""
    runs: list[list[tuple[int, int]]] = []
    for pair in pairs:
        if runs and pair[0] == runs[-1][-1][0] + 1:
            runs[-1].append(pair)
        else:
            runs.append([pair])
    return runs


def _next_power_of_two(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()
