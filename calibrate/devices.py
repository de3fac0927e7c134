"""Which device to run on, and the facts about it that a hardware profile records.

Modelled: "cpu", "cuda", "cuda:N", "mps" and "auto" (the first of cuda, mps, cpu present). A
description gives the device's name, memory, core count and the software it runs with.

Assumed: on Linux the CPU's name comes from /proc/cpuinfo ("model name") and its memory from
/proc/meminfo (MemTotal); elsewhere they fall back to the platform module and None. The CUDA
driver version comes from NVML when nvidia-ml-py is installed, else it is None.
"""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from sim.errors import InputError


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


def resolve_device(name: str = "auto") -> torch.device:
    """A torch.device for a --device string; InputError naming the flag when it is not present."""
    text = name.strip().lower()
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    try:
        device = torch.device(text)
    except RuntimeError:
        raise InputError("--device", "", f"unknown device {name!r}; expected cpu, cuda, "
                         "cuda:N, mps or auto") from None
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError("--device", "", f"{name!r} asked for, but torch "
                             f"{torch.__version__} sees no CUDA device (CPU-only build or no "
                             "driver); use --device cpu")
        count = torch.cuda.device_count()
        index = device.index if device.index is not None else torch.cuda.current_device()
        if index >= count:
            raise InputError("--device", "", f"{name!r} asked for, but only {count} CUDA "
                             f"device(s) are present (cuda:0..cuda:{count - 1})")
        return torch.device("cuda", index)
    if device.type == "mps":
        if not _mps_available():
            raise InputError("--device", "", f"{name!r} asked for, but the MPS backend is not "
                             "available on this machine; use --device cpu")
        return device
    raise InputError("--device", "", f"unsupported device type {device.type!r}; expected cpu, "
                     "cuda, cuda:N, mps or auto")


@dataclass(frozen=True)
class DeviceInfo:
    kind: str  # "cpu", "cuda", "mps"
    name: str
    memory_bytes: int | None
    num_cores: int | None  # CPU cores, or CUDA streaming multiprocessors
    torch_version: str
    driver_version: str | None = None
    cuda_version: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _proc_field(path: str, key: str) -> str | None:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def _cpu_name() -> str:
    return _proc_field("/proc/cpuinfo", "model name") or platform.processor() or platform.machine()


def _ram_bytes() -> int | None:
    text = _proc_field("/proc/meminfo", "MemTotal")  # "24684172 kB"
    if text and text.endswith("kB"):
        return int(text.split()[0]) * 1024
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _nvidia_driver_version() -> str | None:
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        version = pynvml.nvmlSystemGetDriverVersion()
        return version.decode() if isinstance(version, bytes) else str(version)
    except Exception:  # NVML absent or broken: the version is simply unknown
        return None


def describe_device(device: torch.device | str) -> DeviceInfo:
    device = torch.device(device)
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return DeviceInfo("cuda", props.name, int(props.total_memory),
                          int(props.multi_processor_count), torch.__version__,
                          _nvidia_driver_version(), torch.version.cuda)
    if device.type == "mps":
        return DeviceInfo("mps", f"Apple GPU ({platform.machine()})", _ram_bytes(),
                          None, torch.__version__)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return DeviceInfo("cpu", _cpu_name(), _ram_bytes(), cores, torch.__version__)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
