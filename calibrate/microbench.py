"""Microbenchmarks: the achieved matmul FLOP/s per dtype and the memory bandwidth of a device.

Modelled: the two ceilings of a roofline. Compute: square GEMMs (n x n times n x n, 2 n^3 FLOPs)
through the same kernels the runner's linear layers use (oneDNN with a packed weight on CPU where
the build and dtype allow, else torch.matmul), grown from 256 until one GEMM takes at least `min_time_s` (so launch overheads do not count) or
`max_size` is reached, then repeated; the median time gives FLOP/s. Memory: a copy between two
tensors well above the last-level cache; bytes read plus bytes written over the median time give
bytes/s. Every timing brackets the work with a device synchronisation and follows a warm-up.

Assumed: a GEMM of the largest size tried is representative of the peak the runner can reach;
a plain tensor copy is representative of streaming weight reads (reads alone may go a little
faster). Each measurement stops repeating once its share of the time budget is spent, so the
figures on a slow device may rest on fewer repeats (the count is returned).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from calibrate.devices import resolve_device, synchronize
from calibrate.model import pack_weight, packed_linear, torch_dtype


@dataclass(frozen=True)
class MatmulResult:
    dtype: str
    size: int  # m = n = k
    backend: str  # "onednn-packed" or "matmul"
    time_s: float  # median of the repeats
    num_repeats: int
    matmul_flops_per_s: float


@dataclass(frozen=True)
class BandwidthResult:
    num_bytes: int  # size of one of the two tensors
    time_s: float  # median of the repeats
    num_repeats: int
    bandwidth_bytes_per_s: float  # (bytes read + bytes written) / time_s


@dataclass(frozen=True)
class MicrobenchResult:
    device: str
    matmul: dict[str, MatmulResult] = field(default_factory=dict)  # by dtype name
    bandwidth: BandwidthResult | None = None
    wall_time_s: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def _timed(fn: Callable[[], object], device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def _repeat(fn: Callable[[], object], device: torch.device, repeats: int,
            budget_s: float) -> list[float]:
    """Up to `repeats` timings (at least one) within budget_s, after one untimed warm-up."""
    deadline = time.perf_counter() + budget_s
    _timed(fn, device)
    times = [_timed(fn, device)]
    while len(times) < repeats and time.perf_counter() + times[-1] < deadline:
        times.append(_timed(fn, device))
    return times


def _default_max_size(device: torch.device) -> int:
    return 8192 if device.type == "cuda" else 2048


def measure_matmul(device: torch.device | str = "cpu", dtype: str = "fp32",
                   max_size: int | None = None, repeats: int = 5, budget_s: float = 3.0,
                   min_time_s: float | None = None, seed: int = 0) -> MatmulResult:
    device = resolve_device(str(device))
    max_size = max_size or _default_max_size(device)
    if min_time_s is None:
        min_time_s = 0.002 if device.type == "cuda" else 0.05
    deadline = time.perf_counter() + budget_s
    generator = torch.Generator(device=device).manual_seed(seed)
    size = min(256, max_size)
    while True:
        gemm, backend = _gemm(size, torch_dtype(dtype), device, generator)
        _timed(gemm, device)  # warm-up (allocations, kernel selection)
        once = _timed(gemm, device)
        remaining = deadline - time.perf_counter()
        if once >= min_time_s or size * 2 > max_size or 8 * once * 3 > remaining:
            break
        size *= 2
    times = _repeat(gemm, device, repeats, max(0.0, deadline - time.perf_counter()))
    median = statistics.median(times)
    return MatmulResult(dtype, size, backend, median, len(times), 2.0 * size ** 3 / median)


def _gemm(size: int, dtype: torch.dtype, device: torch.device,
          generator: torch.Generator) -> tuple[Callable[[], object], str]:
    a = torch.empty(size, size, dtype=dtype, device=device).uniform_(-1, 1, generator=generator)
    b = torch.empty_like(a).uniform_(-1, 1, generator=generator)
    packed = pack_weight(b)
    if packed is not None:
        return (lambda: packed_linear(a, packed)), "onednn-packed"
    return (lambda: a @ b), "matmul"


def _last_level_cache_bytes() -> int | None:
    """Largest CPU cache (Linux sysfs), e.g. "32768K"."""
    sizes = []
    for entry in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        text = entry.read_text().strip()
        units = {"K": 1024, "M": 1024 ** 2, "G": 1024 ** 3}
        sizes.append(int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text))
    return max(sizes) if sizes else None


def default_bandwidth_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return 1 << 30  # 1 GiB: ~20x an H100's L2
    cache = _last_level_cache_bytes() or 32 << 20
    return max(256 << 20, 8 * cache)


def measure_bandwidth(device: torch.device | str = "cpu", num_bytes: int | None = None,
                      repeats: int = 7, budget_s: float = 2.0) -> BandwidthResult:
    device = resolve_device(str(device))
    num_bytes = num_bytes or default_bandwidth_bytes(device)
    source = torch.ones(num_bytes // 4, dtype=torch.float32, device=device)
    target = torch.empty_like(source)
    times = _repeat(lambda: target.copy_(source), device, repeats, budget_s)
    median = statistics.median(times)
    moved = 2 * source.numel() * source.element_size()
    return BandwidthResult(source.numel() * 4, median, len(times), moved / median)


def default_dtypes(device: torch.device) -> tuple[str, ...]:
    return ("fp32", "bf16", "fp16") if device.type == "cuda" else ("fp32", "bf16")


def run_microbench(device: torch.device | str = "cpu", dtypes: tuple[str, ...] | None = None,
                   budget_s: float = 8.0) -> MicrobenchResult:
    """Matmul FLOP/s for each dtype and the copy bandwidth, within about budget_s in total."""
    start = time.perf_counter()
    device = resolve_device(str(device))
    dtypes = dtypes or default_dtypes(device)
    share = budget_s / (len(dtypes) + 1)
    matmul = {d: measure_matmul(device, d, budget_s=share) for d in dtypes}
    bandwidth = measure_bandwidth(device, budget_s=share)
    return MicrobenchResult(str(device), matmul, bandwidth, time.perf_counter() - start)
