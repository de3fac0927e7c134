"""`calibrate`: measure this machine with a real PyTorch runner and write a hardware profile.

    calibrate                          # profile this machine: profiles/<host>-<device>.json
    calibrate --quick                  # a coarse profile in about a minute
    calibrate --model llama-medium-400m --dtype bf16 --device cuda --time-budget 600
    calibrate fit profiles/x.json      # re-fit a profile's stored measurements (no torch needed)
    calibrate validate --profile profiles/x.json ...   # real engine vs simulator (validate_cli)

Steps: resolve model, device and grid (bad input: one line on stderr, exit 2, nothing written),
microbenchmarks (achieved GEMM FLOP/s per dtype, memory bandwidth), power meter and idle power,
the prefill / decode / mixed sweeps within the time budget, the cost-model fit, then an atomic
write of the validated profile.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from sim.errors import InputError

QUICK_BUDGET_S = 45.0  # everything, on a 2-core CPU: keeps `--quick` under a minute
DEFAULT_BUDGET_S = 270.0  # keeps the default run under five minutes
FIT_RESERVE_S = 4.0  # kept back from the sweeps for fitting and writing
HOLDOUT_SHARE = 0.3  # of the sweep budget, for a --holdout model's first pass
CALIBRATION_DTYPES = ("fp32", "bf16", "fp16")


# ---- defaults per device -----------------------------------------------------------------------
@dataclass(frozen=True)
class Defaults:
    model: str
    batches: tuple[int, ...]
    prompt_lens: tuple[int, ...]
    contexts: tuple[int, ...]
    mixed_chunks: tuple[int, ...]
    mixed_batches: tuple[int, ...]
    repeats: int


CPU_DEFAULTS = Defaults("llama-small-150m", (1, 2, 4, 8, 16), (16, 32, 64, 128, 256, 512),
                        (128, 512, 1024, 2048), (32, 128), (1, 4), 3)
CPU_QUICK = Defaults("llama-small-150m", (1, 4, 16), (16, 128), (128, 1024), (64,), (2,), 3)
GPU_DEFAULTS = Defaults("llama-3.2-1b", (1, 2, 4, 8, 16, 32, 64, 128),
                        (64, 128, 256, 512, 1024, 2048, 4096), (256, 1024, 2048, 4096, 8192),
                        (128, 512, 2048), (1, 8, 32), 5)
GPU_QUICK = Defaults("llama-3.2-1b", (1, 8, 64), (128, 1024, 4096), (512, 4096),
                     (512,), (8,), 3)


def defaults_for(device_type: str, quick: bool) -> Defaults:
    if device_type == "cpu":
        return CPU_QUICK if quick else CPU_DEFAULTS
    return GPU_QUICK if quick else GPU_DEFAULTS


# ---- argument parsing --------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line (not usage + error) and exits 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"{self.prog}: error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(2)


def _int_list(flag: str):
    def parse(text: str) -> tuple[int, ...]:
        try:
            values = tuple(int(v) for v in text.split(",") if v.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{flag}: expected comma-separated integers, got {text!r}") from None
        if not values:
            raise argparse.ArgumentTypeError(f"{flag}: expected at least one value")
        return values
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="calibrate",
        description="Measure this machine with a real PyTorch prefill/decode runner, fit the "
                    "simulator's cost model and write a hardware profile (JSON).",
        epilog="Sub-commands: `calibrate fit PROFILE [--output PATH]` re-fits the measurements "
               "stored in an existing profile (see `calibrate fit --help`); `calibrate validate "
               "--profile PROFILE ...` compares the real engine with the simulator (see "
               "`calibrate validate --help`). Bad input exits with status 2 and one line on "
               "stderr; the profile is written atomically at the end.",
    )
    parser.add_argument("--model", default=None,
                        help="model preset name (e.g. llama-small-150m, llama-3.2-1b) or a path to "
                             "a Hugging Face config.json (or its folder); random weights in the "
                             "real shapes. Default: llama-small-150m on CPU, llama-3.2-1b on GPU")
    parser.add_argument("--dtype", choices=CALIBRATION_DTYPES, default=None,
                        help="weights, KV cache and compute dtype. Default: bf16 on GPU; on CPU "
                             "the faster of fp32 and bf16 by the measured GEMM rate")
    parser.add_argument("--device", default="auto",
                        help="cpu, cuda, cuda:N, mps or auto (default: the first GPU present, "
                             "else cpu)")
    grid = parser.add_argument_group("grid (default: per device, smaller with --quick)")
    grid.add_argument("--batches", type=_int_list("--batches"), default=None,
                      help="batch sizes for prefill and decode, e.g. 1,2,4,8")
    grid.add_argument("--prompt-lens", type=_int_list("--prompt-lens"), default=None,
                      help="prompt lengths (tokens) of the prefill sweep, e.g. 32,128,512")
    grid.add_argument("--contexts", type=_int_list("--contexts"), default=None,
                      help="context lengths (tokens) of the decode sweep, e.g. 128,512,2048")
    grid.add_argument("--mixed-chunks", type=_int_list("--mixed-chunks"), default=None,
                      help="prefill chunk sizes of mixed (chunk + decodes) steps")
    grid.add_argument("--mixed-batches", type=_int_list("--mixed-batches"), default=None,
                      help="decodes beside the chunk in mixed steps")
    grid.add_argument("--repeats", type=int, default=None,
                      help="timed repeats per point in the first pass, after one warm-up "
                           "(default 3 on CPU); later visits add more, the median of all is kept")
    parser.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                        help=f"wall-clock budget of the whole calibration; the sweep runs coarse "
                             f"points first and skips what would not fit. Default: "
                             f"{DEFAULT_BUDGET_S:.0f} ({QUICK_BUDGET_S:.0f} with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help="a small grid and budget: a coarse profile in under a minute on a "
                             "2-core CPU")
    parser.add_argument("--output", default=None,
                        help="profile path. Default: profiles/<host>-<device>.json")
    parser.add_argument("--name", default=None,
                        help="profile name. Default: the output file's stem")
    parser.add_argument("--tdp-w", type=float, default=None,
                        help="device TDP in watts for the power estimate when no energy counter "
                             "(NVML, RAPL) is readable. Default: 5 W per usable CPU")
    parser.add_argument("--price-usd-per-h", type=float, default=None,
                        help="price of one device-hour in USD (recorded with today's date)")
    parser.add_argument("--compile-decode", action="store_true",
                        help="on CUDA, run decode steps through torch.compile / CUDA graphs as a "
                             "tuned engine would (compiles one graph per batch and context "
                             "bucket: minutes)")
    parser.add_argument("--no-speed-reference", action="store_true",
                        help="do not time the two reference steps beside the sweep, and keep "
                             "each point's plain median instead of its time at the run's median "
                             "machine speed (see calibrate/speed_reference.py)")
    parser.add_argument("--holdout", default=None, metavar="MODEL",
                        help="a second model (preset or config.json) measured in the same run, "
                             "beside the calibration model and at the same machine speed, but "
                             "left out of the fit: the profile records how well the fit predicts "
                             "it (cost_model.fit.holdout), the cross-model check. Its first pass "
                             f"takes {HOLDOUT_SHARE * 100:.0f}%% of the budget; the default budget grows "
                             f"to {DEFAULT_BUDGET_S / (1 - HOLDOUT_SHARE):.0f} s to make room")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of weights and prompts (default 0)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    return parser


def build_fit_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="calibrate fit",
                     description="Re-fit the cost model of an existing measured profile from the "
                                 "measurements it stores, and write it back (or to --output).")
    parser.add_argument("profile", help="path of a measured profile JSON")
    parser.add_argument("--output", default=None, help="where to write. Default: in place")
    return parser


# ---- validation --------------------------------------------------------------------------------
def _check_positive(flag: str, values: tuple[int, ...]) -> None:
    for v in values:
        if v <= 0:
            raise InputError(flag, "", f"expected positive integers, got {v}")


def output_path(text: str | None, default_name: str) -> Path:
    path = Path(text) if text else Path("profiles") / f"{default_name}.json"
    if path.is_dir():
        raise InputError(str(path), "--output", "is a folder; expected a file path")
    folder = path.parent if str(path.parent) else Path(".")
    if not text and not folder.exists():
        folder.mkdir(parents=True, exist_ok=True)
    if not folder.is_dir():
        raise InputError(str(path), "--output", f"folder {folder} does not exist")
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise InputError(str(path), "--output", "cannot be written (permission denied)")
    return path


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        status = _command(argv)
        sys.stdout.flush()  # a closed pipe (`calibrate ... | head`) shows here, not at exit
        return status
    except InputError as exc:
        print(f"calibrate: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("calibrate: interrupted; no profile written", file=sys.stderr)
        return 130
    except BrokenPipeError:
        from sim.files import stdout_gone

        return stdout_gone()


def _command(argv: list[str]) -> int:
    if argv[:1] == ["fit"]:
        return fit_command(build_fit_parser().parse_args(argv[1:]))
    if argv[:1] == ["validate"]:
        from calibrate.validate_cli import main as validate_main

        return validate_main(argv[1:])
    args = build_parser().parse_args(argv)
    from calibrate.calibration import run_calibration  # torch is imported from here on

    command = "calibrate " + " ".join(shlex.quote(a) for a in argv)
    return run_calibration(args, command.strip())


def fit_command(args: argparse.Namespace) -> int:
    from calibrate.fit import fit_profile
    from sim.spec.profile import load_profile, write_profile

    profile = load_profile(args.profile)
    document = profile.raw
    measurements = document.get("measurements") or {}
    if not measurements.get("points") or not measurements.get("models"):
        raise InputError(profile.path, "measurements.points",
                         "no stored measurements to fit (only measured profiles can be re-fitted)")
    try:
        fitted = fit_profile(document, profile.path)
    except InputError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(profile.path, "measurements", f"cannot be re-fitted: {exc!r}") from None
    out = output_path(args.output, "") if args.output else Path(profile.path)
    write_profile(fitted, out)
    fit = fitted["cost_model"]["fit"]
    print(f"{out}: re-fitted {fit['num_points']} points: median error "
          f"{fit['median_rel_error']:.1%}, max {fit['max_rel_error']:.1%}")
    if fit.get("holdout"):
        print("  " + holdout_line(fit["holdout"]))
    return 0


def holdout_line(holdout: dict) -> str:
    return (f"held-out model {holdout['model']} (not fitted): {holdout['num_points']} points, "
            f"median error {holdout['median_rel_error']:.1%}, max {holdout['max_rel_error']:.1%}")


def print_summary(path: Path, document: dict, seconds: float, out=sys.stdout) -> None:
    fit = document["cost_model"]["fit"]
    dev = document["device"]
    power = document["power"]
    flops = ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in dev["peak_flops"].items())
    print(f"wrote {path} in {seconds:.0f} s", file=out)
    print(f"  device: {dev['name']} ({dev['kind']}); {flops}; bandwidth "
          f"{dev['memory_bandwidth_bytes_per_s'] / 1e9:.1f} GB/s", file=out)
    print(f"  fit: {fit['num_points']} points, median error {fit['median_rel_error']:.1%}, "
          f"max {fit['max_rel_error']:.1%}", file=out)
    if fit.get("holdout"):
        print("  " + holdout_line(fit["holdout"]), file=out)
    estimated = " (ESTIMATED, no energy counter)" if power["is_estimated"] else ""
    print(f"  power [{power['method']}]{estimated}: idle {power['idle_w']:.1f} W, decode "
          f"{power['decode_w']:.1f} W, prefill {power['prefill_w']:.1f} W", file=out)
    limits = document["measurements"].get("limits") or []
    skipped = document["measurements"]["grid"].get("skipped") or []
    if limits:
        print("  out of memory at: " + ", ".join(
            f"{x['kind']} batch {x['batch']} x {x['length']}" for x in limits), file=out)
    if skipped:
        print(f"  {len(skipped)} grid points skipped by the time budget", file=out)
    from calibrate.speed_track import stored_wander, wander_summary

    wander = wander_summary(stored_wander(document))
    if wander:
        print(f"  {wander}; no prediction from this profile holds tighter than that", file=out)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

