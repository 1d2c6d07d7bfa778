"""Quantized weights from scratch: NF4/FP4 (QLoRA) and int8 (per channel, LLM.int8()), layers and checkpoints.

* :mod:`~glassformer.quant.nf4`: 4-bit codes, block-wise absmax, double quantization; equals
  bitsandbytes bit for bit. :mod:`~glassformer.quant.int8`: per-output-channel int8 and the
  outlier decomposition. Each module documents its packed layout (what the C kernels read).
* :mod:`~glassformer.quant.linear`: ``Int8Linear`` / ``NF4Linear``, drop-in for ``nn.Linear``; a
  decoding step (1 to 8 rows, CPU) runs the C kernels of :mod:`~glassformer.quant.kernel`
  (``kernels/quant.c``: AVX2, AVX-512, AVX-512 VNNI, plain C) on the packed buffers, and each
  layer's ``decode_path`` says which path it takes.
* :mod:`~glassformer.quant.decode`: a batch-1 decoding step of a quantized Llama-style stack as
  one C call (``kernels/decode.c``), past PyTorch's per-operation dispatch.
* :mod:`~glassformer.quant.model`: ``quantize_model`` and byte counts;
  :mod:`~glassformer.quant.io`: ``save_quantized`` / ``load_quantized`` (``load_model`` opens them too).
"""

from glassformer.quant.decode import enable_fused_decode, fused_decode_status
from glassformer.quant.int8 import Int8Rows, int8_matmul, outlier_columns, quantize_rows
from glassformer.quant.io import folder_bytes, load_quantized, open_quantized, save_quantized
from glassformer.quant.kernel import int4_linear, int8_linear, kernel_status
from glassformer.quant.linear import Int8Linear, NF4Linear, QuantLinear
from glassformer.quant.model import is_quantized, memory_bytes, quantize_model, size_report
from glassformer.quant.nf4 import (
    FP4_CODE,
    NF4_CODE,
    Packed4bit,
    dequantize_4bit,
    dequantize_blockwise,
    dynamic_code,
    quantize_4bit,
    quantize_blockwise,
)

__all__ = [
    "FP4_CODE", "NF4_CODE", "Int8Linear", "Int8Rows", "NF4Linear", "Packed4bit", "QuantLinear",
    "dequantize_4bit", "dequantize_blockwise", "dynamic_code", "enable_fused_decode", "folder_bytes",
    "fused_decode_status", "int4_linear", "int8_linear",
    "int8_matmul", "kernel_status",
    "is_quantized", "load_quantized", "memory_bytes", "open_quantized", "outlier_columns",
    "quantize_4bit", "quantize_blockwise", "quantize_model", "quantize_rows", "save_quantized",
    "size_report",
]  # fmt: skip
