"""Retrieval-augmented answers over glassformer's own docs site: retrieval, faithfulness, speed, engines.

Stages (each saves its numbers into ``bench/results/rag.json`` as soon as it finishes and is
skipped on a rerun; ``--redo STAGE`` runs it again):

* **retrieval**: ``glassformer.rag.build_index`` over ``docs/`` (the MkDocs site), then the
  questions of ``bench/rag_questions.jsonl``. A retrieved chunk *answers* a question when it comes
  from the question's page and contains its quote (whitespace-normalised), a test that survives
  re-chunking, unlike a chunk number. Reported: recall@1, recall@5 and MRR (over the top 10) for
  our dense search, dense search with BM25 fusion (``rerank=True``) and ``Bm25Retriever`` alone;
  seconds per question for a search.
* **throughput**: indexing speed, chunks per second, of our embedder (our BERT, mean pooling, L2
  normalisation) against ``sentence-transformers`` running the same packaged all-MiniLM-L6-v2 on
  the same chunk texts, and the largest difference between their vectors.
* **engines**: recall@10 of FAISS (HNSW above 20k vectors) and Qdrant (local mode) against the
  exact NumPy store, on ``--vectors`` MiniLM embeddings of real sentences (SST-2 and Multi30k
  English from the shared data), with queries held out of the stored set. Embeddings are cached
  in ``out/rag/`` (keyed by the sentences and the model), so only the first run pays for them.
* **answers**: every answerer in ``--answerers`` (``extractive``, ``smollm2``, ``gemma3`` when its
  weights are installed) answers every question through ``glassformer.rag.answer``. Faithfulness
  is two checks on each answer: (1) *cited*: one of the chunks it cites contains the question's
  quote; (2) *supported*: the share of the answer's words found in neither the retrieved chunks
  nor the question is at most ``--unsupported-max`` (0.2). An answer is faithful when both hold;
  "I don't know" counts as abstaining (reported apart, never faithful). Seconds per question
  include retrieval and answering.

Run it from the repository root (``-P`` keeps ``bench/`` off the import path, where
``bench/tokenizers.py`` would shadow the ``tokenizers`` package):

    .venv/bin/python -P bench/rag.py --vectors 2000              # while developing
    .venv/bin/python -P bench/rag.py --vectors 100000 --redo engines
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import re
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import numpy as np  # noqa: E402
import torch  # noqa: E402

from glassformer.rag.embed import DEFAULT_MODEL, Embedder  # noqa: E402
from glassformer.rag.index import Bm25Retriever, Hit, Index, build_index, open_index  # noqa: E402
from glassformer.rag.stores import make_store, recall_vs_exact  # noqa: E402
from glassformer.utils.machine import describe  # noqa: E402
from glassformer.utils.paths import data_root  # noqa: E402
from glassformer.utils.stages import run_stages  # noqa: E402
from glassformer.utils.weights import resolve  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "bench" / "results" / "rag.json"
QUESTIONS = ROOT / "bench" / "rag_questions.jsonl"
WORK = ROOT / "out" / "rag"
STAGES = ("retrieval", "throughput", "engines", "answers")
MRR_DEPTH = 10
WORD = re.compile(r"\w+", re.UNICODE)
# Citation markers an answerer may add ("[2]", "(docs/training.md:12-18)") are not claims about the text.
CITATION_MARK = re.compile(r"\[\d+(?:\s*,\s*\d+)*\]|\(?[\w./-]+\.(?:md|txt|pdf)(?::\d+(?:-\d+)?)?\)?")


def normalized(text: str) -> str:
    return " ".join(text.split())


def load_questions(path: Path) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not rows:
        raise SystemExit(f"{path} holds no questions")
    return rows


def answers_question(chunk_file: str, chunk_text: str, question: dict[str, Any]) -> bool:
    """The chunk comes from the question's page (or a page in ``also`` that states the same fact) and holds its quote."""
    pages = [question["file"], *question.get("also", [])]
    return chunk_file in pages and normalized(question["quote"]) in normalized(chunk_text)


def first_answering_rank(hits: Sequence[Hit], question: dict[str, Any]) -> int | None:
    """1-based rank of the first hit that answers ``question``, or None."""
    for rank, hit in enumerate(hits, 1):
        if answers_question(hit.chunk.file, hit.chunk.text, question):
            return rank
    return None


def retrieval_scores(search: Callable[[str], list[Hit]], questions: list[dict[str, Any]]) -> dict[str, Any]:
    """recall@1, recall@5, MRR@10 and seconds per search of one retriever over the question set."""
    ranks, seconds = [], []
    for question in questions:
        start = time.perf_counter()
        hits = search(question["question"])
        seconds.append(time.perf_counter() - start)
        ranks.append(first_answering_rank(hits, question))
    return {
        "recall_at_1": sum(r is not None and r <= 1 for r in ranks) / len(ranks),
        "recall_at_5": sum(r is not None and r <= 5 for r in ranks) / len(ranks),
        "mrr": sum(1 / r for r in ranks if r is not None) / len(ranks),
        "seconds_per_question": statistics.median(seconds),
        "missed_at_5": [q["id"] for q, r in zip(questions, ranks) if r is None or r > 5],
    }


def docs_index(args: argparse.Namespace) -> tuple[Index, float]:
    """A fresh index of the docs site and the seconds it took to build."""
    start = time.perf_counter()
    index = build_index([ROOT / "docs"], WORK / "docs-index", store=args.store, progress=False)
    return index, time.perf_counter() - start


def stage_retrieval(args: argparse.Namespace, questions: list[dict[str, Any]]) -> dict[str, Any]:
    index, build_seconds = docs_index(args)
    bm25 = Bm25Retriever.from_index(index)
    table = {
        "dense": retrieval_scores(lambda q: index.search(q, MRR_DEPTH), questions),
        "dense_bm25_fusion": retrieval_scores(lambda q: index.search(q, MRR_DEPTH, rerank=True), questions),
        "bm25": retrieval_scores(lambda q: bm25.search(q, MRR_DEPTH), questions),
    }
    dense = table["dense"]
    print(f"retrieval over {len(index)} chunks: dense recall@1 {dense['recall_at_1']:.3f} "
          f"@5 {dense['recall_at_5']:.3f} MRR {dense['mrr']:.3f}; bm25 @5 {table['bm25']['recall_at_5']:.3f}")
    # A question no chunk answers (its quote cut by a chunk boundary) would count against every retriever.
    unanswerable = [q["id"] for q in questions
                    if not any(answers_question(c.file, c.text, q) for c in index.chunks.values())]
    return {
        "recall_at_1": dense["recall_at_1"], "recall_at_5": dense["recall_at_5"], "mrr": dense["mrr"],
        "bm25_recall_at_5": table["bm25"]["recall_at_5"],
        "retrieval": {"questions": len(questions), "chunks": len(index), "files": len(index.files),
                      "store": args.store, "unanswerable": unanswerable, "index_build_seconds": build_seconds, "mrr_depth": MRR_DEPTH,
                      "retrievers": table},
    }


def stage_throughput(args: argparse.Namespace, questions: list[dict[str, Any]]) -> dict[str, Any]:
    from sentence_transformers import SentenceTransformer

    index = open_index(WORK / "docs-index") if (WORK / "docs-index").exists() else docs_index(args)[0]
    texts = [chunk.embedding_text() for chunk in index.chunks.values()]
    ours = index.embedder
    reference = SentenceTransformer(str(resolve(DEFAULT_MODEL)), device="cpu")
    ours.embed(texts[:8])  # warm-up: first calls allocate
    reference.encode(texts[:8], batch_size=32)
    timings: dict[str, list[float]] = {"ours": [], "sentence_transformers": []}
    for _ in range(args.rounds):  # alternate, so a busy neighbour slows both alike
        start = time.perf_counter()
        ours_vectors = ours.embed(texts, batch_size=32)
        timings["ours"].append(time.perf_counter() - start)
        start = time.perf_counter()
        ref_vectors = reference.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
        timings["sentence_transformers"].append(time.perf_counter() - start)
    seconds = {name: statistics.median(values) for name, values in timings.items()}
    rate = {name: len(texts) / value for name, value in seconds.items()}
    print(f"indexing {len(texts)} chunks: ours {rate['ours']:.1f}/s, sentence-transformers "
          f"{rate['sentence_transformers']:.1f}/s")
    return {"throughput": {
        "chunks": len(texts), "rounds": args.rounds, "batch_size": 32, "seconds": seconds,
        "chunks_per_second": rate, "ratio_ours_vs_sentence_transformers": rate["ours"] / rate["sentence_transformers"],
        "max_abs_diff": float(np.abs(ours_vectors - ref_vectors).max()), "all_seconds": timings,
    }}


def real_sentences(limit: int) -> list[str]:
    """Distinct sentences of SST-2 (train, dev, test), then Multi30k (train, val, test) English, then German.

    English alone holds 98,854 distinct sentences, just short of 100k stored plus the held-out
    queries; Multi30k's German side (real captions too) tops it up.
    """
    root = data_root()
    if root is None:
        raise SystemExit("the engines stage needs the shared data (SST-2, Multi30k): set GLASSFORMER_DATA")
    lines: list[str] = []
    for name in ("train", "dev", "test"):
        rows = (root / "sst2" / f"{name}.tsv").read_text(encoding="utf-8").splitlines()[1:]
        lines += [row.rsplit("\t", 1)[0].strip() for row in rows]
    for lang in ("en", "de"):
        for name in ("train", "val", "test_2016_flickr"):
            with gzip.open(root / "multi30k" / "task1" / "raw" / f"{name}.{lang}.gz", "rt", encoding="utf-8") as handle:
                lines += [line.strip() for line in handle]
    sentences = list(dict.fromkeys(line for line in lines if line))
    if len(sentences) < limit:
        raise SystemExit(f"--vectors {limit}: the shared data hold {len(sentences)} distinct sentences; ask for fewer")
    return sentences[:limit]


def cached_embeddings(embedder: Embedder, sentences: list[str]) -> np.ndarray:
    """Embeddings of ``sentences``, from ``out/rag/`` when these sentences were embedded before."""
    key = hashlib.sha256("\n".join([embedder.name, *sentences]).encode()).hexdigest()[:16]
    path = WORK / f"sentences-{len(sentences)}-{key}.npy"
    if path.is_file():
        return np.load(path)
    start = time.perf_counter()
    vectors = embedder.embed(sentences, batch_size=64, progress=True)
    print(f"embedded {len(sentences)} sentences in {time.perf_counter() - start:.0f} s")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors


def engine_row(kind: str, ids: list[str], vectors: np.ndarray, queries: np.ndarray, exact: Any, k: int) -> dict[str, Any]:
    store = make_store(kind, vectors.shape[1])
    start = time.perf_counter()
    for begin in range(0, len(ids), 10_000):
        store.add(ids[begin:begin + 10_000], vectors[begin:begin + 10_000])
    add_seconds = time.perf_counter() - start
    start = time.perf_counter()
    for query in queries:
        store.search(query, k)
    search_ms = 1000 * (time.perf_counter() - start) / len(queries)
    row = {"recall_at_10_vs_exact": recall_vs_exact(store, exact, queries, k), "add_seconds": add_seconds,
           "search_ms_per_query": search_ms}
    if kind == "faiss":
        row["approximate"] = bool(store.approximate)
    return row


def stage_engines(args: argparse.Namespace, questions: list[dict[str, Any]]) -> dict[str, Any]:
    embedder = Embedder.load(DEFAULT_MODEL)
    sentences = real_sentences(args.vectors + args.queries)
    vectors = cached_embeddings(embedder, sentences)
    stored, queries = vectors[: args.vectors], vectors[args.vectors:]
    ids = [str(i) for i in range(len(stored))]
    exact = make_store("exact", stored.shape[1])
    exact.add(ids, stored)
    start = time.perf_counter()
    for query in queries:
        exact.search(query, 10)
    exact_ms = 1000 * (time.perf_counter() - start) / len(queries)
    rows = {kind: engine_row(kind, ids, stored, queries, exact, 10) for kind in ("faiss", "qdrant")}
    for kind, row in rows.items():
        print(f"{kind}: recall@10 vs exact {row['recall_at_10_vs_exact']:.4f} on {len(stored)} vectors")
    return {"engines": {"vectors": len(stored), "queries": len(queries), "k": 10,
                        "sentences": "SST-2 train/dev/test + Multi30k en then de train/val/test2016, distinct, file order",
                        "exact_search_ms_per_query": exact_ms, "stores": rows}}


def answer_words(text: str) -> list[str]:
    return WORD.findall(CITATION_MARK.sub(" ", text).lower())


def judge(result: Any, question: dict[str, Any], index: Index, unsupported_max: float) -> dict[str, Any]:
    """The two faithfulness checks on one answer (see the module docstring)."""
    retrieved = " ".join(chunk.text for chunk in result.chunks)
    support = set(WORD.findall((retrieved + " " + question["question"]).lower()))
    words = answer_words(result.text)
    unsupported = sum(w not in support for w in words) / len(words) if words else 0.0
    cited = {tuple(c) for c in result.citations}
    cited_hit = any(answers_question(c.file, c.text, question) for c in index.chunks.values() if c.citation in cited)
    abstained = not result.known
    return {"abstained": abstained, "cited_quote": cited_hit, "unsupported_share": unsupported,
            "faithful": cited_hit and unsupported <= unsupported_max and not abstained}


def answerer_table(index: Index, name: str, questions: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    from glassformer.rag.answer import answer

    verdicts, seconds, examples = [], [], []
    for question in questions:
        start = time.perf_counter()
        result = answer(index, question["question"], answerer=name, k=args.k)
        seconds.append(time.perf_counter() - start)
        verdict = judge(result, question, index, args.unsupported_max)
        verdicts.append(verdict)
        if len(examples) < 5:
            examples.append({"id": question["id"], "question": question["question"], "answer": result.text,
                             "citations": [list(c) for c in result.citations], **verdict})
    n = len(verdicts)
    table = {
        "questions": n, "k": args.k, "unsupported_max": args.unsupported_max,
        "faithfulness": sum(v["faithful"] for v in verdicts) / n,
        "cited_quote_rate": sum(v["cited_quote"] for v in verdicts) / n,
        "supported_rate": sum(v["unsupported_share"] <= args.unsupported_max for v in verdicts) / n,
        "mean_unsupported_share": statistics.fmean(v["unsupported_share"] for v in verdicts),
        "abstain_rate": sum(v["abstained"] for v in verdicts) / n,
        "seconds_per_question": statistics.median(seconds), "total_seconds": sum(seconds), "examples": examples,
    }
    print(f"{name}: faithfulness {table['faithfulness']:.3f}, cited {table['cited_quote_rate']:.3f}, "
          f"{table['seconds_per_question']:.2f} s/question")
    return table


def stage_answers(args: argparse.Namespace, questions: list[dict[str, Any]]) -> dict[str, Any]:
    index = open_index(WORK / "docs-index") if (WORK / "docs-index").exists() else docs_index(args)[0]
    subset = questions[: args.answer_questions] if args.answer_questions else questions
    tables, unavailable = {}, {}
    for name in args.answerers:
        try:
            tables[name] = answerer_table(index, name, subset, args)
        except (FileNotFoundError, ImportError) as error:  # weights not installed: say so, keep the others
            unavailable[name] = str(error)
            print(f"{name}: skipped ({error})")
    if args.answerer not in tables:
        raise SystemExit(f"--answerer {args.answerer} did not run ({unavailable.get(args.answerer, 'not in --answerers')})")
    main = tables[args.answerer]
    return {"answerer": args.answerer, "faithfulness": main["faithfulness"],
            "seconds_per_question": main["seconds_per_question"],
            "answers": {"answerers": tables, "unavailable": unavailable}}


def load_results() -> dict[str, Any]:
    return json.loads(RESULT.read_text()) if RESULT.is_file() else {}


def save_results(results: dict[str, Any]) -> None:
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(results, indent=2) + "\n")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    parser.add_argument("--redo", nargs="*", choices=STAGES, default=[], help="run these stages again")
    parser.add_argument("--store", default="faiss", choices=("faiss", "qdrant", "exact"), help="the docs index's store")
    parser.add_argument("--vectors", type=int, default=100_000, help="stored sentence embeddings for the engines stage")
    parser.add_argument("--queries", type=int, default=1000, help="held-out query sentences for the engines stage")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of the throughput stage")
    parser.add_argument("--answerers", nargs="+", default=["extractive", "smollm2", "gemma3"])
    parser.add_argument("--answerer", default="smollm2", help="whose numbers go to the top-level keys")
    parser.add_argument("--answer-questions", type=int, default=0, help="answer only the first N questions (0: all)")
    parser.add_argument("--k", type=int, default=4, help="chunks handed to the answerer")
    parser.add_argument("--unsupported-max", type=float, default=0.2,
                        help="largest share of answer words found in no retrieved chunk for a supported answer")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    if args.vectors < 100 or args.queries < 1:
        parser.error("--vectors must be at least 100 and --queries at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=".*longer than max_len.*")
    questions = load_questions(QUESTIONS)
    results = load_results()
    runners = {"retrieval": stage_retrieval, "throughput": stage_throughput, "engines": stage_engines,
               "answers": stage_answers}

    def save(results: dict) -> None:
        results["machine"] = describe()
        results["threads"] = args.threads
        save_results(results)

    run_stages(results, args.stages, lambda stage: runners[stage](args, questions), save, args.redo)
    print(f"results in {RESULT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
