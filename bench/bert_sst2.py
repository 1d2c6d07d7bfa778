"""SST-2 with glassformer's BERT on a CPU: fine-tuned all-MiniLM-L6-v2, a TF-IDF baseline, a BERT-mini
pretrained here with masked-LM, and forward throughput against transformers, in one table.

The reported accuracies are on SST-2's ``test.tsv`` (872 rows, GLUE's dev set, the one papers
report); it is never trained or selected on. Validation rows for checkpoint selection are split
off the training rows. Each stage stores its numbers in ``bench/results/bert_sst2.json`` as soon
as it finishes and is skipped on a rerun (``--redo STAGE`` runs it again); fine-tuning runs resume
from their last checkpoint. Run it in the background:

    nohup .venv/bin/python bench/bert_sst2.py > out/bench_bert_sst2.log 2>&1 &

Stages: ``forward``, ``tfidf``, ``minilm``, ``scratch`` (``--stages`` picks some).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import sys
import time
import warnings
from pathlib import Path

# Python puts this script's folder first on sys.path, where bench/tokenizers.py would shadow the
# `tokenizers` package (which transformers and the fast tokenizer path import).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import torch  # noqa: E402

from glassformer.models.bert.finetune import FinetuneSettings, LabelSet, Rows, finetune, load_sst2  # noqa: E402
from glassformer.models.bert.hf import from_pretrained  # noqa: E402
from glassformer.utils.paths import data_root  # noqa: E402
from glassformer.utils.stages import run_stages  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "bench" / "results" / "bert_sst2.json"
STAGES = ("forward", "tfidf", "minilm", "scratch")


def machine() -> dict:
    try:
        from glassformer.utils.machine import describe

        return describe()
    except ImportError:
        return {"platform": platform.platform(), "torch": torch.__version__, "threads": torch.get_num_threads()}


def load_results(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def save_results(results: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")


def stage_forward(args: argparse.Namespace) -> dict:
    """BERT-base shape, random weights, batch 8 x 128, inference: ours (SDPA) vs transformers."""
    import transformers

    torch.manual_seed(0)
    folder = Path(args.work) / "bert-base-random"
    hf = transformers.BertModel(transformers.BertConfig(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    hf.save_pretrained(folder)
    ours = from_pretrained(folder).eval()
    hf.eval()
    ids = torch.randint(1000, 30000, (8, 128))
    mask = torch.ones_like(ids)
    times: dict[str, list[float]] = {"ours": [], "transformers": []}
    with torch.inference_mode():
        for model in (ours, hf):
            model(input_ids=ids, attention_mask=mask)  # warm-up
        for _ in range(args.forward_repeats):  # interleaved, so both see the same machine load
            for name, model in (("ours", ours), ("transformers", hf)):
                start = time.perf_counter()
                model(input_ids=ids, attention_mask=mask)
                times[name].append(time.perf_counter() - start)
        diff = (ours(input_ids=ids, attention_mask=mask).hidden_states - hf(input_ids=ids, attention_mask=mask)
                .last_hidden_state).abs().max().item()
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "forward_batch": [8, 128], "forward_repeats": args.forward_repeats,
        "forward_ours_s": med["ours"], "forward_transformers_s": med["transformers"],
        "forward_ours_samples_per_s": 8 / med["ours"], "forward_transformers_samples_per_s": 8 / med["transformers"],
        "forward_speedup_vs_transformers": med["transformers"] / med["ours"],
        "forward_max_abs_diff": diff, "transformers_attn_implementation": hf.config._attn_implementation,
    }


def tfidf_baseline(train: Rows, test_sets: dict[str, Rows], seed: int = 0) -> dict[str, float]:
    """Logistic regression on word 1-2-gram TF-IDF (scikit-learn): the baseline any encoder must beat."""
    try:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
    except ModuleNotFoundError:
        raise ModuleNotFoundError("the TF-IDF baseline needs scikit-learn: pip install scikit-learn") from None
    labels = LabelSet.from_rows(train)
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    x = vectorizer.fit_transform(train.texts)
    clf = LogisticRegression(C=4.0, max_iter=2000, random_state=seed).fit(x, labels.encode(train))
    out = {}
    for name, rows in test_sets.items():
        pred = clf.predict(vectorizer.transform(rows.texts))
        out[name] = float((pred == torch.tensor(labels.encode(rows)).numpy()).mean())
    return out


def stage_tfidf(args: argparse.Namespace) -> dict:
    train, val, test = load_sst2(args.data, args.val_size, args.seed)
    acc = tfidf_baseline(train, {"val": val, "test": test}, args.seed)
    return {"tfidf_dev_accuracy": acc["test"], "tfidf_val_accuracy": acc["val"]}


def _settings(args: argparse.Namespace, name: str, **changes) -> FinetuneSettings:
    base = dict(out_dir=str(Path(args.work) / name), epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                max_len=args.max_len, val_size=args.val_size, max_train=args.max_train, seed=args.seed,
                progress=args.progress)
    base.update(changes)
    return FinetuneSettings(**base)


def stage_minilm(args: argparse.Namespace) -> dict:
    from glassformer.models.bert.text import load_vocab_tokenizer
    from glassformer.utils.weights import resolve

    train, val, test = load_sst2(args.data, args.val_size, args.seed)
    folder = resolve("all-MiniLM-L6-v2")
    tokenizer = load_vocab_tokenizer(folder).with_backend("fast") if args.fast_tokenizer else load_vocab_tokenizer(folder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fresh classifier head is announced; expected here
        model = from_pretrained(folder, head="sequence", num_labels=2, label_names=("negative", "positive"),
                                pooling=args.pooling)
    start = time.perf_counter()
    res = finetune(model, tokenizer, train, val, test, _settings(args, "minilm"), known_labels=("negative", "positive"),
                   resume=True)
    png = args.result.with_name(args.result.stem + "_confusion.png")
    shutil.copyfile(res["confusion_png"], png)  # committed beside the JSON
    return {
        "dev_accuracy": res["test"]["accuracy"], "dev_f1": res["test"]["f1"], "dev_confusion": res["test"]["confusion"],
        "val_accuracy": res["val"]["accuracy"], "train_examples": res["train_examples"], "steps": res["steps"],
        "wall_seconds": time.perf_counter() - start, "train_seconds": res["train_seconds"],
        "train_samples_per_s": res["train_samples_per_s"], "confusion_png": png.name,
        "minilm_settings": {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "max_len": args.max_len,
                            "max_train": args.max_train, "pooling": args.pooling},
    }


def stage_scratch(args: argparse.Namespace) -> dict:
    """BERT-mini: masked-LM pretraining from scratch on the embedded corpus, then SST-2 fine-tuning."""
    from glassformer import registry
    from glassformer.models.bert.pretrain import build_mlm_data, tokenizer_for
    from glassformer.train import TrainConfig, Trainer

    preset = registry.get("bert-mini")
    config = preset.make_config().replace(max_seq_len=128)
    out = Path(args.work) / "mini-mlm"
    train_cfg = TrainConfig(out_dir=str(out), max_steps=args.mlm_steps, batch_size=args.mlm_batch_size, lr=1e-3, warmup_steps=50,
                            schedule="linear", eval_interval=max(1, args.mlm_steps // 4), eval_batches=10,
                            save_interval=max(1, args.mlm_steps // 4), progress=args.progress, weight_decay=0.01)
    torch.manual_seed(args.seed)
    model = preset.build(config)
    data = build_mlm_data(train_cfg, config, argparse.Namespace(data_options={"corpus": args.mlm_corpus, "max_len": args.mlm_max_len}))
    start = time.perf_counter()
    summary = Trainer(model, train_cfg, *data).fit(resume=True)
    pretrain_s = time.perf_counter() - start
    train, val, test = load_sst2(args.data, args.val_size, args.seed)
    res = finetune(model, tokenizer_for(None), train, val, test,
                   _settings(args, "mini-sst2", lr=args.scratch_lr, epochs=args.scratch_epochs,
                             max_train=args.scratch_max_train), known_labels=("negative", "positive"), resume=True)
    return {
        "scratch_mini_dev_accuracy": res["test"]["accuracy"], "scratch_mini_dev_f1": res["test"]["f1"],
        "scratch_mini_val_accuracy": res["val"]["accuracy"], "scratch_mini_mlm_steps": summary.step,
        "scratch_mini_mlm_eval": summary.last_eval, "scratch_mini_pretrain_seconds": pretrain_s,
        "scratch_mini_finetune_seconds": res["train_seconds"], "scratch_mini_train_examples": res["train_examples"],
        "scratch_mini_corpus": args.mlm_corpus, "scratch_mini_mlm_batch": [args.mlm_batch_size, args.mlm_max_len],
    }


def table(r: dict) -> str:
    rows = [
        ("TF-IDF + logistic regression", r.get("tfidf_dev_accuracy"), "scikit-learn, word 1-2 grams"),
        ("BERT-mini, MLM-pretrained here", r.get("scratch_mini_dev_accuracy"),
         f"{r.get('scratch_mini_mlm_steps', '?')} MLM steps on {r.get('scratch_mini_corpus', '?')}"),
        ("all-MiniLM-L6-v2 fine-tuned", r.get("dev_accuracy"),
         f"{r.get('train_examples', '?')} examples, {r.get('wall_seconds', 0) / 60:.1f} min"),
    ]
    lines = ["| model | SST-2 dev acc (872) | note |", "|---|---|---|"]
    lines += [f"| {name} | {acc * 100:.1f}% | {note} |" if acc is not None else f"| {name} | - | {note} |"
              for name, acc, note in rows]
    if "forward_speedup_vs_transformers" in r:
        lines.append(f"forward BERT-base 8x128: ours {r['forward_ours_s'] * 1000:.0f} ms, transformers "
                     f"{r['forward_transformers_s'] * 1000:.0f} ms, speed-up {r['forward_speedup_vs_transformers']:.2f}x")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    p.add_argument("--redo", nargs="*", default=[], choices=STAGES, help="run these stages even if results exist")
    p.add_argument("--result", type=Path, default=RESULT, help="the JSON file of results")
    p.add_argument("--work", default=str(ROOT / "out" / "bench_bert_sst2"), help="checkpoints and run files")
    p.add_argument("--data", default=None, help="SST-2 folder (default: data_root()/sst2)")
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--max-len", type=int, default=64)
    p.add_argument("--pooling", choices=["cls", "mean"], default="cls",
                   help="what MiniLM's classifier reads: [CLS] via the pooler, or the token mean it was trained for")
    p.add_argument("--max-train", type=int, default=None, help="a random subset of the training rows")
    p.add_argument("--val-size", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mlm-steps", type=int, default=200)
    p.add_argument("--mlm-corpus", default="pydoc")
    p.add_argument("--mlm-max-len", type=int, default=64)
    p.add_argument("--mlm-batch-size", type=int, default=32)
    p.add_argument("--scratch-lr", type=float, default=2e-4)
    p.add_argument("--scratch-epochs", type=float, default=1.0)
    p.add_argument("--scratch-max-train", type=int, default=10000)
    p.add_argument("--forward-repeats", type=int, default=10)
    p.add_argument("--fast-tokenizer", action="store_true", help="encode with the tokenizers-library backend")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads; 1 is much faster than 2 when other jobs load the CPU (OpenMP oversubscription)")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.data is None:
        root = data_root()
        if root is None or not (root / "sst2" / "test.tsv").is_file():
            print("SST-2 is not in the data folder (sst2/ under GLASSFORMER_DATA or ../shared/data)", file=sys.stderr)
            return 2
        args.data = str(root / "sst2")
    results = load_results(args.result)
    results["machine"] = {**machine(), "torch_threads": torch.get_num_threads()}

    def save(results: dict) -> None:
        save_results(results, args.result)
        print(table(results), flush=True)

    run_stages(results, args.stages, lambda stage: globals()[f"stage_{stage}"](args), save, args.redo)
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
