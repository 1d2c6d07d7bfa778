"""Data for ``glassformer train bert-mlm``: masked-LM pretraining of a small BERT from scratch.

The corpus (Python's own help text, ``pydoc_data.topics``, always present; or Tiny Shakespeare, or
any text file) is tokenized with a WordPiece vocabulary (by default the uncased BERT vocabulary
that ships with all-MiniLM-L6-v2, so a model pretrained here fine-tunes with the same tokenizer),
packed into sequences of up to ``max_len`` tokens (``[CLS] ... [SEP]``, consecutive lines together,
as RoBERTa's "full sentences"), and masked by :class:`~glassformer.models.bert.mlm.MLMCollator`.

The engine logs the model's ``mlm_loss`` and ``masked_accuracy`` (the share of chosen tokens
predicted exactly). Options arrive as ``data.KEY=VALUE``: ``corpus`` (``pydoc`` | ``shakespeare``
| a path), ``tokenizer`` (a folder), ``max_len``, ``whole_word``, ``mlm_probability``, ``eval_fraction``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from glassformer.models.bert.mlm import MLMCollator, continuation_mask
from glassformer.models.bert.text import BertEncoder, load_vocab_tokenizer, vocab_list
from glassformer.registry import DataRequest
from glassformer.utils.config import unknown_keys_message
from glassformer.utils.paths import data_file

DEFAULT_TOKENIZER = "all-MiniLM-L6-v2"


def corpus_lines(corpus: str = "pydoc") -> list[str]:
    """Non-empty lines of the named corpus."""
    if corpus == "pydoc":
        from pydoc_data.topics import topics

        text = "\n".join(topics[k] for k in sorted(topics))
    elif corpus == "shakespeare":
        path = data_file("tinyshakespeare", "input.txt")
        if path is None:
            raise FileNotFoundError(
                "Tiny Shakespeare is not in the data folder (tinyshakespeare/input.txt under GLASSFORMER_DATA "
                "or ../shared/data); use corpus=pydoc"
            )
        text = path.read_text(encoding="utf-8")
    else:
        path = Path(corpus)
        if not path.is_file():
            raise FileNotFoundError(f"corpus {corpus!r}: not 'pydoc', 'shakespeare' or an existing text file")
        text = path.read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def tokenizer_for(name: str | None = None) -> Any:
    """A WordPiece tokenizer from a folder, or the packaged uncased BERT vocabulary."""
    from glassformer.utils.weights import resolve

    return load_vocab_tokenizer(resolve(name or DEFAULT_TOKENIZER))


def pack(encoder: BertEncoder, lines: Sequence[str], max_len: int) -> list[list[int]]:
    """Consecutive lines joined into ``[CLS] ... [SEP]`` sequences of at most ``max_len`` tokens."""
    room = max_len - 2
    out: list[list[int]] = []
    current: list[int] = []
    for line in lines:
        ids = encoder.pieces(line)
        while ids:
            take = ids[: room - len(current)]
            current += take
            ids = ids[len(take):]
            if len(current) == room:
                out.append([encoder.cls_id, *current, encoder.sep_id])
                current = []
    if current:
        out.append([encoder.cls_id, *current, encoder.sep_id])
    return out


class MLMBatches:
    """``get_batch(split, step, generator)`` for the engine: random sequences, masked afresh each draw.

    Drawing the rows and the masks from the engine's generator makes batch ``m`` a pure function of
    ``(seed, m)``, so a resumed run sees exactly the batches the interrupted one would have.
    """

    def __init__(self, train: list[list[int]], eval: list[list[int]], collator: MLMCollator, batch_size: int) -> None:
        if not train or not eval:
            raise ValueError(f"the corpus gave {len(train)} training and {len(eval)} eval sequences; it is too small")
        self.splits = {"train": train, "eval": eval}
        self.collator, self.batch_size = collator, batch_size

    def __call__(self, split: str, step: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        rows = self.splits[split]
        picks = torch.randint(len(rows), (self.batch_size,), generator=generator).tolist()
        return self.collator([{"input_ids": rows[i]} for i in picks], generator)


def build_mlm_data(train_config: Any, model_config: Any, request: DataRequest | None = None) -> tuple[Any, Any]:
    """The data builder the bert family declares (``glassformer train bert-mlm``)."""
    opts: dict[str, Any] = dict(request.options if request is not None else {})
    known = {"corpus", "tokenizer", "max_len", "whole_word", "mlm_probability", "eval_fraction"}
    unknown = sorted(set(opts) - known)
    if unknown:
        raise ValueError("unknown data option: " + unknown_keys_message(unknown, sorted(known), "bert-mlm"))
    if model_config.head != "mlm":
        raise ValueError(f"bert-mlm pretraining needs head='mlm', the model config has head={model_config.head!r}")
    tokenizer = tokenizer_for(opts.get("tokenizer"))
    if tokenizer.vocab_size > model_config.vocab_size:
        raise ValueError(
            f"the tokenizer has {tokenizer.vocab_size} tokens but the model's vocab_size is "
            f"{model_config.vocab_size}; set model.vocab_size={tokenizer.vocab_size}"
        )
    max_len = min(int(opts.get("max_len", 128)), model_config.max_tokens)
    encoder = BertEncoder(tokenizer, max_len)
    sequences = pack(encoder, corpus_lines(str(opts.get("corpus", "pydoc"))), max_len)
    n_eval = max(1, int(len(sequences) * float(opts.get("eval_fraction", 0.05))))
    generator = torch.Generator().manual_seed(0)  # a fixed split, whatever the run's seed
    order = torch.randperm(len(sequences), generator=generator).tolist()
    eval_rows = [sequences[i] for i in order[:n_eval]]
    train_rows = [sequences[i] for i in order[n_eval:]]
    whole_word = str(opts.get("whole_word", "false")).lower() in ("1", "true", "yes")
    collator = MLMCollator(
        model_config.vocab_size, encoder.mask_id, encoder.pad_id, encoder.special_ids,
        mlm_probability=float(opts.get("mlm_probability", 0.15)), whole_word=whole_word,
        continuation=_padded(continuation_mask(vocab_list(tokenizer)), model_config.vocab_size) if whole_word else None,
    )
    out_dir = Path(train_config.out_dir)
    tokenizer.save(out_dir / "tokenizer")  # the fine-tuning step needs the same vocabulary
    batches = MLMBatches(train_rows, eval_rows, collator, train_config.batch_size)
    return batches, batches


def _padded(mask: torch.Tensor, size: int) -> torch.Tensor:
    """Extend a per-token vector to the model's (possibly larger) vocabulary."""
    out = torch.zeros(size, dtype=torch.bool)
    out[: len(mask)] = mask
    return out
