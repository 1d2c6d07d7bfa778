"""``glassformer tokenizer train|encode``: learn a vocabulary from files, look at how text is cut.

    glassformer tokenizer train --kind bpe --vocab-size 4096 data/*.txt --out out/tok
    glassformer tokenizer encode out/tok "Hello world"
"""

from __future__ import annotations

import argparse

from glassformer.utils.commands import AddParser


def register(add_parser: AddParser) -> None:
    parser = add_parser("tokenizer", help="train a tokenizer on text files, or encode text with one",
                            description="Train a byte-level BPE, WordPiece or character tokenizer, or show "
                                        "how a saved tokenizer cuts a text.")
    verbs = parser.add_subparsers(dest="tokenizer_command", metavar="SUBCOMMAND", required=True)

    train = verbs.add_parser("train", help="learn a vocabulary from UTF-8 text files",
                             description="Learn a vocabulary from UTF-8 text files and save it to a folder "
                                         "(tokenizer.json + the classic vocab files).")
    train.add_argument("files", nargs="+", help="UTF-8 text files to learn from")
    train.add_argument("--kind", choices=("bpe", "wordpiece", "char"), default="bpe",
                       help="byte-level BPE (GPT-style), WordPiece (BERT-style) or characters (default: bpe)")
    train.add_argument("--vocab-size", type=int, default=None,
                       help="number of tokens, special tokens included (needed for bpe and wordpiece)")
    train.add_argument("--out", required=True, help="folder to save the tokenizer in")
    train.add_argument("--special-tokens", nargs="*", default=None,
                       help="special tokens (default: <|endoftext|> for bpe, BERT's five for wordpiece, none for char)")
    train.add_argument("--min-frequency", type=int, default=2, help="never merge a pair seen fewer times (default: 2)")
    train.add_argument("--pattern", default="gpt2",
                       help="bpe pre-tokenizer: gpt2, cl100k, smollm or a regex (default: gpt2)")
    train.add_argument("--cased", action="store_true", help="wordpiece: keep case and accents")
    train.set_defaults(func=run_train)

    encode = verbs.add_parser("encode", help="show the tokens and ids of a text",
                              description="Encode TEXT with the tokenizer saved in PATH and show each token.")
    encode.add_argument("path", help="a tokenizer folder or file (tokenizer.json, vocab.txt, *.tiktoken, ...)")
    encode.add_argument("text", help="the text to encode")
    encode.add_argument("--add-special-tokens", action="store_true", help="wrap with the template ([CLS] ... [SEP])")
    encode.add_argument("--backend", choices=("pure", "fast"), default="pure", help="pure Python or the tokenizers library")
    encode.set_defaults(func=run_encode)


def run_train(args: argparse.Namespace) -> int:
    from glassformer.tokenizers.char import CharTokenizer
    from glassformer.tokenizers.files import read_corpus
    from glassformer.tokenizers.trainers import train_bpe, train_wordpiece

    if args.kind != "char" and args.vocab_size is None:
        raise ValueError(f"--vocab-size is required for --kind {args.kind}")
    texts = read_corpus(args.files)
    if args.kind == "bpe":
        specials = args.special_tokens if args.special_tokens is not None else ["<|endoftext|>"]
        tokenizer = train_bpe(texts, args.vocab_size, special_tokens=specials, pattern=args.pattern,
                              min_frequency=args.min_frequency)
    elif args.kind == "wordpiece":
        options = {"special_tokens": args.special_tokens} if args.special_tokens is not None else {}
        tokenizer = train_wordpiece(texts, args.vocab_size, lowercase=not args.cased,
                                    min_frequency=args.min_frequency, **options)
    else:
        tokenizer = CharTokenizer.from_text("".join(texts), args.special_tokens or ())
    out = tokenizer.save(args.out)
    print(f"{type(tokenizer).__name__} with {tokenizer.vocab_size} tokens saved to {out}")
    return 0


def run_encode(args: argparse.Namespace) -> int:
    from glassformer.tokenizers.bpe import ByteLevelBPE
    from glassformer.tokenizers.formats import load_tokenizer

    tokenizer = load_tokenizer(args.path).with_backend(args.backend)
    ids = tokenizer.encode(args.text, add_special_tokens=args.add_special_tokens)
    print(f"{len(ids)} tokens")
    print(f"{'id':>7}  {'token':<20}  text")
    for index in ids:
        token = tokenizer.id_to_token(index) or ""
        # For BPE, show the bytes a token stands for: "Ġthe" is b" the".
        shown = repr(tokenizer.token_bytes(index)) if isinstance(tokenizer, ByteLevelBPE) else repr(token)
        print(f"{index:>7}  {token:<20}  {shown}")
    print("ids:", " ".join(map(str, ids)))
    return 0
