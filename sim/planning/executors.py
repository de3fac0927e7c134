"""Executors: where the independent simulation runs of a plan or sweep go.

A run is a pure function of its task, `run_task(task) -> dict`: the task is plain data (a
scenario dict that holds its seed, the profile's JSON document, and which extras to return), the
result is plain data (the run summary and, on request, per-request latency samples, CDFs and a
timeline). So the answer is identical whichever executor ran the tasks: in this process
(`SerialExecutor`), in a local process pool (`LocalExecutor`, the default) or on a Ray cluster
(`RayExecutor`, `pip install infercast[ray]`). Carrying the profile document in the task means
remote workers need the `sim` package but no profile files; a trace file named by a path must
exist on the workers (the built-in traces ship with `sim`).

`Executor.imap(tasks)` yields `(index, result)` as runs finish (any order); a KeyboardInterrupt
while waiting stops the workers and propagates, so the caller keeps what already finished.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

EXECUTORS = ("local", "ray", "serial")
EXTRAS = ("samples", "cdf", "timeline")
TIMELINE_POINTS = 1500


def make_task(scenario: dict, profile_doc: dict | None = None, profile_path: str = "",
              extras: Sequence[str] = ()) -> dict[str, Any]:
    """A run task: the scenario dict (with its "seed"), optionally the profile document to use
    instead of loading `deployment.profile`, and the extras to return (see EXTRAS)."""
    for extra in extras:
        if extra not in EXTRAS:
            raise ValueError(f"extras: expected some of {', '.join(EXTRAS)}, got {extra!r}")
    return {"scenario": scenario, "profile": profile_doc, "profile_path": profile_path, "extras": list(extras)}
# Callers may add keys run_task ignores: "tag" (theirs, to recognise a result) and "weight" (a
# relative cost, so the planner can start long runs first).


def run_task(task: dict[str, Any]) -> dict[str, Any]:
    """Run one simulation task and return plain data: {"summary", and the requested extras}."""
    from sim.report.figures import latency_cdf_data, timeline_data
    from sim.spec.profile import profile_from_dict
    from sim.scenario import run_scenario, scenario_from_dict

    scenario = scenario_from_dict(task["scenario"], "<task>")
    profile = profile_from_dict(task["profile"], task["profile_path"] or "<profile>") if task["profile"] else None
    result = run_scenario(scenario, profile)
    out: dict[str, Any] = {"summary": result.summary}
    extras = task.get("extras", ())
    if "samples" in extras:
        out["samples"] = _latency_samples(result)
    if "cdf" in extras:
        out["cdf"] = latency_cdf_data(result)
    if "timeline" in extras:
        out["timeline"] = timeline_data(result.recorder, TIMELINE_POINTS)
    return out


def _latency_samples(result: Any) -> dict[str, list[float]]:
    ttft, tpot, e2e = [], [], []
    for r in result.recorder.requests:
        if r.is_measured and r.finish_s >= 0:
            ttft.append(r.first_token_s - r.arrival_s)
            e2e.append(r.finish_s - r.arrival_s)
            if r.output_tokens > 1:
                tpot.append((r.finish_s - r.first_token_s) / (r.output_tokens - 1))
    return {"ttft_s": ttft, "tpot_s": tpot, "e2e_s": e2e}


class Executor(Protocol):
    name: str

    def imap(self, tasks: Sequence[dict]) -> Iterator[tuple[int, dict]]: ...

    def close(self) -> None: ...


class SerialExecutor:
    """Runs tasks one after another in this process (debugging, tests, one core)."""

    name = "serial"

    def imap(self, tasks: Sequence[dict]) -> Iterator[tuple[int, dict]]:
        for index, task in enumerate(tasks):
            yield index, run_task(task)

    def close(self) -> None:
        pass

    def __enter__(self) -> SerialExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _ignore_sigint() -> None:  # workers leave Ctrl-C to the parent, which stops them
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _context() -> mp.context.BaseContext:
    """fork where the platform has it (no re-import of the caller's __main__, fast start), else spawn."""
    methods = mp.get_all_start_methods()
    return mp.get_context("fork" if "fork" in methods else "spawn")


def _indexed_run(item: tuple[int, dict]) -> tuple[int, dict]:
    return item[0], run_task(item[1])


class LocalExecutor:
    """A pool of worker processes on this machine (spawned lazily, kept for the executor's life)."""

    name = "local"

    def __init__(self, workers: int | None = None) -> None:
        if workers is not None and workers < 1:
            raise ValueError(f"workers: expected an integer >= 1, got {workers!r}")
        self.workers = workers or os.cpu_count() or 1
        self._pool: Any = None

    def imap(self, tasks: Sequence[dict]) -> Iterator[tuple[int, dict]]:
        if not tasks:
            return
        if self.workers == 1 or len(tasks) == 1 and self._pool is None:
            yield from SerialExecutor().imap(tasks)
            return
        if self._pool is None:
            self._pool = _context().Pool(self.workers, initializer=_ignore_sigint)
        try:
            yield from self._pool.imap_unordered(_indexed_run, list(enumerate(tasks)), chunksize=1)
        except BaseException:
            self._pool.terminate()
            self._pool = None
            raise

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool.join()
            self._pool = None

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is not None and self._pool is not None:
            self._pool.terminate()
            self._pool = None
        self.close()


class RayExecutor:
    """Ray tasks, one CPU each. Uses the running Ray instance if there is one, else starts or
    joins one (`address`: "auto", "ray://host:10001", ...; None: a local instance)."""

    name = "ray"

    def __init__(self, address: str | None = None) -> None:
        try:
            import ray
        except ImportError:
            from sim.errors import InputError

            raise InputError("command line", "--executor", "ray is not installed; "
                             "pip install 'infercast[ray]'") from None
        self._ray = ray
        self._started = False
        if not ray.is_initialized():
            runtime_env = None
            if address is not None:  # a remote cluster needs the sim package itself
                import sim

                runtime_env = {"py_modules": [os.path.dirname(sim.__file__)]}
            ray.init(address=address, include_dashboard=False, runtime_env=runtime_env,
                     log_to_driver=False)
            self._started = True
        self._remote = ray.remote(num_cpus=1)(run_task)

    def imap(self, tasks: Sequence[dict]) -> Iterator[tuple[int, dict]]:
        ray = self._ray
        refs = {self._remote.remote(task): i for i, task in enumerate(tasks)}
        pending = list(refs)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    yield refs[ref], ray.get(ref)
        except BaseException:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise

    def close(self) -> None:
        if self._started:
            self._ray.shutdown()
            self._started = False

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def make_executor(kind: str = "local", workers: int | None = None, address: str | None = None) -> Executor:
    """An executor by name: "local" (process pool), "ray" or "serial"."""
    if kind == "local":
        return LocalExecutor(workers)
    if kind == "serial":
        return SerialExecutor()
    if kind == "ray":
        return RayExecutor(address)
    raise ValueError(f"executor: expected one of {', '.join(EXECUTORS)}, got {kind!r}")
