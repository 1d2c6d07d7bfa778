"""Fixtures the quantization tests share with the kernel tests."""

from tests.kernels.conftest import kernel_isa  # noqa: F401  (each instruction-set path in turn)
