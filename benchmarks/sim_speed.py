"""Simulator speed: simulated requests per wall-clock second.

1. Llama-2-70B, TP2 on the A100-80GB datasheet profile, Poisson 0.5 req/s, fixed 1024 in / 256 out,
   continuous batching, 10,000 requests (target <= 1.5 s wall).
2. A chat workload of 1,000,000 requests on one replica (target <= 60 s): Llama-3-8B on one H100
   SXM, prompt and output lengths drawn from the Azure 2023 conversation trace, Poisson arrivals
   at 70% of the replica's measured saturation rate.
3. A measured profile with its speed variability (every step drawn from the machine's scatter):
   the shipped 2-vCPU EPYC CPU profile, llama-small-150m, 10,000 requests of 256 in / 128 out at
   0.3 req/s, with the variability and without (`deployment.speed_variability = false`).

Usage: python benchmarks/sim_speed.py [--chat-requests N]
"""

from __future__ import annotations

import argparse
import time

from sim.scenario import run_scenario, scenario_from_dict


def timed(data: dict) -> tuple[float, dict]:
    start = time.perf_counter()
    summary = run_scenario(scenario_from_dict(data, "benchmark")).summary
    return time.perf_counter() - start, summary


def fixed_lengths(model: str, deployment: dict, rate_per_s: float, input_tokens: int, output_tokens: int) -> dict:
    """10,000 requests of fixed lengths, Poisson arrivals, continuous batching."""
    return {"seed": 1, "model": model, "deployment": deployment, "scheduler": {"policy": "continuous"},
            "workload": {"num_requests": 10_000, "arrival": {"process": "poisson", "rate_per_s": rate_per_s},
                         "input_tokens": input_tokens, "output_tokens": output_tokens}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chat-requests", type=int, default=1_000_000)
    args = ap.parse_args()

    wall, s = timed(fixed_lengths("llama-2-70b", {"profile": "a100-80gb-x8", "tp": 2}, 0.5, 1024, 256))
    print(f"llama-2-70b tp2 a100-80gb, 10,000 requests: {wall:.2f} s wall "
          f"({10_000 / wall:,.0f} simulated requests/s; target <= 1.5 s); "
          f"TTFT p99 {s['latency']['ttft_s']['p99']}, preemptions {s['requests']['preempted']}")

    chat = {"seed": 1, "model": "llama-3-8b", "deployment": {"profile": "h100-sxm"},
            "scheduler": {"policy": "continuous"},
            "workload": {"num_requests": 20_000, "arrival": {"process": "all_at_once"},
                         "input_tokens": {"dist": "empirical", "trace": "azure-conv-2023"},
                         "output_tokens": {"dist": "empirical", "trace": "azure-conv-2023"}}}
    _, offline = timed(chat)
    saturation = offline["throughput"]["requests_per_s"]
    chat["workload"]["num_requests"] = args.chat_requests
    chat["workload"]["arrival"] = {"process": "poisson", "rate_per_s": round(0.7 * saturation, 3)}
    wall, s = timed(chat)
    print(f"chat (azure-conv lengths) on 1 x h100-sxm at {0.7 * saturation:.1f} req/s (70% of "
          f"{saturation:.1f} saturation), {args.chat_requests:,} requests: {wall:.1f} s wall "
          f"({args.chat_requests / wall:,.0f} simulated requests/s; target <= 60 s for 1M); "
          f"overloaded={s['overloaded']}, TTFT p50 {s['latency']['ttft_s']['p50']}")

    for varied in (True, False):
        cpu = {"profile": "profiles/amd-epyc-2vcpu-cpu.json", "speed_variability": varied}
        wall, s = timed(fixed_lengths("llama-small-150m", cpu, 0.3, 256, 128))
        print(f"llama-small-150m on the measured CPU profile, speed variability {'on' if varied else 'off'}, "
              f"10,000 requests: {wall:.2f} s wall ({10_000 / wall:,.0f} simulated requests/s); "
              f"TPOT mean {s['latency']['tpot_s']['mean'] * 1e3:.2f} ms, p99 {s['latency']['tpot_s']['p99'] * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
