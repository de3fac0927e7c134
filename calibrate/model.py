"""A Llama-family decoder built from a `ModelSpec`, in the spirit of gpt-fast: small and readable.

Modelled: token embeddings, `num_layers` blocks of (RMSNorm, grouped-query attention with rotary
embeddings, RMSNorm, SwiGLU MLP or a Mixtral-style mixture of SwiGLU experts), a final RMSNorm and
an LM head (tied to the embeddings when the spec says so). q/k/v and gate/up projections are fused
into one weight each (one GEMM instead of three or two). The forward pass works on the tokens of a
whole engine step packed together ([num_tokens, hidden]); attention is told by a `StepBatch` which
rows belong to which sequence and cache slot.

Assumed: weights are random (seeded, std 1/sqrt(fan_in), so activations stay O(1) in fp16/bf16)
unless a Hugging Face checkpoint is loaded; rotary embeddings use the Hugging Face "rotate half"
convention (so HF checkpoints load unchanged); norms and rotary embeddings are computed in fp32;
the MoE router takes a softmax over all experts, keeps the top k and renormalises their weights
(Mixtral); no biases; no sliding-window attention. On CPU the runner packs the dense linear
layers for oneDNN (see `Linear`); MoE experts stay dense.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sim.spec.model import ModelSpec

TORCH_DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def torch_dtype(name: str) -> torch.dtype:
    if name not in TORCH_DTYPES:
        raise ValueError(f"dtype: expected one of {tuple(TORCH_DTYPES)}, got {name!r}")
    return TORCH_DTYPES[name]


# ---- what attention needs to know about a step -------------------------------------------------
@dataclass(frozen=True)
class SeqSpan:
    """Query rows [q_begin, q_begin + num_rows) of one cache slot, attending to positions
    [0, context) of that slot: a prefill chunk (causal, offset by the cached prefix) or, with
    is_causal False and no mask, rows that see the whole context (padding rows)."""

    q_begin: int
    num_rows: int
    slot: int
    context: int
    is_causal: bool
    mask: Tensor | None = None  # [num_rows, context] bool, for a causal chunk with a prefix


@dataclass(frozen=True)
class DecodeRun:
    """Decode rows [q_begin, q_begin + num_seqs), one per slot of slot_begin, slot_begin + 1, ...
    Each attends to its own context; mask ([num_seqs, 1, 1, max_context] bool) pads the shorter."""

    q_begin: int
    num_seqs: int
    slot_begin: int
    max_context: int
    mask: Tensor | None = None


@dataclass(frozen=True)
class StepBatch:
    """The packed tokens of one step and how their rows group into sequences (in row order)."""

    input_ids: Tensor  # [T] long
    positions: Tensor  # [T] long: position of each token in its sequence
    slots: Tensor  # [T] long: cache slot each token's K/V is written to
    groups: tuple[SeqSpan | DecodeRun, ...]


# ---- building blocks ---------------------------------------------------------------------------
class _Init:
    """Makes parameters directly in the target dtype and device, drawn from one seeded generator."""

    def __init__(self, dtype: torch.dtype, device: torch.device, seed: int) -> None:
        self.dtype = dtype
        self.device = device
        self.generator = torch.Generator(device=device).manual_seed(seed)

    def normal(self, *shape: int, std: float) -> nn.Parameter:
        data = torch.empty(shape, dtype=self.dtype, device=self.device)
        data.normal_(0.0, std, generator=self.generator)
        return nn.Parameter(data, requires_grad=False)

    def linear(self, out_features: int, in_features: int, *lead: int) -> nn.Parameter:
        return self.normal(*lead, out_features, in_features, std=in_features ** -0.5)

    def ones(self, size: int) -> nn.Parameter:
        return nn.Parameter(torch.ones(size, dtype=self.dtype, device=self.device),
                            requires_grad=False)


# oneDNN costs ~12 us a call against MKL's ~2 us: below ~256K elements (1024 x 256) MKL is faster
PACK_MIN_ELEMENTS = 1 << 18


def _can_pack() -> bool:
    mkldnn = torch.ops.mkldnn
    return (torch.backends.mkldnn.is_available() and hasattr(mkldnn, "_reorder_linear_weight")
            and hasattr(mkldnn, "_linear_pointwise"))


def pack_weight(weight: Tensor) -> Tensor | None:
    """A oneDNN-packed copy of a CPU weight [out, in], or None where this build or dtype cannot."""
    if weight.device.type != "cpu" or not _can_pack():
        return None
    try:
        return torch.ops.mkldnn._reorder_linear_weight(weight.detach())
    except RuntimeError:  # e.g. fp16 without AVX512-FP16
        return None


def packed_linear(x: Tensor, packed: Tensor) -> Tensor:
    """x [rows, in] times a packed weight's transpose: [rows, out]."""
    return torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")


class Linear(nn.Module):
    """y = x W^T for W [out, in], no bias.

    On CPU the weight can be packed (`pack`) into oneDNN's blocked layout: the same values and
    bytes, but the GEMM runs on oneDNN instead of MKL. Measured on the 2-core AMD EPYC this was
    written on (fp32, 16384 x 2048 weight): batch-1 GEMV 34 vs 21-25 GB/s, and 2x the FLOP/s for
    64..512 rows (MKL takes a non-AVX-512 path on AMD). These ops are the ones torch.compile's CPU
    backend uses; where they are missing, the dense weight stays.
    """

    def __init__(self, init: _Init, out_features: int, in_features: int,
                 shared_weight: nn.Parameter | None = None) -> None:
        super().__init__()
        self.weight: nn.Parameter | None = (
            shared_weight if shared_weight is not None
            else init.normal(out_features, in_features, std=in_features ** -0.5))
        self.is_shared = shared_weight is not None  # a tied LM head keeps the embedding dense
        self.packed: Tensor | None = None

    def pack(self, min_elements: int = 0) -> bool:
        """Swap the dense weight for a oneDNN-packed one (kept as well when shared); False if
        the weight is smaller than min_elements or this build or dtype cannot (fp16 needs
        AVX512-FP16): the weight then stays dense."""
        if self.packed is not None:
            return True
        if self.weight is None or self.weight.numel() < min_elements:
            return False
        self.packed = pack_weight(self.weight)
        if self.packed is None:
            return False
        if not self.is_shared:
            self.weight = None
        return True

    @property
    def dense_weight(self) -> Tensor:
        """The weight as a dense [out, in] tensor (a copy when only the packed one is kept)."""
        return self.weight if self.weight is not None else self.packed.to_dense()

    @property
    def num_bytes(self) -> int:
        source = self.weight if self.weight is not None else self.packed
        return source.numel() * source.element_size()

    def forward(self, x: Tensor) -> Tensor:
        if self.packed is not None:
            return packed_linear(x, self.packed)
        return F.linear(x, self.weight)


class RMSNorm(nn.Module):
    def __init__(self, init: _Init, size: int, eps: float) -> None:
        super().__init__()
        self.weight = init.ones(size)
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return x32.type_as(x) * self.weight


def rotary_table(head_dim: int, max_seq_len: int, theta: float,
                 device: torch.device) -> tuple[Tensor, Tensor]:
    """cos and sin, [max_seq_len, head_dim] in fp32, "rotate half" layout (halves repeated)."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.outer(torch.arange(max_seq_len, dtype=torch.float64), inv_freq)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos().float().to(device), angles.sin().float().to(device)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x: [T, heads, head_dim]; cos, sin: [T, 1, head_dim] fp32."""
    x32 = x.float()
    half = x32.shape[-1] // 2
    rotated = torch.cat([-x32[..., half:], x32[..., :half]], dim=-1)
    return (x32 * cos + rotated * sin).type_as(x)


class Attention(nn.Module):
    def __init__(self, init: _Init, spec: ModelSpec) -> None:
        super().__init__()
        self.num_heads = spec.num_attention_heads
        self.num_kv_heads = spec.num_kv_heads
        self.head_dim = spec.head_dim
        self.wqkv = Linear(init, spec.q_size + 2 * spec.kv_size, spec.hidden_size)
        self.wo = Linear(init, spec.hidden_size, spec.q_size)

    def _project(self, x: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        num_tokens = x.shape[0]
        kv_size = self.num_kv_heads * self.head_dim
        q, k, v = self.wqkv(x).split([self.num_heads * self.head_dim, kv_size, kv_size], dim=-1)
        q = apply_rotary(q.view(num_tokens, self.num_heads, self.head_dim), cos, sin)
        k = apply_rotary(k.view(num_tokens, self.num_kv_heads, self.head_dim), cos, sin)
        return q, k, v.view(num_tokens, self.num_kv_heads, self.head_dim)

    def forward(self, x: Tensor, step: StepBatch, cos: Tensor, sin: Tensor,
                k_cache: Tensor, v_cache: Tensor) -> Tensor:
        """x: [T, hidden]; k_cache, v_cache: this layer's
        [slots, kv_heads, max_seq_len, head_dim]."""
        q, k, v = self._project(x, cos, sin)
        k_cache[step.slots, :, step.positions] = k
        v_cache[step.slots, :, step.positions] = v
        pieces = [self._attend_span(q, g, k_cache, v_cache) if isinstance(g, SeqSpan)
                  else self._attend_decodes(q, g, k_cache, v_cache) for g in step.groups]
        out = pieces[0] if len(pieces) == 1 else torch.cat(pieces)
        return self.wo(out.reshape(x.shape[0], -1))

    def _attend_span(self, q: Tensor, span: SeqSpan, k_cache: Tensor, v_cache: Tensor) -> Tensor:
        rows = q[span.q_begin:span.q_begin + span.num_rows].transpose(0, 1).unsqueeze(0)
        keys = k_cache[span.slot, :, :span.context].unsqueeze(0)
        values = v_cache[span.slot, :, :span.context].unsqueeze(0)
        out = F.scaled_dot_product_attention(
            rows, keys, values, attn_mask=span.mask,
            is_causal=span.is_causal and span.mask is None, enable_gqa=True)
        return out[0].transpose(0, 1)  # [rows, heads, head_dim]

    def _attend_decodes(self, q: Tensor, run: DecodeRun, k_cache: Tensor,
                        v_cache: Tensor) -> Tensor:
        # One query token per sequence: fold the query heads of a KV group into the "query
        # length" axis, so grouped-query attention needs no repeated K/V.
        group = self.num_heads // self.num_kv_heads
        rows = q[run.q_begin:run.q_begin + run.num_seqs].view(
            run.num_seqs, self.num_kv_heads, group, self.head_dim)
        slots = slice(run.slot_begin, run.slot_begin + run.num_seqs)
        out = F.scaled_dot_product_attention(
            rows, k_cache[slots, :, :run.max_context], v_cache[slots, :, :run.max_context],
            attn_mask=run.mask)
        return out.reshape(run.num_seqs, self.num_heads, self.head_dim)

    def forward_static(self, x: Tensor, positions: Tensor, slots: Tensor, context_lens: Tensor,
                       max_context: int, cos: Tensor, sin: Tensor, k_cache: Tensor,
                       v_cache: Tensor) -> Tensor:
        """One decode token per row, static shapes (for torch.compile / CUDA graphs): K/V of each
        row's slot are gathered up to max_context and padded positions masked."""
        q, k, v = self._project(x, cos, sin)
        k_cache[slots, :, positions] = k
        v_cache[slots, :, positions] = v
        group = self.num_heads // self.num_kv_heads
        batch = x.shape[0]
        keys = k_cache[:, :, :max_context].index_select(0, slots)
        values = v_cache[:, :, :max_context].index_select(0, slots)
        mask = (torch.arange(max_context, device=x.device)[None, :] < context_lens[:, None])
        out = F.scaled_dot_product_attention(
            q.view(batch, self.num_kv_heads, group, self.head_dim), keys, values,
            attn_mask=mask[:, None, None, :])
        return self.wo(out.reshape(batch, -1))


class SwiGLU(nn.Module):
    def __init__(self, init: _Init, hidden: int, intermediate: int) -> None:
        super().__init__()
        self.w13 = Linear(init, 2 * intermediate, hidden)  # gate and up, fused
        self.w2 = Linear(init, hidden, intermediate)

    def forward(self, x: Tensor) -> Tensor:
        gate, up = self.w13(x).chunk(2, dim=-1)
        return self.w2(F.silu(gate) * up)


class MoE(nn.Module):
    """Mixtral-style experts: softmax router, top-k, renormalised weights, SwiGLU experts."""

    def __init__(self, init: _Init, spec: ModelSpec) -> None:
        super().__init__()
        self.top_k = spec.num_experts_per_token
        self.num_experts = spec.num_experts
        self.router = init.linear(spec.num_experts, spec.hidden_size)
        self.w13 = init.linear(2 * spec.intermediate_size, spec.hidden_size, spec.num_experts)
        self.w2 = init.linear(spec.hidden_size, spec.intermediate_size, spec.num_experts)

    def route(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Per token: the top-k expert weights (renormalised, x's dtype) and expert ids, [T, k]."""
        probs = F.linear(x, self.router).float().softmax(dim=-1)
        weights, experts = probs.topk(self.top_k, dim=-1)
        return (weights / weights.sum(dim=-1, keepdim=True)).to(x.dtype), experts

    def forward(self, x: Tensor) -> Tensor:
        if torch.compiler.is_compiling():
            return self.forward_gathered(x)
        return self.forward_grouped(x)

    def forward_grouped(self, x: Tensor) -> Tensor:
        """Tokens sorted by expert; each expert with work runs one GEMM over its tokens."""
        weights, experts = self.route(x)
        flat_experts = experts.flatten()
        order = flat_experts.argsort(stable=True)
        counts = torch.bincount(flat_experts, minlength=self.num_experts).tolist()
        flat_weights = weights.flatten()
        out = torch.zeros_like(x)
        begin = 0
        for expert, count in enumerate(counts):
            if count == 0:
                continue
            assignment = order[begin:begin + count]
            begin += count
            tokens = assignment // self.top_k
            gate, up = F.linear(x[tokens], self.w13[expert]).chunk(2, dim=-1)
            y = F.linear(F.silu(gate) * up, self.w2[expert])
            out.index_add_(0, tokens, y * flat_weights[assignment, None])
        return out

    def forward_gathered(self, x: Tensor) -> Tensor:
        """Static shapes (gpt-fast): gather each token's expert weights (small decode batches)."""
        weights, experts = self.route(x)
        gate, up = torch.einsum("th,tkoh->tko", x, self.w13[experts]).chunk(2, dim=-1)
        y = torch.einsum("tki,tkhi->tkh", F.silu(gate) * up, self.w2[experts])
        return torch.einsum("tkh,tk->th", y, weights)


class Block(nn.Module):
    def __init__(self, init: _Init, spec: ModelSpec) -> None:
        super().__init__()
        self.attention_norm = RMSNorm(init, spec.hidden_size, spec.rms_norm_eps)
        self.attention = Attention(init, spec)
        self.mlp_norm = RMSNorm(init, spec.hidden_size, spec.rms_norm_eps)
        self.mlp: nn.Module = (MoE(init, spec) if spec.is_moe
                               else SwiGLU(init, spec.hidden_size, spec.intermediate_size))


# ---- the model ---------------------------------------------------------------------------------
class Transformer(nn.Module):
    """Weights of the whole decoder; the KV cache is passed in (it belongs to the runner)."""

    def __init__(self, spec: ModelSpec, dtype: str = "fp32", device: torch.device | str = "cpu",
                 seed: int = 0, max_seq_len: int | None = None) -> None:
        super().__init__()
        device = torch.device(device)
        init = _Init(torch_dtype(dtype), device, seed)
        self.spec = spec
        self.dtype = init.dtype
        self.embedding = init.normal(spec.vocab_size, spec.hidden_size,
                                     std=spec.hidden_size ** -0.5)
        self.layers = nn.ModuleList(Block(init, spec) for _ in range(spec.num_layers))
        self.norm = RMSNorm(init, spec.hidden_size, spec.rms_norm_eps)
        self.lm_head = Linear(init, spec.vocab_size, spec.hidden_size,
                              shared_weight=self.embedding if spec.tie_word_embeddings else None)
        cos, sin = rotary_table(spec.head_dim, max_seq_len or spec.max_position_embeddings,
                                spec.rope_theta, device)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def pack_weights(self, min_elements: int = PACK_MIN_ELEMENTS) -> int:
        """Pack the linear layers of at least min_elements for oneDNN (CPU); returns how many
        were packed. A tied LM head gets a packed copy beside the embedding (+vocab x hidden
        bytes of memory)."""
        return sum(m.pack(min_elements) for m in self.modules() if isinstance(m, Linear))

    def warm_shapes(self, max_rows: int, max_sampled_rows: int) -> int:
        """Run each distinct packed linear layer once at every row count up to max_rows (the LM
        head up to max_sampled_rows), so oneDNN builds each row count's kernel now and not in the
        first step that has it (~1 ms per layer shape on the AMD EPYC, against a ~10 ms decode
        step). A server does the same at start: vLLM captures a CUDA graph per batch size.
        Returns how many (layer shape, rows) pairs ran; 0 where nothing is packed."""
        shapes: dict[tuple[int, int], tuple[Tensor, int]] = {}
        for module in self.modules():
            if isinstance(module, Linear) and module.packed is not None:
                out_features, in_features = module.packed.shape
                rows = max_sampled_rows if module is self.lm_head else max_rows
                key = (out_features, in_features)
                if rows > shapes.get(key, (None, 0))[1]:
                    shapes[key] = (module.packed, rows)
        count = 0
        with torch.inference_mode():
            for (_, in_features), (packed, rows) in shapes.items():
                x = torch.zeros(rows, in_features, dtype=self.dtype, device=packed.device)
                for n in range(1, rows + 1):
                    packed_linear(x[:n], packed)
                    count += 1
        return count

    def forward(self, step: StepBatch, k_cache: Tensor, v_cache: Tensor) -> Tensor:
        """Hidden states [T, hidden] (before the final norm) of the step's packed tokens; writes
        their K/V into the cache ([layers, slots, kv_heads, max_seq_len, head_dim])."""
        x = F.embedding(step.input_ids, self.embedding)
        cos = self.rope_cos[step.positions].unsqueeze(1)
        sin = self.rope_sin[step.positions].unsqueeze(1)
        for index, layer in enumerate(self.layers):
            x = x + layer.attention(layer.attention_norm(x), step, cos, sin,
                                    k_cache[index], v_cache[index])
            x = x + layer.mlp(layer.mlp_norm(x))
        return x

    def logits(self, hidden: Tensor) -> Tensor:
        """fp32 logits [rows, vocab] of the given hidden rows."""
        return self.lm_head(self.norm(hidden)).float()

    def decode_static(self, input_ids: Tensor, positions: Tensor, slots: Tensor,
                      context_lens: Tensor, max_context: int, k_cache: Tensor,
                      v_cache: Tensor) -> Tensor:
        """Logits of one decode token per row with static shapes (the compiled path)."""
        x = F.embedding(input_ids, self.embedding)
        cos = self.rope_cos[positions].unsqueeze(1)
        sin = self.rope_sin[positions].unsqueeze(1)
        for index, layer in enumerate(self.layers):
            x = x + layer.attention.forward_static(
                layer.attention_norm(x), positions, slots, context_lens, max_context, cos, sin,
                k_cache[index], v_cache[index])
            x = x + layer.mlp(layer.mlp_norm(x))
        return self.logits(x)


# ---- optional: Hugging Face checkpoints --------------------------------------------------------
def load_hf_state_dict(model: Transformer, tensors: Mapping[str, Tensor]) -> None:
    """Copy Hugging Face Llama/Mistral/Qwen2/Mixtral weights (names as in their safetensors) into
    the model, fusing q/k/v and gate/up. Raises KeyError naming the first missing tensor."""

    if any(isinstance(m, Linear) and m.packed is not None for m in model.modules()):
        raise RuntimeError("load_hf_state_dict: load checkpoints before pack_weights()")

    def get(name: str) -> Tensor:
        if name not in tensors:
            raise KeyError(f"checkpoint has no tensor {name!r}")
        return tensors[name]

    def put(param: Tensor, *names: str, dim: int = 0) -> None:
        parts = [get(n) for n in names]
        param.copy_(parts[0] if len(parts) == 1 else torch.cat(parts, dim=dim))

    with torch.no_grad():
        put(model.embedding, "model.embed_tokens.weight")
        put(model.norm.weight, "model.norm.weight")
        if not model.lm_head.is_shared:
            put(model.lm_head.weight, "lm_head.weight")
        for i, layer in enumerate(model.layers):
            p = f"model.layers.{i}."
            put(layer.attention_norm.weight, p + "input_layernorm.weight")
            put(layer.mlp_norm.weight, p + "post_attention_layernorm.weight")
            put(layer.attention.wqkv.weight,
                *(p + f"self_attn.{n}_proj.weight" for n in "qkv"))
            put(layer.attention.wo.weight, p + "self_attn.o_proj.weight")
            mlp = layer.mlp
            if isinstance(mlp, MoE):
                put(mlp.router, p + "block_sparse_moe.gate.weight")
                for e in range(mlp.num_experts):
                    q = p + f"block_sparse_moe.experts.{e}."
                    put(mlp.w13[e], q + "w1.weight", q + "w3.weight")
                    put(mlp.w2[e], q + "w2.weight")
            else:
                put(mlp.w13.weight, p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight")
                put(mlp.w2.weight, p + "mlp.down_proj.weight")


def load_safetensors(model: Transformer, path: str | Path) -> None:
    """Load a local checkpoint (a .safetensors file or a folder of them); needs `safetensors`."""
    try:
        from safetensors.torch import load_file
    except ImportError as exc:
        raise RuntimeError("loading a checkpoint needs the 'safetensors' package") from exc
    path = Path(path)
    files = sorted(path.glob("*.safetensors")) if path.is_dir() else [path]
    if not files:
        raise FileNotFoundError(f"{path}: no *.safetensors files")
    tensors: dict[str, Tensor] = {}
    for file in files:
        tensors.update(load_file(str(file), device="cpu"))
    load_hf_state_dict(model, tensors)


def weight_bytes(model: Transformer) -> int:
    """Bytes of the model's distinct weights, packed or not (a tied head's packed copy is not
    counted twice)."""
    dense = sum(p.numel() * p.element_size() for p in model.parameters())
    return dense + sum(m.num_bytes for m in model.modules()
                       if isinstance(m, Linear) and m.weight is None)

