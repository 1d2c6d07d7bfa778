"""Small C kernels for the few places where PyTorch on a CPU leaves speed behind (decoding).

Optional by design: when they cannot be compiled, everything runs on PyTorch alone.
"""

from glassformer.kernels.build import ISAS, isa, unavailable_reason
from glassformer.kernels.linear import (
    FastLinear,
    available,
    pack_weight,
    packed_linear,
    use_fast_linear,
    use_torch_linear,
)

__all__ = [
    "ISAS",
    "FastLinear",
    "available",
    "isa",
    "pack_weight",
    "packed_linear",
    "unavailable_reason",
    "use_fast_linear",
    "use_torch_linear",
]
