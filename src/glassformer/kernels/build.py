"""Compile the C kernels once per machine and load them with ctypes.

PyTorch is the library's engine; the kernels here cover the one place where a few dozen lines of C
beat it on a CPU: matrix-vector products while decoding (see ``linear.c``, ``quant.c``) and a whole
decoding step of a small quantized model (``decode.c``). They are compiled
on first use with the machine's C compiler (``$CC``, else ``cc``/``gcc``) and cached under
``$GLASSFORMER_CACHE/kernels`` keyed by the source, the flags, the compiler and the CPU, so a later
run loads them in milliseconds.

The instruction set is the machine's own (``-march=native``) unless ``GLASSFORMER_KERNEL_ISA``
names one of :data:`ISAS`: a fixed target makes a run reproducible across CPUs and lets the tests
cover every code path of ``linear.c`` on one machine. A path the CPU cannot execute is refused
(it would die of an illegal instruction), and :func:`isa` reports what the loaded library was
really compiled for, from the compiler's own macros.

Without a compiler, or with ``GLASSFORMER_KERNELS=0``, :func:`load` returns None and callers use
PyTorch; nothing else changes. Why it failed stays in :func:`unavailable_reason`.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch  # loaded first: the kernels then share PyTorch's OpenMP runtime (same soname)

from glassformer.utils.paths import cache_root

SOURCE = Path(__file__).with_name("linear.c")
# compiled together into one library, so every kernel of a process runs on the same path
SOURCES = (SOURCE, SOURCE.with_name("quant.c"), SOURCE.with_name("decode.c"))
# -ffp-contract=off (already gcc's default under -std=c11; clang's is on): no fused multiply-adds,
# so every path and compiler rounds the same operations and gives the same float32 results
FLAGS = ["-O3", "-shared", "-fPIC", "-std=c11", "-ffp-contract=off", "-Wno-psabi"]
OPENMP = "-fopenmp"  # dropped when the compiler has no OpenMP (Apple clang): one thread then
ISA_ENV = "GLASSFORMER_KERNEL_ISA"

_AVX2 = [("-mavx2", "avx2"), ("-mfma", "fma")]
_AVX512 = [*_AVX2, ("-mavx512f", "avx512f"), ("-mavx512bw", "avx512bw"), ("-mavx512dq", "avx512dq"),
           ("-mavx512vl", "avx512vl")]  # fmt: skip
# each path: (compiler flag, the /proc/cpuinfo flag a CPU needs to run what that flag allows; "" none)
ISAS: dict[str, list[tuple[str, str]]] = {
    "native": [("-march=native", "")],  # whatever this CPU has: the default and the fastest
    "generic": [],  # the compiler's baseline (SSE2 on x86-64): the plain C fallbacks of linear.c
    "avx2": _AVX2,
    "avx512": _AVX512,
    "avx512_vnni": [*_AVX512, ("-mavx512vnni", "avx512_vnni")],  # + int8 dot products (shortlist)
}

_state: dict[str, object] = {}  # the library of the configured path: "lib", "reason"
_by_isa: dict[str, tuple[ctypes.CDLL | None, str | None]] = {}  # every path loaded so far


def _compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return name
    return None


def _cpuinfo_lines() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    lines = [ln for ln in text.splitlines() if ln.startswith(("model name", "flags", "Features"))]
    return list(dict.fromkeys(lines))  # first CPU's lines; the others repeat them


def _cpu_id() -> str:
    """The CPU model and feature flags: ``-march=native`` code must not run on another CPU."""
    return "\n".join(_cpuinfo_lines()) or platform.processor() or platform.machine()


def cpu_flags() -> set[str] | None:
    """This CPU's feature flags as ``/proc/cpuinfo`` names them (``avx2``, ``avx512_vnni``), or None
    where they cannot be read (not Linux)."""
    for line in _cpuinfo_lines():
        if line.startswith(("flags", "Features")):
            return set(line.partition(":")[2].split())
    return None


def check_isa(isa: str) -> str:
    """``isa`` itself when it names a path of :data:`ISAS`; a ValueError that lists them otherwise."""
    if isa not in ISAS:
        raise ValueError(f"{isa!r} is not a kernel instruction-set path; choose one of {', '.join(ISAS)}")
    return isa


def missing_cpu_flags(isa: str) -> list[str] | None:
    """The CPU flags that ``isa`` needs and this CPU lacks ([] when it can run it), or None when
    the CPU's flags cannot be read."""
    needed = [flag for _, flag in ISAS[check_isa(isa)] if flag]
    if not needed:
        return []
    have = cpu_flags()
    return None if have is None else [flag for flag in needed if flag not in have]


def configured_isa() -> str:
    """The path :func:`load` builds: ``$GLASSFORMER_KERNEL_ISA``, ``native`` when unset."""
    value = os.environ.get(ISA_ENV, "").strip() or "native"
    if value not in ISAS:
        choices = ", ".join(ISAS)
        raise ValueError(f"{ISA_ENV}={value!r} is not a kernel path; set one of {choices}, or unset it")
    return value


def compile_library(isa: str = "native", compiler: str | None = None) -> Path:
    """The shared library of ``linear.c`` and ``quant.c`` for path ``isa``, compiled unless cached.

    Compiling needs no support from the CPU (gcc builds AVX-512 code on an AVX2 machine); only
    running it does (see :func:`missing_cpu_flags`). Raises RuntimeError when it cannot compile.
    """
    compiler = compiler or _compiler()
    if compiler is None:
        raise RuntimeError("no C compiler found (install gcc, or set CC)")
    flags = [*FLAGS, *(flag for flag, _ in ISAS[check_isa(isa)])]
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=False).stdout
    key = hashlib.sha256(
        "\n".join([*(src.read_text() for src in SOURCES), " ".join(flags), version, _cpu_id(), torch.__version__]).encode()
    ).hexdigest()[:16]
    folder = cache_root() / "kernels"
    target = folder / f"linear-{isa}-{key}.so"
    if target.exists():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:  # same file system: the rename is atomic
        out = Path(tmp) / target.name
        for attempt in ([*flags, OPENMP], flags):
            result = subprocess.run(
                [compiler, *attempt, *map(str, SOURCES), "-lm", "-o", str(out)], capture_output=True, text=True, check=False
            )
            if result.returncode == 0:
                break
        else:
            raise RuntimeError(
                f"{compiler} could not build {' and '.join(src.name for src in SOURCES)} for {isa}:\n{result.stderr.strip()[-2000:]}"
            )
        os.replace(out, target)
    return target


def _declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    """Argument and result types of every exported kernel function."""
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    lib.gf_linear.argtypes = [ptr, i64, ptr, ptr, ptr, i64, i64, i64]
    lib.gf_linear.restype = None
    lib.gf_linear_q8.argtypes = [ptr, i64, ptr, ptr, ptr, i64, i64, i64]
    lib.gf_linear_q8.restype = None
    lib.gf_shortlist.argtypes = [ptr, ptr, ptr, ctypes.c_double, ptr, ctypes.c_double, i64, ptr, i64]
    lib.gf_shortlist.restype = i64
    lib.gf_linear_q8x8.argtypes = [ptr, ptr, ptr, ptr, ctypes.c_float, ptr, i64, i64]
    lib.gf_linear_q8x8.restype = None
    lib.gf_q8_linear.argtypes = [ptr, i64, ptr, ptr, ptr, ptr, ptr, i64, i64, i64]
    lib.gf_q8_linear.restype = ctypes.c_int
    lib.gf_q4_linear.argtypes = [ptr, i64, ptr, ptr, ptr, ptr, ptr, i64, i64, i64]
    lib.gf_q4_linear.restype = ctypes.c_int
    lib.gf_decode_step.argtypes = [ptr, ptr, ptr, ptr, ptr, i64]
    lib.gf_decode_step.restype = ctypes.c_int
    lib.gf_has_vnni.argtypes = []
    lib.gf_has_vnni.restype = ctypes.c_int
    lib.gf_isa.argtypes = []
    lib.gf_isa.restype = ctypes.c_char_p
    lib.gf_max_threads.argtypes = []
    lib.gf_max_threads.restype = ctypes.c_int
    lib.gf_advise_huge.argtypes = [ptr, i64]
    lib.gf_advise_huge.restype = ctypes.c_int
    return lib


def _open(isa: str) -> tuple[ctypes.CDLL | None, str | None]:
    """``(library, None)`` for path ``isa``, or ``(None, why not)``."""
    if platform.system() not in ("Linux", "Darwin"):
        return None, f"not built on {platform.system()}"
    missing = missing_cpu_flags(isa)
    if missing is None:
        return None, f"cannot read this CPU's flags to check that it runs {isa} code; use {ISA_ENV}=native"
    if missing:
        flags = ", ".join(missing)
        return None, f"the {isa} kernels need CPU flag(s) {flags}, which this CPU lacks; use native"
    try:
        return _declare(ctypes.CDLL(str(compile_library(isa)))), None
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        return None, str(exc)


def load(isa: str | None = None) -> ctypes.CDLL | None:
    """The compiled kernel library, or None when it cannot be had (then use PyTorch).

    ``isa``: a path of :data:`ISAS` to load beside the configured one (the tests compare them);
    None (what the library itself uses) is ``$GLASSFORMER_KERNEL_ISA``, else ``native``.
    """
    if isa is None:
        if "lib" not in _state:
            if os.environ.get("GLASSFORMER_KERNELS", "1") == "0":
                _state["lib"], _state["reason"] = None, "turned off by GLASSFORMER_KERNELS=0"
            else:
                chosen = configured_isa()
                _state["lib"], _state["reason"] = load(chosen), _by_isa[chosen][1]
        return _state["lib"]  # type: ignore[return-value]
    if check_isa(isa) not in _by_isa:
        _by_isa[isa] = _open(isa)
    return _by_isa[isa][0]


def unavailable_reason(isa: str | None = None) -> str | None:
    """Why :func:`load` gave None for ``isa`` (default: the configured path); None when loaded."""
    if isa is not None:
        return _by_isa[isa][1] if load(isa) is None else None
    load()
    return _state.get("reason")  # type: ignore[return-value]


def isa(lib: ctypes.CDLL | None = None) -> str | None:
    """The instruction-set path ``lib`` (default: the library in use) was compiled for, as one of
    :data:`ISAS` except ``native`` (``native`` reports what it came out as: ``avx2`` on an AVX2
    CPU); None when the kernels are not loaded."""
    lib = load() if lib is None else lib
    return None if lib is None else lib.gf_isa().decode()
