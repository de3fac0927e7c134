"""The PyTorch runner executes StepPlans exactly: every way of scheduling the same tokens (one
prefill, chunks, token by token, batched, mixed, preempted and recomputed, padded, static-shape)
gives the same logits, and those match a naive cache-free reference implementation."""

from __future__ import annotations

import dataclasses

import pytest

torch = pytest.importorskip("torch")

from calibrate.model import (Linear, MoE, Transformer, load_hf_state_dict,  # noqa: E402
                             weight_bytes)
from calibrate.runner import Runner  # noqa: E402
from sim.spec.model import PRESETS  # noqa: E402
from sim.plan import PrefillChunk, StepPlan  # noqa: E402

ATOL = 1e-4
TINY = PRESETS["tiny"]
TINY_MOE = PRESETS["tiny-moe"]
TINY_TIED = dataclasses.replace(TINY, name="tiny-tied", tie_word_embeddings=True)


def prompt(length: int, seed: int) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, TINY.vocab_size, (length,), generator=g).tolist()


def runner(spec=TINY, **kwargs) -> Runner:
    kwargs.setdefault("max_num_seqs", 6)
    kwargs.setdefault("max_seq_len", 128)
    return Runner(spec, **kwargs)


def prefill(rid: int, start: int, n: int, sampling: bool = True) -> PrefillChunk:
    return PrefillChunk(rid, start, n, sampling)


def naive_logits(model: Transformer, tokens: list[int]) -> torch.Tensor:
    """Full causal forward without a cache, written independently of calibrate.model."""
    spec = model.spec
    t, h, kv, d = len(tokens), spec.num_attention_heads, spec.num_kv_heads, spec.head_dim

    def rms(x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + spec.rms_norm_eps) * w

    def rope(x):  # rotate pairs (i, i + d/2) by position * theta^(-2i/d)
        freqs = spec.rope_theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
        ang = torch.outer(torch.arange(t, dtype=torch.float64), freqs).float()[:, None, :]
        x1, x2 = x[..., :d // 2], x[..., d // 2:]
        return torch.cat([x1 * ang.cos() - x2 * ang.sin(), x2 * ang.cos() + x1 * ang.sin()], -1)

    def swiglu(x, w13, w2):
        gate, up = (x @ w13.T).chunk(2, dim=-1)
        return (torch.nn.functional.silu(gate) * up) @ w2.T

    x = model.embedding[torch.tensor(tokens)]
    causal = torch.ones(t, t, dtype=torch.bool).tril()
    for layer in model.layers:
        att = layer.attention
        qkv = rms(x, layer.attention_norm.weight) @ att.wqkv.dense_weight.T
        q, k, v = qkv.split([h * d, kv * d, kv * d], -1)
        q, k = rope(q.view(t, h, d)), rope(k.view(t, kv, d))
        k, v = k.repeat_interleave(h // kv, 1), v.view(t, kv, d).repeat_interleave(h // kv, 1)
        scores = torch.einsum("qhd,khd->hqk", q, k) / d ** 0.5
        probs = scores.masked_fill(~causal, float("-inf")).softmax(-1)
        x = x + torch.einsum("hqk,khd->qhd", probs, v).reshape(t, h * d) @ att.wo.dense_weight.T
        y = rms(x, layer.mlp_norm.weight)
        if isinstance(layer.mlp, MoE):
            moe, out = layer.mlp, torch.zeros_like(y)
            for i in range(t):
                p = (y[i] @ moe.router.T).softmax(-1)
                w, e = p.topk(moe.top_k)
                for weight, expert in zip((w / w.sum()).tolist(), e.tolist()):
                    out[i] += weight * swiglu(y[i], moe.w13[expert], moe.w2[expert])
            x = x + out
        else:
            x = x + swiglu(y, layer.mlp.w13.dense_weight, layer.mlp.w2.dense_weight)
    return rms(x, model.norm.weight) @ model.lm_head.dense_weight.T


def token_by_token(r: Runner, rid: int, tokens: list[int]) -> torch.Tensor:
    """Logits of every position, feeding the tokens one decode step at a time."""
    r.add_request(rid, tokens[:1])
    rows = [r.forward_logits(StepPlan(prefill=(prefill(rid, 0, 1),)))[rid]]
    for token in tokens[1:]:
        r.append_token(rid, token)
        rows.append(r.forward_logits(StepPlan(decode_ids=(rid,)))[rid])
    return torch.cat(rows)


def generate_alone(spec, tokens: list[int], num_decodes: int, **kwargs) -> list[int]:
    r = runner(spec, **kwargs)
    r.add_request(0, tokens)
    out = [r.execute(StepPlan(prefill=(prefill(0, 0, len(tokens)),)))[0]]
    for _ in range(num_decodes):
        out.append(r.execute(StepPlan(decode_ids=(0,)))[0])
    return out


# ---- (a), (e): prefill == token-by-token decode == naive reference -----------------------------
@pytest.mark.parametrize("spec", [TINY, TINY_MOE, TINY_TIED], ids=["dense", "moe", "tied"])
def test_prefill_logits_equal_token_by_token_decode_and_reference(spec) -> None:
    tokens = prompt(23, seed=1)
    r = runner(spec)
    r.add_request(1, tokens)
    full = r.forward_logits(StepPlan(prefill=(prefill(1, 0, len(tokens)),)))[1]
    stepped = token_by_token(r, 2, tokens)
    reference = naive_logits(r.model, tokens)
    assert full.shape == (23, spec.vocab_size)
    assert full.abs().max() > 0.5  # real, non-degenerate logits
    torch.testing.assert_close(stepped, full, atol=ATOL, rtol=0)
    torch.testing.assert_close(full, reference, atol=ATOL, rtol=0)


def test_moe_grouped_equals_gathered_experts() -> None:
    model = Transformer(TINY_MOE, seed=3)
    x = torch.randn(9, TINY_MOE.hidden_size, generator=torch.Generator().manual_seed(0))
    moe = model.layers[0].mlp
    torch.testing.assert_close(moe.forward_grouped(x), moe.forward_gathered(x), atol=1e-5, rtol=0)


# ---- (b): a batched step equals the sequences run one by one -----------------------------------
@pytest.mark.parametrize("spec", [TINY, TINY_MOE], ids=["dense", "moe"])
def test_batched_steps_equal_sequences_alone(spec) -> None:
    lengths = {10: 3, 11: 9, 12: 17, 13: 5}
    prompts = {rid: prompt(n, seed=rid) for rid, n in lengths.items()}
    r = runner(spec)
    r.add_request(99, prompt(4, seed=99))  # holds slot 0 then frees it: decoders' slots have gaps
    r.execute(StepPlan(prefill=(prefill(99, 0, 4),)))
    r.add_request(10, prompts[10])
    r.execute(StepPlan(prefill=(prefill(10, 0, lengths[10]),)))  # slot 1
    r.free(99)
    outputs = {rid: [] for rid in prompts}
    outputs[10].append(r.known_tokens(10)[-1])
    for rid in (11, 12, 13):
        r.add_request(rid, prompts[rid])
    step = r.execute(StepPlan(prefill=tuple(prefill(rid, 0, lengths[rid]) for rid in (11, 12, 13))))
    for rid, token in step.items():
        outputs[rid].append(token)
    assert sorted(r.cache.slot_of(rid) for rid in prompts) == [0, 1, 2, 3]
    for _ in range(6):
        for rid, token in r.execute(StepPlan(decode_ids=(13, 10, 12, 11))).items():
            outputs[rid].append(token)
    for rid, tokens in prompts.items():
        assert outputs[rid] == generate_alone(spec, tokens, 6), f"request {rid}"


def test_batched_decode_logits_equal_single_decodes() -> None:
    prompts = {1: prompt(5, 1), 2: prompt(30, 2), 3: prompt(12, 3)}
    batched, single = runner(), runner()
    for r in (batched, single):
        for rid, tokens in prompts.items():
            r.add_request(rid, tokens)
            r.execute(StepPlan(prefill=(prefill(rid, 0, len(tokens)),)))
    together = batched.forward_logits(StepPlan(decode_ids=(1, 2, 3)))
    for rid in prompts:
        alone = single.forward_logits(StepPlan(decode_ids=(rid,)))[rid]
        torch.testing.assert_close(together[rid], alone, atol=ATOL, rtol=0)


def test_a_decode_run_of_mixed_contexts_attends_in_pieces_with_the_same_logits(monkeypatch) -> None:
    """Decodes of consecutive slots attend in one call padded to the longest context; a run whose
    contexts differ widely is split where the padding saved outweighs a call; on a CPU each decode
    attends alone. Same logits."""
    from calibrate import runner as runner_module
    from calibrate.runner import split_padding

    assert split_padding([2000, 200, 300, 250], 256) == [1, 3]  # the long one alone
    assert split_padding([300, 310, 290], 256) == [3]  # alike: one call
    assert split_padding([50, 2000, 60], 256) == [1, 1, 1]
    assert split_padding([5], 256) == [1] and split_padding([], 256) == []
    # 0: any padding splits, while equal contexts still share one call
    assert split_padding([300, 300, 301, 301, 300], 0) == [2, 2, 1]
    assert split_padding([7, 7, 7], 0) == [3]
    prompts = {1: prompt(200, 1), 2: prompt(6, 2), 3: prompt(9, 3)}  # slots 0, 1, 2: one run

    def logits(call_positions: int | None) -> dict:
        monkeypatch.setattr(runner_module, "DECODE_CALL_POSITIONS_CPU", call_positions)
        r = runner(max_seq_len=256)
        for rid, tokens in prompts.items():
            r.add_request(rid, tokens)
            r.execute(StepPlan(prefill=(prefill(rid, 0, len(tokens)),)))
        return r.forward_logits(StepPlan(decode_ids=(1, 2, 3)))

    split, whole, alone = logits(8), logits(10**9), logits(None)  # [1, 2]; one call; a CPU's: alone
    assert split_padding([201, 7, 10], 8) == [1, 2] and split_padding([201, 7, 10], 10**9) == [3]
    for rid in prompts:
        torch.testing.assert_close(split[rid], whole[rid], atol=ATOL, rtol=0)
        torch.testing.assert_close(alone[rid], whole[rid], atol=ATOL, rtol=0)



def test_on_a_cpu_every_decode_attends_alone_even_with_equal_contexts(monkeypatch) -> None:
    """The cost model charges attention a call per sequence per layer plus its own K/V; a CPU
    runner must do exactly that in calibration (equal contexts) as in serving (mixed ones)."""
    import calibrate.model as model_module

    real_sdpa, calls = model_module.F.scaled_dot_product_attention, []

    def counting(q, k, *args, **kwargs):
        calls.append(k.shape[0])
        return real_sdpa(q, k, *args, **kwargs)

    r = runner(max_seq_len=64)
    for rid in (1, 2, 3):
        r.add_request(rid, prompt(5, rid))
        r.reserve_context(rid, 20)  # equal contexts in consecutive slots
    monkeypatch.setattr(model_module.F, "scaled_dot_product_attention", counting)
    r.execute(StepPlan(decode_ids=(1, 2, 3)))
    assert calls == [1] * (3 * TINY.num_layers)

# ---- (c): mixed steps and chunked prefill ------------------------------------------------------
def test_chunked_prefill_equals_full_prefill() -> None:
    tokens = prompt(40, seed=5)
    r = runner()
    r.add_request(1, tokens)
    full = r.forward_logits(StepPlan(prefill=(prefill(1, 0, 40),)))[1]
    r.add_request(2, tokens)
    parts = [r.forward_logits(StepPlan(prefill=(prefill(2, s, n, s + n == 40),)))[2]
             for s, n in ((0, 16), (16, 16), (32, 8))]
    torch.testing.assert_close(torch.cat(parts), full, atol=ATOL, rtol=0)
    assert r.num_computed(2) == 40


def test_mixed_step_equals_separate_steps() -> None:
    a, b, c = prompt(20, 1), prompt(11, 2), prompt(25, 3)
    mixed, separate = runner(), runner()
    for r in (mixed, separate):
        r.add_request(1, a)
        r.add_request(2, b)
        r.add_request(3, c)
        r.execute(StepPlan(prefill=(prefill(1, 0, 20),)))  # 1 decodes from here on
        r.execute(StepPlan(prefill=(prefill(3, 0, 10, False),)))  # 3 is half prefilled
    plan = StepPlan(prefill=(prefill(2, 0, 11), prefill(3, 10, 15)), decode_ids=(1,))
    got = mixed.forward_logits(plan)
    want = {2: separate.forward_logits(StepPlan(prefill=(prefill(2, 0, 11),)))[2],
            3: separate.forward_logits(StepPlan(prefill=(prefill(3, 10, 15),)))[3],
            1: separate.forward_logits(StepPlan(decode_ids=(1,)))[1]}
    assert set(got) == {1, 2, 3}
    for rid in want:
        torch.testing.assert_close(got[rid], want[rid], atol=ATOL, rtol=0)
    torch.testing.assert_close(got[3], naive_logits(mixed.model, c)[10:], atol=ATOL, rtol=0)


def test_execute_samples_only_sampling_requests() -> None:
    r = runner()
    r.add_request(1, prompt(12, 1))
    r.add_request(2, prompt(12, 2))
    out = r.execute(StepPlan(prefill=(prefill(1, 0, 12), prefill(2, 0, 6, False))))
    assert list(out) == [1]
    assert len(r.known_tokens(1)) == 13 and len(r.known_tokens(2)) == 12
    assert r.num_computed(1) == 12 and r.num_computed(2) == 6


# ---- (d): preemption and recompute ---------------------------------------------------------------
def test_preempted_request_recomputes_and_regenerates_the_same_tokens() -> None:
    tokens = prompt(14, seed=7)
    expected = generate_alone(TINY, tokens, 8)
    r = runner()
    r.add_request(1, tokens)
    out = [r.execute(StepPlan(prefill=(prefill(1, 0, 14),)))[1]]
    out += [r.execute(StepPlan(decode_ids=(1,)))[1] for _ in range(3)]
    free_before = r.cache.num_free_slots
    r.execute(StepPlan(preempted_ids=(1,)))
    assert r.num_computed(1) == 0 and r.cache.num_free_slots == free_before + 1
    known = len(r.known_tokens(1))  # prompt + 4 outputs, recomputed in two chunks
    r.execute(StepPlan(prefill=(prefill(1, 0, 10, False),)))
    out.append(r.execute(StepPlan(prefill=(prefill(1, 10, known - 10),)))[1])
    out += [r.execute(StepPlan(decode_ids=(1,)))[1] for _ in range(4)]
    assert out == expected


def test_preemption_inside_a_step_frees_before_running() -> None:
    r = runner(max_num_seqs=1)
    r.add_request(1, prompt(6, 1))
    r.add_request(2, prompt(6, 2))
    r.execute(StepPlan(prefill=(prefill(1, 0, 6),)))
    out = r.execute(StepPlan(prefill=(prefill(2, 0, 6),), preempted_ids=(1,)))
    assert list(out) == [2] and r.num_computed(1) == 0
    assert out[2] == generate_alone(TINY, prompt(6, 2), 0)[0]


# ---- (f): plans that disagree with the runner are rejected ---------------------------------------
def test_chunk_start_disagreeing_with_computed_count_is_rejected() -> None:
    r = runner()
    r.add_request(1, prompt(10, 1))
    r.execute(StepPlan(prefill=(prefill(1, 0, 4, False),)))
    with pytest.raises(ValueError, match=r"starts at token 2.*computed 4.*chunk.start must equal"):
        r.execute(StepPlan(prefill=(prefill(1, 2, 8),)))
    with pytest.raises(ValueError, match="decode of request 1 needs exactly one uncomputed token"):
        r.execute(StepPlan(decode_ids=(1,)))
    with pytest.raises(ValueError, match="samples exactly when it reaches them"):
        r.execute(StepPlan(prefill=(prefill(1, 4, 6, False),)))
    with pytest.raises(ValueError, match="request 7: unknown"):
        r.execute(StepPlan(decode_ids=(7,)))
    assert r.num_computed(1) == 4  # nothing changed: the right chunk still runs
    assert list(r.execute(StepPlan(prefill=(prefill(1, 4, 6),)))) == [1]


def test_running_out_of_slots_is_rejected() -> None:
    r = runner(max_num_seqs=2)
    for rid in (1, 2, 3):
        r.add_request(rid, prompt(3, rid))
    with pytest.raises(ValueError, match="needs 3 new cache slots, 2 free"):
        r.execute(StepPlan(prefill=tuple(prefill(rid, 0, 3) for rid in (1, 2, 3))))


# ---- padding, static decode path, reserve_context -----------------------------------------------
def test_padding_rows_do_not_change_real_rows() -> None:
    prompts = {1: prompt(9, 1), 2: prompt(21, 2)}
    padded, plain = runner(), runner()
    for r in (padded, plain):
        for rid, tokens in prompts.items():
            r.add_request(rid, tokens)
        r.execute(StepPlan(prefill=tuple(prefill(rid, 0, len(t)) for rid, t in prompts.items())))
    # padding at context 5: inside both real sequences' contexts, so writing their K/V anywhere
    # but the scratch slot would change the later steps
    got = padded.forward_logits(StepPlan(decode_ids=(1, 2), num_padding_seqs=3,
                                         padding_context_tokens=15))
    want = plain.forward_logits(StepPlan(decode_ids=(1, 2)))
    for rid in prompts:
        torch.testing.assert_close(got[rid], want[rid], atol=ATOL, rtol=0)
        padded.append_token(rid, 9)
        plain.append_token(rid, 9)
    later = [[r.execute(StepPlan(decode_ids=(1, 2))) for _ in range(3)] for r in (padded, plain)]
    assert later[0] == later[1]


def test_static_decode_path_equals_packed_path() -> None:
    prompts = {1: prompt(9, 1), 2: prompt(40, 2), 3: prompt(3, 3)}
    static, packed = runner(compile_decode=True), runner()
    outs = {}
    for name, r in (("static", static), ("packed", packed)):
        for rid, tokens in prompts.items():
            r.add_request(rid, tokens)
        r.execute(StepPlan(prefill=tuple(prefill(rid, 0, len(t)) for rid, t in prompts.items())))
        outs[name] = [r.forward_logits(StepPlan(decode_ids=(1, 2, 3), num_padding_seqs=2,
                                                padding_context_tokens=20))]
        for rid in prompts:
            r.append_token(rid, 5)
        outs[name] += [r.execute(StepPlan(decode_ids=(3, 1, 2))) for _ in range(4)]
    for rid in prompts:
        torch.testing.assert_close(outs["static"][0][rid], outs["packed"][0][rid], atol=ATOL,
                                   rtol=0)
    assert outs["static"][1:] == outs["packed"][1:]


def test_reserve_context_lets_a_decode_run_at_that_context() -> None:
    r = runner()
    r.add_request(1, [7])
    r.reserve_context(1, 50)
    assert r.num_computed(1) == 50 and len(r.known_tokens(1)) == 51
    out = r.execute(StepPlan(decode_ids=(1,)))
    assert list(out) == [1] and r.num_computed(1) == 51 and len(r.known_tokens(1)) == 52


# ---- (g): low precision, checkpoints -------------------------------------------------------------
def test_bf16_model_runs_and_tracks_fp32() -> None:
    tokens = prompt(16, seed=4)
    logits = {}
    for dtype in ("bf16", "fp32"):
        r = runner(dtype=dtype)
        r.add_request(1, tokens)
        logits[dtype] = r.forward_logits(StepPlan(prefill=(prefill(1, 0, 16),)))[1]
        r.append_token(1, 3)
        decoded = r.forward_logits(StepPlan(decode_ids=(1,)))[1]
        assert r.model.embedding.dtype == (torch.bfloat16 if dtype == "bf16" else torch.float32)
        assert torch.isfinite(logits[dtype]).all() and torch.isfinite(decoded).all()
    # same seeded draws, rounded to bf16: the logits follow the fp32 ones closely
    corr = torch.corrcoef(torch.stack([logits["bf16"].flatten(), logits["fp32"].flatten()]))[0, 1]
    assert corr > 0.98


def test_hf_state_dict_round_trip() -> None:
    source = Transformer(TINY, seed=1)
    tensors = {"model.embed_tokens.weight": source.embedding,
               "model.norm.weight": source.norm.weight,
               "lm_head.weight": source.lm_head.dense_weight}
    q, kv = TINY.q_size, TINY.kv_size
    for i, layer in enumerate(source.layers):
        p = f"model.layers.{i}."
        wq, wk, wv = layer.attention.wqkv.dense_weight.split([q, kv, kv])
        gate, up = layer.mlp.w13.dense_weight.chunk(2)
        tensors |= {p + "input_layernorm.weight": layer.attention_norm.weight,
                    p + "post_attention_layernorm.weight": layer.mlp_norm.weight,
                    p + "self_attn.q_proj.weight": wq, p + "self_attn.k_proj.weight": wk,
                    p + "self_attn.v_proj.weight": wv,
                    p + "self_attn.o_proj.weight": layer.attention.wo.dense_weight,
                    p + "mlp.gate_proj.weight": gate, p + "mlp.up_proj.weight": up,
                    p + "mlp.down_proj.weight": layer.mlp.w2.dense_weight}
    target = Transformer(TINY, seed=2)
    tokens = prompt(8, 1)
    assert not torch.allclose(naive_logits(target, tokens), naive_logits(source, tokens))
    load_hf_state_dict(target, tensors)
    torch.testing.assert_close(naive_logits(target, tokens), naive_logits(source, tokens))
    del tensors["model.layers.1.mlp.up_proj.weight"]
    with pytest.raises(KeyError, match="up_proj"):
        load_hf_state_dict(target, tensors)


def test_cpu_runner_packs_linear_layers_without_changing_results_or_bytes() -> None:
    r = runner(TINY_TIED)
    assert r.model.pack_weights() == 0  # too small to gain: the runner left them dense
    r.model.pack_weights(min_elements=0)
    linears = [m for m in r.model.modules() if isinstance(m, Linear)]
    if not all(m.packed is not None for m in linears):
        pytest.skip("this torch build cannot pack weights for oneDNN")
    assert all(m.weight is None for m in linears if not m.is_shared)  # no dense copy kept
    assert r.weight_bytes == TINY_TIED.num_params * 4
    dense = Transformer(TINY_TIED)  # same seed, unpacked
    assert weight_bytes(dense) == r.weight_bytes
    tokens = prompt(12, 6)
    r.add_request(1, tokens)
    got = r.forward_logits(StepPlan(prefill=(prefill(1, 0, 12),)))[1]
    torch.testing.assert_close(got, naive_logits(dense, tokens), atol=ATOL, rtol=0)
    torch.testing.assert_close(token_by_token(r, 2, tokens), got, atol=ATOL, rtol=0)


def test_warming_step_sizes_builds_kernels_without_changing_results() -> None:
    r = runner(TINY_TIED)
    tokens = prompt(12, 6)
    r.add_request(1, tokens)
    plan = StepPlan(prefill=(prefill(1, 0, 12),))
    before = r.forward_logits(plan)[1]
    r.model.pack_weights(min_elements=0)
    linears = [m for m in r.model.modules() if isinstance(m, Linear)]
    if not all(m.packed is not None for m in linears):
        pytest.skip("this torch build cannot pack weights for oneDNN")
    rows: dict[tuple, int] = {}  # each distinct weight shape at rows 1..16; the LM head's at 1..3
    for m in linears:
        shape = tuple(m.packed.shape)
        rows[shape] = max(rows.get(shape, 0), 3 if m is r.model.lm_head else 16)
    assert r.warm_shapes(16, 3) == sum(rows.values())
    r.free(1)
    r.add_request(1, tokens)
    torch.testing.assert_close(r.forward_logits(plan)[1], before, atol=ATOL, rtol=0)


def test_importing_calibrate_enlarges_onednn_kernel_caches() -> None:
    import os

    assert int(os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"]) >= 4096
