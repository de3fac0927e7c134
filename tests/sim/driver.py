"""Drive a scheduler without simpy: a tiny clock loop for exact timelines and invariants."""

from __future__ import annotations

from sim.cost_model import CostModel
from sim.request import Request
from sim.scheduler import BatchScheduler, StepTimes


def drive(sched: BatchScheduler, cost: CostModel | None, arrivals: list[Request],
          step_s: float = 1.0, check: bool = True, max_iterations: int = 100_000) -> list[tuple]:
    """Run to completion; arrivals are added when the clock passes them (at step boundaries).

    Each step takes `step_s` (or the cost model's time when given). Returns a log of
    (start_s, prefill [(id, start, n)], decode ids, num_steps).
    """
    pending = sorted(arrivals, key=lambda r: r.arrival_s)
    now, log = 0.0, []
    for _ in range(max_iterations):
        while pending and pending[0].arrival_s <= now:
            sched.add_request(pending.pop(0))
        plan = sched.schedule(now)
        if plan is None:
            if not pending:
                if sched.next_wakeup_s is None:
                    return log
                now = sched.next_wakeup_s
                continue
            now = pending[0].arrival_s if sched.next_wakeup_s is None else min(
                pending[0].arrival_s, sched.next_wakeup_s)
            continue
        steps = plan.max_repeats
        if pending:  # an arrival cuts a run of decode steps after the step in progress (engine)
            while steps > 1 and now + (steps - 1) * step_s > pending[0].arrival_s:
                steps -= 1
        if cost is None:
            times = StepTimes(now, step_s, 0.0, steps)
        elif plan.prefill or plan.max_repeats == 1:
            times = StepTimes(now, cost.step_time(plan.shape()), 0.0, 1)
        else:
            a, b, _, _ = cost.decode_line(len(plan.decode_ids) + plan.num_padding_seqs, len(plan.decode_ids),
                                          plan.decode_context_tokens + plan.padding_context_tokens)
            times = StepTimes(now, a, b, steps)
        log.append((now, [(c.request_id, c.start, c.num_tokens) for c in plan.prefill],
                    plan.decode_ids, steps))
        sched.commit(plan, times)
        if check:
            sched.check_invariants()
        now = times.end_s
    raise AssertionError("scheduler did not finish")


def req(i: int, arrival: float, prompt: int, output: int) -> Request:
    return Request(i, arrival, prompt, output)
