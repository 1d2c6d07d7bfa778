"""Translate sentences with an encoder-decoder checkpoint, and score one on Multi30k with corpus BLEU.

``translate(model, tokenizer, texts)`` frames each source as the model was trained (the tokenizer's
template: ``... </s>`` for T5 and the Transformer, ``<s> ... </s>`` for BART; T5's task prefix in
front), decodes with ``glassformer.generate`` (beam 4 by default) and returns the detokenized
targets. ``score_bleu`` translates a Multi30k split and scores it with
``glassformer.metrics.corpus_bleu`` (sacreBLEU's 13a tokenization, ``BLEU_SIGNATURE``), so a
benchmark and ``glassformer translate --bleu test`` report the same number.

What a training run learned is read from its ``translation.json`` (written by the Multi30k data
builders beside the tokenizer): a model trained on en-de only refuses de-en instead of producing
confident nonsense.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from glassformer.data.multi30k import RUN_RECORD, load_pairs, parse_direction, task_prefix
from glassformer.generate import generate
from glassformer.metrics.bleu import BLEUScore, corpus_bleu

# What our corpus_bleu computes, in sacreBLEU's signature format (it equals sacrebleu's score, tested).
BLEU_SIGNATURE = "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:glassformer"


@dataclass
class Translator:
    """A model, its tokenizer, and the directions its training run learned (empty: not recorded)."""

    model: nn.Module
    tokenizer: Any
    directions: tuple[str, ...] = ()
    name: str = ""


def _run_record(folder: Path) -> dict[str, Any]:
    """``translation.json`` beside the weights or up to two levels above (a run's ``best/``, ``checkpoints/step-N``)."""
    for candidate in (folder, folder.parent, folder.parent.parent):
        path = candidate / RUN_RECORD
        if path.is_file():
            try:
                return dict(json.loads(path.read_text(encoding="utf-8")))
            except (ValueError, TypeError) as err:
                raise ValueError(f"{path}: not a translation record ({err}); delete it or rerun the data builder") from None
    return {}


def load_translator(path: str | os.PathLike[str]) -> Translator:
    """Open an encoder-decoder checkpoint for translation, with its tokenizer and run record."""
    from glassformer.generate.loading import load_checkpoint

    folder = Path(path).expanduser()
    checkpoint = load_checkpoint(folder)
    if not hasattr(checkpoint.model, "encode_for_generation"):
        raise ValueError(f"{folder} holds a decoder-only model; translate needs an encoder-decoder (transformer, t5, bart)")
    directions = tuple(_run_record(folder).get("directions", ())) if folder.is_dir() else ()
    return Translator(checkpoint.model, checkpoint.tokenizer, directions, checkpoint.name)


def source_prefix(model: nn.Module, direction: str, directions: Sequence[str] = ()) -> str:
    """The text put before each source: T5's task prefix for models that read one, else nothing.

    A direction the run did not learn is refused; a prefix the model's config does not know is warned about.
    """
    parse_direction(direction)
    if directions and direction not in directions:
        raise ValueError(f"this model was trained to translate {', '.join(directions)} only, not {direction}; "
                         f"pass --direction {directions[0]} (or train it on {direction})")  # fmt: skip
    known = tuple(getattr(model.config, "task_prefixes", ()) or ())
    if not known:
        return ""
    prefix = task_prefix(direction)
    if prefix not in known:
        warnings.warn(f"{prefix!r} is not a task prefix this model was trained with (it knows {list(known)}); "
                      "its translation is unlikely to mean anything", UserWarning, stacklevel=2)  # fmt: skip
    return prefix


def encode_sources(model: nn.Module, tokenizer: Any, texts: Sequence[str], prefix: str = "") -> list[list[int]]:
    """Framed source ids, each checked: not empty, within the model's positions and vocabulary."""
    if isinstance(texts, str):
        raise TypeError("translate takes a list of sentences, not one string: wrap it in a list")
    vocab = int(getattr(model.config, "vocab_size", tokenizer.vocab_size))
    if tokenizer.vocab_size > vocab:
        raise ValueError(f"the tokenizer has {tokenizer.vocab_size} tokens but the model embeds {vocab}: use the "
                         "tokenizer the model was trained with (the one saved in its run's out_dir)")  # fmt: skip
    out = []
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"source {i} is empty ({text!r}); give a sentence to translate")
        ids = tokenizer.encode(prefix + text, add_special_tokens=True)
        if len(ids) > model.max_seq_len:
            raise ValueError(f"source {i} is {len(ids)} tokens long but the model reads at most max_seq_len="
                             f"{model.max_seq_len}; split it into shorter sentences")  # fmt: skip
        out.append(ids)
    return out


def translate(
    model: nn.Module, tokenizer: Any, texts: Sequence[str], *, direction: str = "en-de",
    directions: Sequence[str] = (), strategy: str = "beam", num_beams: int = 4, length_penalty: float = 1.0,
    max_new_tokens: int | None = None, batch_size: int = 32, **generation: Any,
) -> list[str]:  # fmt: skip
    """The translation of each text, in order. Sources are decoded ``batch_size`` at a time, sorted
    by length so that little padding is computed (a padded row decodes exactly as alone).

    ``max_new_tokens`` defaults to twice the longest source plus 10, capped by the model's
    positions; ``generation`` passes more ``GenerationConfig`` fields (``cache``, ``cpu_kernels`` ...).
    """
    sources = encode_sources(model, tokenizer, texts, source_prefix(model, direction, directions))
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    if eos is None or pad is None:
        raise ValueError("the tokenizer names no eos or pad token (tokenizer_config.json eos_token / pad_token)")
    beams = {"num_beams": num_beams, "length_penalty": length_penalty} if strategy == "beam" else {}
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    out: list[str] = [""] * len(sources)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        batch = [sources[i] for i in rows]
        limit = max_new_tokens or min(model.max_seq_len, 2 * max(map(len, batch)) + 10)
        result = generate(model, batch, strategy=strategy, max_new_tokens=limit, stop_token_ids=(eos,),
                          pad_token_id=pad, **beams, **generation)  # fmt: skip
        for i, tokens in zip(rows, result.tokens):
            out[i] = tokenizer.decode(tokens, skip_special_tokens=True).strip()
    return out


@dataclass
class BleuReport:
    """A system's corpus BLEU on a split, with everything needed to check or recompute it."""

    bleu: BLEUScore
    signature: str
    split: str
    direction: str
    sources: list[str]
    hypotheses: list[str]
    references: list[str]

    def __str__(self) -> str:
        return f"Multi30k {self.split} {self.direction}: {self.bleu} [{self.signature}]"


def score_bleu(
    model: nn.Module, tokenizer: Any, *, split: str = "test", direction: str = "en-de",
    directions: Sequence[str] = (), limit: int | None = None, root: str | os.PathLike[str] | None = None,
    **options: Any,
) -> BleuReport:  # fmt: skip
    """Translate a Multi30k split (``test`` = test2016, 1,000 sentences; ``limit``: the first ones)
    with :func:`translate` (beam 4 unless ``options`` say otherwise) and score it with corpus BLEU."""
    pairs = load_pairs(split, direction, root, limit)
    sources, references = [s for s, _ in pairs], [t for _, t in pairs]
    hypotheses = translate(model, tokenizer, sources, direction=direction, directions=directions, **options)
    bleu = corpus_bleu(hypotheses, [references])
    return BleuReport(bleu, BLEU_SIGNATURE, split, direction, sources, hypotheses, references)


def score_checkpoint(path: str | os.PathLike[str], **options: Any) -> BleuReport:
    """:func:`score_bleu` of the checkpoint at ``path`` (a run's ``best/``, a checkpoint folder)."""
    translator = load_translator(path)
    options.setdefault("directions", translator.directions)
    return score_bleu(translator.model, translator.tokenizer, **options)
