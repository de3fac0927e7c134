"""Requests: the immutable spec a workload produces, and the mutable state an engine tracks.

A request's known tokens are its prompt plus the output tokens sampled so far; its computed tokens
are those whose KV is in the cache. A step computes some of the difference; when computed reaches
known, the step samples one more output token. Preemption by recompute sets computed back to 0.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RequestSpec:
    """One request of a workload: when it arrives and how many tokens it has and wants.

    prefix_hashes: one id per KV block of the prompt's prefix (Mooncake `hash_ids`); equal ids
    at equal positions mean a shared prefix. Empty when unknown.
    """

    request_id: int
    arrival_s: float
    prompt_tokens: int
    output_tokens: int
    prefix_hashes: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.prompt_tokens < 1:
            raise ValueError(f"prompt_tokens: expected >= 1, got {self.prompt_tokens}")
        if self.output_tokens < 1:
            raise ValueError(f"output_tokens: expected >= 1, got {self.output_tokens}")
        if not self.arrival_s >= 0:
            raise ValueError(f"arrival_s: expected >= 0, got {self.arrival_s}")


class Request:
    """Mutable per-request state inside one engine run (plain class with slots: hot path)."""

    __slots__ = ("request_id", "arrival_s", "prompt_tokens", "output_tokens", "prefix_hashes",
                 "is_measured", "replica", "num_computed_tokens", "num_output_tokens",
                 "first_token_s", "finish_s", "last_token_s", "num_preemptions", "scheduled_s",
                 "join_counter", "output_at_join", "prefix_refs", "cached_tokens")

    def __init__(self, request_id: int, arrival_s: float, prompt_tokens: int, output_tokens: int,
                 prefix_hashes: tuple[int, ...] = (), is_measured: bool = True, replica: int = 0) -> None:
        self.request_id = request_id
        self.arrival_s = arrival_s
        self.prompt_tokens = prompt_tokens
        self.output_tokens = output_tokens
        self.prefix_hashes = prefix_hashes
        self.is_measured = is_measured
        self.replica = replica
        self.num_computed_tokens = 0
        self.num_output_tokens = 0
        self.first_token_s = -1.0
        self.finish_s = -1.0
        self.last_token_s = -1.0
        self.num_preemptions = 0
        self.scheduled_s = -1.0  # first time any of its tokens was scheduled
        self.join_counter = 0  # decode-step counter when it (re)joined the decoding set
        self.output_at_join = 0
        self.prefix_refs: tuple[int, ...] = ()  # prefix-cache entries it holds (a leading run)
        self.cached_tokens = 0  # prompt tokens it took from the prefix cache (all admissions)

    @classmethod
    def from_spec(cls, spec: RequestSpec, is_measured: bool = True, replica: int = 0) -> Request:
        return cls(spec.request_id, spec.arrival_s, spec.prompt_tokens, spec.output_tokens,
                   spec.prefix_hashes, is_measured, replica)

    @property
    def num_known_tokens(self) -> int:
        return self.prompt_tokens + self.num_output_tokens

    @property
    def is_finished(self) -> bool:
        return self.num_output_tokens >= self.output_tokens

    def __repr__(self) -> str:
        return (f"Request({self.request_id}, computed={self.num_computed_tokens}, "
                f"out={self.num_output_tokens}/{self.output_tokens})")
