"""Small C kernels for the few places where PyTorch on a CPU leaves speed behind (decoding).

``linear.c``: float32 matrix-vector products (:class:`FastLinear`) and the int8 shortlist head;
``quant.c``: the same products on int8 and 4-bit weights, called by ``glassformer.quant.kernel``
(this package does not import ``quant``);
``decode.c``: a batch-1 decoding step through a whole stack of quantized Llama-style blocks in one
call (:mod:`glassformer.kernels.decode`). Both are compiled into one library per instruction-set
path (``build.py``). Optional by design: when they cannot be compiled, everything runs on PyTorch.
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
