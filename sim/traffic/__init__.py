"""The traffic floor: what arrives. `workload` (arrival processes, length distributions, closed
loops, and the scenario's [workload] table) and `traces` (the readers of real request traces:
Azure 2023, Mooncake, BurstGPT, plain CSV/JSONL; the shipped traces live in sim/data/traces/)."""
