"""Instruction-set paths of the C kernels: each compiles, says what it is, and is chosen or refused."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from glassformer.kernels import build
from tests.kernels.conftest import EXPLICIT_ISAS

needs_compiler = pytest.mark.skipif(build._compiler() is None, reason="no C compiler (install gcc or set CC)")
X86 = platform.machine().lower() in ("x86_64", "amd64")

# ctypes alone, calling only two functions that return constants: no instruction the CPU may lack
REPORT = (
    "import ctypes, sys\n"
    "lib = ctypes.CDLL(sys.argv[1])\n"
    "lib.gf_isa.restype = ctypes.c_char_p\n"
    "print(lib.gf_isa().decode(), lib.gf_has_vnni())\n"
)


def native_path() -> str:
    """What ``-march=native`` should come out as on this CPU: the widest explicit path it runs."""
    widest = [name for name in ("avx512_vnni", "avx512", "avx2") if build.missing_cpu_flags(name) == []]
    return widest[0] if widest else "generic"


def _python(code: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True, text=True, env={**os.environ, **env}, timeout=120,
    )  # fmt: skip


@needs_compiler
@pytest.mark.parametrize("isa", list(build.ISAS))
def test_every_path_compiles_and_reports_what_it_was_built_for(isa, tmp_path, monkeypatch):
    """gcc builds AVX-512 code on any x86-64 machine, so every path is compiled here even where
    the CPU cannot run it; the library's own macros then say which path it is."""
    if isa not in ("native", "generic") and not X86:
        pytest.skip(f"{isa} is an x86-64 path; this machine is {platform.machine()}")
    monkeypatch.setenv("GLASSFORMER_CACHE", str(tmp_path))
    path = build.compile_library(isa)
    assert path.parent == tmp_path / "kernels" and path.name.startswith(f"linear-{isa}-")
    out = _python(REPORT, str(path))
    assert out.returncode == 0, out.stderr
    expected = native_path() if isa == "native" else isa
    assert out.stdout.split() == [expected, str(int(expected == "avx512_vnni"))]


def test_missing_cpu_flags_names_each_flag_a_path_needs(monkeypatch):
    monkeypatch.setattr(build, "cpu_flags", lambda: {"sse2", "avx2", "fma", "avx512f"})
    assert build.missing_cpu_flags("avx2") == []
    assert build.missing_cpu_flags("avx512") == ["avx512bw", "avx512dq", "avx512vl"]
    assert build.missing_cpu_flags("avx512_vnni") == ["avx512bw", "avx512dq", "avx512vl", "avx512_vnni"]
    monkeypatch.setattr(build, "cpu_flags", lambda: None)  # flags unreadable: only paths that need none
    assert [name for name in build.ISAS if build.missing_cpu_flags(name) == []] == ["native", "generic"]


def test_an_unknown_path_is_an_error_that_lists_the_choices(monkeypatch):
    monkeypatch.setenv(build.ISA_ENV, "avx3")
    with pytest.raises(ValueError, match="GLASSFORMER_KERNEL_ISA='avx3' .*avx512_vnni"):
        build.configured_isa()
    with pytest.raises(ValueError, match="'sse9' is not a kernel instruction-set path; choose one of native"):
        build.load("sse9")
    monkeypatch.setenv(build.ISA_ENV, "")
    assert build.configured_isa() == "native"


CHOSEN = (
    "import glassformer.kernels as k\n"
    "print(k.available(), k.isa(), k.unavailable_reason())\n"
)


@needs_compiler
@pytest.mark.parametrize("isa", ["native", *EXPLICIT_ISAS])
def test_the_environment_chooses_the_path(isa):
    """``GLASSFORMER_KERNEL_ISA`` picks the library the whole package loads, and ``isa()`` is what
    that library says it is; a path the CPU cannot run is refused, naming the missing flags."""
    if isa not in ("native", "generic") and not X86:
        pytest.skip(f"{isa} is an x86-64 path; this machine is {platform.machine()}")
    out = _python(CHOSEN, GLASSFORMER_KERNEL_ISA=isa)
    assert out.returncode == 0, out.stderr
    missing = build.missing_cpu_flags(isa)
    if missing:
        assert out.stdout.startswith("False None ")
        assert f"the {isa} kernels need CPU flag(s) {', '.join(missing)}, which this CPU lacks" in out.stdout
    else:
        assert out.stdout.split() == ["True", native_path() if isa == "native" else isa, "None"]


def test_a_path_the_cpu_lacks_falls_back_to_pytorch():
    """Shown on any machine by hiding the CPU's flags: no library is loaded (it would die of an
    illegal instruction), the reason names the flags, and decoding still runs on PyTorch."""
    code = (
        "import torch\n"
        "import glassformer.kernels.build as b\n"
        "b.cpu_flags = lambda: {'sse2'}\n"
        "from glassformer.kernels import FastLinear, available, unavailable_reason\n"
        "layer = FastLinear(8, 4)\n"
        "with torch.no_grad(): y = layer(torch.ones(1, 8))\n"
        "print(available(), tuple(y.shape)); print(unavailable_reason())\n"
    )
    out = _python(code, GLASSFORMER_KERNEL_ISA="avx2")
    assert out.returncode == 0, out.stderr
    first, reason = out.stdout.splitlines()
    assert first == "False (1, 4)"
    assert reason == "the avx2 kernels need CPU flag(s) avx2, fma, which this CPU lacks; use native"
