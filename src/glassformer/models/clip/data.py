"""``glassformer train clip-shapes``'s data: the synthetic shapes set, tokenized for the text tower.

Training pictures come from the ``train`` split and the evaluation loss from ``test_seen`` (the
held-out compositions stay out of both, for the benchmark). The loss's caption ids are the
*composition* ids, so that paraphrases of one composition ("a red circle left of a star", "a star
right of a red circle") are not pushed apart as false negatives.

Captions are encoded with CLIP's BPE when the model has CLIP's vocabulary. A smaller vocabulary
(the ``-tiny`` twins) gets :class:`ShapesWordTokenizer`: one id per word of the set, which is all
the set ever says, framed by the model's start and end tokens.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from glassformer.data.shapes import (
    COLOURS,
    INVERSE_RELATIONS,
    PAIR_TEMPLATES,
    RELATIONS,
    SHAPES,
    SINGLE_TEMPLATES,
    SIZES,
    CaptionedImageData,
    ShapesConfig,
    ShapesDataError,
    shapes_split,
)
from glassformer.models.clip.config import CLIPConfig
from glassformer.registry import DataRequest
from glassformer.utils.config import unknown_keys_message

OPTIONS = ("n_train", "n_eval", "seed", "ids", "held_out", "supersample", "tokenizer")
CLIP_VOCAB_SIZE = 49408


def shapes_words() -> list[str]:
    """Every word a shapes caption can hold, in a fixed order (templates first, then the names)."""
    words: list[str] = []
    for template in (*SINGLE_TEMPLATES, *PAIR_TEMPLATES, *RELATIONS, *INVERSE_RELATIONS.values()):
        words += (
            template.replace("{a}", " ")
            .replace("{b}", " ")
            .replace("{rel}", " ")
            .replace("{inv}", " ")
            .split()
        )
    words += ["a", *SIZES, *COLOURS, *SHAPES]
    return list(dict.fromkeys(words))


class ShapesWordTokenizer:
    """Word-level ids for the shapes captions: ``SOT word ... EOT``, for models too small for CLIP's BPE."""

    def __init__(self, bos_token_id: int, eos_token_id: int) -> None:
        words = shapes_words()
        if min(bos_token_id, eos_token_id) < len(words):
            raise ShapesDataError(
                f"the shapes set has {len(words)} words but the model's special tokens start at id "
                f"{min(bos_token_id, eos_token_id)}; use a vocabulary of at least {len(words) + 2} ids"
            )
        self.ids = {w: i for i, w in enumerate(words)}
        self.bos_token_id, self.eos_token_id = bos_token_id, eos_token_id

    def __call__(self, text: str) -> list[int]:
        unknown = [w for w in text.lower().split() if w not in self.ids]
        if unknown:
            raise ShapesDataError(
                f"words {unknown[:3]} are not shapes-set words; use CLIP's BPE (data.tokenizer=clip)"
            )
        return [self.bos_token_id, *(self.ids[w] for w in text.lower().split()), self.eos_token_id]


class _BPECaptions:
    """CLIP's BPE as a text -> ids callable: ``SOT caption EOT``, refusing captions over the context."""

    def __init__(self, context_length: int) -> None:
        from glassformer.tokenizers.clip import CLIPTokenizer

        self.tokenizer = CLIPTokenizer.from_merges_file(context_length=context_length)
        self.context_length = context_length

    def __call__(self, text: str) -> list[int]:
        ids = self.tokenizer.encode(text, add_special_tokens=True)
        if len(ids) > self.context_length:
            raise ShapesDataError(
                f"caption {text!r} has {len(ids)} tokens, over the {self.context_length}-token context"
            )
        return list(ids)


def caption_tokenizer(config: CLIPConfig, kind: str | None = None) -> Any:
    """The text -> ids callable for ``config``: ``"clip"`` (BPE) or ``"words"``; default by vocabulary size."""
    kind = kind or ("clip" if config.vocab_size >= CLIP_VOCAB_SIZE else "words")
    if kind == "clip":
        if config.vocab_size < CLIP_VOCAB_SIZE:
            raise ShapesDataError(
                f"CLIP's BPE needs vocab_size >= {CLIP_VOCAB_SIZE}, the model has {config.vocab_size}; "
                "use data.tokenizer=words"
            )
        return _BPECaptions(config.max_seq_len)
    if kind == "words":
        return ShapesWordTokenizer(config.bos_token_id, config.eos_token_id)
    raise ShapesDataError(f"data.tokenizer={kind!r}; expected 'clip' or 'words'")


def shapes_dataset(
    split: str, n: int, config: CLIPConfig, options: Mapping[str, Any] | None = None
) -> CaptionedImageData:
    """``n`` pictures of ``split`` drawn at the model's image size, tokenized for ``config``."""
    options = dict(options or {})
    shapes = ShapesConfig(image_size=config.vision.image_size, supersample=int(options.get("supersample", 4)),
                          **({"held_out": options["held_out"]} if "held_out" in options else {}))  # fmt: skip
    pairs = shapes_split(split, n, seed=int(options.get("seed", 0)), config=shapes, show_progress=n >= 5000)
    tokenizer = caption_tokenizer(config, options.get("tokenizer"))
    return pairs.dataset(ids=str(options.get("ids", "composition")), image_size=config.vision.image_size,
                         channels=config.vision.in_channels, tokenizer=tokenizer, pad_id=config.pad_token_id)  # fmt: skip


def build_shapes_data(
    train_config: Any, model_config: CLIPConfig, request: DataRequest
) -> tuple[CaptionedImageData, CaptionedImageData]:
    """Training (``train``) and evaluation (``test_seen``) pairs. Options (``data.KEY=VALUE``):
    ``n_train`` (100000), ``n_eval`` (1000), ``seed`` (0), ``ids`` ("composition" or "caption"),
    ``held_out`` (comma-separated rules), ``supersample`` (4), ``tokenizer`` ("clip" or "words")."""
    options = dict(request.options)
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ValueError(
            "unknown data option: " + unknown_keys_message(unknown, list(OPTIONS), "shapes data")
        )
    if model_config.vision.in_channels != 3:
        raise ValueError(
            f"the shapes pictures are colour: the image tower needs in_channels=3, not {model_config.vision.in_channels}"
        )
    train = shapes_dataset("train", int(options.get("n_train", 100_000)), model_config, options)
    return train, shapes_dataset("test_seen", int(options.get("n_eval", 1000)), model_config, options)
