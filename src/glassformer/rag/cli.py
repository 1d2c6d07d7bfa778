"""``glassformer rag index`` and ``glassformer rag ask``: thin verbs over ``glassformer.rag``.

    glassformer rag index docs --out out/docs-index --store faiss
    glassformer rag ask out/docs-index "How do I export a model?" --k 4 --answerer extractive
"""

from __future__ import annotations

import argparse

from glassformer.utils.commands import AddParser


def register(add_parser: AddParser) -> None:
    p = add_parser("rag", help="index documents and answer questions from them, with citations",
                   description="Retrieval-augmented answers: chunk and embed Markdown/text/PDF files with "
                   "all-MiniLM-L6-v2 (our BERT), then answer questions from the retrieved chunks, citing file and lines.")
    sub = p.add_subparsers(dest="rag_command", metavar="VERB", required=True)

    index = sub.add_parser("index", help="build an index of a folder of documents")
    index.add_argument("paths", nargs="+", help="folders or files (.md, .txt, .rst, .pdf)")
    index.add_argument("--out", required=True, help="the index folder to write")
    index.add_argument("--store", choices=["faiss", "qdrant", "exact"], default="faiss",
                       help="vector store (default faiss: exact below 20k chunks, HNSW above)")
    index.add_argument("--qdrant-url", help="a Qdrant server or cluster for --store qdrant (default: in-process)")
    index.add_argument("--max-tokens", type=int, default=200, help="word pieces per chunk at most (default 200)")
    index.set_defaults(func=run_index)

    ask = sub.add_parser("ask", help="answer a question from an index, citing file and lines")
    ask.add_argument("index", help="an index folder from `glassformer rag index`")
    ask.add_argument("question")
    ask.add_argument("--k", type=int, default=4, help="chunks to retrieve (default 4)")
    ask.add_argument("--answerer", default="extractive",
                     help="extractive (default), smollm2, gemma3, or a path to a chat model (GGUF file or folder)")
    ask.add_argument("--threshold", type=float, default=None, help="cosine below which a chunk counts as unrelated")
    ask.add_argument("--rerank", action="store_true", help="re-order dense candidates by fusing in BM25")
    ask.set_defaults(func=run_ask)


def run_index(args: argparse.Namespace) -> int:
    from glassformer.rag import ChunkSettings, build_index

    options = {"url": args.qdrant_url} if args.qdrant_url else {}
    if args.qdrant_url and args.store != "qdrant":
        raise ValueError("--qdrant-url goes with --store qdrant")
    index = build_index(args.paths, args.out, store=args.store, settings=ChunkSettings(max_tokens=args.max_tokens),
                        store_options=options)
    print(f"indexed {len(index.files)} files as {len(index)} chunks into {args.out} ({args.store})")
    for name, why in index.manifest.get("skipped", []):
        print(f"skipped {name}: {why}")
    return 0


def run_ask(args: argparse.Namespace) -> int:
    from glassformer.rag import DEFAULT_THRESHOLD, answer, open_index

    threshold = DEFAULT_THRESHOLD if args.threshold is None else args.threshold
    result = answer(open_index(args.index), args.question, answerer=args.answerer, k=args.k,
                    threshold=threshold, rerank=args.rerank)
    print(result.text)
    for file, start, end in result.citations:
        print(f"  [{file}:{start}-{end}]")
    for note in result.notes:
        print(f"note: {note}")
    return 0
