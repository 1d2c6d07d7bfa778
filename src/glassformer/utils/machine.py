"""A description of the machine a benchmark ran on, saved next to its numbers.

A timing means little without the hardware and software behind it, so every script in ``bench/``
stores ``describe()`` in its JSON result. Only the standard library and torch are used, and every
probe falls back to ``None`` rather than failing: a benchmark should never die for want of a CPU name.

``cpu_bf16()`` says whether this CPU computes bf16 natively; the trainer's ``precision="auto"``
picks bf16 autocast on a CPU only where it does, since elsewhere bf16 matmuls are emulated and slow.
"""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch


def _cpu_model() -> str | None:
    """The CPU's marketing name: /proc/cpuinfo on Linux, sysctl-free fallbacks elsewhere."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    return platform.processor() or None


def _ram_bytes() -> int | None:
    """Total physical memory in bytes."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _usable_cores() -> int | None:
    """Cores this process may run on (a container or taskset may allow fewer than exist)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count()


def _cuda() -> list[dict[str, Any]] | None:
    if not torch.cuda.is_available():
        return None
    devices = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        devices.append(
            {
                "name": props.name,
                "memory_bytes": props.total_memory,
                "capability": f"{props.major}.{props.minor}",
            }
        )
    return devices


def _load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages: a load above the core count means the timings were shared."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


# /proc/cpuinfo flags of bf16 matrix hardware that oneDNN uses for torch's bf16 matmuls on x86:
# AMX tiles (Sapphire Rapids and later) and AVX-512 BF16 dot products (Cooper Lake, Zen 4 and later).
BF16_FLAGS = ("amx_bf16", "avx512_bf16")
# "1" or "0" overrides the detection, e.g. to keep precision=auto at fp32 on a machine with AMX.
BF16_ENV = "GLASSFORMER_CPU_BF16"


@dataclass(frozen=True)
class Bf16Support:
    """Whether bf16 matmuls run natively on this CPU, and the evidence (for logs and benchmarks).

    Deliberately not truthy by itself: callers read ``.native``.
    """

    native: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _read_cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return ""


def _cpu_flags(cpuinfo: str) -> set[str] | None:
    """The first CPU's feature flags (x86 ``flags``, ARM ``Features``), None when there is no such line."""
    for line in cpuinfo.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.partition(":")[2].split())
    return None


def cpu_bf16(cpuinfo: str | None = None, *, onednn: bool | None = None,
             override: str | None = None) -> Bf16Support:
    """Does this CPU compute bf16 natively (``amx_bf16`` or ``avx512_bf16`` in /proc/cpuinfo)?

    Without those units torch emulates bf16 matmuls and they run hundreds of times slower than
    fp32 (measured on an AVX2 EPYC); with AMX they ran 3x faster. Pure for testing: ``cpuinfo``
    is the text of /proc/cpuinfo (read when None), ``onednn`` whether torch has oneDNN, which does
    the bf16 matmuls (``torch.backends.mkldnn.is_available()`` when None), ``override`` the value
    of ``$GLASSFORMER_CPU_BF16`` (read when None; "1" or "0" wins over the flags).
    """
    override = os.environ.get(BF16_ENV, "") if override is None else override
    if override.strip() in ("0", "1"):
        return Bf16Support(override.strip() == "1", f"{BF16_ENV}={override.strip()} overrides the CPU flags")
    if override.strip():
        raise ValueError(f"{BF16_ENV}={override!r}: set it to 1 (native bf16) or 0 (not), or unset it")
    flags = _cpu_flags(_read_cpuinfo() if cpuinfo is None else cpuinfo)
    capability = torch.backends.cpu.get_cpu_capability()
    if flags is None:
        return Bf16Support(False, f"no CPU flags to read (no /proc/cpuinfo); torch CPU capability {capability}")
    found = [flag for flag in BF16_FLAGS if flag in flags]
    if not found:
        return Bf16Support(False, f"no {' or '.join(BF16_FLAGS)} CPU flag (torch CPU capability {capability}): "
                                  "bf16 matmuls are emulated")
    if not (torch.backends.mkldnn.is_available() if onednn is None else onednn):
        return Bf16Support(False, f"CPU has {', '.join(found)} but this torch build lacks oneDNN, which runs "
                                  "bf16 matmuls on them")
    return Bf16Support(True, f"CPU flags {', '.join(found)} (torch CPU capability {capability})")


def describe() -> dict[str, Any]:
    """Platform, Python, torch, CPU model, core counts, RAM, load and CUDA devices (``None`` if none)."""
    ram = _ram_bytes()
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_usable": _usable_cores(),
        "ram_bytes": ram,
        "ram_gib": round(ram / 2**30, 1) if ram else None,
        "load_average": _load_average(),
        "cuda": _cuda(),
        "cuda_version": torch.version.cuda,
    }
