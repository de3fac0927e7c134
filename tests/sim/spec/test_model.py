"""Model spec: derived figures match the published sizes; config.json loading, its refusals and\nits errors."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from sim.errors import InputError
from sim.spec.model import PRESETS, REFUSED_KEYS, get_preset, load_hf_config, resolve_model


@pytest.mark.parametrize("name, billions", [("llama-3-8b", 8.03), ("llama-3-70b", 70.55), ("llama-2-7b", 6.74),
                                             ("llama-2-70b", 68.98), ("mistral-7b", 7.24), ("qwen2.5-7b", 7.61),
                                             ("mixtral-8x7b", 46.70), ("llama-3.2-1b", 1.24)])
def test_parameter_counts_match_published_sizes(name, billions):
    assert get_preset(name).num_params / 1e9 == pytest.approx(billions, rel=0.01)


def test_kv_bytes_and_flops():
    m = get_preset("llama-3-8b")
    assert m.kv_bytes_per_token == 2 * 32 * 8 * 128 * 2  # K and V, layers, kv heads, head dim, bf16
    assert m.with_dtypes(kv_dtype="fp8").kv_bytes_per_token == m.kv_bytes_per_token / 2
    assert m.with_dtypes(weight_dtype="int4").weight_bytes == m.weight_bytes / 4
    # ~2 FLOPs per parameter per token, minus the embedding lookup
    assert m.flops_per_token(0) == pytest.approx(2 * (m.num_params - m.embedding_params), rel=0.01)
    moe = get_preset("mixtral-8x7b")
    assert moe.linear_flops_per_token < 2 * moe.num_params * 0.35  # top-2 of 8 experts are active


def test_hf_config_round_trip(tmp_path):
    cfg = {"hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
           "intermediate_size": 14336, "vocab_size": 128256, "rope_theta": 500000.0, "torch_dtype": "bfloat16",
           "max_position_embeddings": 8192, "tie_word_embeddings": False}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    spec = load_hf_config(path)
    assert spec.num_params == PRESETS["llama-3-8b"].num_params
    assert resolve_model(str(tmp_path)).num_params == spec.num_params


def test_unknown_preset_lists_known_ones():
    with pytest.raises(InputError, match="unknown preset 'gpt-5'.*llama-3-8b"):
        get_preset("gpt-5")


# ---- Hugging Face config.json: real configs (trimmed of tokenizer ids), accepted or refused ------
LLAMA_3_1_8B = {
    "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "bos_token_id": 128000, "eos_token_id": 128001, "hidden_act": "silu", "hidden_size": 4096,
    "initializer_range": 0.02, "intermediate_size": 14336, "max_position_embeddings": 131072,
    "mlp_bias": False, "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 32,
    "num_key_value_heads": 8, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
    "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "rope_theta": 500000.0, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "transformers_version": "4.43.0.dev0", "use_cache": True, "vocab_size": 128256}
MIXTRAL_8X7B = {
    "architectures": ["MixtralForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 1,
    "eos_token_id": 2, "hidden_act": "silu", "hidden_size": 4096, "initializer_range": 0.02,
    "intermediate_size": 14336, "max_position_embeddings": 32768, "model_type": "mixtral",
    "num_attention_heads": 32, "num_experts_per_tok": 2, "num_hidden_layers": 32,
    "num_key_value_heads": 8, "num_local_experts": 8, "output_router_logits": False,
    "rms_norm_eps": 1e-05, "rope_theta": 1000000.0, "router_aux_loss_coef": 0.02,
    "sliding_window": None, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "transformers_version": "4.36.0.dev0", "use_cache": True, "vocab_size": 32000}
QWEN2_5_7B = {
    "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
    "eos_token_id": 151643, "hidden_act": "silu", "hidden_size": 3584, "initializer_range": 0.02,
    "intermediate_size": 18944, "max_position_embeddings": 131072, "max_window_layers": 28,
    "model_type": "qwen2", "num_attention_heads": 28, "num_hidden_layers": 28,
    "num_key_value_heads": 4, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
    "sliding_window": 131072, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "transformers_version": "4.43.1", "use_cache": True, "use_mrope": False,
    "use_sliding_window": False, "vocab_size": 152064}
MISTRAL_7B_V0_1 = {
    "architectures": ["MistralForCausalLM"], "bos_token_id": 1, "eos_token_id": 2,
    "hidden_act": "silu", "hidden_size": 4096, "initializer_range": 0.02,
    "intermediate_size": 14336, "max_position_embeddings": 32768, "model_type": "mistral",
    "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
    "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "sliding_window": 4096,
    "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "transformers_version": "4.34.0.dev0", "use_cache": True, "vocab_size": 32000}
DEEPSEEK_V3 = {
    "architectures": ["DeepseekV3ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "aux_loss_alpha": 0.001, "bos_token_id": 0, "eos_token_id": 1, "ep_size": 1,
    "first_k_dense_replace": 3, "hidden_act": "silu", "hidden_size": 7168,
    "initializer_range": 0.02, "intermediate_size": 18432, "kv_lora_rank": 512,
    "max_position_embeddings": 163840, "model_type": "deepseek_v3", "moe_intermediate_size": 2048,
    "moe_layer_freq": 1, "n_group": 8, "n_routed_experts": 256, "n_shared_experts": 1,
    "norm_topk_prob": True, "num_attention_heads": 128, "num_experts_per_tok": 8,
    "num_hidden_layers": 61, "num_key_value_heads": 128, "num_nextn_predict_layers": 1,
    "q_lora_rank": 1536, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64,
    "quantization_config": {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                            "weight_block_size": [128, 128]},
    "rms_norm_eps": 1e-06, "rope_theta": 10000, "routed_scaling_factor": 2.5,
    "scoring_func": "sigmoid", "seq_aux": True, "tie_word_embeddings": False, "topk_group": 4,
    "topk_method": "noaux_tc", "torch_dtype": "bfloat16", "transformers_version": "4.33.1",
    "use_cache": True, "v_head_dim": 128, "vocab_size": 129280}
GEMMA_2_9B = {
    "architectures": ["Gemma2ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "attn_logit_softcapping": 50.0, "bos_token_id": 2, "cache_implementation": "hybrid",
    "eos_token_id": 1, "final_logit_softcapping": 30.0, "head_dim": 256,
    "hidden_act": "gelu_pytorch_tanh", "hidden_activation": "gelu_pytorch_tanh",
    "hidden_size": 3584, "initializer_range": 0.02, "intermediate_size": 14336,
    "max_position_embeddings": 8192, "model_type": "gemma2", "num_attention_heads": 16,
    "num_hidden_layers": 42, "num_key_value_heads": 8, "pad_token_id": 0,
    "query_pre_attn_scalar": 256, "rms_norm_eps": 1e-06, "rope_theta": 10000.0,
    "sliding_window": 4096, "sliding_window_size": 4096, "torch_dtype": "float32",
    "transformers_version": "4.42.0.dev0", "use_cache": True, "vocab_size": 256000}
QWEN1_5_MOE_A2_7B = {
    "architectures": ["Qwen2MoeForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
    "decoder_sparse_step": 1, "eos_token_id": 151643, "hidden_act": "silu", "hidden_size": 2048,
    "initializer_range": 0.02, "intermediate_size": 5632, "max_position_embeddings": 8192,
    "max_window_layers": 21, "model_type": "qwen2_moe", "moe_intermediate_size": 1408,
    "norm_topk_prob": False, "num_attention_heads": 16, "num_experts": 60,
    "num_experts_per_tok": 4, "num_hidden_layers": 24, "num_key_value_heads": 16,
    "output_router_logits": False, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
    "router_aux_loss_coef": 0.001, "shared_expert_intermediate_size": 5632,
    "sliding_window": 32768, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "transformers_version": "4.39.0.dev0", "use_cache": True, "use_sliding_window": False,
    "vocab_size": 151936}


def _write(folder: Path, config: dict, file: str = "config.json") -> Path:
    path = folder / file
    path.write_text(json.dumps(config))
    return path


def _refusal(path: Path) -> InputError:
    with pytest.raises(InputError) as err:
        load_hf_config(path)
    assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value)
    return err.value


@pytest.mark.parametrize("config, preset, billions", [
    (LLAMA_3_1_8B, "llama-3.1-8b", 8.03), (MIXTRAL_8X7B, "mixtral-8x7b", 46.70),
    (QWEN2_5_7B, "qwen2.5-7b", 7.61), ({**MISTRAL_7B_V0_1, "sliding_window": None}, "mistral-7b", 7.24),
])
def test_llama_family_configs_are_read_as_their_presets(tmp_path, config, preset, billions):
    spec = load_hf_config(_write(tmp_path, config))
    assert spec.num_params / 1e9 == pytest.approx(billions, rel=0.01)
    # presets keep the default rms_norm_eps (it changes no count); every other field matches
    assert dataclasses.replace(spec, name=preset, rms_norm_eps=1e-5) == PRESETS[preset]


@pytest.mark.parametrize("config, key", [
    (DEEPSEEK_V3, "kv_lora_rank"), (GEMMA_2_9B, "attn_logit_softcapping"),
    (QWEN1_5_MOE_A2_7B, "moe_intermediate_size"), (MISTRAL_7B_V0_1, "sliding_window"),
    ({**QWEN2_5_7B, "use_sliding_window": True, "sliding_window": 4096}, "sliding_window"),
    ({**QWEN2_5_7B, "layer_types": ["sliding_attention"] * 28}, "layer_types"),
    ({**LLAMA_3_1_8B, "num_local_experts": 8}, "num_local_experts"),
    ({**LLAMA_3_1_8B, "model_type": "falcon"}, "model_type"),
    ({"model_type": "gpt2", "n_layer": 12, "n_embd": 768, "n_head": 12}, "model_type"),
    ({"model_type": "mamba", "hidden_size": 768, "num_hidden_layers": 24}, "model_type"),
    ({**LLAMA_3_1_8B, "architectures": ["LlamaForSequenceClassification"]}, "architectures"),
    ({**LLAMA_3_1_8B, "model_type": None, "architectures": ["JambaForCausalLM"]}, "architectures"),
])
def test_configs_we_cannot_model_are_refused_naming_the_key(tmp_path, config, key):
    assert _refusal(_write(tmp_path, config)).field == key


def test_gemma_2_is_refused_key_by_key_never_read_as_fp32(tmp_path):
    """Each of Gemma-2's marks refuses it on its own: removing the one named names the next."""
    config, named = dict(GEMMA_2_9B), []
    for _ in range(6):
        key = _refusal(_write(tmp_path, config)).field
        named.append(key)
        config.pop(key)
    assert named == ["attn_logit_softcapping", "final_logit_softcapping", "query_pre_attn_scalar",
                     "model_type", "architectures", "sliding_window"]


@pytest.mark.parametrize("key", sorted(REFUSED_KEYS))
def test_every_refused_key_refuses_a_llama_config(tmp_path, key):
    assert _refusal(_write(tmp_path, {**LLAMA_3_1_8B, key: 1})).field == key


def test_unset_refused_keys_and_long_windows_are_accepted(tmp_path):
    """null, false or an empty list is not in use; a window as long as the context never slides."""
    config = {**LLAMA_3_1_8B, "q_lora_rank": None, "mlp_only_layers": [], "attn_logit_softcapping": None,
              "sliding_window": 131072, "layer_types": ["full_attention"] * 32}
    assert load_hf_config(_write(tmp_path, config)).num_params == PRESETS["llama-3.1-8b"].num_params


@pytest.mark.parametrize("config, dtype", [
    (LLAMA_3_1_8B, "bf16"), ({**LLAMA_3_1_8B, "torch_dtype": "float16"}, "fp16"),
    ({**LLAMA_3_1_8B, "torch_dtype": "float32"}, "fp32"),
    ({k: v for k, v in LLAMA_3_1_8B.items() if k != "torch_dtype"}, "bf16"),  # the default
    ({k: v for k, v in LLAMA_3_1_8B.items() if k != "torch_dtype"} | {"dtype": "float16"}, "fp16"),
])
def test_weight_dtype_comes_from_dtype_or_torch_dtype(tmp_path, config, dtype):
    assert load_hf_config(_write(tmp_path, config)).weight_dtype == dtype


@pytest.mark.parametrize("change, key", [
    ({"torch_dtype": "float8_e4m3fn"}, "torch_dtype"), ({"dtype": ["bfloat16"]}, "dtype"),
    ({"hidden_size": "4096"}, "hidden_size"), ({"num_hidden_layers": 0}, "num_hidden_layers"),
    ({"intermediate_size": 14336.0}, "intermediate_size"), ({"vocab_size": True}, "vocab_size"),
    ({"num_key_value_heads": 3}, "num_key_value_heads"), ({"num_attention_heads": 48}, "head_dim"),
    ({"head_dim": -128}, "head_dim"), ({"rope_theta": "big"}, "rope_theta"),
    ({"rms_norm_eps": 0}, "rms_norm_eps"), ({"tie_word_embeddings": "no"}, "tie_word_embeddings"),
    ({"model_type": ["llama"]}, "model_type"), ({"architectures": "LlamaForCausalLM"}, "architectures"),
    ({"architectures": ["MixtralForCausalLM"]}, "architectures"),
    ({"max_position_embeddings": None}, "max_position_embeddings"),
])
def test_bad_values_are_refused_naming_the_key(tmp_path, change, key):
    assert _refusal(_write(tmp_path, {**LLAMA_3_1_8B, **change})).field == key


@pytest.mark.parametrize("drop", ["hidden_size", "num_attention_heads", "num_hidden_layers",
                                  "intermediate_size", "vocab_size", "max_position_embeddings"])
def test_missing_keys_are_named(tmp_path, drop):
    config = {k: v for k, v in LLAMA_3_1_8B.items() if k != drop}
    assert _refusal(_write(tmp_path, config)).field == drop


def test_mixtral_needs_its_experts_per_token(tmp_path):
    config = {k: v for k, v in MIXTRAL_8X7B.items() if k != "num_experts_per_tok"}
    assert _refusal(_write(tmp_path, config)).field == "num_experts_per_tok"
    too_many = _write(tmp_path, {**MIXTRAL_8X7B, "num_experts_per_tok": 9})
    assert _refusal(too_many).field == "num_experts_per_tok"


@pytest.mark.parametrize("content", [b"\xff\xfe{\x00}", b"{not json", b"[1, 2]", b"", b"null"])
def test_files_that_are_not_a_json_object_are_one_line(tmp_path, content):
    path = tmp_path / "config.json"
    path.write_bytes(content)
    assert _refusal(path).field == ""


def test_a_folder_or_a_missing_file_is_one_line(tmp_path):
    assert "folder" in str(_refusal(tmp_path))
    assert _refusal(tmp_path / "absent.json").field == ""
    with pytest.raises(InputError, match="config.json"):
        resolve_model(str(tmp_path))  # a folder without a config.json


def test_names_come_from_the_config_or_file_never_the_folder(tmp_path):
    folder = tmp_path / "byo"
    folder.mkdir()
    specs = [load_hf_config(_write(folder, LLAMA_3_1_8B)),
             load_hf_config(_write(folder, MIXTRAL_8X7B, "mixtral.json")),
             load_hf_config(_write(folder, QWEN2_5_7B, "qwen.json")),
             load_hf_config(_write(folder, LLAMA_3_1_8B | {"torch_dtype": "float16"}, "llama-fp16.json"))]
    assert [s.name for s in specs] == ["llama-8.03b", "mixtral", "qwen", "llama-fp16"]
    assert resolve_model(str(folder)).name == "llama-8.03b"
    named = _write(folder, LLAMA_3_1_8B | {"_name_or_path": "meta-llama/Llama-3.1-8B"})
    assert load_hf_config(named).name == "Llama-3.1-8B"
    local = _write(folder, LLAMA_3_1_8B | {"_name_or_path": "./"})
    assert load_hf_config(local).name == "llama-8.03b"


def test_a_hand_written_config_reads_as_llama_or_mixtral(tmp_path):
    """Without model_type and architectures, Llama's key names are read as llama (or mixtral)."""
    dense = {k: v for k, v in LLAMA_3_1_8B.items() if k not in ("model_type", "architectures")}
    assert load_hf_config(_write(tmp_path, dense)).name == "llama-8.03b"
    moe = {k: v for k, v in MIXTRAL_8X7B.items() if k not in ("model_type", "architectures")}
    spec = load_hf_config(_write(tmp_path, moe))
    assert (spec.name, spec.num_experts, spec.num_experts_per_token) == ("mixtral-46.7b", 8, 2)
