"""Compile the C kernels once per machine and load them with ctypes.

PyTorch is the library's engine; the kernels here cover the one place where a few dozen lines of C
beat it on a CPU: matrix-vector products while decoding (see ``linear.c``). They are compiled
on first use with the machine's C compiler (``$CC``, else ``cc``/``gcc``) for the machine's own
instruction set (``-march=native``), and cached under ``$GLASSFORMER_CACHE/kernels`` keyed by the
source, the flags, the compiler and the CPU, so a later run loads them in milliseconds.

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
FLAGS = ["-O3", "-march=native", "-shared", "-fPIC", "-std=c11", "-Wno-psabi"]
OPENMP = "-fopenmp"  # dropped when the compiler has no OpenMP (Apple clang): one thread then

_state: dict[str, object] = {}


def _compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return name
    return None


def _cpu_id() -> str:
    """The CPU model and feature flags: ``-march=native`` code must not run on another CPU."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    lines = [ln for ln in text.splitlines() if ln.startswith(("model name", "flags", "Features"))]
    return "\n".join(dict.fromkeys(lines))  # first CPU's lines; the others repeat them


def _build(compiler: str) -> Path:
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=False).stdout
    key = hashlib.sha256(
        "\n".join([SOURCE.read_text(), " ".join(FLAGS), version, _cpu_id(), torch.__version__]).encode()
    ).hexdigest()[:16]
    folder = cache_root() / "kernels"
    target = folder / f"linear-{key}.so"
    if target.exists():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:  # same file system: the rename is atomic
        out = Path(tmp) / target.name
        for flags in ([*FLAGS, OPENMP], FLAGS):
            result = subprocess.run(
                [compiler, *flags, str(SOURCE), "-o", str(out)], capture_output=True, text=True, check=False
            )
            if result.returncode == 0:
                break
        else:
            raise RuntimeError(f"{compiler} could not build {SOURCE.name}:\n{result.stderr.strip()[-2000:]}")
        os.replace(out, target)
    return target


def load() -> ctypes.CDLL | None:
    """The compiled kernel library, or None when it cannot be had (then use PyTorch)."""
    if "lib" in _state:
        return _state["lib"]  # type: ignore[return-value]
    lib = None
    if os.environ.get("GLASSFORMER_KERNELS", "1") == "0":
        _state["reason"] = "turned off by GLASSFORMER_KERNELS=0"
    elif platform.system() != "Linux" and platform.system() != "Darwin":
        _state["reason"] = f"not built on {platform.system()}"
    elif (compiler := _compiler()) is None:
        _state["reason"] = "no C compiler found (install gcc, or set CC)"
    else:
        try:
            lib = ctypes.CDLL(str(_build(compiler)))
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            _state["reason"] = str(exc)
    if lib is not None:
        i64, ptr = ctypes.c_int64, ctypes.c_void_p
        lib.gf_linear.argtypes = [ptr, i64, ptr, ptr, ptr, i64, i64, i64]
        lib.gf_linear.restype = None
        lib.gf_linear_q8.argtypes = [ptr, i64, ptr, ptr, ptr, i64, i64, i64]
        lib.gf_linear_q8.restype = None
        lib.gf_shortlist.argtypes = [ptr, ptr, ptr, ctypes.c_double, ptr, ctypes.c_double, i64, ptr, i64]
        lib.gf_shortlist.restype = i64
        lib.gf_linear_q8x8.argtypes = [ptr, ptr, ptr, ptr, ctypes.c_float, ptr, i64, i64]
        lib.gf_linear_q8x8.restype = None
        lib.gf_has_vnni.argtypes = []
        lib.gf_has_vnni.restype = ctypes.c_int
        lib.gf_max_threads.argtypes = []
        lib.gf_max_threads.restype = ctypes.c_int
        lib.gf_advise_huge.argtypes = [ptr, i64]
        lib.gf_advise_huge.restype = ctypes.c_int
    _state["lib"] = lib
    return lib


def unavailable_reason() -> str | None:
    """Why :func:`load` gave None (None when the kernels are loaded)."""
    load()
    return _state.get("reason")  # type: ignore[return-value]
