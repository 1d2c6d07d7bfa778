"""Multi30k (Elliott et al. 2016): English-German image captions, and one joint BPE for both sides.

The shared data holds task 1's raw files, ``multi30k/task1/raw/{train,val,test_2016_flickr}.{en,de}.gz``
under ``$GLASSFORMER_DATA`` (default ``../shared/data``): 29,000 / 1,014 / 1,000 line-aligned pairs.

**The vocabulary.** One byte-level BPE is learned on both sides of the training split (so source
and target share every id, as the 2017 Transformer's tied embeddings need). Each family wants its
special tokens at its own ids: T5 ``<pad>`` 0, ``</s>`` 1 and the sentinels at the top; BART
``<s>`` 0, ``<pad>`` 1, ``</s>`` 2 and ``<mask>`` last; the Transformer ``<pad>`` 0, ``<s>`` 1,
``</s>`` 2. A :class:`SpecialLayout` says which tokens go below the ordinary ones and which above,
and the framing each text gets (the tokenizer's template, so ``encode(text, add_special_tokens=True)``
is exactly what the model was trained on). The ordinary tokens are the 256 bytes and then the
merges in the order they were learned; a vocabulary with fewer free ids takes a prefix of the same
merges, which is the BPE trained to that size (the trainer is greedy), so the merges are learned once.

**The cache.** Merges and finished tokenizers are kept under ``$GLASSFORMER_CACHE/multi30k/<key>``,
the key hashing the training files' bytes, the slice and the trainer's settings. Merges are learned
in multiples of 1,024 (8,192 for the 8,000-id presets of all three families: 3.5 s of CPU on
the 2-core EPYC for the 58,000 training sentences); a later build reads a ``tokenizer.json``.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from glassformer.tokenizers import ByteLevelBPE, load_tokenizer, train_bpe
from glassformer.tokenizers.base import Template, TemplateItem
from glassformer.tokenizers.pretokenize import bytes_to_token, token_to_bytes
from glassformer.utils.config import unknown_keys_message
from glassformer.utils.paths import cache_root, data_file

LANGUAGES = ("en", "de")
SPLITS = {"train": "train", "val": "val", "test": "test_2016_flickr"}
PAIR_COUNTS = {"train": 29000, "val": 1014, "test": 1000}
BYTE_TOKENS = 256
PATTERN = "gpt2"
MIN_FREQUENCY = 2
MERGE_STEP = 1024  # merges are learned in multiples of this, so nearby vocabulary sizes share them
IGNORE_INDEX = -100  # the label every loss skips (glassformer.models.base.IGNORE_INDEX)

PathLike = str | os.PathLike[str]


# ------------------------------------------------------------------------------------ the files


def multi30k_root(root: PathLike | None = None) -> Path:
    """The folder of the raw files: ``root``, else ``$GLASSFORMER_DATA/multi30k/task1/raw``."""
    if root is not None:
        path = Path(root).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(
                f"{path}: no such folder; pass the folder holding train.en.gz ... (multi30k/task1/raw)"
            )
        return path
    path = data_file("multi30k", "task1", "raw")
    if path is None:
        raise FileNotFoundError(
            "Multi30k was not found: set GLASSFORMER_DATA to the shared data folder holding "
            "multi30k/task1/raw/{train,val,test_2016_flickr}.{en,de}.gz (see its SOURCES.md), or pass root="
        )
    return path


def split_file(split: str, language: str, root: PathLike | None = None) -> Path:
    """The gzip file of one side of one split, checked to exist."""
    if split not in SPLITS:
        raise ValueError(f"unknown Multi30k split {split!r}; valid: {list(SPLITS)}")
    if language not in LANGUAGES:
        raise ValueError(f"unknown Multi30k language {language!r}; valid: {list(LANGUAGES)}")
    path = multi30k_root(root) / f"{SPLITS[split]}.{language}.gz"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: missing Multi30k file (GLASSFORMER_DATA should hold multi30k/task1/raw/)"
        )
    return path


def read_lines(
    split: str, language: str, root: PathLike | None = None, limit: int | None = None
) -> list[str]:
    """The sentences of one side, one per line, stripped of the line break (first ``limit`` only)."""
    path = split_file(split, language, root)
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            lines = f.read().split("\n")
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not a UTF-8 gzip text file ({err})") from None
    if lines and lines[-1] == "":
        lines.pop()
    return lines[:limit] if limit is not None else lines


def parse_direction(direction: str) -> tuple[str, str]:
    """``"en-de"`` -> ``("en", "de")``; anything else is an error listing what is allowed."""
    parts = tuple(str(direction).split("-"))
    if len(parts) != 2 or parts[0] == parts[1] or not set(parts) <= set(LANGUAGES):
        raise ValueError(f"direction={direction!r}: must be 'en-de' or 'de-en'")
    return parts[0], parts[1]


def load_pairs(
    split: str, direction: str = "en-de", root: PathLike | None = None, limit: int | None = None
) -> list[tuple[str, str]]:
    """``(source, target)`` sentences of a split; the two files must have the same number of lines."""
    src, tgt = parse_direction(direction)
    a, b = read_lines(split, src, root, limit), read_lines(split, tgt, root, limit)
    if len(a) != len(b):
        raise ValueError(
            f"{split_file(split, src, root)} has {len(a)} lines but {split_file(split, tgt, root)} has {len(b)}; "
            "the two sides of a split must be line-aligned"
        )
    return list(zip(a, b))


# ---------------------------------------------------------------------------- the vocabulary


@dataclass(frozen=True)
class SpecialLayout:
    """Where a family wants its special tokens, and how it frames a text.

    ``low`` take ids ``0, 1, ...`` in order; ``high`` take the last ids of the vocabulary in order
    (so T5's ``sentinel_tokens()``, listed ``<extra_id_99> ... <extra_id_0>``, ends with
    ``<extra_id_0>`` on the top id). ``roles`` name the pad/bos/eos/unk/mask tokens; ``framing`` is
    the single-text template, ``"A"`` standing for the text (``("<s>", "A", "</s>")`` for BART).
    """

    low: tuple[str, ...]
    high: tuple[str, ...] = ()
    roles: dict[str, str] = field(default_factory=dict)
    framing: tuple[str, ...] = ("A",)

    def __post_init__(self) -> None:
        names = [*self.low, *self.high]
        if len(set(names)) != len(names):
            raise ValueError(f"SpecialLayout: a special token is listed twice in {names}")
        for role, token in self.roles.items():
            if token not in names:
                raise ValueError(f"SpecialLayout: the {role} token {token!r} is not one of {names}")
        if self.framing.count("A") != 1 or not set(self.framing) - {"A"} <= set(names):
            raise ValueError(
                f"SpecialLayout.framing={self.framing}: one 'A' plus special tokens of the layout"
            )

    def special_ids(self, vocab_size: int) -> dict[str, int]:
        top = vocab_size - len(self.high)
        return {**{t: i for i, t in enumerate(self.low)}, **{t: top + i for i, t in enumerate(self.high)}}

    def ordinary_room(self, vocab_size: int) -> int:
        """How many ids are left between the low and the high special tokens."""
        return vocab_size - len(self.low) - len(self.high)

    def template(self) -> Template:
        """The tokenizer's template: ``framing`` for one text; for two, the second text follows with
        the framing's closing tokens (``<s> A </s> B </s>``)."""

        def item(token: str, type_id: int) -> TemplateItem:
            if token == "A":
                return TemplateItem("sequence", "AB"[type_id], type_id)
            return TemplateItem("special", token, type_id)

        single = tuple(item(t, 0) for t in self.framing)
        closing = self.framing[self.framing.index("A") + 1 :]
        return Template(single=single, pair=single + tuple(item(t, 1) for t in ("A", *closing)))

    def key(self) -> str:
        text = json.dumps([self.low, self.high, sorted(self.roles.items()), self.framing])
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def low_specials(ids: dict[str, int], owner: str, extra: Sequence[str] = ("<unk>",)) -> tuple[str, ...]:
    """The low special tokens in id order, from the ids a model config gives them (``{"<pad>": 0, ...}``),
    then ``extra`` on the next ids. The config's ids must be ``0, 1, ...`` so that the ordinary
    tokens can follow them in one run."""
    order = sorted(ids, key=ids.__getitem__)
    if sorted(ids.values()) != list(range(len(ids))):
        named = ", ".join(f"{t}={i}" for t, i in ids.items())
        raise ValueError(
            f"{owner}: the special ids ({named}) must be 0..{len(ids) - 1} for the Multi30k tokenizer, which "
            "puts the ordinary tokens right after them; keep the preset's special ids"
        )
    return (*order, *extra)


def minimum_vocab_size(layout: SpecialLayout) -> int:
    """The smallest vocabulary that holds the layout's specials and all 256 bytes (no merges yet)."""
    return len(layout.low) + len(layout.high) + BYTE_TOKENS


@dataclass
class LearnedMerges:
    """Merges in rank order, and whether the corpus had no more to give (``exhausted``)."""

    merges: list[tuple[str, str]]
    exhausted: bool

    def covers(self, count: int) -> bool:
        return self.exhausted or len(self.merges) >= count


def training_texts(root: PathLike | None = None, limit: int | None = None) -> list[str]:
    """Both sides of the training split (English then German), the text the joint BPE learns from."""
    return [line for lang in LANGUAGES for line in read_lines("train", lang, root, limit)]


def learn_merges(texts: Sequence[str], count: int, show_progress: bool = False) -> LearnedMerges:
    """``count`` byte-level BPE merges of ``texts`` (fewer when no pair occurs twice any more)."""
    tok = train_bpe(texts, BYTE_TOKENS + count, special_tokens=(), pattern=PATTERN,
                    min_frequency=MIN_FREQUENCY, show_progress=show_progress)  # fmt: skip
    return LearnedMerges(list(tok.merges), exhausted=len(tok.merges) < count)


def cache_dir(root: PathLike | None = None, limit: int | None = None) -> Path:
    """``$GLASSFORMER_CACHE/multi30k/<key>``: the key hashes the training files, the slice and the trainer settings."""
    digest = hashlib.sha256(json.dumps([PATTERN, MIN_FREQUENCY, limit]).encode())
    for lang in LANGUAGES:
        digest.update(split_file("train", lang, root).read_bytes())
    return cache_root() / "multi30k" / digest.hexdigest()[:16]


def _write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f)
    os.replace(tmp, path)


def cached_merges(count: int, root: PathLike | None = None, limit: int | None = None,
                  show_progress: bool = False) -> LearnedMerges:  # fmt: skip
    """At least ``count`` merges (or all the corpus has), from the cache or learned and cached."""
    folder = cache_dir(root, limit)
    for path in sorted(folder.glob("merges-*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            found = LearnedMerges([tuple(m) for m in data["merges"]], bool(data["exhausted"]))  # type: ignore[misc]
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a damaged cache entry is relearned, never trusted
        if found.covers(count):
            return found
    # up to the next multiple of MERGE_STEP: the families' 8,000-id layouts, a few ids apart, share one training
    target = -(-count // MERGE_STEP) * MERGE_STEP
    learned = learn_merges(training_texts(root, limit), target, show_progress)
    _write_json_atomic(folder / f"merges-{target}.json", {"merges": learned.merges, "exhausted": learned.exhausted})
    return learned


def assemble_tokenizer(
    merges: Sequence[tuple[str, str]], layout: SpecialLayout, vocab_size: int
) -> ByteLevelBPE:
    """The tokenizer of ``vocab_size`` ids: the layout's specials, the 256 bytes, then as many merges as fit.

    When the corpus gave fewer merges than there is room for, the ids between the last merge and
    the high specials stay unused (the model's rows there are never read).
    """
    room = layout.ordinary_room(vocab_size)
    if room < BYTE_TOKENS:
        raise ValueError(
            f"a vocabulary of {vocab_size} leaves {room} ids for ordinary tokens, but a byte-level BPE needs "
            f"the {BYTE_TOKENS} bytes and then its merges: use a vocabulary of at least {minimum_vocab_size(layout)} "
            "(a few hundred more for useful merges)"
        )
    first = len(layout.low)
    vocab = {bytes_to_token(bytes([b])): first + b for b in range(BYTE_TOKENS)}
    used: list[tuple[str, str]] = []
    for a, b in merges:
        if len(vocab) >= room:
            break
        vocab.setdefault(a + b, first + len(vocab))
        used.append((a, b))
    specials = layout.special_ids(vocab_size)
    return ByteLevelBPE(
        vocab, used, specials, pattern=PATTERN, template=layout.template(), roles=dict(layout.roles)
    )


def multi30k_tokenizer(
    layout: SpecialLayout, vocab_size: int, *, root: PathLike | None = None, limit: int | None = None,
    show_progress: bool = False,
) -> ByteLevelBPE:  # fmt: skip
    """The joint en+de BPE of ``vocab_size`` ids with ``layout``'s specials, built once and cached.

    ``limit`` learns from the first ``limit`` training pairs only (the tests' slice).
    """
    room = layout.ordinary_room(vocab_size)
    folder = cache_dir(root, limit) / f"tokenizer-{layout.key()}-{vocab_size}"
    if (folder / "tokenizer.json").is_file():
        try:
            return load_tokenizer(folder, ByteLevelBPE)
        except (OSError, ValueError):
            pass  # a damaged cache entry is rebuilt
    merges = (
        cached_merges(max(room - BYTE_TOKENS, 0), root, limit, show_progress) if room >= BYTE_TOKENS else None
    )
    tokenizer = assemble_tokenizer(merges.merges if merges else [], layout, vocab_size)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".tmp-tokenizer-"))
    tokenizer.save(tmp)
    try:
        os.replace(tmp, folder)
    except OSError:  # another process cached it first: theirs is the same tokenizer
        shutil.rmtree(tmp, ignore_errors=True)
    return tokenizer


def token_text(tokenizer: ByteLevelBPE, index: int) -> str:
    """What an ordinary token spells, for reading a vocabulary (``" Mann"`` for ``ĠMann``)."""
    raw = token_to_bytes(tokenizer.id_to_token(index) or "")
    return raw.decode("utf-8", errors="replace") if raw is not None else tokenizer.id_to_token(index) or ""


LANGUAGE_NAMES = {"en": "English", "de": "German"}
RUN_RECORD = "translation.json"  # written beside the tokenizer in a training run's out_dir


def task_prefix(direction: str) -> str:
    """T5's task prefix for a direction: ``"translate English to German: "`` for en-de."""
    src, tgt = parse_direction(direction)
    return f"translate {LANGUAGE_NAMES[src]} to {LANGUAGE_NAMES[tgt]}: "


def save_run_files(
    out_dir: PathLike, tokenizer: ByteLevelBPE, directions: Sequence[str], objective: str
) -> Path:
    """Save the tokenizer and what the run learns (``translation.json``) into ``out_dir``, where
    ``glassformer translate`` finds them from ``out_dir/best`` or a checkpoint folder."""
    out = Path(out_dir)
    tokenizer.save(out)
    _write_json_atomic(
        out / RUN_RECORD, {"dataset": "multi30k", "directions": list(directions), "objective": objective}
    )
    return out


# --------------------------------------------------------------------------------- batches


def encode_pairs(
    tokenizer: Any, pairs: Sequence[tuple[str, str]], *, prefix: str = "", max_len: int | None = None
) -> tuple[list[tuple[list[int], list[int]]], int]:
    """Framed ``(source ids, target ids)`` of each pair (``prefix`` before every source), and how many
    pairs were dropped for being empty or longer than ``max_len`` on either side."""
    out: list[tuple[list[int], list[int]]] = []
    dropped = 0
    for src, tgt in pairs:
        if not src.strip() or not tgt.strip():
            dropped += 1
            continue
        a = tokenizer.encode(prefix + src, add_special_tokens=True)
        b = tokenizer.encode(tgt, add_special_tokens=True)
        if max_len is not None and max(len(a), len(b)) > max_len:
            dropped += 1
            continue
        out.append((a, b))
    return out, dropped


def pad_rows(rows: Sequence[Sequence[int]], value: int) -> Tensor:
    """Right-pad ragged rows into one ``(B, longest)`` long tensor."""
    out = torch.full((len(rows), max(len(r) for r in rows)), value, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return out


def seq2seq_batch(
    pairs: Sequence[tuple[Sequence[int], Sequence[int]]], pad_token_id: int
) -> dict[str, Tensor]:
    """``input_ids`` / ``attention_mask`` ``(B, S)`` padded with ``pad_token_id``, ``labels`` ``(B, T)``
    padded with -100: the keys T5 and BART take; a family renames them as it needs."""
    input_ids = pad_rows([s for s, _ in pairs], pad_token_id)  # (B, S)
    lengths = torch.tensor([len(s) for s, _ in pairs])
    attention_mask = (torch.arange(input_ids.shape[1])[None, :] < lengths[:, None]).long()  # (B, S)
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "labels": pad_rows([t for _, t in pairs], IGNORE_INDEX),
    }


Collate = Callable[[list[Any], torch.Generator], dict[str, Tensor]]


def example_length(example: Any) -> int:
    """Tokens in an example: a row of ids, or a tuple of rows (source and target) summed."""
    if example and isinstance(example[0], Sequence):
        return sum(len(row) for row in example)
    return len(example)


class RandomBatches:
    """Training batches as ``get_batch(split, step, generator)``: ``batch_size`` distinct examples
    drawn with the engine's generator (seeded from the seed, the rank and the step), so a run
    resumes exactly and each process draws its own. ``collate(examples, generator)`` makes the batch;
    the generator also seeds any noise (span corruption, denoising).

    Length buckets: each step draws ``buckets * batch_size`` examples, sorts them by length and keeps
    one of the ``buckets`` slices at random. Every example is still equally likely to be drawn, but a
    batch holds sentences of similar length, so far less of it is padding (on Multi30k pairs, about
    43 padded tokens per pair instead of 70). ``buckets=1`` draws plain random batches."""

    def __init__(self, examples: Sequence[Any], batch_size: int, collate: Collate, buckets: int = 8) -> None:
        if len(examples) < batch_size:
            raise ValueError(
                f"{len(examples)} training examples are fewer than batch_size={batch_size}; lower batch_size"
            )
        if buckets < 1:
            raise ValueError(f"buckets={buckets}: use 1 (plain random batches) or more")
        self.examples, self.batch_size, self.collate = examples, batch_size, collate
        self.buckets = max(1, min(buckets, len(examples) // batch_size))
        self.lengths = [example_length(e) for e in examples]

    def __call__(self, split: str, step: int, generator: torch.Generator) -> dict[str, Tensor]:
        pool = torch.randperm(len(self.examples), generator=generator)[: self.batch_size * self.buckets].tolist()
        if self.buckets > 1:
            pool.sort(key=self.lengths.__getitem__)
            first = int(torch.randint(self.buckets, (1,), generator=generator)) * self.batch_size
            pool = pool[first : first + self.batch_size]
        return self.collate([self.examples[i] for i in pool], generator)


class FixedBatches:
    """Evaluation batches: the examples in order, ``batch_size`` at a time (the last one may be
    shorter), the same batches at every evaluation (noise from a fixed seed per batch)."""

    def __init__(self, examples: Sequence[Any], batch_size: int, collate: Collate, seed: int = 0) -> None:
        if not examples:
            raise ValueError("no evaluation examples (every pair was dropped?)")
        self.examples, self.batch_size, self.collate, self.seed = examples, batch_size, collate, seed

    def __len__(self) -> int:
        return -(-len(self.examples) // self.batch_size)

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        for j in range(len(self)):
            g = torch.Generator().manual_seed(self.seed + j)
            yield self.collate(list(self.examples[j * self.batch_size : (j + 1) * self.batch_size]), g)


def draw_seed(generator: torch.Generator) -> int:
    """A numpy seed drawn from a torch generator, for collators with their own generator."""
    return int(torch.randint(0, 2**62, (1,), generator=generator))


# ------------------------------------------------------------------- what the builders share

TINY_LIMIT, TINY_VAL_LIMIT = 512, 64  # a -tiny preset's slice: the first pairs of train and val
OPTIONS = ("root", "limit", "val_limit")


@dataclass(frozen=True)
class Multi30kOptions:
    """A data builder's ``data.KEY=VALUE`` options: ``root`` (the raw files' folder), ``limit`` and
    ``val_limit`` (the first pairs of train and val only; a ``-tiny`` preset defaults to 512 and 64),
    ``direction`` (``en-de``, ``de-en``, or ``both`` where the model reads a task prefix)."""

    root: str | None = None
    limit: int | None = None
    val_limit: int | None = None
    direction: str = "en-de"

    @classmethod
    def read(
        cls, options: Any, preset_name: str, extra: Sequence[str] = (), directions: Sequence[str] = ()
    ) -> Multi30kOptions:
        valid = [*OPTIONS, *extra]
        unknown = sorted(set(options) - set(valid))
        if unknown:
            raise ValueError(
                "unknown data option: " + unknown_keys_message(unknown, valid, "the Multi30k data")
            )
        tiny = preset_name.endswith("-tiny")
        values = {k: options[k] for k in ("root", "limit", "val_limit", "direction") if k in options}
        values.setdefault("limit", TINY_LIMIT if tiny else None)
        values.setdefault("val_limit", TINY_VAL_LIMIT if tiny else None)
        for name in ("limit", "val_limit"):
            if values[name] is not None and (not isinstance(values[name], int) or values[name] < 1):
                raise ValueError(f"data.{name}={values[name]!r}: must be a positive number of pairs")
        found = cls(**values)
        if "direction" in extra and found.direction not in directions:
            raise ValueError(f"data.direction={found.direction!r}: must be one of {list(directions)}")
        return found


def check_room(layout: SpecialLayout, vocab_size: int, preset_name: str, fix: Callable[[int], str]) -> None:
    """Refuse a model vocabulary too small for a byte-level BPE, naming the overrides that fit one.

    ``fix(size)`` spells the model overrides for a vocabulary of ``size`` (T5 must move its sentinels too).
    """
    if layout.ordinary_room(vocab_size) >= BYTE_TOKENS:
        return
    size = -(-(minimum_vocab_size(layout) + 64) // 32) * 32  # room for 64 merges, a multiple of 32
    raise ValueError(
        f"{preset_name}: vocab_size={vocab_size} is too small for the Multi30k tokenizer (a byte-level BPE needs "
        f"{minimum_vocab_size(layout)} ids for its specials and 256 bytes before any merge); train with "
        f"{fix(size)} (the -tiny twins' toy vocabularies hold no byte alphabet)"
    )


def translation_examples(
    tokenizer: Any, directions: Sequence[str], split: str, *, root: PathLike | None, limit: int | None,
    max_len: int, prefixed: bool = False,
) -> list[tuple[list[int], list[int]]]:  # fmt: skip
    """Framed ``(source, target)`` ids of a split in each direction (with T5's task prefix when
    ``prefixed``); pairs longer than ``max_len`` on a side are dropped with a warning."""
    out: list[tuple[list[int], list[int]]] = []
    for direction in directions:
        pairs = load_pairs(split, direction, root, limit)
        encoded, dropped = encode_pairs(
            tokenizer, pairs, prefix=task_prefix(direction) if prefixed else "", max_len=max_len
        )
        if dropped:
            warnings.warn(f"Multi30k {split} {direction}: dropped {dropped} of {len(pairs)} pairs (empty, or longer "
                          f"than {max_len} tokens)", stacklevel=2)  # fmt: skip
        out.extend(encoded)
    return out


def monolingual_examples(
    tokenizer: Any, split: str, *, root: PathLike | None, limit: int | None, max_len: int
) -> list[list[int]]:
    """Unframed ids of every English and German sentence of a split with 2 to ``max_len`` tokens:
    the monolingual text that span corruption and denoising pretrain on."""
    out: list[list[int]] = []
    for lang in LANGUAGES:
        for line in read_lines(split, lang, root, limit):
            ids = tokenizer.encode(line)
            if 2 <= len(ids) <= max_len:
                out.append(ids)
    return out
