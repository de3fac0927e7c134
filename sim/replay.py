"""Replay: the simulator driven by measured step times instead of the cost model.

Given the steps a real engine ran, in order (each step's shape, the seconds from its scheduling
to its end, and the engine loop's seconds after it before it scheduled again), the
simulated engine serves the same workload with the same policy and takes its k-th step's time from
the k-th logged step when the two steps have the same shape. If the policy and both engine loops
agree, the replayed latencies equal the measured ones up to timing jitter; then every difference
between a prediction and a measurement lies in step times (the cost model, or the machine's speed
at the time), none in scheduling. That is how `calibrate validate` splits an error in two.

The simulated engine runs one step at a time here (no closed-form decode runs), as a real engine
does. A step whose shape differs from the log's at that position (the runs diverged: an arrival
landed on the other side of a step boundary) takes the cost model's time, scaled by the logged
step's measured/predicted ratio at that position; such steps are counted, and a replay that
diverges often says the two engines did not make the same decisions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from sim.cost_model import CostModel, StepCost
from sim.plan import StepShape
from sim.spec.profile import Profile
from sim.scenario import RunResult, Scenario, prepare, run_prepared


class StepLogCost:
    """A cost model that answers from a log of measured steps (see the module docstring). Each
    entry: the step's shape, its seconds from being scheduled to its end, and the engine's seconds
    after it (committing tokens) before it looked at the clock again."""

    closed_form_decode = False

    def __init__(self, base: CostModel, log: Sequence[tuple[StepShape, float, float]]) -> None:
        self.base = base
        self.log = list(log)
        self.num_steps = 0
        self.num_diverged = 0

    def wake_slowdown(self, idle_s: float) -> float:
        return 0.0  # a logged step's seconds include its wake-up

    def step_cost(self, shape: StepShape) -> StepCost:
        k = self.num_steps
        self.num_steps += 1
        modelled = self.base.step_cost(shape)
        after_s = 0.0
        if k < len(self.log) and self.log[k][0] == shape:
            _, seconds, after_s = self.log[k]
        else:
            self.num_diverged += 1
            ratio = self.log[k][1] / self.base.step_time(self.log[k][0]) if k < len(self.log) else 1.0
            seconds = modelled.time_s * ratio
        scale = seconds / modelled.time_s if modelled.time_s > 0 else 1.0
        return dataclasses.replace(modelled, time_s=seconds, energy_j=modelled.energy_j * scale, after_s=after_s)


@dataclasses.dataclass
class Replay:
    result: RunResult
    num_steps: int  # steps the replay ran
    num_logged: int  # steps in the log
    num_diverged: int  # replayed steps whose shape differed from the log's at that position

    @property
    def agrees(self) -> bool:
        return self.num_diverged == 0 and self.num_steps == self.num_logged

    def to_dict(self) -> dict:
        return {"num_steps": self.num_steps, "num_logged": self.num_logged, "num_diverged": self.num_diverged}


def replay_scenario(sc: Scenario, profile: Profile, log: Sequence[tuple[StepShape, float, float]]) -> Replay:
    """Simulate sc with each step's time taken from log (one replica)."""
    prep = prepare(sc, profile)
    if sc.deployment.replicas != 1:
        raise ValueError("a step log is one replica's: replay needs replicas = 1")
    cost = StepLogCost(prep.cost, log)
    result = run_prepared(prep, cost, speed_draw=None)  # type: ignore[arg-type]  # duck-typed: step_cost only
    return Replay(result, cost.num_steps, len(cost.log), cost.num_diverged)
