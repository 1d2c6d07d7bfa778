"""CLIP's text tokenizer (Radford et al. 2021): byte-level BPE with word ends, lower case, 77 tokens.

It is GPT-2's byte-level BPE (``bpe.ByteLevelBPE``, which this class extends) with four changes:

1. the text is cleaned first: Unicode NFC, every run of whitespace becomes one space, lower case;
2. the pieces are letter runs, single digits, runs of other symbols and English contractions;
   spaces only separate pieces and are dropped (GPT-2 keeps a space on the next word). A special
   token spelled out in the text with other letter case (``<|ENDOFTEXT|>``) is not special: it
   becomes ``<|``, ``endoftext``, ``|>``, as transformers' GPT-2 regex step cuts it;
3. the last symbol of every piece carries ``</w>`` ("word end"), so ``cat</w>`` (the word) and
   ``cat`` (the start of ``catalog``) are different tokens and decoding turns ``</w>`` back into
   a space;
4. a caption is framed as ``<|startoftext|> ... <|endoftext|>`` and cut to the 77-position context
   the text tower was built for (:meth:`CLIPTokenizer.encode_captions` warns when it cuts).

The vocabulary is not stored anywhere: it is rebuilt from the merges file the way OpenAI's
``simple_tokenizer.py`` does (:func:`clip_vocab`): the 256 byte characters, the same 256 with
``</w>``, one token per merge (the file's first 48,894), then the two special tokens: 49,408 ids.
The ids equal ``transformers``' ``CLIPTokenizer`` on the same files (``tests/tokenizers``).
"""

from __future__ import annotations

import gzip
import unicodedata
import warnings
from collections.abc import Sequence
from itertools import chain
from pathlib import Path
from typing import Any, Literal

import regex

from glassformer.tokenizers import files
from glassformer.tokenizers.base import (
    BatchEncoding,
    PathLike,
    Template,
    TemplateItem,
    TokenizerBackend,
    max_length_from_config,
    special_tokens_from_json,
)
from glassformer.tokenizers.bpe import ByteLevelBPE
from glassformer.tokenizers.pretokenize import GPT2_PATTERN, bytes_to_unicode
from glassformer.utils.paths import data_file

SOT, EOT = "<|startoftext|>", "<|endoftext|>"
WORD_END = "</w>"
CONTEXT_LENGTH = 77  # positions of CLIP's text tower, the two special tokens included
N_MERGES = 49152 - 256 - 2  # what OpenAI reads of the merges file: a 49,408-token vocabulary
MERGES_FILE = ("tokenizers", "clip_bpe_simple_vocab_16e6.txt.gz")  # under GLASSFORMER_DATA
# Pieces: the special tokens, contractions, letter runs, one digit, runs of anything else but space.
CLIP_PATTERN = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
_WHITESPACE = regex.compile(r"\s+")


def clean_text(text: str) -> str:
    """NFC, whitespace runs -> one space, lower case: what the ids are computed from.

    Lower-casing goes character by character, as the ``tokenizers`` library does, so a final
    capital sigma becomes ``σ`` (Python's ``str.lower`` of a whole word would give ``ς``)."""
    text = _WHITESPACE.sub(" ", unicodedata.normalize("NFC", text))
    return "".join(map(str.lower, text))


def read_clip_merges(path: PathLike | None = None) -> list[tuple[str, str]]:
    """The merges CLIP uses from ``bpe_simple_vocab_16e6.txt.gz`` (default: the shared data copy).

    Line 1 is a ``#version`` header; the next 48,894 lines are the merges, in rank order."""
    source = Path(path) if path is not None else data_file(*MERGES_FILE)
    if source is None or not source.is_file():
        where = source if source is not None else "/".join(MERGES_FILE) + " under GLASSFORMER_DATA (../shared/data)"
        raise FileNotFoundError(
            f"CLIP's merges file was not found at {where}: set GLASSFORMER_DATA to the shared data folder "
            "(see its SOURCES.md) or pass the path of bpe_simple_vocab_16e6.txt.gz"
        )
    try:
        lines = gzip.decompress(source.read_bytes()).decode("utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as err:
        raise files.VocabFileError(f"{source}: not a gzip file of UTF-8 merges ({err})") from None
    merges = []
    for number, line in enumerate(lines[1 : N_MERGES + 1], start=2):
        if not line:
            break  # the end of the file: too few merges, reported below
        parts = line.split()
        if len(parts) != 2:
            raise files.VocabFileError(f"{source}, line {number}: a merge is two tokens, got {line!r}")
        merges.append((parts[0], parts[1]))
    if len(merges) != N_MERGES:
        raise files.VocabFileError(f"{source}: {len(merges)} merges, CLIP needs {N_MERGES}: is the file cut short?")
    return merges


def clip_vocab(merges: Sequence[tuple[str, str]]) -> dict[str, int]:
    """Token -> id as OpenAI builds it: bytes, bytes + ``</w>``, one per merge, then SOT and EOT.

    The byte characters come in code-point order (printable Latin-1 first, then the stand-ins
    from U+0100), which is the order of OpenAI's own ``bytes_to_unicode`` dict."""
    chars = sorted(bytes_to_unicode().values())
    tokens = [*chars, *(c + WORD_END for c in chars), *(a + b for a, b in merges), SOT, EOT]
    return {token: index for index, token in enumerate(tokens)}


def _clip_template() -> Template:
    """``SOT A EOT`` (and RoBERTa's ``SOT A EOT EOT B EOT`` for pairs), as transformers frames them."""
    sot, eot, a, b = (TemplateItem("special", SOT), TemplateItem("special", EOT),
                      TemplateItem("sequence", "A"), TemplateItem("sequence", "B"))  # fmt: skip
    return Template(single=(sot, a, eot), pair=(sot, a, eot, eot, b, eot))


class CLIPTokenizer(ByteLevelBPE):
    """CLIP's BPE: ``CLIPTokenizer.from_merges_file()`` reads the shared merges file."""

    kind = "clip"

    def __init__(
        self,
        vocab: dict[str, int],
        merges: Sequence[tuple[str, str]],
        *,
        context_length: int = CONTEXT_LENGTH,
        backend: TokenizerBackend = "pure",
    ) -> None:
        for token in (SOT, EOT):
            if token not in vocab:
                raise ValueError(f"a CLIP vocabulary needs the special token {token}; build it with clip_vocab(merges)")
        specials = {SOT: vocab[SOT], EOT: vocab[EOT]}
        ordinary = {t: i for t, i in vocab.items() if t not in specials}
        super().__init__(
            ordinary, merges, specials, pattern=CLIP_PATTERN, template=_clip_template(),
            roles={"bos": SOT, "eos": EOT, "pad": EOT, "unk": EOT}, model_max_length=context_length,
            backend=backend,
        )  # fmt: skip
        table = bytes_to_unicode()
        missing = [table[b] + WORD_END for b in range(256) if table[b] + WORD_END not in ordinary]
        if missing:
            raise ValueError(f"the vocabulary lacks word-end byte tokens such as {missing[:3]}: not a CLIP vocabulary")
        self._word_end_ids = [ordinary[table[b] + WORD_END] for b in range(256)]
        self._pieces = regex.compile(CLIP_PATTERN)
        self._gpt2_pieces = regex.compile(GPT2_PATTERN)

    @classmethod
    def from_merges_file(
        cls, path: PathLike | None = None, *, context_length: int = CONTEXT_LENGTH, backend: TokenizerBackend = "pure"
    ) -> CLIPTokenizer:
        """From ``bpe_simple_vocab_16e6.txt.gz`` (default: ``$GLASSFORMER_DATA/tokenizers/``)."""
        merges = read_clip_merges(path)
        return cls(clip_vocab(merges), merges, context_length=context_length, backend=backend)

    @property
    def context_length(self) -> int:
        assert self.model_max_length is not None  # always set by __init__
        return self.model_max_length

    # ---- encoding -----------------------------------------------------------------------------

    def split(self, text: str) -> list[str]:
        """The pieces BPE encodes one by one; whitespace between them is dropped.

        GPT-2's regex runs inside each piece, as in transformers' ``ByteLevel`` step: of CLIP's
        pieces it cuts only the spelled-out special tokens (``<|endoftext|>`` -> ``<|`` ``endoftext``
        ``|>``), the one kind that mixes letters and symbols."""
        pieces = self._pieces.findall(clean_text(text))
        return [p for piece in pieces for p in (self._gpt2_pieces.findall(piece) if piece in (SOT, EOT) else (piece,))]

    def _encode_ordinary(self, text: str) -> list[int]:
        return list(chain.from_iterable(map(self._cache.__getitem__, self.split(text))))

    def _symbol_ids(self, data: bytes) -> list[int | None]:
        ids = super()._symbol_ids(data)
        ids[-1] = self._word_end_ids[data[-1]]  # the piece's last byte ends a word: "t</w>"
        return ids

    def _decode(self, ids: list[int]) -> str:
        return super()._decode(ids).replace(WORD_END, " ").strip()

    def encode_captions(
        self,
        texts: str | Sequence[str],
        context_length: int | None = None,
        padding: Literal["max_length", "longest"] = "max_length",
    ) -> BatchEncoding:
        """``input_ids`` and ``attention_mask``, ``(B, context_length)`` ``torch.long`` tensors.

        Each row is ``SOT caption EOT`` padded with EOT (the text tower reads the state at the
        first EOT). A caption longer than the context is cut so that it still ends with EOT, and
        a warning names how many were cut: a silent cut would drop the end of a description."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        length = self.context_length if context_length is None else context_length
        if length < 3:
            raise ValueError(f"context_length={length}: CLIP needs room for SOT, one token and EOT")
        lengths = [len(ids) + 2 for ids in self._encode_many(texts, False)]
        cut = [i for i, n in enumerate(lengths) if n > length]
        if cut:
            warnings.warn(
                f"{len(cut)} caption(s) longer than the {length}-token context were truncated "
                f"(caption {cut[0]} has {lengths[cut[0]]} tokens); shorten them to keep their ends",
                stacklevel=2,
            )
        return self.encode_batch(texts, add_special_tokens=True, truncation=True, max_length=length,
                                 padding=padding, return_tensors="pt")  # fmt: skip

    # ---- files --------------------------------------------------------------------------------

    def to_hf_json(self) -> dict[str, Any]:
        """The ``tokenizer.json`` transformers' ``CLIPTokenizer`` builds (normalizer, split, ``</w>``)."""
        return self._hf_json_layout(
            normalizer={"type": "Sequence", "normalizers": [
                {"type": "NFC"}, {"type": "Replace", "pattern": {"Regex": r"\s+"}, "content": " "},
                {"type": "Lowercase"},
            ]},
            pre_tokenizer={"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": CLIP_PATTERN}, "behavior": "Removed", "invert": True},
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
            ]},
            decoder={"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
            model={
                "type": "BPE", "dropout": None, "unk_token": EOT, "continuing_subword_prefix": "",
                "end_of_word_suffix": WORD_END, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                "vocab": dict(sorted(self.vocab.items(), key=lambda item: item[1])),
                "merges": [list(m) for m in self.merges],
            },
        )  # fmt: skip

    @classmethod
    def from_hf_json(cls, data: dict[str, Any], source: str = "tokenizer.json",
                     config: dict[str, Any] | None = None) -> CLIPTokenizer:
        """A CLIP ``tokenizer.json`` (a BPE model with the ``</w>`` word-end suffix)."""
        model = data.get("model") or {}
        if model.get("type") != "BPE" or model.get("end_of_word_suffix") != WORD_END:
            raise ValueError(f"{source}: not a CLIP tokenizer (needs a BPE model with end_of_word_suffix '{WORD_END}')")
        vocab = {**files.check_vocab(model.get("vocab"), f"{source} (model.vocab)"),
                 **special_tokens_from_json(data, source)}  # fmt: skip
        merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model.get("merges") or []]
        length = max_length_from_config(config or {}) or CONTEXT_LENGTH
        return cls(vocab, merges, context_length=length)  # type: ignore[arg-type]

    def _save_extra_files(self, directory: Path) -> None:
        files.write_vocab_json(directory / "vocab.json", self.vocab)
        files.write_merges_txt(directory / "merges.txt", self.merges)
