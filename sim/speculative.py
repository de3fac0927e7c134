"""Speculative decoding as a cost-model what-if: a draft model proposes k tokens, the target
verifies them in one forward pass of k + 1 tokens per sequence.

Modelled in expectation (Leviathan et al., 2023): with a per-token acceptance rate a, one
speculation round yields E = (1 - a^(k+1)) / (1 - a) tokens per sequence (E = 1 at a = 0,
E = k + 1 at a = 1). A round costs k decode steps of the draft model plus one target step that
computes k + 1 tokens per sequence (the LM head runs on all of them). The simulator keeps its
one-token-per-step bookkeeping and charges each output token round_cost / E, so mean TPOT,
throughput and energy are right in expectation; the burstiness of accepted runs is not modelled
(ITL is smoothed). Prefill also runs the draft model over the prompt. The draft's weights and
its KV cache take device memory away from the target's KV cache.
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.cost_model import CostModel, StepCost
from sim.spec.model import ModelSpec
from sim.plan import StepShape
from sim.spec.profile import Profile


@dataclass(frozen=True)
class SpeculativeConfig:
    draft_model: str  # a preset or a config.json path
    num_speculative_tokens: int = 4
    acceptance_rate: float = 0.7

    def __post_init__(self) -> None:
        if not isinstance(self.num_speculative_tokens, int) or self.num_speculative_tokens < 1:
            raise ValueError(f"num_speculative_tokens: expected an integer >= 1, got {self.num_speculative_tokens!r}")
        if not 0.0 <= self.acceptance_rate <= 1.0:
            raise ValueError(f"acceptance_rate: expected 0 <= a <= 1, got {self.acceptance_rate!r}")

    @property
    def tokens_per_round(self) -> float:
        a, k = self.acceptance_rate, self.num_speculative_tokens
        if a >= 1.0:
            return float(k + 1)
        return (1.0 - a ** (k + 1)) / (1.0 - a)


class SpeculativeCostModel(CostModel):
    """A CostModel whose decode tokens cost a speculation round / expected tokens per round."""

    def __init__(self, model: ModelSpec, profile: Profile, tp: int, draft: ModelSpec,
                 config: SpeculativeConfig) -> None:
        super().__init__(model, profile, tp)
        self.draft = CostModel(draft, profile, tp)
        self.config = config

    def _round(self, num_seqs: int, num_sampled: int, context_before: float) -> tuple[float, float]:
        """Time and energy per output token of one round for num_seqs sequences at summed context."""
        k = self.config.num_speculative_tokens
        n = num_seqs
        time_s = energy_j = 0.0
        for i in range(k):  # k draft decode steps, contexts growing by one each
            step = self.draft.step_cost(StepShape.for_decode(n, int(context_before) + i * n))
            time_s += step.time_s
            energy_j += step.energy_j
        verify_pairs = (k + 1) * context_before + n * (k + 1) * (k + 2) // 2
        verify = CostModel.step_cost(self, StepShape(
            num_tokens=n * (k + 1), num_seqs=n, num_sampled=num_sampled * (k + 1),
            context_tokens=int(context_before) + n * (k + 1), attention_pairs=int(verify_pairs),
            cached_pairs=int((k + 1) * context_before)))
        per_token = self.config.tokens_per_round
        return (time_s + verify.time_s) / per_token, (energy_j + verify.energy_j) / per_token

    def decode_line(self, num_seqs: int, num_sampled: int, context_tokens_before: int
                    ) -> tuple[float, float, float, float]:
        # the round's cost is linear in the summed context: two points give the exact line
        t0, e0 = self._round(num_seqs, num_sampled, context_tokens_before)
        t1, e1 = self._round(num_seqs, num_sampled, context_tokens_before + num_seqs)
        return t0, t1 - t0, e0, e1 - e0

    def step_cost(self, shape: StepShape) -> StepCost:
        num_decode = shape.num_tokens - shape.num_prefill_tokens  # one token per decoding sequence
        if shape.num_prefill_tokens == 0:
            t, _, e, _ = self.decode_line(shape.num_seqs, shape.num_sampled,
                                          shape.context_tokens - shape.num_seqs)
            return StepCost(t, e, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
        # prefill (target + draft over the same chunks) and, in a mixed step, the decodes' rounds
        target = CostModel.step_cost(self, shape)
        prefill_only = StepShape(shape.num_prefill_tokens, shape.num_seqs - num_decode, 0,
                                 shape.context_tokens, shape.attention_pairs, shape.num_prefill_tokens,
                                 cached_pairs=shape.cached_pairs, prefix_tokens=shape.prefix_tokens)
        draft = self.draft.step_cost(prefill_only)
        time_s, energy_j = target.time_s + draft.time_s, target.energy_j + draft.energy_j
        if num_decode:  # the decodes' extra round cost (draft steps, k more verified tokens), at
            # zero context: a mixed step's shape does not say which context is whose
            extra_t, _, extra_e, _ = self.decode_line(num_decode, num_decode, 0)
            plain = CostModel.decode_line(self, num_decode, num_decode, 0)
            time_s += max(extra_t - plain[0], 0.0)
            energy_j += max(extra_e - plain[2], 0.0)
        return StepCost(time_s, energy_j, target.matmul_s, target.weights_s, target.attention_flops_s,
                        target.kv_s, target.comm_s, target.overhead_s)
