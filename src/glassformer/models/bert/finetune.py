"""Fine-tune a BERT on a text-classification task: SST-2 or any CSV/JSONL/TSV of text,label.

The steps, each a function here:

1. read labelled rows (``read_labelled``) and split off a validation set from the *training*
   rows (``split_validation``); SST-2's ``test.tsv`` (GLUE's dev set, the one published accuracies
   use) is only ever scored at the end, never trained or selected on;
2. map label names to ids learned from the training rows (``LabelSet``): a label that never
   occurred in training cannot be predicted, so it is an error, not a silent new class;
3. encode, then group examples of similar length into batches (``bucket_batches``): padding a
   batch to its longest sentence costs less when its sentences are alike, which on a CPU is most
   of the speed;
4. train through ``glassformer.train`` (the model's forward returns the loss);
5. score: accuracy, F1 and a confusion-matrix PNG (``evaluate``, ``plot_confusion``).
"""

from __future__ import annotations

import csv
import json
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from glassformer.models.bert.model import Bert
from glassformer.models.bert.text import BertEncoder, pad_batch

if TYPE_CHECKING:
    from glassformer.peft import LoraConfig

SST2_LABELS = ("negative", "positive")


@dataclass
class Rows:
    """Texts and their label names, with where they came from (for error messages)."""

    texts: list[str]
    labels: list[str]
    source: str

    def __len__(self) -> int:
        return len(self.texts)


def read_labelled(path: str | os.PathLike[str], text_field: str | None = None, label_field: str = "label") -> Rows:
    """Read ``.tsv`` / ``.csv`` (with a header row) or ``.jsonl`` rows of text and label.

    The text column is ``text_field`` if given, else the first of ``text``, ``sentence``,
    ``review`` that exists. Labels are kept as strings ("1", "positive"...).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: data file not found")
    candidates = [text_field] if text_field else ["text", "sentence", "review"]
    texts: list[str] = []
    labels: list[str] = []
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        with path.open(encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}:{n}: not valid JSON ({err.msg})") from None
                texts.append(str(_field(row, candidates, path, n)).strip())
                if not texts[-1]:
                    raise ValueError(f"{path}:{n}: empty text")
                labels.append(str(_field(row, [label_field], path, n)))
    elif suffix in (".csv", ".tsv"):
        with path.open(encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ",", quoting=csv.QUOTE_NONE
                                    if suffix == ".tsv" else csv.QUOTE_MINIMAL)
            for n, row in enumerate(reader, 2):
                texts.append(_field(row, candidates, path, n).strip())
                if not texts[-1]:
                    raise ValueError(f"{path}:{n}: empty text")
                labels.append(str(_field(row, [label_field], path, n)).strip())
    else:
        raise ValueError(f"{path}: unsupported file type {suffix!r}; use .csv, .tsv (with a header) or .jsonl")
    if not texts:
        raise ValueError(f"{path}: no rows")
    return Rows(texts, labels, str(path))


def _field(row: dict[str, Any], names: Sequence[str], path: Path, line: int) -> Any:
    for name in names:
        if name in row and row[name] is not None:
            return row[name]
    raise ValueError(f"{path}:{line}: no {' / '.join(names)} field (the row has {sorted(row)})")


def split_validation(rows: Rows, size: int | float, seed: int = 0) -> tuple[Rows, Rows]:
    """A seeded random hold-out of ``size`` rows (or that fraction) for validation."""
    n = len(rows)
    k = int(size * n) if isinstance(size, float) else int(size)
    if not 0 < k < n:
        raise ValueError(f"validation size {size} leaves no rows on one side of a {n}-row set")
    order = list(range(n))
    random.Random(seed).shuffle(order)
    val, train = sorted(order[:k]), sorted(order[k:])
    pick = lambda idx, tag: Rows([rows.texts[i] for i in idx], [rows.labels[i] for i in idx], f"{rows.source} ({tag})")
    return pick(train, "train split"), pick(val, "validation split")


def load_sst2(root: str | os.PathLike[str], val_size: int | float = 2000, seed: int = 0) -> tuple[Rows, Rows, Rows]:
    """SST-2 as ``(train, validation, test)``.

    ``train.tsv`` + ``dev.tsv`` of the shared copy are together GLUE's training set; the validation
    rows are split off them. ``test.tsv`` is GLUE's dev set (872 labelled rows): report on it only.
    """
    root = Path(root)
    parts = [read_labelled(root / name) for name in ("train.tsv", "dev.tsv")]
    every = Rows(parts[0].texts + parts[1].texts, parts[0].labels + parts[1].labels, f"{root}/train+dev")
    names = {"0": SST2_LABELS[0], "1": SST2_LABELS[1]}
    rename = lambda r: Rows(r.texts, [names.get(lab, lab) for lab in r.labels], r.source)
    train, val = split_validation(rename(every), val_size, seed)
    return train, val, rename(read_labelled(root / "test.tsv"))


class LabelSet:
    """Label names <-> ids, fixed by the training rows."""

    def __init__(self, names: Sequence[str]) -> None:
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate label names: {list(names)}")
        if len(names) < 2:
            raise ValueError(f"a classifier needs at least two labels, the training rows have {list(names)}")
        self.names = tuple(names)
        self.ids = {name: i for i, name in enumerate(self.names)}

    @classmethod
    def from_rows(cls, rows: Rows, known: Sequence[str] = ()) -> LabelSet:
        """``known`` names first (in that order), then any others in sorted order."""
        seen = set(rows.labels)
        return cls(list(known) + sorted(seen - set(known)))

    def encode(self, rows: Rows) -> list[int]:
        unseen = sorted(set(rows.labels) - set(self.ids))
        if unseen:
            raise ValueError(
                f"{rows.source}: label(s) {unseen} never occur in the training rows (known: {list(self.names)}); "
                "a classifier cannot learn a class it never saw"
            )
        return [self.ids[lab] for lab in rows.labels]


def encode_rows(encoder: BertEncoder, rows: Rows, labels: LabelSet) -> list[dict[str, Any]]:
    ids = labels.encode(rows)
    return [{**example, "labels": y} for example, y in zip(encoder.encode_many(rows.texts), ids)]


def bucket_batches(lengths: Sequence[int], batch_size: int, seed: int = 0, window: int = 50) -> list[list[int]]:
    """Batches of indices with similar lengths, in random order.

    The examples are shuffled, cut into windows of ``window * batch_size``, each window sorted by
    length and cut into batches: the batches stay random, but a batch's sentences are alike in
    length, so little padding is computed.
    """
    order = list(range(len(lengths)))
    rng = random.Random(seed)
    rng.shuffle(order)
    batches: list[list[int]] = []
    span = window * batch_size
    for start in range(0, len(order), span):
        chunk = sorted(order[start : start + span], key=lambda i: lengths[i])
        batches += [chunk[j : j + batch_size] for j in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


class BucketedBatches(torch.utils.data.Dataset):
    """A map-style data set whose item ``i`` is a whole padded batch.

    Giving the trainer whole batches (with its ``batch_size=1`` and :func:`unwrap` as collate) keeps
    length bucketing while the trainer still shuffles, counts and resumes as with any data set.
    """

    def __init__(self, examples: Sequence[dict[str, Any]], batch_size: int, pad_id: int, seed: int = 0) -> None:
        self.examples, self.pad_id = examples, pad_id
        self.batches = bucket_batches([len(e["input_ids"]) for e in examples], batch_size, seed)

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return pad_batch([self.examples[j] for j in self.batches[i]], self.pad_id)


def unwrap(items: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    """Collate for :class:`BucketedBatches`: the trainer draws one item, which is already a batch."""
    return items[0]


@torch.no_grad()
def predict(model: Bert, examples: Sequence[dict[str, Any]], pad_id: int, batch_size: int = 64) -> Tensor:
    """Class probabilities ``(N, num_labels)``; sorted by length inside so batches pad little."""
    model.eval()
    order = sorted(range(len(examples)), key=lambda i: len(examples[i]["input_ids"]))
    probs = torch.empty(len(examples), model.config.num_labels)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        batch = pad_batch([{k: v for k, v in examples[i].items() if k != "labels"} for i in idx], pad_id)
        probs[idx] = torch.softmax(model(**batch).logits.float(), dim=-1)
    return probs


def scores(predicted: Sequence[int], gold: Sequence[int], num_labels: int) -> dict[str, Any]:
    """Accuracy, F1 (of class 1 for two classes, else macro) and the confusion matrix (rows = gold)."""
    confusion = torch.zeros(num_labels, num_labels, dtype=torch.long)
    for p, g in zip(predicted, gold):
        confusion[g, p] += 1
    tp = confusion.diag().float()
    precision = tp / confusion.sum(0).clamp(min=1)
    recall = tp / confusion.sum(1).clamp(min=1)
    f1 = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall), torch.zeros_like(tp))
    return {
        "accuracy": float(tp.sum() / confusion.sum().clamp(min=1)),
        "f1": float(f1[1] if num_labels == 2 else f1.mean()),
        "confusion": confusion.tolist(),
    }


def evaluate(model: Bert, examples: Sequence[dict[str, Any]], pad_id: int, batch_size: int = 64) -> dict[str, Any]:
    predicted = predict(model, examples, pad_id, batch_size).argmax(-1).tolist()
    return scores(predicted, [e["labels"] for e in examples], model.config.num_labels)


def plot_confusion(confusion: Sequence[Sequence[int]], names: Sequence[str], path: str | os.PathLike[str],
                   title: str = "confusion matrix") -> Path:
    """Draw the confusion matrix (rows: true class, columns: predicted) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = torch.tensor(confusion)
    fig, ax = plt.subplots(figsize=(1.2 * len(names) + 2.5, 1.2 * len(names) + 2))
    ax.imshow(matrix.numpy(), cmap="Blues")
    for (i, j), value in zip(torch.cartesian_prod(torch.arange(len(names)), torch.arange(len(names))).tolist(),
                             matrix.flatten().tolist()):
        ax.text(j, i, str(value), ha="center", va="center",
                color="white" if value > matrix.max() / 2 else "black", fontsize=12)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


@dataclass
class Prepared:
    """Everything a fine-tuning run needs, encoded."""

    labels: LabelSet
    train: list[dict[str, Any]]
    val: list[dict[str, Any]]
    test: list[dict[str, Any]] | None


def prepare(encoder: BertEncoder, train: Rows, val: Rows, test: Rows | None = None,
            known_labels: Sequence[str] = ()) -> Prepared:
    labels = LabelSet.from_rows(train, known_labels)
    return Prepared(
        labels, encode_rows(encoder, train, labels), encode_rows(encoder, val, labels),
        encode_rows(encoder, test, labels) if test is not None else None,
    )




@dataclass
class FinetuneSettings:
    """The knobs of a fine-tuning run; the rest of ``TrainConfig`` keeps its defaults."""

    out_dir: str = "out/finetune"
    epochs: float = 1.0
    batch_size: int = 32
    lr: float = 5e-5
    warmup_ratio: float = 0.06
    weight_decay: float = 0.01
    max_len: int = 64
    val_size: int | float = 2000
    max_train: int | None = None  # a seeded subset of the training rows, for quick runs
    eval_interval: int = 0  # steps between validations (0: a few per run)
    seed: int = 0
    progress: bool = True
    overrides: tuple[str, ...] = ()  # extra TrainConfig key=value settings
    lora: LoraConfig | None = None  # train LoRA adapters (and the head) instead of every weight
    base_name: str | None = None  # the pretrained model's name, recorded in a LoRA adapter


def train_config_for(settings: FinetuneSettings, steps_per_epoch: int) -> Any:
    """The engine's ``TrainConfig`` for a run: one "sample" of the engine is one bucketed batch."""
    from glassformer.train import TrainConfig

    max_steps = max(1, round(settings.epochs * steps_per_epoch))
    eval_interval = settings.eval_interval or max(1, max_steps // 4)
    config = TrainConfig(
        out_dir=settings.out_dir, seed=settings.seed, max_steps=max_steps, batch_size=1,
        lr=settings.lr, weight_decay=settings.weight_decay, betas=(0.9, 0.999), schedule="linear",
        warmup_steps=round(settings.warmup_ratio * max_steps), min_lr_ratio=0.0,
        eval_interval=eval_interval, eval_batches=0, best_metric="eval_accuracy", best_mode="max",
        save_interval=eval_interval, keep_last=1, log_interval=max(1, min(50, max_steps // 20)),
        progress=settings.progress,
    )
    return config.with_overrides(list(settings.overrides)) if settings.overrides else config


def finetune(
    model: Bert,
    tokenizer: Any,
    train: Rows,
    val: Rows,
    test: Rows | None = None,
    settings: FinetuneSettings | None = None,
    known_labels: Sequence[str] = (),
    resume: bool = False,
) -> dict[str, Any]:
    """Train ``model`` (a pretrained encoder) as a classifier of ``train``'s labels; score it.

    The classifier head is (re)built for the label set; validation accuracy picks the best
    checkpoint, which is then scored on ``val`` and, if given, ``test``. Writes into ``out_dir``:
    the engine's run files, ``model/`` (weights + tokenizer, for ``glassformer classify``),
    ``results.json`` and ``confusion_test.png`` (or ``confusion_val.png``).
    """
    from glassformer.train import Trainer
    from glassformer.train.checkpoint import load_weights

    settings = settings or FinetuneSettings()
    out_dir = Path(settings.out_dir)
    encoder = BertEncoder(tokenizer, min(settings.max_len, model.config.max_tokens))
    data = prepare(encoder, train, val, test, known_labels)
    if settings.max_train and settings.max_train < len(data.train):
        keep = sorted(random.Random(settings.seed).sample(range(len(data.train)), settings.max_train))
        data.train = [data.train[i] for i in keep]
    model = with_classifier(model, data.labels.names)
    if settings.lora is not None:
        model = with_lora(model, settings.lora)
    train_batches = BucketedBatches(data.train, settings.batch_size, encoder.pad_id, settings.seed)
    val_batches = BucketedBatches(data.val, 64, encoder.pad_id, settings.seed)
    config = train_config_for(settings, len(train_batches))
    summary = Trainer(model, config, train_batches, val_batches, collate_fn=unwrap).fit(resume=resume)
    if summary.best_dir:
        load_weights(model, summary.best_dir)
    results: dict[str, Any] = {
        "labels": list(data.labels.names), "train_examples": len(data.train), "steps": summary.step,
        "train_seconds": summary.elapsed_s, "train_samples_per_s": len(data.train) * settings.epochs
        / max(summary.elapsed_s, 1e-9), "best_step": summary.best_step,
        "val": evaluate(model, data.val, encoder.pad_id),
    }
    if data.test is not None:
        results["test"] = evaluate(model, data.test, encoder.pad_id)
    shown = "test" if data.test is not None else "val"
    results["confusion_png"] = str(plot_confusion(
        results[shown]["confusion"], data.labels.names, out_dir / f"confusion_{shown}.png",
        title=f"{shown}: accuracy {results[shown]['accuracy']:.3f}",
    ))
    if settings.lora is not None:  # the adapter alone, then a plain merged model for `classify`
        from glassformer.peft import merge_lora, save_adapter

        results["adapter"] = str(save_adapter(model, out_dir / "adapter", base_name=settings.base_name))
        merge_lora(model)
    save_classifier(model, tokenizer, out_dir / "model")
    (out_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return results


def with_classifier(model: Bert, label_names: Sequence[str]) -> Bert:
    """The same encoder with a fresh sequence-classification head for ``label_names``.

    A model that already classifies exactly these labels is returned as is (continuing a run).
    """
    c = model.config
    if c.head == "sequence" and tuple(c.label_names) == tuple(label_names):
        return model
    config = c.replace(head="sequence", num_labels=len(label_names), label_names=tuple(label_names),
                       pooler=c.pooler or c.pooling == "cls")
    fresh = Bert(config)
    encoder_state = {k: v for k, v in model.state_dict().items() if k.startswith(("embeddings.", "encoder.", "pooler."))}
    fresh.load_state_dict(encoder_state, strict=False)
    return fresh


def with_lora(model: Bert, config: LoraConfig) -> Bert:
    """LoRA on ``model`` with the classifier trained in full and saved with the adapter: a new head
    has no pretrained weights to fall back on, so leaving it frozen (or unsaved) loses the task."""
    from glassformer.peft import inject_lora

    saved = config.modules_to_save if "classifier" in config.modules_to_save else (*config.modules_to_save, "classifier")
    return inject_lora(model, replace(config, modules_to_save=saved))


def save_classifier(model: Bert, tokenizer: Any, folder: str | os.PathLike[str]) -> Path:
    """A glassformer model folder with the tokenizer beside the weights: all ``classify`` needs."""
    folder = model.save(folder)
    tokenizer.save(folder)
    return folder


def load_classifier(folder: str | os.PathLike[str]) -> tuple[Bert, Any]:
    """``(model, tokenizer)`` from a folder written by :func:`save_classifier` (or a HF folder)."""
    from glassformer.models import load_model
    from glassformer.models.bert.text import load_vocab_tokenizer

    model = load_model(folder, family="bert")
    if model.config.head != "sequence":
        raise ValueError(
            f"{folder} is a bert model with head={model.config.head!r}, not a classifier; "
            "fine-tune it first (glassformer finetune bert ...)"
        )
    return model.eval(), load_vocab_tokenizer(folder)


def classify(model: Bert, tokenizer: Any, texts: Sequence[str], batch_size: int = 64,
             overflow: str = "truncate") -> list[dict[str, Any]]:
    """Label and class probabilities for each text."""
    empty = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
    if empty:
        raise ValueError(f"text number {empty[0] + 1} is empty; there is nothing to classify")
    encoder = BertEncoder(tokenizer, model.config.max_tokens, overflow)  # type: ignore[arg-type]
    examples = encoder.encode_many(texts)
    probs = predict(model, examples, encoder.pad_id, batch_size)
    names = model.config.label_names or tuple(str(i) for i in range(model.config.num_labels))
    return [
        {"text": t, "label": names[int(p.argmax())], "probability": float(p.max()),
         "probabilities": {n: float(v) for n, v in zip(names, p.tolist())}}
        for t, p in zip(texts, probs)
    ]
