"""Model spec: the architecture facts of a Llama-family decoder and what follows from them.

Modelled: embeddings, L decoder layers of grouped-query attention (q/k/v/o projections, no biases)
and a SwiGLU MLP (gate, up, down) or a mixture of SwiGLU experts with top-k routing, RMSNorms and
an LM head (tied or untied). Derived figures (parameters, weight bytes, KV bytes per token, FLOPs)
are exact counts for that architecture; norms and the router are counted, biases are not.

Assumed: logits are computed only for positions that sample a token (as real engines do), so the
LM head's FLOPs count per sampled token, not per prompt token.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from sim.errors import InputError

BYTES_PER_ELEMENT: dict[str, float] = {
    "fp32": 4.0,
    "bf16": 2.0,
    "fp16": 2.0,
    "fp8": 1.0,
    "int8": 1.0,
    "int4": 0.5,
}
WEIGHT_DTYPES = tuple(BYTES_PER_ELEMENT)
KV_DTYPES = ("fp32", "bf16", "fp16", "fp8")


@dataclass(frozen=True)
class ModelSpec:
    """Architecture facts only; dtypes say how weights and the KV cache are stored."""

    name: str
    num_layers: int
    hidden_size: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool = False
    num_experts: int = 0  # 0 = dense MLP
    num_experts_per_token: int = 0
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    max_position_embeddings: int = 8192
    weight_dtype: str = "bf16"
    kv_dtype: str = "bf16"

    def __post_init__(self) -> None:
        for field in ("num_layers", "hidden_size", "num_attention_heads", "num_kv_heads",
                      "head_dim", "intermediate_size", "vocab_size", "max_position_embeddings"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{field}: expected a positive integer, got {value!r}")
        if self.num_attention_heads % self.num_kv_heads:
            raise ValueError(
                f"num_kv_heads: {self.num_kv_heads} must divide num_attention_heads "
                f"{self.num_attention_heads}")
        if self.num_experts < 0 or self.num_experts_per_token < 0:
            raise ValueError("num_experts: expected >= 0")
        if self.num_experts and not 0 < self.num_experts_per_token <= self.num_experts:
            raise ValueError(
                f"num_experts_per_token: expected 1..{self.num_experts}, "
                f"got {self.num_experts_per_token}")
        if self.weight_dtype not in BYTES_PER_ELEMENT:
            raise ValueError(f"weight_dtype: expected one of {WEIGHT_DTYPES}, got {self.weight_dtype!r}")
        if self.kv_dtype not in KV_DTYPES:
            raise ValueError(f"kv_dtype: expected one of {KV_DTYPES}, got {self.kv_dtype!r}")
        if self.rope_theta <= 0 or self.rms_norm_eps <= 0:
            raise ValueError("rope_theta and rms_norm_eps must be > 0")

    # ---- structure -------------------------------------------------------------------------
    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def q_size(self) -> int:
        return self.num_attention_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_kv_heads * self.head_dim

    @property
    def attention_params_per_layer(self) -> int:
        h = self.hidden_size
        return h * self.q_size + 2 * h * self.kv_size + self.q_size * h

    @property
    def expert_params(self) -> int:
        """Parameters of one SwiGLU MLP (gate, up, down)."""
        return 3 * self.hidden_size * self.intermediate_size

    @property
    def mlp_params_per_layer(self) -> int:
        if self.is_moe:
            return self.num_experts * self.expert_params + self.hidden_size * self.num_experts
        return self.expert_params

    @property
    def active_mlp_params_per_layer(self) -> int:
        if self.is_moe:
            return (self.num_experts_per_token * self.expert_params
                    + self.hidden_size * self.num_experts)
        return self.expert_params

    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def lm_head_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def num_params(self) -> int:
        per_layer = self.attention_params_per_layer + self.mlp_params_per_layer + 2 * self.hidden_size
        head = 0 if self.tie_word_embeddings else self.lm_head_params
        return self.embedding_params + head + self.num_layers * per_layer + self.hidden_size

    # ---- bytes -------------------------------------------------------------------------------
    @property
    def weight_bytes_per_param(self) -> float:
        return BYTES_PER_ELEMENT[self.weight_dtype]

    @property
    def kv_bytes_per_element(self) -> float:
        return BYTES_PER_ELEMENT[self.kv_dtype]

    @property
    def weight_bytes(self) -> float:
        return self.num_params * self.weight_bytes_per_param

    @property
    def layer_weight_bytes(self) -> float:
        """Bytes of all decoder layers (what every forward step must read for a dense model)."""
        per_layer = self.attention_params_per_layer + self.mlp_params_per_layer + 2 * self.hidden_size
        return self.num_layers * per_layer * self.weight_bytes_per_param

    @property
    def expert_weight_bytes(self) -> float:
        return self.expert_params * self.weight_bytes_per_param

    @property
    def lm_head_bytes(self) -> float:
        return self.lm_head_params * self.weight_bytes_per_param

    @property
    def kv_bytes_per_token(self) -> float:
        """K and V of one token across all layers."""
        return 2 * self.num_layers * self.kv_size * self.kv_bytes_per_element

    # ---- FLOPs -------------------------------------------------------------------------------
    @property
    def linear_flops_per_token(self) -> float:
        """Matmul FLOPs of the decoder layers per computed token (2 per multiply-add)."""
        return 2.0 * self.num_layers * (self.attention_params_per_layer
                                        + self.active_mlp_params_per_layer)

    @property
    def lm_head_flops_per_sampled_token(self) -> float:
        return 2.0 * self.lm_head_params

    @property
    def attention_flops_per_pair(self) -> float:
        """FLOPs of QK^T and AV for one (query token, key token) pair across all layers."""
        return 4.0 * self.num_layers * self.q_size

    def flops_per_token(self, context_tokens: int = 0) -> float:
        """FLOPs to decode one token at a given context (linear + LM head + attention)."""
        return (self.linear_flops_per_token + self.lm_head_flops_per_sampled_token
                + self.attention_flops_per_pair * (context_tokens + 1))

    def with_dtypes(self, weight_dtype: str | None = None, kv_dtype: str | None = None) -> ModelSpec:
        return dataclasses.replace(self, weight_dtype=weight_dtype or self.weight_dtype,
                                   kv_dtype=kv_dtype or self.kv_dtype)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _llama(name: str, hidden: int, layers: int, heads: int, kv_heads: int, head_dim: int,
           intermediate: int, vocab: int, max_pos: int, rope_theta: float = 10000.0,
           tied: bool = False, experts: int = 0, top_k: int = 0) -> ModelSpec:
    return ModelSpec(name=name, num_layers=layers, hidden_size=hidden, num_attention_heads=heads,
                     num_kv_heads=kv_heads, head_dim=head_dim, intermediate_size=intermediate,
                     vocab_size=vocab, tie_word_embeddings=tied, num_experts=experts,
                     num_experts_per_token=top_k, rope_theta=rope_theta,
                     max_position_embeddings=max_pos)


# Real models: figures from their Hugging Face config.json (shared/reference/models.md).
# Tiny and small presets are infercast's own shapes, for tests and CPU calibration.
PRESETS: dict[str, ModelSpec] = {
    "llama-3-8b": _llama("llama-3-8b", 4096, 32, 32, 8, 128, 14336, 128256, 8192, 500000.0),
    "llama-3.1-8b": _llama("llama-3.1-8b", 4096, 32, 32, 8, 128, 14336, 128256, 131072, 500000.0),
    "llama-3-70b": _llama("llama-3-70b", 8192, 80, 64, 8, 128, 28672, 128256, 8192, 500000.0),
    "llama-3.1-70b": _llama("llama-3.1-70b", 8192, 80, 64, 8, 128, 28672, 128256, 131072, 500000.0),
    "llama-3.2-1b": _llama("llama-3.2-1b", 2048, 16, 32, 8, 64, 8192, 128256, 131072, 500000.0,
                           tied=True),
    "llama-2-7b": _llama("llama-2-7b", 4096, 32, 32, 32, 128, 11008, 32000, 4096),
    "llama-2-70b": _llama("llama-2-70b", 8192, 80, 64, 8, 128, 28672, 32000, 4096),
    "mistral-7b": _llama("mistral-7b", 4096, 32, 32, 8, 128, 14336, 32000, 32768),
    "qwen2.5-7b": _llama("qwen2.5-7b", 3584, 28, 28, 4, 128, 18944, 152064, 131072, 1e6),
    "mixtral-8x7b": _llama("mixtral-8x7b", 4096, 32, 32, 8, 128, 14336, 32000, 32768, 1e6,
                           experts=8, top_k=2),
    # infercast's own shapes (random weights; used for CPU calibration and tests)
    "llama-small-150m": _llama("llama-small-150m", 1024, 8, 16, 4, 64, 2816, 32000, 4096),
    "llama-medium-400m": _llama("llama-medium-400m", 1536, 12, 24, 8, 64, 4096, 32000, 4096),
    "tiny": _llama("tiny", 64, 2, 4, 2, 16, 128, 256, 512),
    "tiny-moe": _llama("tiny-moe", 64, 2, 4, 2, 16, 96, 256, 512, experts=4, top_k=2),
}


def get_preset(name: str) -> ModelSpec:
    key = name.lower()
    if key not in PRESETS:
        raise InputError("model", "preset", f"unknown preset {name!r}; known: {', '.join(sorted(PRESETS))}")
    return PRESETS[key]


_HF_DTYPES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


def load_hf_config(path: str | Path) -> ModelSpec:
    """Read a local Hugging Face config.json of a Llama-family model (Llama, Mistral, Qwen2, Mixtral)."""
    where = str(path)
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise InputError(where, "", f"cannot read config: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise InputError(where, "", f"not valid JSON (line {exc.lineno}): {exc.msg}") from None
    if not isinstance(data, dict):
        raise InputError(where, "", "expected a JSON object")

    def need(key: str) -> int:
        if key not in data:
            raise InputError(where, key, "missing (a Llama-family config.json needs it)")
        value = data[key]
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise InputError(where, key, f"expected a positive integer, got {value!r}")
        return value

    hidden = need("hidden_size")
    heads = need("num_attention_heads")
    head_dim = data.get("head_dim") or hidden // heads
    experts = data.get("num_local_experts") or data.get("num_experts") or 0
    name = data.get("_name_or_path") or Path(path).parent.name or "custom"
    try:
        return ModelSpec(
            name=str(name),
            num_layers=need("num_hidden_layers"),
            hidden_size=hidden,
            num_attention_heads=heads,
            num_kv_heads=data.get("num_key_value_heads") or heads,
            head_dim=head_dim,
            intermediate_size=need("intermediate_size"),
            vocab_size=need("vocab_size"),
            tie_word_embeddings=bool(data.get("tie_word_embeddings", False)),
            num_experts=experts,
            num_experts_per_token=data.get("num_experts_per_tok", 0) if experts else 0,
            rope_theta=float(data.get("rope_theta", 10000.0)),
            rms_norm_eps=float(data.get("rms_norm_eps", 1e-5)),
            max_position_embeddings=int(data.get("max_position_embeddings", 8192)),
            weight_dtype=_HF_DTYPES.get(str(data.get("torch_dtype", "bfloat16")), "bf16"),
        )
    except ValueError as exc:
        field, _, problem = str(exc).partition(": ")
        raise InputError(where, field, problem or str(exc)) from None


def resolve_model(name_or_path: str) -> ModelSpec:
    """A preset name, or a path to a config.json (or a folder holding one)."""
    path = Path(name_or_path)
    if name_or_path.lower() in PRESETS:
        return PRESETS[name_or_path.lower()]
    if path.is_dir():
        path = path / "config.json"
    if path.suffix == ".json" or path.exists():
        return load_hf_config(path)
    return get_preset(name_or_path)
