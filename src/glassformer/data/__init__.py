"""Causal-LM data: token files prepared from text (``prepare``) and read as random windows (``TokenData``)."""

from glassformer.data.prepare import causal_lm_data, default_corpus, embedded_corpus, prepare
from glassformer.data.tokens import TokenData, token_dtype, write_tokens

__all__ = ["TokenData", "causal_lm_data", "default_corpus", "embedded_corpus", "prepare", "token_dtype", "write_tokens"]
