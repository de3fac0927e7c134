"""Microbenchmarks return positive, plausible figures with their units, within their budget."""

from __future__ import annotations

import time

import pytest

torch = pytest.importorskip("torch")

from calibrate.devices import describe_device, resolve_device  # noqa: E402
from calibrate.microbench import (default_bandwidth_bytes, measure_bandwidth,  # noqa: E402
                                  measure_matmul, run_microbench)
from sim.errors import InputError  # noqa: E402


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_matmul_flops_are_plausible(dtype: str) -> None:
    result = measure_matmul("cpu", dtype, max_size=256, repeats=3, budget_s=1.0)
    assert result.size == 256 and 1 <= result.num_repeats <= 3
    assert result.backend in {"onednn-packed", "matmul"}
    assert result.time_s > 0
    assert result.matmul_flops_per_s == pytest.approx(2 * 256 ** 3 / result.time_s)
    assert 1e8 < result.matmul_flops_per_s < 1e14  # 0.1 GFLOP/s .. 100 TFLOP/s on a CPU


def test_bandwidth_counts_read_and_write_bytes() -> None:
    result = measure_bandwidth("cpu", num_bytes=16 << 20, repeats=3, budget_s=1.0)
    assert result.num_bytes == 16 << 20
    assert result.bandwidth_bytes_per_s == pytest.approx(2 * result.num_bytes / result.time_s)
    assert 1e8 < result.bandwidth_bytes_per_s < 1e13  # 0.1 GB/s .. 10 TB/s


def test_default_bandwidth_tensor_exceeds_last_level_cache() -> None:
    assert default_bandwidth_bytes(torch.device("cpu")) >= 256 << 20


def test_run_microbench_respects_a_small_budget() -> None:
    start = time.perf_counter()
    result = run_microbench("cpu", dtypes=("fp32",), budget_s=1.0)
    assert time.perf_counter() - start < 10.0
    assert set(result.matmul) == {"fp32"} and result.bandwidth is not None
    data = result.to_dict()
    assert data["matmul"]["fp32"]["matmul_flops_per_s"] > 0
    assert data["bandwidth"]["bandwidth_bytes_per_s"] > 0


def test_devices_resolve_and_describe() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in {"cpu", "cuda", "mps"}
    info = describe_device("cpu")
    assert info.kind == "cpu" and info.name and info.torch_version == torch.__version__
    assert info.memory_bytes is None or info.memory_bytes > 1 << 28
    with pytest.raises(InputError, match="--device: 'tpu'|--device: unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="--device: 'cuda:1' asked for.*no CUDA device"):
            resolve_device("cuda:1")
