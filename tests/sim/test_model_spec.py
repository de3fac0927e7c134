"""Model spec: derived figures match the published sizes; config.json loading and its errors."""

from __future__ import annotations

import json

import pytest

from sim.errors import InputError
from sim.model_spec import PRESETS, get_preset, load_hf_config, resolve_model


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


@pytest.mark.parametrize("content, field", [
    ("{not json", ""), (json.dumps({"hidden_size": 64}), "num_attention_heads"),
    (json.dumps({"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 3,
                 "intermediate_size": 8, "vocab_size": 10}), "num_kv_heads"),
    (json.dumps({"hidden_size": -1, "num_hidden_layers": 2, "num_attention_heads": 4,
                 "intermediate_size": 8, "vocab_size": 10}), "hidden_size"),
])
def test_bad_config_names_file_and_field(tmp_path, content, field):
    path = tmp_path / "config.json"
    path.write_text(content)
    with pytest.raises(InputError) as err:
        load_hf_config(path)
    assert str(path) in str(err.value) and field in str(err.value)


def test_unknown_preset_lists_known_ones():
    with pytest.raises(InputError, match="unknown preset 'gpt-5'.*llama-3-8b"):
        get_preset("gpt-5")
