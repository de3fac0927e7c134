"""Cost model: (step shape, model, profile, tensor parallelism) -> step seconds and joules.

Modelled, per device of a TP group (weights, heads and KV heads split TP ways):
  * matmuls: FLOPs of the decoder's linear layers for every computed token, plus the LM head for
    sampled tokens only; they run at peak x efficiency(tokens in the step) (small batches reach far
    less than large GEMMs: a fitted curve or e_max * T / (T + T_half)); they must also stream every
    weight once per step. Each linear layer is bound by the slower of the two (roofline):
    t_linear = max(t_matmul, weight_bytes / (bandwidth x memory_efficiency)), taken apart for the
    decoder's layers (a GEMM of the step's tokens) and the LM head (one of its sampled rows).
    GEMM efficiency also depends on the matrices' width: a profile may scale it by
    min(1, (hidden / 4096) ^ matmul_width_exponent) (fitted from two model widths).
  * attention: 4 x layers x q_size FLOPs per causal (query, key) pair, and the KV of every
    context token read once, at kv_memory_efficiency of the bandwidth where the profile gives one
    (attention kernels gather KV per head; they often stream slower than weight GEMMs). Two parts,
    each bound by the slower of its FLOPs and its KV reads:
      - over the cache: the step's queries against keys computed in earlier steps (a decode's
        context, a later chunk's prefix: StepShape.cached_pairs), full rectangles of tiles, at
        cached_attention_efficiency where the profile gives one;
      - within the step: the causal triangles among the step's own tokens, at attention_efficiency.
    t_attn = max(t_flops_cached, t_kv_cached) + max(t_flops_new, t_kv_new). Measured on the CPU
    runner, a 512-token chunk behind a 3072-token prefix ran its cached pairs ~1.6x faster per pair
    than a fresh prompt's triangle: one efficiency for both over-predicted it by 30 %. Where a
    runner gathers a chunk's prefix K/V before its kernel (the CPU runner), each chunk also pays
    prefix_key_layer_overhead_s per layer per prefix key, beside the math: a 16-token chunk's
    pairs cost ~1.8x a 512-token chunk's there.
  * fixed overheads: per step, per layer (kernel launches / Python), per sequence (metadata), and
    per sequence per layer (each sequence's attention is a call of its own: a CPU engine's
    scaled_dot_product_attention per decode, a GPU's per-sequence work partition).
  * waking: the first step after the engine sat idle takes longer, by the profile's wake-up curve
    at the idle's length (sim.engine).
  * the engine's own loop: after every step, the serving engine's host seconds before it can start
    the next (committing tokens, bookkeeping, scheduling: `engine_step_overhead_s`, measured on
    the real engine), as `StepCost.after_s`; the device idles meanwhile, so it costs idle energy.
  * tensor parallelism: two all-reduces of the step's activations per layer over the interconnect
    (ring: 2 (tp-1)/tp x bytes / bandwidth + latency each).
  * MoE: every token runs top-k experts; the step reads the expected number of distinct experts.
Assumed: the KV written by new tokens is counted once within the context they join; activation
traffic is negligible beside weights and KV. Step energy uses the profile's power model:
decode_w for the whole step plus (prefill_w - decode_w) while compute units are busy (matmul and
attention FLOP time), so a compute-bound prefill draws prefill_w and a batch-1 decode ~decode_w.

Within a run of decode-only steps with a fixed batch, contexts grow by one per step, so step j's
time is exactly alpha + beta x j (`decode_line`), and the engine's loop after each is a constant:
the engine advances many steps in closed form.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from sim.errors import InputError
from sim.spec.model import BYTES_PER_ELEMENT, ModelSpec
from sim.plan import StepShape
from sim.spec.profile import CostParams, Profile, interpolate_log, wake_slowdown

COMPUTE_DTYPE_OF_WEIGHTS = {"fp32": "fp32", "bf16": "bf16", "fp16": "fp16", "fp8": "fp8",
                            "int8": "bf16", "int4": "bf16"}


@dataclass(frozen=True, slots=True)
class StepCost:
    time_s: float
    energy_j: float  # all devices of the TP group
    matmul_s: float
    weights_s: float
    attention_flops_s: float
    kv_s: float
    comm_s: float
    overhead_s: float
    # the engine's own seconds after the step's tokens are committed, before it can start the next
    # (the profile's engine_step_overhead_s; a replayed real engine's own, sim.replay)
    after_s: float = 0.0


def matmul_efficiency(params: CostParams, num_tokens: float) -> float:
    tokens = max(num_tokens, 1.0)
    curve = params.matmul_efficiency_curve
    if not curve:
        return params.matmul_efficiency * tokens / (tokens + params.matmul_half_tokens)
    return interpolate_log(curve, tokens)


class CostModel:
    """Step time and energy of one model on one profile at one TP degree. Pure; no state."""

    closed_form_decode = True  # decode_line holds: the engine may advance decode runs in one go

    def __init__(self, model: ModelSpec, profile: Profile, tp: int = 1) -> None:
        if tp < 1 or tp > profile.device.count:
            raise InputError(profile.path, "device.count",
                             f"tensor parallelism {tp} needs {tp} devices; this profile has {profile.device.count}")
        if model.num_attention_heads % tp:
            raise InputError("model", "num_attention_heads",
                             f"{model.num_attention_heads} heads cannot be split over tp={tp}")
        self.model = model
        self.profile = profile
        self.tp = tp
        params = profile.cost
        self.params = params
        compute_dtype = COMPUTE_DTYPE_OF_WEIGHTS[model.weight_dtype]
        self.compute_dtype = compute_dtype
        width = min(1.0, (model.hidden_size / 4096) ** params.matmul_width_exponent)
        peak = profile.peak_flops_for(compute_dtype)
        self.peak_flops = peak
        self._matmul_flops_rate = peak * width
        bandwidth = profile.device.memory_bandwidth_bytes_per_s * params.memory_efficiency
        self.effective_bandwidth = bandwidth

        self._lin_flops_per_token = model.linear_flops_per_token / tp
        self._head_flops_per_sample = model.lm_head_flops_per_sampled_token / tp
        self._attn_s_per_pair = model.attention_flops_per_pair / tp / (peak * params.attention_efficiency)
        self._cached_attn_s_per_pair = model.attention_flops_per_pair / tp / (
            peak * (params.cached_attention_efficiency or params.attention_efficiency))
        kv_share = max(1.0 / tp, 1.0 / model.num_kv_heads)
        kv_bandwidth = profile.device.memory_bandwidth_bytes_per_s * (
            params.kv_memory_efficiency or params.memory_efficiency)
        self._kv_s_per_token = model.kv_bytes_per_token * kv_share / kv_bandwidth
        # a decode's one query: its cached context at the cache's rate, its own token at the step's
        self._cached_or_kv_s_per_token = max(self._cached_attn_s_per_pair, self._kv_s_per_token)
        self._attn_or_kv_s_per_token = max(self._attn_s_per_pair, self._kv_s_per_token)
        if model.is_moe:
            self._dense_weight_bytes = (model.layer_weight_bytes
                                        - model.num_layers * model.num_experts * model.expert_weight_bytes) / tp
            self._expert_bytes_per_layer = model.expert_weight_bytes / tp
        else:
            self._dense_weight_bytes = model.layer_weight_bytes / tp
            self._expert_bytes_per_layer = 0.0
        self._head_bytes = model.lm_head_bytes / tp
        act_bytes = BYTES_PER_ELEMENT[compute_dtype if compute_dtype != "fp8" else "bf16"]
        self._allreduce_bytes_per_token = model.hidden_size * act_bytes
        self._fixed_overhead_s = params.step_overhead_s + params.layer_overhead_s * model.num_layers
        self._seq_overhead_s = (params.sequence_overhead_s
                                + params.sequence_layer_overhead_s * model.num_layers)
        self._prefix_key_s = params.prefix_key_layer_overhead_s * model.num_layers
        self.engine_overhead_s = params.engine_step_overhead_s  # after each step (sim.engine)
        power = profile.power
        self._decode_w = power.decode_w * tp
        self._compute_extra_w = (power.prefill_w - power.decode_w) * tp
        self.idle_power_w = power.idle_w * tp

    # ---- pieces ----------------------------------------------------------------------------
    def _weight_bytes(self, num_tokens: int, num_sampled: int) -> float:
        total = self._dense_weight_bytes + (self._head_bytes if num_sampled else 0.0)
        if self._expert_bytes_per_layer:
            e, k = self.model.num_experts, self.model.num_experts_per_token
            touched = e * (1.0 - (1.0 - k / e) ** max(num_tokens, 1))
            total += self.model.num_layers * touched * self._expert_bytes_per_layer
        return total

    def _comm_s(self, num_tokens: int) -> float:
        if self.tp == 1:
            return 0.0
        link = self.profile.device.interconnect
        assert link is not None  # validated with the profile
        per_allreduce = (link.latency_s + 2.0 * (self.tp - 1) / self.tp
                         * num_tokens * self._allreduce_bytes_per_token / link.bandwidth_bytes_per_s)
        return 2 * self.model.num_layers * per_allreduce

    def _linear_parts(self, num_tokens: int, num_sampled: int) -> tuple[float, float, float]:
        """(matmul seconds, weight-streaming seconds, linear-layer seconds). The decoder's linear
        layers are GEMMs of num_tokens rows and the LM head one of num_sampled rows, each bound by
        the slower of its FLOPs and its weights: a short prefill's layers are compute-bound while
        its one sampled row streams the whole head."""
        rate = self._matmul_flops_rate
        body_eff = matmul_efficiency(self.params, num_tokens)
        body_mm = self._lin_flops_per_token * num_tokens / (rate * body_eff)
        body_w = self._weight_bytes(num_tokens, 0) / self.effective_bandwidth
        head_mm = head_w = 0.0
        if num_sampled:  # a decode-only step's head has its layers' rows: the same efficiency
            head_eff = body_eff if num_sampled == num_tokens else matmul_efficiency(self.params, num_sampled)
            head_mm = self._head_flops_per_sample * num_sampled / (rate * head_eff)
            head_w = self._head_bytes / self.effective_bandwidth
        return body_mm + head_mm, body_w + head_w, max(body_mm, body_w) + max(head_mm, head_w)

    # ---- public ----------------------------------------------------------------------------
    def step_cost(self, shape: StepShape) -> StepCost:
        if shape.num_tokens <= 0:
            return StepCost(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
        matmul_s, weights_s, linear_s = self._linear_parts(shape.num_tokens, shape.num_sampled)
        cached_attn_s = self._cached_attn_s_per_pair * shape.cached_pairs
        new_attn_s = self._attn_s_per_pair * (shape.attention_pairs - shape.cached_pairs)
        cached_kv_s = self._kv_s_per_token * (shape.context_tokens - shape.num_tokens)
        new_kv_s = self._kv_s_per_token * shape.num_tokens
        attn_s, kv_s = cached_attn_s + new_attn_s, cached_kv_s + new_kv_s
        comm_s = self._comm_s(shape.num_tokens)
        overhead_s = (self._fixed_overhead_s + self._seq_overhead_s * shape.num_seqs
                      + self._prefix_key_s * shape.prefix_tokens)
        time_s = (overhead_s + linear_s + max(cached_attn_s, cached_kv_s) + max(new_attn_s, new_kv_s)
                  + comm_s)
        energy_j = self._decode_w * time_s + self._compute_extra_w * (matmul_s + attn_s)
        return StepCost(time_s, energy_j, matmul_s, weights_s, attn_s, kv_s, comm_s, overhead_s,
                        self.engine_overhead_s)

    def step_time(self, shape: StepShape) -> float:
        return self.step_cost(shape).time_s

    def wake_slowdown(self, idle_s: float) -> float:
        """The first step after idle_s of idle takes (1 + this) times its time (sim.engine)."""
        return wake_slowdown(self.params.wake_slowdown_curve, idle_s)

    def decode_line(self, num_seqs: int, num_sampled: int, context_tokens_before: int
                    ) -> tuple[float, float, float, float]:
        """Decode-only steps of a fixed batch: step j takes alpha + beta*j seconds and
        e_alpha + e_beta*j joules. context_tokens_before: the batch's summed context before step 0."""
        matmul_s, _, linear_s = self._linear_parts(num_seqs, num_sampled)
        per_cached = self._cached_or_kv_s_per_token
        alpha = (self._fixed_overhead_s + self._seq_overhead_s * num_seqs + linear_s
                 + self._comm_s(num_seqs) + per_cached * context_tokens_before
                 + self._attn_or_kv_s_per_token * num_seqs)
        beta = per_cached * num_seqs
        attn0 = self._cached_attn_s_per_pair * context_tokens_before + self._attn_s_per_pair * num_seqs
        e_alpha = self._decode_w * alpha + self._compute_extra_w * (matmul_s + attn0)
        e_beta = self._decode_w * beta + self._compute_extra_w * self._cached_attn_s_per_pair * num_seqs
        return alpha, beta, e_alpha, e_beta

    # ---- convenience for reports and tests ------------------------------------------------
    def prefill_time(self, prompt_tokens: int, batch: int = 1) -> float:
        return self.step_time(StepShape.for_prefill([prompt_tokens] * batch))

    def decode_time(self, batch: int, context_tokens: int) -> float:
        return self.step_time(StepShape.for_decode(batch, batch * context_tokens))


class KindScaledCost:
    """A cost model whose decode-only steps take `decode_factor` times, and whose steps with
    prefill tokens `prefill_factor` times, the base model's time (energy scaled alike). It brings a
    cost model to the step times a real run measured, kind by kind, and keeps the relative form
    across shapes: `calibrate validate`'s run-speed decomposition."""

    closed_form_decode = True

    def __init__(self, base: CostModel, decode_factor: float, prefill_factor: float) -> None:
        for factor in (decode_factor, prefill_factor):
            if not factor > 0 or not math.isfinite(factor):
                raise ValueError(f"time factor must be a positive number, got {factor}")
        self.base, self.decode_factor, self.prefill_factor = base, decode_factor, prefill_factor
        self.engine_overhead_s = base.engine_overhead_s  # host time, not a step's: not scaled

    def step_cost(self, shape: StepShape) -> StepCost:
        step = self.base.step_cost(shape)
        f = self.prefill_factor if shape.num_prefill_tokens else self.decode_factor
        return replace(step, time_s=step.time_s * f, energy_j=step.energy_j * f)

    def step_time(self, shape: StepShape) -> float:
        return self.step_cost(shape).time_s

    def wake_slowdown(self, idle_s: float) -> float:
        return self.base.wake_slowdown(idle_s)

    def decode_line(self, num_seqs: int, num_sampled: int, context_tokens_before: int
                    ) -> tuple[float, float, float, float]:
        alpha, beta, e_alpha, e_beta = self.base.decode_line(num_seqs, num_sampled, context_tokens_before)
        f = self.decode_factor
        return alpha * f, beta * f, e_alpha * f, e_beta * f


def steps_within(alpha: float, beta: float, budget_s: float, max_steps: int) -> int:
    """Whole steps of a decode line (step j = alpha + beta j) that finish within budget_s."""
    if budget_s < alpha:
        return 0
    if beta <= 0.0:
        return min(max_steps, int(budget_s / alpha + 1e-12))
    # m*alpha + beta*m*(m-1)/2 <= budget  =>  beta/2 m^2 + (alpha - beta/2) m - budget <= 0
    a, b = beta / 2.0, alpha - beta / 2.0
    m = int((-b + math.sqrt(b * b + 4 * a * budget_s)) / (2 * a))
    while m > 0 and m * alpha + beta * m * (m - 1) / 2 > budget_s * (1 + 1e-12):
        m -= 1
    while m < max_steps and (m + 1) * alpha + beta * (m + 1) * m / 2 <= budget_s * (1 + 1e-12):
        m += 1
    return min(m, max_steps)


def line_total(alpha: float, beta: float, num_steps: int) -> float:
    """Total of num_steps steps of a line: sum_{j<k} alpha + beta j."""
    return num_steps * alpha + beta * num_steps * (num_steps - 1) / 2.0
