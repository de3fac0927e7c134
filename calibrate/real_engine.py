"""The real engine: serves a workload in wall-clock time with the PyTorch runner.

Requests arrive at their workload times (open loop) or when a user is free (closed loop); the
*same* policy object the simulator uses (built by `sim.scenario.Prepared.make_schedulers`) decides
every step; the runner executes that StepPlan on real tensors; the measured step end times feed
the policy's commit, so first-token, per-token and finish times are real. The result is a
`sim.metrics.RunRecorder`, summarised by the simulator's own `finish_summary`, so the two engines
compare field by field.

Assumed: one replica (one runner, one device); prompts are seeded random token ids (timing does
not depend on token values); every request generates exactly its output length (EOS ignored, as
`vllm bench serve --ignore-eos`); after a wait for an arrival or a timer, the engine decides at the
moment the wait was for, as the simulator does (a request arriving while the OS wakes it late joins
the next step; the late wake-up is counted as loop time). Energy comes from the device's meter over the whole run:
measured with NVML or RAPL, else estimated from TDP and labelled so.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from calibrate.power import EnergyMeter
from calibrate.runner import Runner
from calibrate.steps_alone import StepRecipe, recipe_of
from sim.engine import ClosedLoopLoad, OpenLoop, step_tokens
from sim.metrics import RunRecorder
from sim.plan import StepShape
from sim.request import Request
from sim.scenario import Prepared, finish_summary
from sim.scheduler import BatchScheduler, StepTimes


@dataclass
class RealRun:
    summary: dict
    recorder: RunRecorder
    wall_s: float
    steps: list[tuple[StepShape, float]] = field(default_factory=list)  # each step's shape, seconds
    # The engine loop's own seconds around each step (not in `steps`): before it, from the moment
    # the simulator would schedule it (the previous step's loop ended, or a wait for an arrival or
    # timer did) to its start: arrivals and scheduling; after it, from its end to the next look at
    # the clock: committing tokens and bookkeeping.
    before_s: list[float] = field(default_factory=list)
    after_s: list[float] = field(default_factory=list)
    # each step: the seconds the engine slept (idle, waiting for an arrival or a timer) since the
    # step before; a step after a sleep pays the machine's wake-up (cost_model.wake_slowdown_curve)
    idle_s: list[float] = field(default_factory=list)
    # each step's recipe: what rebuilds it to be timed alone (calibrate.steps_alone)
    recipes: list[StepRecipe] = field(default_factory=list)

    @property
    def loop_s(self) -> list[float]:
        return [b + a for b, a in zip(self.before_s, self.after_s)]

    def replay_log(self) -> list[tuple[StepShape, float, float]]:
        """Each step as sim.replay takes it: shape, seconds to its end (scheduling included) and
        the loop's seconds after it."""
        return [(shape, before + seconds, after)
                for (shape, seconds), before, after in zip(self.steps, self.before_s, self.after_s)]


class _Traffic:
    """Yields requests as they become due (open loop by time, closed loop by free users)."""

    def __init__(self, load: OpenLoop | ClosedLoopLoad, warmup_fraction: float, drain_fraction: float) -> None:
        self.load = load
        self.n = len(load.prompt_tokens)
        self.lo, self.hi = int(warmup_fraction * self.n), self.n - int(drain_fraction * self.n)
        self.next = 0
        self.closed = isinstance(load, ClosedLoopLoad)
        self.free_users: deque[float] = deque([0.0] * load.concurrency) if self.closed else deque()

    def _request(self, i: int, arrival_s: float) -> Request:
        load = self.load
        hashes = load.prefix_hashes[i] if load.prefix_hashes else ()
        return Request(i, arrival_s, int(load.prompt_tokens[i]), int(load.output_tokens[i]), hashes,
                       self.lo <= i < self.hi)

    def due(self, now_s: float) -> list[Request]:
        out = []
        while self.next < self.n:
            if self.closed:
                if not self.free_users or self.free_users[0] > now_s:
                    break
                arrival = max(self.free_users.popleft(), 0.0)
            else:
                arrival = float(self.load.arrival_s[self.next])
                if arrival > now_s:
                    break
            out.append(self._request(self.next, arrival))
            self.next += 1
        return out

    def finished(self, end_s: float) -> None:
        if self.closed:
            self.free_users.append(end_s + self.load.think_time_s)

    def next_due_s(self) -> float | None:
        if self.next >= self.n:
            return None
        if self.closed:
            return self.free_users[0] if self.free_users else None
        return float(self.load.arrival_s[self.next])

    @property
    def exhausted(self) -> bool:
        return self.next >= self.n


def serve(prep: Prepared, runner: Runner, meter: EnergyMeter | None = None, seed: int = 0,
          progress=None) -> RealRun:
    """Serve prep's workload on the runner in real time; returns the simulator-format result."""
    sc = prep.scenario
    if sc.deployment.replicas != 1 or sc.deployment.tp != 1:
        raise ValueError("the real engine serves one replica on one device (replicas = tp = 1)")
    recorder = RunRecorder()
    steps: list[tuple[StepShape, float]] = []
    before_s: list[float] = []
    after_s: list[float] = []
    idle_s: list[float] = []
    recipes: list[StepRecipe] = []
    (sched,) = prep.make_schedulers(recorder)
    traffic = _Traffic(prep.load, sc.measurement.warmup_fraction, sc.measurement.drain_fraction)
    token_rng = np.random.default_rng(seed)
    vocab = prep.model.vocab_size
    clock = time.perf_counter
    reading_ctx = meter.measure() if meter is not None else None
    reading = reading_ctx.__enter__() if reading_ctx is not None else None
    t0 = clock()
    ready = 0.0  # when the simulator would schedule next: a step's loop ended, or a wait did
    stepped = False
    woke: float | None = None  # the deadline a wait was for
    slept = 0.0  # seconds the engine slept since its last step
    try:
        while True:
            now = clock() - t0
            if woke is not None:  # act at the moment the wait was for, as the simulator does: a
                now, woke = min(now, woke), None  # late wake-up (oversleep) is loop time, not news
            if stepped:
                after_s.append(now - end)
                ready, stepped = now, False
            for req in traffic.due(now):
                _arrive(req, sched, runner, recorder, token_rng, vocab, now)
                if req.request_id in recorder.rejected_reasons:
                    traffic.finished(now)
            plan = sched.schedule(now)
            if plan is None or plan.is_empty:
                if plan is not None:  # only preemptions: free their slots
                    runner.execute(plan)
                if traffic.exhausted and sched.is_idle:
                    break
                woke = _sleep_until(t0, clock, traffic.next_due_s(), sched.next_wakeup_s)
                if woke is not None:
                    ready = max(ready, woke)
                    slept += max(woke - now, 0.0)
                continue
            recipes.append(recipe_of(plan, runner))
            start = clock() - t0
            runner.execute(plan)
            runner.synchronize()
            end = clock() - t0
            steps.append((plan.shape(), end - start))
            before_s.append(max(start - ready, 0.0))
            idle_s.append(slept)
            stepped, slept = True, 0.0
            sampled, new_prompt = step_tokens(plan, sched)
            for req in sched.commit(plan, StepTimes(start, end - start, 0.0, 1)):
                runner.free(req.request_id)
                traffic.finished(end)
                if progress is not None:
                    progress.update(1)
            recorder.segment(0, start, end, 0.0, sampled, new_prompt, 1, plan.num_tokens)
            if not recorder.timeline["t_s"] or end - recorder.timeline["t_s"][-1] >= prep.timeline_interval_s:
                recorder.sample(end, 0, len(sched.waiting), len(sched.decoding) + len(sched.prefilling),
                                sched.kv.usage, 0.0)
    finally:
        wall = clock() - t0
        if reading_ctx is not None:
            reading_ctx.__exit__(None, None, None)
    summary = finish_summary(prep, recorder, [sched])
    summary["energy"] = _measured_energy(summary, reading, meter)
    summary["engine"] = {"kind": "real", "device": str(runner.device), "wall_s": wall}
    return RealRun(summary, recorder, wall, steps, before_s, after_s, idle_s, recipes)


def _arrive(req: Request, sched: BatchScheduler, runner: Runner, recorder: RunRecorder,
            rng: np.random.Generator, vocab: int, now_s: float) -> None:
    recorder.requests.append(req)
    if sched.add_request(req):
        runner.add_request(req.request_id, rng.integers(0, vocab, req.prompt_tokens).tolist())
    recorder.queue_t_s.append(now_s)
    recorder.queue_len.append(len(sched.waiting))


def _sleep_until(t0: float, clock, *deadlines: float | None) -> float | None:
    """Sleep until the earliest deadline; returns it (None if there is none)."""
    due = [d for d in deadlines if d is not None]
    if not due:
        return None
    delay = min(due) - (clock() - t0)
    if delay > 0:
        time.sleep(delay)
    return min(due)


def _measured_energy(summary: dict, reading, meter: EnergyMeter | None) -> dict:
    """The run's energy from the meter (whole run, idle included); per-token figures use the
    summary's window token counts scaled to the whole run."""
    tp = summary["throughput"]
    window = summary["window_s"]
    if reading is None or not reading.seconds:
        return {"joules": None, "j_per_output_token": None, "j_per_token": None, "kwh": None,
                "power_method": None, "is_estimated": None, "note": "no energy meter"}
    watts = reading.joules / reading.seconds
    joules = watts * window
    out_tokens = (tp["output_tokens_per_s"] or 0.0) * window
    all_tokens = out_tokens + (tp["input_tokens_per_s"] or 0.0) * window
    return {"joules": joules, "j_per_output_token": joules / out_tokens if out_tokens else None,
            "j_per_token": joules / all_tokens if all_tokens else None, "kwh": joules / 3.6e6,
            "power_method": meter.method if meter is not None else None,
            "is_estimated": bool(getattr(reading, "is_estimated", True)), "mean_power_w": watts}
