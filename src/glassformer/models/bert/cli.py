"""``glassformer finetune`` and ``glassformer classify``: thin verbs over ``bert.finetune``.

    glassformer finetune bert --task sst2 --from all-MiniLM-L6-v2 --out out/sst2
    glassformer finetune bert --train mine.csv --val-file dev.csv --from out/bert-mini/best
    glassformer finetune bert --task sst2 --from all-MiniLM-L6-v2 --qlora r=8,alpha=16,target=all-linear
    glassformer classify out/sst2/model "a gripping, beautifully shot film"
    glassformer classify out/sst2/model --file reviews.txt

(``glassformer train bert-mlm`` pretrains a BERT-mini; it is the training engine's verb, fed by
``bert.pretrain``.)
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

from glassformer.utils.commands import AddParser


def register(add_parser: AddParser) -> None:
    p = add_parser(
        "finetune",
        help="fine-tune a pretrained encoder as a text classifier (SST-2 or your own CSV/JSONL)",
        description="Fine-tune a BERT-family encoder on text classification through the training engine. "
        "Reports accuracy and F1 and draws a confusion matrix.",
    )
    p.add_argument("family", choices=["bert"], help="model family (bert)")
    p.add_argument("--from", dest="source", required=True,
                   help="pretrained weights: a Hugging Face folder, a hub id such as all-MiniLM-L6-v2, or a "
                   "glassformer bert folder (e.g. out/bert-mini/best from `glassformer train bert-mlm`)")
    p.add_argument("--task", choices=["sst2"], help="a known task read from the data folder")
    p.add_argument("--train", type=Path, help="your own training rows: .csv/.tsv with a header, or .jsonl")
    p.add_argument("--val-file", type=Path, help="validation rows (default: split off the training rows)")
    p.add_argument("--test", type=Path, help="rows to report on only, never trained or selected on")
    p.add_argument("--text-field", help="name of the text column (default: text, sentence or review)")
    p.add_argument("--label-field", default="label")
    p.add_argument("--tokenizer", help="tokenizer folder when --from holds none (default: the uncased BERT vocabulary)")
    p.add_argument("--fast-tokenizer", action="store_true",
                   help="encode with the Rust `tokenizers` backend (same ids; much faster on 67k SST-2 rows)")
    p.add_argument("--out", default=None, help="output folder (default out/finetune-<task>)")
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--max-len", type=int, default=64)
    p.add_argument("--val-size", type=float, default=0.1, help="validation rows split off: a count (>=1) or fraction")
    p.add_argument("--max-train", type=int, help="train on a random subset of this many rows")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--lora", metavar="SPEC",
                   help="train LoRA adapters and the head only, e.g. r=8,alpha=16,target=q_proj|v_proj,dropout=0.05 "
                   "(keys: r, alpha, dropout, target, rslora, save, init); the adapter lands in OUT/adapter")
    p.add_argument("--qlora", metavar="SPEC",
                   help="QLoRA: as --lora (same keys, plus quant=nf4|fp4, default nf4) over the frozen base's "
                   "linear layers stored in 4 bits; the adapter is the same peft-format OUT/adapter")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="an extra training-engine setting (TrainConfig field), e.g. --set progress=false; repeatable")
    p.set_defaults(func=run_finetune)

    c = add_parser(
        "classify",
        help="label texts with a fine-tuned classifier, or images with a ViT",
        description="Print the predicted label and its probability for each text (or each line of --file). "
        "For a ViT checkpoint, give image files or folders of images: it prints each image's top-3 classes.",
    )
    c.add_argument("checkpoint", help="a folder written by `glassformer finetune`, or a ViT model folder")
    c.add_argument("texts", nargs="*", help="texts to classify (for a ViT: image files or folders)")
    c.add_argument("--file", type=Path, help="a text file: one text per line")
    c.add_argument("--json", action="store_true", help="print one JSON object per text, with all probabilities")
    c.add_argument("--strict", action="store_true",
                   help="refuse texts longer than the model takes instead of truncating them with a warning")
    c.set_defaults(func=run_classify)


def _tokenizer(source: Path, explicit: str | None):
    from glassformer.models.bert.pretrain import tokenizer_for
    from glassformer.models.bert.text import load_vocab_tokenizer

    if explicit:
        return tokenizer_for(explicit)
    for folder in (source, source.parent / "tokenizer"):  # `train bert-mlm` saves it beside best/
        if (folder / "tokenizer.json").is_file() or (folder / "vocab.txt").is_file():
            return load_vocab_tokenizer(folder)
    warnings.warn(f"{source} holds no tokenizer; using the uncased BERT vocabulary", stacklevel=2)
    return tokenizer_for(None)


def _rows_or_fraction(size: float) -> int | float:
    """``--val-size``: a row count (1 or more) or a fraction of the training rows (below 1)."""
    return int(size) if size >= 1 else float(size)


def _load_encoder(source: str):
    """A bert model from a glassformer folder, a Hugging Face folder, a packaged model or a hub id."""
    from glassformer.models import load_model
    from glassformer.utils.weights import resolve

    folder = resolve(source)
    return load_model(folder, family="bert"), folder


def run_finetune(args: argparse.Namespace) -> int:
    from glassformer.models.bert.finetune import (
        SST2_LABELS,
        FinetuneSettings,
        finetune,
        load_sst2,
        read_labelled,
        split_validation,
    )
    from glassformer.peft import parse_lora_spec
    from glassformer.utils.paths import data_root

    if args.lora and args.qlora:
        raise ValueError("give --lora or --qlora, not both (--qlora is --lora over a 4-bit base)")
    spec = args.qlora or args.lora
    lora = parse_lora_spec(spec, qlora=bool(args.qlora)) if spec else None  # fails before any data is read
    known: tuple[str, ...] = ()
    if args.task == "sst2":
        root = data_root()
        if root is None or not (root / "sst2").is_dir():
            raise FileNotFoundError("SST-2 is not in the data folder (sst2/ under GLASSFORMER_DATA or ../shared/data)")
        train, val, test = load_sst2(root / "sst2", _rows_or_fraction(args.val_size), args.seed)
        known = SST2_LABELS
    elif args.train:
        rows = read_labelled(args.train, args.text_field, args.label_field)
        if args.val_file:
            train, val = rows, read_labelled(args.val_file, args.text_field, args.label_field)
        else:
            train, val = split_validation(rows, _rows_or_fraction(args.val_size), args.seed)
        test = read_labelled(args.test, args.text_field, args.label_field) if args.test else None
    else:
        raise ValueError("give --task sst2 or --train FILE")
    model, folder = _load_encoder(args.source)
    tokenizer = _tokenizer(folder, args.tokenizer)
    if args.fast_tokenizer:
        tokenizer = tokenizer.with_backend("fast")
    settings = FinetuneSettings(
        out_dir=args.out or f"out/finetune-{args.task or Path(args.train).stem}", epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, max_len=args.max_len, max_train=args.max_train, seed=args.seed,
        overrides=tuple(args.overrides), lora=lora, base_name=args.source,
    )
    results = finetune(model, tokenizer, train, val, test, settings, known_labels=known, resume=args.resume)
    for split in ("val", "test"):
        if split in results:
            r = results[split]
            print(f"{split:5s} accuracy {r['accuracy']:.4f}  F1 {r['f1']:.4f}")
    print(f"confusion matrix: {results['confusion_png']}")
    print(f"classifier: {Path(settings.out_dir) / 'model'}  (glassformer classify {Path(settings.out_dir) / 'model'} \"...\")")
    return 0


def run_classify(args: argparse.Namespace) -> int:
    from glassformer.models.bert.finetune import classify, load_classifier
    from glassformer.viz.vit import is_vit_checkpoint

    if is_vit_checkpoint(args.checkpoint):  # images, not texts: the ViT verb in viz/cli.py
        from glassformer.viz.cli import run_classify_images

        return run_classify_images(args)

    texts = list(args.texts)
    if args.file:
        if not args.file.is_file():
            raise FileNotFoundError(f"{args.file}: file not found")
        texts += [line.rstrip("\n") for line in args.file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not texts:
        raise ValueError("nothing to classify: give texts or --file")
    model, tokenizer = load_classifier(args.checkpoint)
    for r in classify(model, tokenizer, texts, overflow="error" if args.strict else "truncate"):
        if args.json:
            print(json.dumps(r, ensure_ascii=False))
        else:
            print(f"{r['label']}\t{r['probability']:.3f}\t{r['text']}")
    sys.stdout.flush()
    return 0
