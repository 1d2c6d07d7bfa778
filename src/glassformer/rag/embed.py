"""Sentence embeddings with our BERT: all-MiniLM-L6-v2, mean-pooled and L2-normalised.

sentence-transformers runs this model as three modules (``modules.json`` of the packaged folder):
the Transformer reading at most ``max_seq_length`` = 256 word pieces, mean pooling over the real
tokens, and L2 normalisation. :class:`Embedder` does the same with ``glassformer.models.bert``
and our WordPiece tokenizer, so its vectors equal sentence-transformers' (tests/rag check 1e-5);
being unit length, their dot product is the cosine similarity every store ranks by.

Texts are embedded in batches sorted by length, so each batch pads only to similar lengths (a
batch of one 250-token chunk and 31 ten-token ones would otherwise compute 32 x 250).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from glassformer.utils.progress import Progress

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_MAX_TOKENS = 256  # all-MiniLM-L6-v2's sentence_bert_config.json max_seq_length


def _max_seq_length(folder: Path) -> int:
    """``max_seq_length`` of a sentence-transformers folder (the length it was trained to read)."""
    config = folder / "sentence_bert_config.json"
    if config.is_file():
        value = json.loads(config.read_text(encoding="utf-8")).get("max_seq_length")
        if isinstance(value, int) and value > 2:
            return value
    return DEFAULT_MAX_TOKENS


class Embedder:
    """Texts -> unit vectors ``(N, dim)`` float32, through a glassformer BERT encoder.

    ``name`` identifies the model in an index's manifest: an index built with one embedder is
    refused by another (their vector spaces have nothing in common)."""

    def __init__(self, model: Any, tokenizer: Any, name: str, max_tokens: int = DEFAULT_MAX_TOKENS) -> None:
        from glassformer.models.bert.text import BertEncoder

        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.max_tokens = min(max_tokens, int(model.config.max_seq_len))
        self.encoder = BertEncoder(tokenizer, max_len=self.max_tokens)
        self.dim = int(model.config.dim)

    @classmethod
    def load(cls, source: str = DEFAULT_MODEL) -> Embedder:
        """The embedder of a sentence-transformers folder, a packaged model or a hub id."""
        from glassformer.models import load_model
        from glassformer.models.bert.text import load_vocab_tokenizer
        from glassformer.utils.weights import resolve

        folder = resolve(source)
        model = load_model(folder, family="bert")
        tokenizer = load_vocab_tokenizer(folder).with_backend("fast")
        return cls(model, tokenizer, name=str(source), max_tokens=_max_seq_length(folder))

    def count_tokens(self, text: str) -> int:
        """Word pieces of ``text`` without ``[CLS]``/``[SEP]``: what chunk budgets are counted in."""
        return len(self.encoder.pieces(text))

    @property
    def room(self) -> int:
        """Word pieces one text may have before it is cut (the model's length less two specials)."""
        return self.max_tokens - 2

    def embed(self, texts: Sequence[str], batch_size: int = 32, progress: bool = False) -> np.ndarray:
        """Unit vectors of ``texts``, in their order. Texts over ``room`` tokens are cut (one warning)."""
        if isinstance(texts, str):
            raise TypeError("embed takes a list of texts; wrap a single text in a list")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            examples = self.encoder.encode_many(list(texts))
        cut = [w for w in caught if "longer than max_len" in str(w.message)]
        if cut:
            warnings.warn(f"embedder: {cut[0].message}", stacklevel=2)
        order = sorted(range(len(examples)), key=lambda i: len(examples[i]["input_ids"]))
        with Progress(len(texts), desc="embed", unit="text", enabled=progress) as bar, torch.inference_mode():
            for start in range(0, len(order), batch_size):
                rows = order[start : start + batch_size]
                out[rows] = self._embed_batch([examples[i] for i in rows])
                bar.update(len(rows))
        return out

    def _embed_batch(self, examples: list[dict[str, list[int]]]) -> np.ndarray:
        from glassformer.models.bert import mean_pool
        from glassformer.models.bert.text import pad_batch

        batch = pad_batch(examples, self.encoder.pad_id)
        hidden, _ = self.model.encode(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        return mean_pool(hidden, batch["attention_mask"]).float().numpy()
