"""Text -> token files, and the data of ``glassformer train`` for causal language models.

``prepare(source, tokenizer_kind, out_dir)`` does what nanoGPT's ``data/*/prepare.py`` scripts
do: read the text, split it 90/10 into train and validation *by characters* (the validation
text is the end of the file), build a tokenizer, encode both parts and write the token files
(``glassformer.data.tokens``). With ``tokenizer_kind="char"`` the vocabulary is the sorted set of
characters of the whole text, so for Tiny Shakespeare the ids equal nanoGPT's shakespeare_char.
With ``"bpe"`` a byte-level BPE is learned from the training part.

The default text is Tiny Shakespeare from the shared data folder
(``glassformer.utils.paths.data_root()``), and where it is absent the corpus every Python
installation carries: the help text of ``pydoc_data.topics`` (about 465,000 characters).
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from glassformer.data.tokens import TokenData, token_dtype, write_meta, write_tokens
from glassformer.utils.config import unknown_keys_message
from glassformer.utils.paths import data_file

if TYPE_CHECKING:
    from glassformer.registry import DataRequest

TokenizerKind = Literal["char", "bpe"]
TOKENIZER_KINDS = ("char", "bpe")
EMBEDDED_NAME = "embedded:pydoc_data.topics"


def embedded_corpus() -> str:
    """Python's own help text (``pydoc_data.topics``): always installed, in a stable order."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[key].strip() for key in sorted(topics)) + "\n"


def default_corpus() -> tuple[str, str]:
    """``(text, name)``: Tiny Shakespeare when the shared data has it, else the embedded corpus."""
    path = data_file("tinyshakespeare", "input.txt")
    if path is not None:
        return path.read_text(encoding="utf-8"), str(path)
    return embedded_corpus(), EMBEDDED_NAME


def read_source(source: str | os.PathLike[str] | None) -> tuple[str, str]:
    """``(text, name)`` of a file, of ``"embedded"``, or of the default corpus when ``source`` is None."""
    if source is None:
        return default_corpus()
    if str(source) in ("embedded", EMBEDDED_NAME):
        return embedded_corpus(), EMBEDDED_NAME
    path = Path(source).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: text file not found")
    try:
        return path.read_text(encoding="utf-8"), str(path)
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text (byte {err.start}): {err.reason}") from None


def make_tokenizer(kind: str, train_text: str, all_text: str, vocab_size: int | None, progress: bool) -> Any:
    from glassformer.tokenizers import CharTokenizer, train_bpe

    if kind == "char":
        return CharTokenizer.from_text(all_text)
    if kind == "bpe":
        return train_bpe([train_text], vocab_size or 1024, show_progress=progress)
    raise ValueError(f"unknown tokenizer kind {kind!r}; expected one of {list(TOKENIZER_KINDS)}")


def prepare(
    source: str | os.PathLike[str] | None,
    tokenizer_kind: TokenizerKind = "char",
    out_dir: str | os.PathLike[str] = "out/data",
    *,
    vocab_size: int | None = None,
    val_fraction: float = 0.1,
    progress: bool = True,
) -> TokenData:
    """Tokenize a text into ``out_dir`` (``train.bin``, ``val.bin``, ``meta.json``, tokenizer files).

    ``source``: a UTF-8 text file, ``"embedded"``, or None for the default corpus.
    ``vocab_size``: the BPE vocabulary to learn (default 1024); ignored for ``"char"``.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction}")
    if tokenizer_kind not in TOKENIZER_KINDS:
        raise ValueError(f"unknown tokenizer kind {tokenizer_kind!r}; expected one of {list(TOKENIZER_KINDS)}")
    text, name = read_source(source)
    if len(text) < 100:
        raise ValueError(f"{name}: only {len(text)} characters; a language model needs more text than that")
    cut = int(len(text) * (1.0 - val_fraction))
    train_text, val_text = text[:cut], text[cut:]
    tokenizer = make_tokenizer(tokenizer_kind, train_text, text, vocab_size, progress)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save(out)
    n = tokenizer.vocab_size
    counts = {split: write_tokens(out / f"{split}.bin", tokenizer.encode(part), n)
              for split, part in (("train", train_text), ("val", val_text))}  # fmt: skip
    write_meta(out, {
        "source": name, "tokenizer": tokenizer_kind, "vocab_size": n, "dtype": token_dtype(n).name,
        "train_tokens": counts["train"], "val_tokens": counts["val"], "characters": len(text),
        "val_fraction": val_fraction,
    })  # fmt: skip
    return TokenData(out)


def causal_lm_data(train_config: Any, model_config: Any, request: DataRequest) -> tuple[Any, Any]:
    """The data builder ``glassformer train`` calls for GPT presets (``request.options``: the data options).

    Options (``data.KEY=VALUE`` on the command line, or a ``data:`` section in the YAML file):
    ``dir`` (a prepared folder), else ``text`` (a file; default: Tiny Shakespeare or the embedded
    corpus) with ``tokenizer`` (char | bpe) and ``vocab_size``; ``block_size`` (default: the
    model's). Text is prepared into ``<out_dir>/data``. The tokenizer is also saved into
    ``out_dir``, next to ``best/`` and ``checkpoints/``, for generation.
    """
    options = dict(request.options)
    known = {"dir", "text", "tokenizer", "vocab_size", "block_size", "val_fraction"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError("unknown data option: " + unknown_keys_message(unknown, sorted(known), "causal-LM data"))
    if "dir" in options:
        data = TokenData(options["dir"])
    else:
        data = _prepared(Path(train_config.out_dir) / "data", options, train_config.progress)
    if data.vocab_size > model_config.vocab_size:
        hint = " (Tiny Shakespeare is absent, so the text is the embedded corpus: `glassformer train pydoc-char` fits it)"
        raise ValueError(
            f"the data's tokenizer has {data.vocab_size} tokens ({data.meta['source']}) but the model's "
            f"vocab_size is {model_config.vocab_size}; pass model.vocab_size={data.vocab_size}"
            + (hint if data.meta["source"] == EMBEDDED_NAME and "text" not in options else "")
        )
    block_size = int(options.get("block_size", model_config.max_seq_len))
    if not 0 < block_size <= model_config.max_seq_len:
        raise ValueError(f"data.block_size={block_size} must lie in [1, model max_seq_len={model_config.max_seq_len}]")
    data.tokenizer().save(train_config.out_dir)
    return data.batch_fn(train_config.batch_size, block_size), data.batch_fn(train_config.batch_size, block_size)


def embedded_lm_data(train_config: Any, model_config: Any, request: DataRequest) -> tuple[Any, Any]:
    """:func:`causal_lm_data` defaulting to the embedded corpus (the ``pydoc-char`` preset)."""
    options = dict(request.options)
    if "dir" not in options:
        options.setdefault("text", "embedded")
    return causal_lm_data(train_config, model_config, replace(request, options=options))


def _prepared(folder: Path, options: dict[str, Any], progress: bool) -> TokenData:
    """Reuse ``folder`` when it was prepared from the same text with the same tokenizer."""
    kind = options.get("tokenizer", "char")
    source = options.get("text")
    _, name = read_source(source) if source is not None else default_corpus()
    vocab = options.get("vocab_size")
    val_fraction = float(options.get("val_fraction", 0.1))
    if (folder / "meta.json").is_file():
        try:
            data = TokenData(folder)
        except (ValueError, FileNotFoundError):
            data = None
        if data is not None and (data.meta["source"], data.meta["tokenizer"], data.meta["val_fraction"]) == (
            name, kind, val_fraction
        ) and (vocab is None or kind == "char" or data.vocab_size == vocab):
            return data
    return prepare(source, kind, folder, vocab_size=vocab, val_fraction=val_fraction, progress=progress)
