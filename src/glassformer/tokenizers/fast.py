"""The fast path: the same vocabulary run by the ``tokenizers`` library (Rust, multi-threaded).

``tokenizer.with_backend("fast")`` (or ``backend="fast"`` at construction) routes encoding through
a ``tokenizers.Tokenizer`` built from ``tokenizer.to_hf_json()``, the very ``tokenizer.json`` that
``save`` writes, so both backends hold one vocabulary and give identical ids (the tests check
it). Templates, truncation and padding stay in glassformer for both. Use it for large corpora;
the pure-Python path is the readable reference.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from glassformer.tokenizers.base import Tokenizer


def to_hf_tokenizer(tokenizer: Tokenizer) -> Any:
    """A ``tokenizers.Tokenizer`` for ``tokenizer``'s vocabulary (needs the ``tokenizers`` package)."""
    try:
        from tokenizers import Tokenizer as HFTokenizer
    except ImportError:
        raise ImportError("the fast path needs the 'tokenizers' package: pip install tokenizers") from None
    return HFTokenizer.from_str(json.dumps(tokenizer.to_hf_json(), ensure_ascii=False))
