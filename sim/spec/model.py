"""Model spec: the architecture facts of a Llama-family decoder and what follows from them.

Modelled: embeddings, L decoder layers of grouped-query attention (q/k/v/o projections, no biases)
and a SwiGLU MLP (gate, up, down) or a mixture of SwiGLU experts with top-k routing, RMSNorms and
an LM head (tied or untied). Derived figures (parameters, weight bytes, KV bytes per token, FLOPs)
are exact counts for that architecture; norms and the router are counted, biases are not.

Assumed: logits are computed only for positions that sample a token (as real engines do), so the
LM head's FLOPs count per sampled token, not per prompt token.

Bring-your-own models (load_hf_config): a Hugging Face config.json is read only where the spec
above describes it exactly: model_type llama, mistral and qwen2 with full attention, and mixtral
(experts as wide as `intermediate_size`, top-k routed). Anything else is refused with one line
naming the file and the key, never approximated: multi-head latent attention (DeepSeek-V2/V3),
shared or narrower experts (DeepSeek, Qwen-MoE), sliding windows shorter than the context
(Mistral-7B-v0.1, Gemma-2/3), softcapping, multimodal and quantized configs (REFUSED_KEYS), and
other model types (Gemma, Phi-3, Falcon, GPT-2, Mamba, Jamba, ...: REFUSED_MODEL_TYPES). The
activation function is not read: it does not change the counts.
"""

from __future__ import annotations

import dataclasses
import json
import math
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


# ---- Hugging Face config.json ----------------------------------------------------------------
# What a config.json may describe: model_type -> the architectures entry it is saved with.
# These are Llama-family decoders the ModelSpec above describes exactly (Qwen2's q/k/v biases
# are not counted, as no bias is); mixtral is the one mixture of experts read.
SUPPORTED_ARCHITECTURES: dict[str, str] = {
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "mixtral": "MixtralForCausalLM",
}
MOE_MODEL_TYPES = frozenset({"mixtral"})

# A key here, set to anything but null, false, 0 or empty, describes layers ModelSpec lacks.
# Checked in this order, so a config is refused for its most telling key.
REFUSED_KEYS: dict[str, str] = {
    "kv_lora_rank": "multi-head latent attention (MLA, DeepSeek-V2/V3): a compressed KV cache "
                    "and low-rank projections, not grouped-query attention",
    "q_lora_rank": "multi-head latent attention (MLA): low-rank query projections",
    "n_routed_experts": "routed plus shared experts (DeepSeek MoE)",
    "n_shared_experts": "shared experts beside the routed ones (DeepSeek MoE)",
    "moe_intermediate_size": "experts narrower than the dense MLP (DeepSeek, Qwen-MoE)",
    "shared_expert_intermediate_size": "a shared expert beside the routed ones (Qwen-MoE)",
    "first_k_dense_replace": "dense layers before the MoE layers (DeepSeek)",
    "moe_layer_freq": "MoE in every n-th layer only",
    "decoder_sparse_step": "MoE in every n-th layer only (Qwen-MoE)",
    "mlp_only_layers": "dense layers among the MoE layers (Qwen-MoE)",
    "num_experts": "experts under num_experts (Qwen-MoE, OLMoE) have another layout; "
                   "Mixtral-style experts are read from num_local_experts",
    "num_nextn_predict_layers": "extra multi-token-prediction layers",
    "attn_logit_softcapping": "attention-logit softcapping with alternating sliding-window "
                              "layers (Gemma-2)",
    "final_logit_softcapping": "final-logit softcapping (Gemma-2/3)",
    "query_pre_attn_scalar": "Gemma-2/3 attention with alternating sliding-window layers",
    "sliding_window_pattern": "alternating sliding-window and global layers (Gemma-3)",
    "attention_chunk_size": "chunked local attention (Llama 4)",
    "text_config": "a multimodal or wrapper config (the text model is nested under text_config)",
    "vision_config": "a vision encoder and image tokens",
    "quantization_config": "a quantized checkpoint; give the unquantized config and set "
                           "weight_dtype (fp8, int8, int4) instead",
}

# Why some well-known model types are refused (any other unknown type gets the general line).
REFUSED_MODEL_TYPES: dict[str, str] = {
    "gemma": "Gemma layers (scaled embeddings, GeGLU, head_dim 256) are not checked against this cost model",
    "gemma2": "alternating sliding-window and global layers, logit softcapping",
    "gemma3": "alternating sliding-window and global layers, a vision encoder",
    "gemma3_text": "alternating sliding-window and global layers",
    "phi3": "sliding windows in some sizes and partial rotary embeddings (Phi-4-mini)",
    "deepseek_v2": "multi-head latent attention and shared-plus-routed experts",
    "deepseek_v3": "multi-head latent attention and shared-plus-routed experts",
    "qwen2_moe": "shared-plus-routed experts of their own width",
    "qwen3_moe": "routed experts of their own width",
    "falcon": "parallel attention and MLP blocks and a two-matrix GELU MLP",
    "gpt2": "learned positions, LayerNorm and a two-matrix GELU MLP",
    "mamba": "state-space layers: no attention and no KV cache",
    "mamba2": "state-space layers: no attention and no KV cache",
    "jamba": "Mamba layers mixed with attention and MoE layers",
}

# Integer keys read from every config, in the order a missing one is reported.
REQUIRED_INT_KEYS = ("hidden_size", "num_attention_heads", "num_hidden_layers",
                     "intermediate_size", "vocab_size", "max_position_embeddings")
HF_DTYPES: dict[str, str] = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}
DEFAULT_HF_DTYPE = "bfloat16"  # when a config names no dtype (neither dtype nor torch_dtype)
CONVENTIONAL_FILE_STEM = "config"  # config.json: the file name says nothing about the model


def load_hf_config(path: str | Path) -> ModelSpec:
    """Read a local Hugging Face config.json, or refuse it with an InputError naming the key.

    Read faithfully: llama, mistral and qwen2 dense decoders with full attention, and mixtral
    (Mixtral-style MoE: `num_local_experts`, `num_experts_per_tok`, `intermediate_size` per
    expert). A config with neither `model_type` nor `architectures` (written by hand) is read
    as llama, or as mixtral when it sets `num_local_experts`. Refused: any key of REFUSED_KEYS
    in use, another model type, a sliding window shorter than the context, missing or
    non-positive sizes, a `head_dim` that is not given and does not follow from the heads.
    The weights' dtype comes from `dtype` (or the older `torch_dtype`); bf16 when neither is set.
    The name: see config_model_name.
    """
    where = str(path)
    data = _read_json_object(Path(path))
    _refuse_unmodelled_keys(where, data)
    model_type = _model_type(where, data)
    ints = {key: _positive_int(where, data, key) for key in REQUIRED_INT_KEYS}
    heads = ints["num_attention_heads"]
    experts, top_k = _experts(where, data, model_type)
    _refuse_sliding_window(where, data, ints["max_position_embeddings"])
    spec = ModelSpec(
        name=where, num_layers=ints["num_hidden_layers"], hidden_size=ints["hidden_size"],
        num_attention_heads=heads, num_kv_heads=_kv_heads(where, data, heads),
        head_dim=_head_dim(where, data, ints["hidden_size"], heads),
        intermediate_size=ints["intermediate_size"], vocab_size=ints["vocab_size"],
        tie_word_embeddings=_flag(where, data, "tie_word_embeddings"),
        num_experts=experts, num_experts_per_token=top_k,
        rope_theta=_positive_float(where, data, "rope_theta", 10000.0),
        rms_norm_eps=_positive_float(where, data, "rms_norm_eps", 1e-5),
        max_position_embeddings=ints["max_position_embeddings"],
        weight_dtype=_weight_dtype(where, data))
    name = config_model_name(Path(path), data, model_type, spec.num_params)
    return dataclasses.replace(spec, name=name)


def config_model_name(path: Path, data: dict, model_type: str, num_params: int) -> str:
    """A file with a name of its own (not config.json) is named by its stem, so configs in one
    folder get different names; config.json by the last part of its `_name_or_path`, else by
    model type and size ("llama-8.03b"). Never by the folder, which configs in it share."""
    if path.stem and path.stem != CONVENTIONAL_FILE_STEM:
        return path.stem
    given = data.get("_name_or_path")
    if given is not None and not isinstance(given, str):
        raise InputError(str(path), "_name_or_path", f"expected a string, got {given!r}")
    last = (given or "").replace("\\", "/").rstrip("/").rpartition("/")[2]
    if last not in ("", ".", ".."):
        return last
    billions = num_params / 1e9
    size = f"{billions:.3g}b" if billions >= 1 else f"{billions * 1e3:.3g}m"
    return f"{model_type}-{size}"


def _read_json_object(path: Path) -> dict:
    where = str(path)
    if path.is_dir():
        raise InputError(where, "", "is a folder; expected a config.json file")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise InputError(where, "", f"cannot read config: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise InputError(where, "", f"not UTF-8 text (byte {exc.object[exc.start]:#04x} "
                                    f"at offset {exc.start})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(where, "", f"not valid JSON (line {exc.lineno}): {exc.msg}") from None
    except RecursionError:
        raise InputError(where, "", "not valid JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise InputError(where, "", f"expected a JSON object, got {type(data).__name__}")
    return data


def _is_set(value: object) -> bool:
    return value not in (None, False, 0, "", [], {})


def _refuse_unmodelled_keys(where: str, data: dict) -> None:
    for key, reason in REFUSED_KEYS.items():
        if _is_set(data.get(key)):
            raise InputError(where, key, f"{reason}; not modelled")


def _model_type(where: str, data: dict) -> str:
    """The supported model_type the config declares (or its architectures imply)."""
    model_type = data.get("model_type")
    archs = data.get("architectures")
    if model_type is not None and not isinstance(model_type, str):
        raise InputError(where, "model_type", f"expected a name, got {model_type!r}")
    if archs is not None and (not isinstance(archs, list)
                              or not all(isinstance(a, str) for a in archs)):
        raise InputError(where, "architectures", f"expected a list of names, got {archs!r}")
    if model_type is None and not archs:  # written by hand with Llama's key names
        return "mixtral" if _is_set(data.get("num_local_experts")) else "llama"
    if model_type is None:
        model_type = next((t for t, a in SUPPORTED_ARCHITECTURES.items() if a == archs[0]), None)
        if model_type is None:
            raise InputError(where, "architectures", f"{archs[0]} is not modelled; "
                             f"supported: {', '.join(SUPPORTED_ARCHITECTURES.values())}")
    if model_type not in SUPPORTED_ARCHITECTURES:
        reason = REFUSED_MODEL_TYPES.get(model_type, "not a Llama-family decoder")
        raise InputError(where, "model_type", f"{model_type!r}: {reason}; not modelled "
                         f"(supported: {', '.join(SUPPORTED_ARCHITECTURES)})")
    for arch in archs or []:
        if arch != SUPPORTED_ARCHITECTURES[model_type]:
            raise InputError(where, "architectures", f"{arch} is not modelled for model_type "
                             f"{model_type!r} (expected {SUPPORTED_ARCHITECTURES[model_type]})")
    return model_type


def _positive_int(where: str, data: dict, key: str) -> int:
    if key not in data:
        raise InputError(where, key, "missing (a Llama-family config.json needs it)")
    value = data[key]
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise InputError(where, key, f"expected a positive integer, got {value!r}")
    return value


def _optional_int(where: str, data: dict, key: str) -> int | None:
    return None if data.get(key) is None else _positive_int(where, data, key)


def _positive_float(where: str, data: dict, key: str, default: float) -> float:
    value = data.get(key, default)
    if (not isinstance(value, (int, float)) or isinstance(value, bool)
            or not math.isfinite(value) or value <= 0):
        raise InputError(where, key, f"expected a positive number, got {value!r}")
    return float(value)


def _flag(where: str, data: dict, key: str) -> bool:
    value = data.get(key, False)
    if not isinstance(value, bool):
        raise InputError(where, key, f"expected true or false, got {value!r}")
    return value


def _kv_heads(where: str, data: dict, heads: int) -> int:
    kv_heads = _optional_int(where, data, "num_key_value_heads") or heads
    if heads % kv_heads:
        raise InputError(where, "num_key_value_heads",
                         f"{kv_heads} does not divide num_attention_heads {heads}")
    return kv_heads


def _head_dim(where: str, data: dict, hidden: int, heads: int) -> int:
    """An explicit head_dim sizes the projections (heads x head_dim may differ from hidden, as in
    Mistral-Nemo); without one it is hidden / heads, which must then be whole."""
    head_dim = _optional_int(where, data, "head_dim")
    if head_dim is not None:
        return head_dim
    if hidden % heads:
        raise InputError(where, "head_dim", f"not given, and num_attention_heads {heads} "
                         f"does not divide hidden_size {hidden}")
    return hidden // heads


def _experts(where: str, data: dict, model_type: str) -> tuple[int, int]:
    """(experts, experts per token): read for mixtral only; (0, 0) for a dense model."""
    if model_type not in MOE_MODEL_TYPES:
        if _is_set(data.get("num_local_experts")):
            raise InputError(where, "num_local_experts", f"experts in a {model_type} config; "
                             "only Mixtral-style MoE (model_type mixtral) is modelled")
        return 0, 0
    experts = _positive_int(where, data, "num_local_experts")
    top_k = _positive_int(where, data, "num_experts_per_tok")
    if top_k > experts:
        raise InputError(where, "num_experts_per_tok",
                         f"{top_k} exceeds num_local_experts {experts}")
    return experts, top_k


def _refuse_sliding_window(where: str, data: dict, max_positions: int) -> None:
    """Full attention only: a window shorter than the context (unless use_sliding_window is
    false) or a layer that is not full attention is refused."""
    layer_types = data.get("layer_types")
    if layer_types is not None and (not isinstance(layer_types, list)
                                    or any(t != "full_attention" for t in layer_types)):
        raise InputError(where, "layer_types", "layers other than full_attention "
                         "(sliding-window or linear attention); not modelled")
    if data.get("use_sliding_window") is False:
        return
    window = _optional_int(where, data, "sliding_window")
    if window is not None and window < max_positions:
        raise InputError(where, "sliding_window", f"{window} tokens, shorter than "
                         f"max_position_embeddings {max_positions}: sliding-window attention "
                         "is not modelled")


def _weight_dtype(where: str, data: dict) -> str:
    key = "dtype" if data.get("dtype") is not None else "torch_dtype"
    value = data.get(key) or DEFAULT_HF_DTYPE
    if not isinstance(value, str) or value not in HF_DTYPES:
        raise InputError(where, key, f"expected one of {', '.join(HF_DTYPES)}, got {value!r}")
    return HF_DTYPES[value]


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
