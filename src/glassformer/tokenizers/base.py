"""The interface every glassformer tokenizer shares, and the parts that do not depend on the model.

A tokenizer turns text into ids in four stages, the same four the ``tokenizers`` library uses:

1. special tokens (``<|endoftext|>``, ``[CLS]``) are cut out of the raw text first and never split;
2. the text between them is normalized and cut into pieces (the subclass's business);
3. each piece becomes ids (BPE merges, WordPiece longest match, one id per character);
4. with ``add_special_tokens=True``, a template wraps the ids (BERT: ``[CLS] A [SEP] B [SEP]``).

This base class owns stages 1 and 4, batching (truncation, padding on either side, the attention
mask, tensors) and saving; subclasses implement ``_encode_ordinary`` and ``_decode``.

``backend="fast"`` hands stages 1-3 to the ``tokenizers`` library, built from the very same
vocabulary (``glassformer.tokenizers.fast``); stage 4 and batching stay here, so both backends
return identical ids.
"""

from __future__ import annotations

import copy
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar, Literal

import regex

from glassformer.tokenizers import files

PathLike = str | os.PathLike[str]
TokenizerBackend = Literal["pure", "fast"]  # not "Backend": that name is the attention kernels' (nn.attention)
ROLES = ("pad", "unk", "bos", "eos", "cls", "sep", "mask")


@dataclass(frozen=True)
class TemplateItem:
    """One slot of a template: a special token, or the sequence ``"A"``/``"B"`` itself."""

    kind: Literal["special", "sequence"]
    value: str  # the special token's text, or "A" / "B"
    type_id: int = 0


@dataclass(frozen=True)
class Template:
    """How ids are wrapped for a model: ``single`` for one text, ``pair`` for two."""

    single: tuple[TemplateItem, ...]
    pair: tuple[TemplateItem, ...]

    @classmethod
    def bert(cls, cls_token: str = "[CLS]", sep_token: str = "[SEP]") -> Template:
        s, a, b = TemplateItem, TemplateItem("sequence", "A", 0), TemplateItem("sequence", "B", 1)
        return cls(
            single=(s("special", cls_token), a, s("special", sep_token)),
            pair=(s("special", cls_token), a, s("special", sep_token), b, s("special", sep_token, 1)),
        )

    def special_count(self, pair: bool) -> int:
        return sum(item.kind == "special" for item in (self.pair if pair else self.single))

    def apply(self, a: list[int], b: list[int] | None, ids: dict[str, int]) -> tuple[list[int], list[int]]:
        out: list[int] = []
        types: list[int] = []
        for item in self.pair if b is not None else self.single:
            if item.kind == "special":
                out.append(ids[item.value])
                types.append(item.type_id)
            else:
                seq = a if item.value == "A" else (b or [])
                out.extend(seq)
                types.extend([item.type_id] * len(seq))
        return out, types

    # the tokenizers library's TemplateProcessing JSON
    def to_json(self, ids: dict[str, int]) -> dict[str, Any]:
        def items(template: tuple[TemplateItem, ...]) -> list[dict[str, Any]]:
            return [{"SpecialToken" if t.kind == "special" else "Sequence": {"id": t.value, "type_id": t.type_id}}
                    for t in template]
        specials = sorted({t.value for t in self.single + self.pair if t.kind == "special"})
        return {
            "type": "TemplateProcessing",
            "single": items(self.single),
            "pair": items(self.pair),
            "special_tokens": {s: {"id": s, "ids": [ids[s]], "tokens": [s]} for s in specials},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any] | None, source: str) -> Template | None:
        """TemplateProcessing, BertProcessing or RobertaProcessing (alone or in a Sequence), else None."""
        if data is None:
            return None
        kind = data.get("type")
        if kind == "Sequence":
            found = [t for p in data.get("processors", []) if (t := cls.from_json(p, source)) is not None]
            if len(found) > 1:
                raise ValueError(f"{source}: more than one template post-processor")
            return found[0] if found else None
        if kind == "ByteLevel":
            return None  # it only adjusts character offsets
        if kind == "BertProcessing":
            return cls.bert(data["cls"][0], data["sep"][0])
        if kind == "RobertaProcessing":
            c, s = data["cls"][0], data["sep"][0]
            sp, a, b = (lambda t: TemplateItem("special", t)), TemplateItem("sequence", "A"), TemplateItem("sequence", "B")
            return cls(single=(sp(c), a, sp(s)), pair=(sp(c), a, sp(s), sp(s), b, sp(s)))
        if kind == "TemplateProcessing":
            def parse(entries: list[dict[str, Any]]) -> tuple[TemplateItem, ...]:
                out = []
                for entry in entries:
                    if "SpecialToken" in entry:
                        out.append(TemplateItem("special", entry["SpecialToken"]["id"],
                                                entry["SpecialToken"].get("type_id", 0)))
                    else:
                        out.append(TemplateItem("sequence", entry["Sequence"]["id"], entry["Sequence"].get("type_id", 0)))
                return tuple(out)
            for name, spec in data.get("special_tokens", {}).items():
                if len(spec.get("ids", [])) != 1:
                    raise ValueError(f"{source}: template special token {name!r} must map to exactly one id")
            return cls(single=parse(data["single"]), pair=parse(data["pair"]))
        raise ValueError(f"{source}: post-processor type {kind!r} is not supported")


class BatchEncoding(dict):
    """``{"input_ids": ..., "attention_mask": ...}`` whose keys can also be read as attributes."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class Tokenizer(ABC):
    """Text <-> ids. Subclasses: ``ByteLevelBPE``, ``WordPiece``, ``CharTokenizer``."""

    kind: ClassVar[str]
    # BERT-style models take segment ids; GPT-style ones would reject the extra input.
    returns_token_type_ids: ClassVar[bool] = False

    def __init__(
        self,
        *,
        special_tokens: dict[str, int] | None = None,
        template: Template | None = None,
        roles: dict[str, str] | None = None,
        model_max_length: int | None = None,
        backend: TokenizerBackend = "pure",
    ) -> None:
        self.special_tokens: dict[str, int] = dict(special_tokens or {})
        self.template = template
        self.roles: dict[str, str] = {}
        for role, token in (roles or {}).items():
            if role not in ROLES:
                raise ValueError(f"unknown special-token role {role!r}; valid: {list(ROLES)}")
            if token not in self.special_tokens:
                raise ValueError(f"{role} token {token!r} is not one of the special tokens {list(self.special_tokens)}")
            self.roles[role] = token
        if template is not None:
            missing = {t.value for t in template.single + template.pair if t.kind == "special"} - set(self.special_tokens)
            if missing:
                raise ValueError(f"template uses {sorted(missing)}, which are not special tokens")
        self.model_max_length = model_max_length
        if backend not in ("pure", "fast"):
            raise ValueError(f"backend must be 'pure' or 'fast', got {backend!r}")
        self.backend: TokenizerBackend = backend
        self._special_ids = frozenset(self.special_tokens.values())
        # Longest first, so that when one special token starts another the longer one wins.
        alternatives = sorted(self.special_tokens, key=len, reverse=True)
        self._special_re = regex.compile("(" + "|".join(map(regex.escape, alternatives)) + ")") if alternatives else None
        self._hf: Any = None

    # ---- what subclasses provide ----------------------------------------------------------

    @abstractmethod
    def _encode_ordinary(self, text: str) -> list[int]:
        """Ids of text that holds no special token (stages 2-3)."""

    @abstractmethod
    def _decode(self, ids: list[int]) -> str:
        """Text of ids (special ones included, already checked to be valid ids)."""

    @property
    @abstractmethod
    def vocab(self) -> dict[str, int]:
        """Every token, special ones included, with its id."""

    @abstractmethod
    def id_to_token(self, index: int) -> str | None: ...

    @abstractmethod
    def to_hf_json(self) -> dict[str, Any]:
        """The whole tokenizer as the ``tokenizers`` library's ``tokenizer.json``."""

    @classmethod
    @abstractmethod
    def from_hf_json(cls, data: dict[str, Any], source: str = "tokenizer.json",
                     config: dict[str, Any] | None = None) -> Tokenizer:
        """From a parsed ``tokenizer.json`` (and ``tokenizer_config.json``, for special-token roles)."""

    def _save_extra_files(self, directory: Path) -> None:
        """Formats other tools read besides tokenizer.json (GPT-2's vocab.json, BERT's vocab.txt)."""
        return None  # the character tokenizer has none

    def _config_extras(self) -> dict[str, Any]:
        return {}

    # ---- vocabulary ---------------------------------------------------------------------------

    def token_to_id(self, token: str) -> int | None:
        return self.vocab.get(token)

    @cached_property  # the vocabulary never changes after construction, and decode asks often
    def vocab_size(self) -> int:
        """Rows the embedding table needs: the largest id plus one."""
        return max(self.vocab.values()) + 1

    def __len__(self) -> int:
        return self.vocab_size

    def _role_id(self, role: str) -> int | None:
        token = self.roles.get(role)
        return None if token is None else self.special_tokens[token]

    @property
    def pad_token_id(self) -> int | None:
        return self._role_id("pad")

    @property
    def unk_token_id(self) -> int | None:
        return self._role_id("unk")

    @property
    def bos_token_id(self) -> int | None:
        return self._role_id("bos")

    @property
    def eos_token_id(self) -> int | None:
        return self._role_id("eos")

    # ---- encoding -----------------------------------------------------------------------------

    def with_backend(self, backend: TokenizerBackend) -> Tokenizer:
        """The same tokenizer (sharing its tables) encoding with ``"pure"`` Python or ``"fast"``."""
        if backend not in ("pure", "fast"):
            raise ValueError(f"backend must be 'pure' or 'fast', got {backend!r}")
        twin = copy.copy(self)
        twin.backend = backend
        return twin

    def _fast(self) -> Any:
        if self._hf is None:
            from glassformer.tokenizers.fast import to_hf_tokenizer

            self._hf = to_hf_tokenizer(self)
        return self._hf

    def _encode_text(self, text: str, split_special_tokens: bool = False) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"expected a text string, got {type(text).__name__}")
        if self.backend == "fast":
            return self._encode_many([text], split_special_tokens)[0]
        if self._special_re is None or split_special_tokens:
            return self._encode_ordinary(text)
        out: list[int] = []
        for i, part in enumerate(self._special_re.split(text)):
            if i % 2:  # the captured separators are the special tokens
                out.append(self.special_tokens[part])
            elif part:
                out.extend(self._encode_ordinary(part))
        return out

    def _encode_many(self, texts: Sequence[str], split_special_tokens: bool) -> list[list[int]]:
        if self.backend == "fast" and texts:
            for text in texts:
                if not isinstance(text, str):
                    raise TypeError(f"expected text strings, got {type(text).__name__}")
            hf = self._fast()
            hf.encode_special_tokens = split_special_tokens
            try:
                if len(texts) == 1:  # one text: no thread pool, the single-threaded speed
                    return [hf.encode(texts[0], add_special_tokens=False).ids]
                return [e.ids for e in hf.encode_batch(list(texts), add_special_tokens=False)]
            except Exception as err:  # the library raises a bare Exception (e.g. an unknown character)
                raise ValueError(f"the fast tokenizer failed: {err}") from None
        return [self._encode_text(t, split_special_tokens) for t in texts]

    def _wrap(self, a: list[int], b: list[int] | None, add_special_tokens: bool) -> tuple[list[int], list[int]]:
        if add_special_tokens and self.template is not None:
            return self.template.apply(a, b, self.special_tokens)
        ids = a + (b or [])
        return ids, [0] * len(a) + [1] * len(b or [])

    def encode(
        self,
        text: str,
        pair: str | None = None,
        *,
        add_special_tokens: bool = False,
        split_special_tokens: bool = False,
    ) -> list[int]:
        """The ids of ``text`` (and ``pair`` after it).

        Special tokens written in the text (``<|endoftext|>``) become their single id unless
        ``split_special_tokens``. The model's template (``[CLS] ... [SEP]``) is added only with
        ``add_special_tokens=True``: code that builds model inputs adds its own framing.
        """
        a = self._encode_text(text, split_special_tokens)
        b = None if pair is None else self._encode_text(pair, split_special_tokens)
        return self._wrap(a, b, add_special_tokens)[0]

    def tokenize(self, text: str) -> list[str]:
        """The token strings of ``text`` (in the vocabulary's spelling: ``Ġ`` for a space in BPE)."""
        return [self.id_to_token(i) or "" for i in self.encode(text)]

    def decode(self, ids: Sequence[int] | Any, *, skip_special_tokens: bool = False) -> str:
        """Text of ``ids`` (a list, or a 1-D tensor/array)."""
        ids = [int(i) for i in (ids.tolist() if hasattr(ids, "tolist") else ids)]
        size = self.vocab_size
        for i in ids:
            if not 0 <= i < size or self.id_to_token(i) is None:
                raise ValueError(f"id {i} is not in the vocabulary (ids run 0..{size - 1})")
        if skip_special_tokens:
            ids = [i for i in ids if i not in self._special_ids]
        return self._decode(ids)

    def decode_batch(self, batch: Sequence[Sequence[int]] | Any, *, skip_special_tokens: bool = False) -> list[str]:
        rows = batch.tolist() if hasattr(batch, "tolist") else batch
        return [self.decode(row, skip_special_tokens=skip_special_tokens) for row in rows]

    def encode_batch(
        self,
        texts: Sequence[str],
        pairs: Sequence[str] | None = None,
        *,
        add_special_tokens: bool = False,
        padding: bool | Literal["longest", "max_length"] = False,
        truncation: bool = False,
        max_length: int | None = None,
        padding_side: Literal["right", "left"] = "right",
        pad_to_multiple_of: int | None = None,
        pad_id: int | None = None,
        return_tensors: Literal["pt"] | None = None,
        split_special_tokens: bool = False,
    ) -> BatchEncoding:
        """Encode several texts into ``input_ids`` and ``attention_mask`` (1 = real token, 0 = padding).

        ``truncation`` cuts each example to ``max_length`` ids, the template's special tokens
        included (for pairs, the longer text is cut first, as the ``tokenizers`` library does).
        ``padding=True``/``"longest"`` pads to the longest example, ``"max_length"`` to
        ``max_length``; ``padding_side="left"`` puts the padding first (what batched generation
        with a decoder wants). ``return_tensors="pt"`` gives ``torch.long`` tensors.
        """
        if isinstance(texts, str):
            raise TypeError("encode_batch takes a list of texts; use encode for one text")
        if pairs is not None and len(pairs) != len(texts):
            raise ValueError(f"got {len(texts)} texts but {len(pairs)} pairs")
        if padding_side not in ("right", "left"):
            raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
        if padding not in (False, True, "longest", "max_length"):
            raise ValueError(f"padding must be False, True, 'longest' or 'max_length', got {padding!r}")
        if max_length is None and (truncation or padding == "max_length"):
            max_length = self.model_max_length
            if max_length is None:
                raise ValueError("truncation and padding='max_length' need max_length (the tokenizer sets none)")
        firsts = self._encode_many(texts, split_special_tokens)
        seconds = self._encode_many(pairs, split_special_tokens) if pairs is not None else [None] * len(firsts)
        rows: list[list[int]] = []
        type_rows: list[list[int]] = []
        for a, b in zip(firsts, seconds):
            if truncation:
                assert max_length is not None
                special = self.template.special_count(b is not None) if add_special_tokens and self.template else 0
                a, b = truncate_pair(a, b, max_length - special)
            ids, types = self._wrap(a, b, add_special_tokens)
            rows.append(ids)
            type_rows.append(types)
        masks = [[1] * len(r) for r in rows]
        with_types = self.returns_token_type_ids or pairs is not None
        if padding:
            width = max(map(len, rows), default=0) if padding in (True, "longest") else int(max_length or 0)
            if pad_to_multiple_of:
                width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
            if pad_id is None:
                pad_id = self.pad_token_id
            if pad_id is None:
                raise ValueError(f"this {type(self).__name__} has no pad token; pass pad_id=")
            rows = [_pad(r, width, pad_id, padding_side) for r in rows]
            masks = [_pad(m, width, 0, padding_side) for m in masks]
            if with_types:
                type_rows = [_pad(t, width, 0, padding_side) for t in type_rows]
        out = BatchEncoding(input_ids=rows, attention_mask=masks)
        if with_types:
            out["token_type_ids"] = type_rows
        if return_tensors == "pt":
            import torch

            if len({len(r) for r in rows}) > 1:
                raise ValueError("examples have different lengths; pass padding=True to make a tensor")
            for key, value in out.items():
                out[key] = torch.tensor(value, dtype=torch.long).reshape(len(rows), -1)
        elif return_tensors is not None:
            raise ValueError(f"return_tensors must be 'pt' or None, got {return_tensors!r}")
        return out

    # ---- saving -------------------------------------------------------------------------------

    def save(self, directory: PathLike) -> Path:
        """Write ``tokenizer.json`` (readable by the ``tokenizers`` library), ``tokenizer_config.json``
        and the model's classic files (``vocab.json`` + ``merges.txt``, or ``vocab.txt``)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        files.write_json(directory / "tokenizer.json", self.to_hf_json())
        config: dict[str, Any] = {"tokenizer_class": "PreTrainedTokenizerFast", "glassformer_kind": self.kind}
        config.update({f"{role}_token": token for role, token in self.roles.items()})
        if self.model_max_length is not None:
            config["model_max_length"] = self.model_max_length
        config.update(self._config_extras())
        files.write_json(directory / "tokenizer_config.json", config)
        self._save_extra_files(directory)
        return directory

    save_pretrained = save  # the name the Hugging Face-style model savers look for

    def _added_tokens_json(self) -> list[dict[str, Any]]:
        return [
            {"id": index, "content": token, "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": True}
            for token, index in sorted(self.special_tokens.items(), key=lambda item: item[1])
        ]

    def _hf_json_layout(
        self, *, normalizer: Any, pre_tokenizer: Any, decoder: Any, model: dict[str, Any]
    ) -> dict[str, Any]:
        """The ``tokenizer.json`` layout every kind shares; kinds differ only in these four parts."""
        return {
            "version": "1.0",
            "truncation": None,
            "padding": None,
            "added_tokens": self._added_tokens_json(),
            "normalizer": normalizer,
            "pre_tokenizer": pre_tokenizer,
            "post_processor": self._post_processor_json(),
            "decoder": decoder,
            "model": model,
        }

    def _post_processor_json(self) -> dict[str, Any] | None:
        return None if self.template is None else self.template.to_json(self.special_tokens)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size}, special_tokens={list(self.special_tokens)})"


def truncate_pair(a: list[int], b: list[int] | None, limit: int) -> tuple[list[int], list[int] | None]:
    """Cut ``a`` (and ``b``) so that together they hold at most ``limit`` ids.

    For a pair, the ``tokenizers`` library's "longest first" rule: leave the shorter one whole
    if the longer can absorb the cut, else give each half of the room (the odd id to the longer).
    """
    limit = max(limit, 0)
    if b is None:
        return a[:limit], None
    if len(a) + len(b) <= limit:
        return a, b
    n_short, n_long = sorted((len(a), len(b)))
    n_long = n_short if n_short > limit else max(n_short, limit - n_short)
    if n_short + n_long > limit:
        n_short = limit // 2
        n_long = n_short + limit % 2
    n_a, n_b = (n_short, n_long) if len(a) <= len(b) else (n_long, n_short)
    return a[:n_a], b[:n_b]


def _pad(row: list[int], width: int, value: int, side: str) -> list[int]:
    fill = [value] * max(width - len(row), 0)
    return row + fill if side == "right" else fill + row


def roles_from_config(config: dict[str, Any], special_tokens: dict[str, int]) -> dict[str, str]:
    """``{"pad": "[PAD]", ...}`` from a ``tokenizer_config.json`` (values may be AddedToken dicts)."""
    roles: dict[str, str] = {}
    for role in ROLES:
        value = config.get(f"{role}_token")
        if isinstance(value, dict):
            value = value.get("content")
        if isinstance(value, str) and value in special_tokens:
            roles[role] = value
    return roles


def max_length_from_config(config: dict[str, Any]) -> int | None:
    """``model_max_length`` of a ``tokenizer_config.json``; transformers writes 1e30 for "no limit"."""
    value = config.get("model_max_length")
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) and value < 1e12 else None


def special_tokens_from_json(data: dict[str, Any], source: str) -> dict[str, int]:
    tokens: dict[str, int] = {}
    for entry in data.get("added_tokens") or []:
        if not isinstance(entry, dict) or "content" not in entry or "id" not in entry:
            raise ValueError(f"{source}: malformed added_tokens entry {entry!r}")
        tokens[entry["content"]] = int(entry["id"])
    return tokens
