"""glassformer.numpy_ref: one transformer block in NumPy, with its backward pass written by hand.

Nothing here is used for training; it exists to be read. ``NumpyTransformerBlock.forward`` and
``.backward`` show every step of the chain rule through attention, LayerNorm, GELU and the
residuals, and tests/numpy_ref/ checks them against the torch block and autograd in float64.
"""

from glassformer.numpy_ref.block import (
    NumpyTransformerBlock,
    attention_backward,
    attention_forward,
    ffn_backward,
    ffn_forward,
    gelu_backward,
    gelu_forward,
    layernorm_backward,
    layernorm_forward,
    linear_backward,
    linear_forward,
    param_shapes,
    softmax,
    softmax_backward,
)

__all__ = [
    "NumpyTransformerBlock",
    "attention_backward",
    "attention_forward",
    "ffn_backward",
    "ffn_forward",
    "gelu_backward",
    "gelu_forward",
    "layernorm_backward",
    "layernorm_forward",
    "linear_backward",
    "linear_forward",
    "param_shapes",
    "softmax",
    "softmax_backward",
]
