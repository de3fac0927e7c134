"""Speed wander: how far this machine's speed moves with time, the floor under any prediction.

A profile is measured at one time and a validation serves at another; on a shared cloud VM the
same step takes a different time minutes later. `calibrate` times every grid point several times,
in shuffled rounds over its run, so its stored timings already hold the answer: for pairs of
timings of one point taken t apart, the std of one about the other (calibrate.speed_track.
speed_wander). Back-to-back timings show a step's own jitter; timings a minute apart add the
machine's slow moves, which no profile made at another moment can predict. A validation run of
~30 s whose machine wanders +-14 % between runs a minute apart cannot be held to 5 % by any
prediction: that is what `calibrate validate --repeats`'s run spread then shows.

Usage: python benchmarks/speed_wander.py [PROFILE ...]    (default: every measured profile in profiles/)
       python benchmarks/speed_wander.py --measure 120 [--model llama-small-150m] [--dtype bf16]
The second form measures now: a batch-8 decode and a 64-token prefill of the model, timed one
after the other, back to back, for that many seconds on this machine (torch, CPU), and prints the
same figures for each step.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from calibrate.speed_track import WANDER_BANDS_S, band_label, speed_wander, stored_wander  # noqa: E402


def fail(message: str) -> None:
    print(f"speed_wander: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def header(first: str, width: int) -> str:
    return f"{first:<{width}}" + "".join(f"{band_label(low, high):>11}" for low, high in WANDER_BANDS_S) + f"{'pairs':>9}"


def row(name: str, bands: list[dict], width: int) -> str:
    cells = "".join(f"{'-' if b['rms'] is None else format(b['rms'], '.1%'):>11}" for b in bands)
    pairs = sum(b["pairs"] for b in bands)
    return f"{name:<{width}}{cells}{pairs:>9}"


def from_profiles(paths: list[Path]) -> None:
    rows = []
    for path in paths:
        try:
            document = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            fail(f"{path}: not a readable JSON profile ({exc})")
        if not isinstance(document, dict):
            fail(f"{path}: not a profile (expected a JSON object)")
        bands = stored_wander(document)
        if bands is not None:
            rows.append((f"{path.name} ({(document.get('provenance') or {}).get('date', '?')})", bands))
    if not rows:
        print("no profile with stored timings (datasheet profiles have none)")
        return
    width = max(len(name) for name, _ in rows) + 2
    print("std of a calibration point's timing about one of the same point taken t apart")
    print(header("profile", width))
    for name, bands in rows:
        print(row(name, bands, width))


def measure(seconds: float, model: str, dtype: str) -> None:
    from calibrate.runner import Runner
    from calibrate.steps_alone import StepRecipe, time_alone
    from sim.spec.model import resolve_model

    spec = resolve_model(model).with_dtypes(dtype, dtype)
    runner = Runner(spec, dtype, "cpu", 9, 1024)
    runner.warm_shapes(64)
    steps = {"decode batch 8 x 512": StepRecipe((), (512,) * 8), "prefill 64": StepRecipe(((0, 64, True),), ())}
    for recipe in steps.values():  # warm
        time_alone(recipe, runner)
    timed = {name: {"times_s": [], "stamps_s": []} for name in steps}
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for name, recipe in steps.items():
            at = time.perf_counter() - start
            seconds_taken, _ = time_alone(recipe, runner)
            timed[name]["times_s"].append(seconds_taken)
            timed[name]["stamps_s"].append(at)
    width = 24
    print(f"{model} ({dtype}), {seconds:.0f} s on this machine: std of a step's timing about one taken t apart")
    print(header("step", width))
    for name, point in timed.items():
        print(row(name, speed_wander([point]), width))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("profiles", nargs="*", type=Path)
    ap.add_argument("--measure", type=float, metavar="SECONDS", help="time two steps now, for this long")
    ap.add_argument("--model", default="llama-small-150m")
    ap.add_argument("--dtype", default="bf16")
    args = ap.parse_args()
    if args.measure is not None and not args.measure > 0:
        fail(f"--measure: expected seconds > 0, got {args.measure:g}")
    if args.measure:
        measure(args.measure, args.model, args.dtype)
    else:
        from_profiles(args.profiles or sorted((ROOT / "profiles").glob("*.json")))


if __name__ == "__main__":
    main()
