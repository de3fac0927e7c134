"""The simulated engine: SimPy processes for arrivals (open or closed loop), the router and one
engine per replica. SimPy keeps the clock; policy, KV cache and cost model are plain Python.

A replica's loop: ask its policy for a plan; run it for the plan's cost-model time; commit it;
spend the engine's own loop time (`StepCost.after_s`: the profile's engine_step_overhead_s).
A decode-only plan may repeat up to `max_repeats` steps whose times are a closed form
(alpha + beta j), so one SimPy timeout covers the whole run of steps (unless the cost model has no
closed form: then, as the real engine, it runs one step at a time). An arrival that the policy
could act on interrupts the run: the step in progress completes, the rest are not executed.
The first step after the engine sat idle takes (1 + `cost.wake_slowdown(idle seconds)`) times its
cost-model time, alone: the machine's wake-up (parked threads, a descheduled vCPU, a GPU's idle
clocks), measured by `calibrate`.
With a `SpeedProcess` (the profile's measured speed variability, `sim.speed_variability`) every
step takes its cost-model time times the process's factor at its start: the machine's slow spells
and each step's own jitter. A decode run then has no closed form; it takes its steps' factors
block by block (one SimPy timeout per block, explicit per-step end times: `StepEnds`), which keeps
it about as fast as the closed form, with the statistics of stepping one at a time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import simpy

from sim.cost_model import CostModel, line_total, steps_within
from sim.metrics import RunRecorder
from sim.request import Request
from sim.scheduler import BatchScheduler, StepEnds, StepTimes
from sim.speed_variability import SpeedProcess

ROUTERS = ("round_robin", "random", "least_outstanding", "least_kv")
FIRST_BLOCK = 16  # a varied decode run's first block of steps (see Replica._varied_decode_run)


def decode_line(cost: CostModel, plan) -> tuple[float, float, float, float]:
    """The cost model's line for a decode-only plan's run of steps (its padding rows included):
    step j takes alpha + beta j seconds and e_alpha + e_beta j joules."""
    n_dec = len(plan.decode_ids)
    return cost.decode_line(n_dec + plan.num_padding_seqs, n_dec,
                            plan.decode_context_tokens + plan.padding_context_tokens)


class Replica:
    """One TP group serving requests with one scheduler and one cost model."""

    def __init__(self, env: simpy.Environment, index: int, scheduler: BatchScheduler,
                 cost: CostModel, recorder: RunRecorder, on_finish, timeline_interval_s: float,
                 speed: SpeedProcess | None = None) -> None:
        self.env = env
        self.speed = speed
        self.index = index
        self.scheduler = scheduler
        self.cost = cost
        self.recorder = recorder
        self.on_finish = on_finish
        self.timeline_interval_s = timeline_interval_s
        self._next_sample_s = 0.0
        self._interruptible = False
        self._never = env.event()
        self.process = env.process(self.run())

    def submit(self, req: Request) -> bool:
        req.replica = self.index
        accepted = self.scheduler.add_request(req)
        if accepted and self._interruptible and self.scheduler.wants_wakeup_on_arrival():
            self._interruptible = False
            self.process.interrupt()
        return accepted

    def run(self):
        env, sched, cost, speed = self.env, self.scheduler, self.cost, self.speed
        idle_s = 0.0  # how long the engine sat idle since its last step
        while True:
            plan = sched.schedule(env.now)
            if plan is None:  # idle until an arrival (or the policy's own timer)
                wake = sched.next_wakeup_s
                idle_from = env.now
                self._interruptible = True
                try:
                    yield env.timeout(max(wake - env.now, 0.0)) if wake is not None else self._never
                except simpy.Interrupt:
                    pass
                self._interruptible = False
                idle_s += env.now - idle_from
                continue
            slow = cost.wake_slowdown(idle_s) if idle_s > 0 else 0.0  # the machine wakes up
            idle_s = 0.0
            start = env.now
            if plan.prefill or plan.max_repeats == 1 or not cost.closed_form_decode or slow:
                step = cost.step_cost(plan.shape())
                factor = 1.0 + slow
                if speed is not None:
                    factor *= speed.factor(start, step.time_s, not plan.prefill)
                time_s = step.time_s * factor
                yield env.timeout(time_s)
                self._commit(plan, StepTimes(start, time_s, 0.0, 1), step.energy_j * factor)
                if step.after_s > 0:
                    yield env.timeout(step.after_s)
            elif speed is not None:
                yield from self._varied_decode_run(plan, start, speed)
            else:  # a run of decode steps, each followed by the engine's loop (gap)
                a, b, ea, eb = decode_line(cost, plan)
                gap = cost.engine_overhead_s
                a_loop = a + gap  # a step and the loop after it
                steps = plan.max_repeats
                self._interruptible = True
                try:
                    yield env.timeout(line_total(a_loop, b, steps) - gap)
                except simpy.Interrupt:  # finish the step in progress, drop the rest
                    steps = min(steps_within(a_loop, b, env.now - start, steps) + 1, steps)
                self._interruptible = False
                loop_end_s = start + line_total(a_loop, b, steps)  # the last step's loop included
                if loop_end_s - gap > env.now:
                    yield env.timeout(loop_end_s - gap - env.now)
                self._commit(plan, StepTimes(start, a, b, steps, gap), line_total(ea, eb, steps),
                             line_total(a, b, steps))
                if loop_end_s > env.now:
                    yield env.timeout(loop_end_s - env.now)

    def _varied_decode_run(self, plan, start: float, speed: SpeedProcess):
        """A run of decode steps on a machine whose speed varies: each step's cost-model time
        (the decode line) times its own factor, taken block by block (FIRST_BLOCK steps, doubling)
        so that an interruption wastes few draws; as the closed-form run, an arrival the policy
        could act on ends it after the step in progress."""
        env, cost = self.env, self.cost
        a, b, ea, eb = decode_line(cost, plan)
        gap = cost.engine_overhead_s
        ends: list[np.ndarray] = []
        busy_s = energy_j = 0.0
        done, block, next_start = 0, FIRST_BLOCK, start
        while done < plan.max_repeats:
            j = np.arange(done, min(done + block, plan.max_repeats))
            nominal = a + b * j
            factors = speed.memory_run(next_start, nominal, gap)
            times_s = nominal * factors
            step_ends = next_start + np.cumsum(times_s + gap) - gap
            self._interruptible = True
            interrupted = False
            try:
                yield env.timeout(step_ends[-1] - env.now)
                k = len(j)
            except simpy.Interrupt:  # finish the step in progress, drop the rest
                interrupted = True
                k = int(np.searchsorted(step_ends - times_s, env.now, side="right"))
                speed.keep_memory_run(k)
            self._interruptible = False
            if k:
                ends.append(step_ends[:k])
                busy_s += float(times_s[:k].sum())
                energy_j += float(((ea + eb * j[:k]) * factors[:k]).sum())
            done += k
            if interrupted:
                break
            next_start = float(step_ends[-1]) + gap
            block *= 2
        all_ends = np.concatenate(ends)
        last_end = float(all_ends[-1])
        if last_end > env.now:
            yield env.timeout(last_end - env.now)
        self._commit(plan, StepEnds(start, all_ends), energy_j, busy_s)
        if last_end + gap > env.now:
            yield env.timeout(last_end + gap - env.now)

    def _commit(self, plan, times: StepTimes | StepEnds, energy_j: float, busy_s: float | None = None) -> None:
        sched = self.scheduler
        sampled, new_prompt_tokens = step_tokens(plan, sched, times.num_steps)
        finished = sched.commit(plan, times)
        end_s = times.end_s
        self.recorder.segment(self.index, times.start_s, end_s, energy_j, sampled, new_prompt_tokens,
                              times.num_steps, plan.num_tokens * times.num_steps, busy_s)
        if end_s >= self._next_sample_s:
            self._next_sample_s = end_s + self.timeline_interval_s
            duration = end_s - times.start_s
            self.recorder.sample(end_s, self.index, len(sched.waiting),
                                 len(sched.decoding) + len(sched.prefilling), sched.kv.usage,
                                 energy_j / duration if duration > 0 else 0.0)
        for req in finished:
            self.on_finish(req)


def step_tokens(plan, scheduler: BatchScheduler, num_steps: int = 1) -> tuple[int, int]:
    """Output tokens a plan samples over num_steps, and the prompt tokens of requests that get
    their first token (recomputation after preemption is not new input). Call before commit."""
    sampled, new_prompt = len(plan.decode_ids) * num_steps, 0
    for chunk in plan.prefill:
        if chunk.is_sampling:
            sampled += 1
            req = scheduler.prefilling[chunk.request_id]
            if req.num_output_tokens == 0:
                new_prompt += req.prompt_tokens
    return sampled, new_prompt


class Router:
    def __init__(self, policy: str, replicas: list[Replica], rng: np.random.Generator) -> None:
        if policy not in ROUTERS:
            raise ValueError(f"router: expected one of {', '.join(ROUTERS)}, got {policy!r}")
        self.policy = policy
        self.replicas = replicas
        self.rng = rng
        self._next = 0

    def pick(self) -> Replica:
        replicas = self.replicas
        if len(replicas) == 1:
            return replicas[0]
        if self.policy == "round_robin":
            replica = replicas[self._next % len(replicas)]
            self._next += 1
            return replica
        if self.policy == "random":
            return replicas[int(self.rng.integers(len(replicas)))]
        if self.policy == "least_outstanding":
            return min(replicas, key=lambda r: r.scheduler.num_in_flight)
        return min(replicas, key=lambda r: (r.scheduler.kv.usage, len(r.scheduler.waiting)))


@dataclass(frozen=True)
class OpenLoop:
    arrival_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    prefix_hashes: tuple[tuple[int, ...], ...] | None = None


@dataclass(frozen=True)
class ClosedLoopLoad:
    concurrency: int
    think_time_s: float
    prompt_tokens: np.ndarray  # one per request, in issue order
    output_tokens: np.ndarray
    prefix_hashes: tuple[tuple[int, ...], ...] | None = None


class Cluster:
    """Replicas, router and traffic in one SimPy environment; run() returns the recorder."""

    def __init__(self, schedulers: list[BatchScheduler], costs: list[CostModel], router: str,
                 rng: np.random.Generator, recorder: RunRecorder, warmup_fraction: float,
                 drain_fraction: float, timeline_interval_s: float,
                 speeds: list[SpeedProcess | None] | None = None) -> None:
        self.env = simpy.Environment()
        self.recorder = recorder
        speeds = speeds or [None] * len(schedulers)
        self.replicas = [Replica(self.env, i, s, c, recorder, self._finished, timeline_interval_s, v)
                         for i, (s, c, v) in enumerate(zip(schedulers, costs, speeds))]
        self.router = Router(router, self.replicas, rng)
        self.warmup_fraction = warmup_fraction
        self.drain_fraction = drain_fraction
        self._done_events: dict[int, simpy.Event] = {}

    def _measured_range(self, n: int) -> tuple[int, int]:
        return int(self.warmup_fraction * n), n - int(self.drain_fraction * n)

    def _arrive(self, req: Request) -> None:
        self.recorder.requests.append(req)
        accepted = self.router.pick().submit(req)
        self.recorder.queue_t_s.append(self.env.now)
        self.recorder.queue_len.append(sum(len(r.scheduler.waiting) for r in self.replicas))
        if not accepted:
            self._finished(req)

    def _finished(self, req: Request) -> None:
        event = self._done_events.pop(req.request_id, None)
        if event is not None:
            event.succeed()

    def _open_loop(self, load: OpenLoop):
        env = self.env
        lo, hi = self._measured_range(len(load.arrival_s))
        arrival = load.arrival_s.tolist()
        prompt = load.prompt_tokens.tolist()
        output = load.output_tokens.tolist()
        hashes = load.prefix_hashes
        for i, t in enumerate(arrival):
            if t > env.now:
                yield env.timeout(t - env.now)
            self._arrive(Request(i, t, prompt[i], output[i], hashes[i] if hashes else (), lo <= i < hi))

    def _user(self, load: ClosedLoopLoad, counter: list[int]):
        env = self.env
        n = len(load.prompt_tokens)
        lo, hi = self._measured_range(n)
        while counter[0] < n:
            i = counter[0]
            counter[0] += 1
            done = env.event()
            self._done_events[i] = done
            hashes = load.prefix_hashes[i] if load.prefix_hashes else ()
            self._arrive(Request(i, env.now, int(load.prompt_tokens[i]), int(load.output_tokens[i]),
                                 hashes, lo <= i < hi))
            yield done
            if load.think_time_s > 0:
                yield env.timeout(load.think_time_s)

    def run(self, load: OpenLoop | ClosedLoopLoad) -> RunRecorder:
        if isinstance(load, OpenLoop):
            self.env.process(self._open_loop(load))
        else:
            counter = [0]
            # users beyond the number of requests would never send one
            for _ in range(min(load.concurrency, len(load.prompt_tokens))):
                self.env.process(self._user(load, counter))
        self.env.run()
        return self.recorder
