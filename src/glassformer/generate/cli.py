"""``glassformer generate`` and ``glassformer chat``: thin verbs over ``glassformer.generate``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from glassformer.generate.config import CACHE_KINDS, STRATEGIES, GenerationConfig
from glassformer.utils.commands import AddParser

if TYPE_CHECKING:
    from glassformer.generate.chat import ChatSession


def register(add_parser: AddParser) -> None:
    gen = add_parser(
        "generate",
        help="continue a prompt with a language model (or translate with an encoder-decoder)",
        description="Continue --prompt with a model folder (glassformer's, or a Hugging Face one a family reads) "
        "or a model file (.gguf), streaming the text as it comes (beam search prints at the end).",
    )
    gen.add_argument("checkpoint", help="model folder or .gguf file")
    gen.add_argument("--prompt", required=True, help="the text to continue")
    gen.add_argument("--strategy", choices=STRATEGIES, default="greedy")
    gen.add_argument("--num-beams", type=int, default=None, help="beams for --strategy beam (default 4)")
    gen.add_argument("--length-penalty", type=float, default=1.0)
    gen.add_argument("--stop", action="append", default=[], metavar="TEXT", help="stop string (repeatable)")
    gen.add_argument("--ignore-eos", action="store_true", help="do not stop at the tokenizer's end-of-text token")
    gen.add_argument("--cache", choices=CACHE_KINDS, default="static")
    gen.add_argument("--truncate-prompt", action="store_true", help="keep the prompt's end if it is too long")
    gen.add_argument(
        "--slide-window", action="store_true", help="keep generating past the model's context (oldest tokens slide out)"
    )
    gen.add_argument("--prompt-lookup", type=int, default=0, metavar="N",
                     help="greedy only: guess N tokens from earlier text and check them in one pass")  # fmt: skip
    gen.add_argument("--quant", choices=["int8", "nf4"], default=None,
                     help="quantize the float model's linear layers in memory first (decodes with the int8 / 4-bit kernels)")  # fmt: skip
    _sampling_args(gen, temperature=1.0, top_p=1.0, max_new_tokens=64)
    gen.set_defaults(func=_generate)

    chat = add_parser(
        "chat",
        help="talk with a model in the terminal (default: the chat model a family offers)",
        description="An interactive chat that streams replies and keeps the history within the model's "
        "context. Commands: /reset /temp X /topk N /topp P /quit.",
    )
    chat.add_argument("checkpoint", nargs="?", help="model folder or .gguf file (default: the chat model a family offers)")
    chat.add_argument("--model", default=None, help="a chat model a family offers by name (gemma3-270m, smollm2-135m)")
    chat.add_argument("--system", default=None, help="a system message that starts the conversation")
    chat.add_argument("--adapter", default=None, metavar="DIR",
                      help="a LoRA adapter folder (peft's format, e.g. from glassformer.peft.save_adapter) merged into the model")
    chat.add_argument("--quant", choices=["int8", "nf4"], default=None,
                      help="quantize the float model's linear layers in memory first, after merging any --adapter "
                      "(decodes with the int8 / 4-bit kernels)")  # fmt: skip
    _sampling_args(chat, temperature=0.7, top_p=0.9, max_new_tokens=256)
    chat.set_defaults(func=_chat)


def _sampling_args(parser: argparse.ArgumentParser, *, temperature: float, top_p: float, max_new_tokens: int) -> None:
    parser.add_argument("--max-new-tokens", type=int, default=max_new_tokens)
    parser.add_argument("--temperature", type=float, default=temperature, help="0 = greedy")
    parser.add_argument("--top-k", type=int, default=0, help="sample among the k most likely tokens (0 = off)")
    parser.add_argument("--top-p", type=float, default=top_p, help="nucleus sampling mass in (0, 1]")
    parser.add_argument("--repetition-penalty", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=None)


def _generate(args: argparse.Namespace) -> int:
    from glassformer.generate.decode import generate, stream
    from glassformer.generate.loading import load_checkpoint

    ckpt = load_checkpoint(args.checkpoint)
    if args.quant:
        _quantize(ckpt.model, args.quant, args.checkpoint)
    eos = getattr(ckpt.tokenizer, "eos_token_id", None)
    config = GenerationConfig(
        strategy=args.strategy,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        repetition_penalty=args.repetition_penalty,
        num_beams=(args.num_beams or 4) if args.strategy == "beam" else (args.num_beams or 1),
        length_penalty=args.length_penalty,
        stop_token_ids=() if (eos is None or args.ignore_eos) else (eos,),
        stop_strings=tuple(args.stop),
        seed=args.seed,
        cache=args.cache,
        truncate_prompt=args.truncate_prompt,
        slide_window=args.slide_window,
        prompt_lookup=args.prompt_lookup,
    )
    out = sys.stdout
    if not hasattr(ckpt.model, "encode_for_generation"):
        out.write(args.prompt)  # a decoder continues the prompt; an encoder-decoder answers it
    if config.strategy == "beam":
        result = generate(ckpt.model, args.prompt, config=config, tokenizer=ckpt.tokenizer)
        out.write(result.texts[0])
    else:
        for piece in stream(ckpt.model, args.prompt, config=config, tokenizer=ckpt.tokenizer):
            out.write(piece.text)
            out.flush()
    out.write("\n")
    return 0


def _quantize(model: Any, to: str, checkpoint: str) -> None:
    """``--quant``: the float checkpoint's linear layers to int8 / NF4, in memory (lm_head stays float)."""
    from glassformer.quant import is_quantized, quantize_model

    if is_quantized(model):
        found = (getattr(model, "quantization", None) or {}).get("format", "quantized layers")
        raise ValueError(f"{checkpoint} is already quantized ({found}); drop --quant {to}, or pass the float "
                         "checkpoint to quantize it once")  # fmt: skip
    quantize_model(model, to=to)


def _chat(args: argparse.Namespace) -> int:
    from glassformer.generate.chat import ChatSession

    if args.checkpoint:
        from glassformer.generate.loading import load_checkpoint

        ckpt = load_checkpoint(args.checkpoint)
        model, tokenizer, template, name = ckpt.model, ckpt.tokenizer, ckpt.chat_template, ckpt.name
    else:
        model, tokenizer, template, name = _default_chat_model(args.model)
    if args.adapter:
        from glassformer.peft import load_adapter, merge_lora

        model = merge_lora(load_adapter(model, args.adapter)).eval()  # merged: decodes at the base's speed
        name = f"{name} + {Path(args.adapter).name}"
    if args.quant:  # after the merge: the adapter's update is folded in before rounding to int8 / 4 bits
        _quantize(model, args.quant, args.checkpoint or name)
        name = f"{name} ({args.quant})"
    config = GenerationConfig(
        strategy="sample" if args.temperature > 0 else "greedy",
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature if args.temperature > 0 else 1.0,
        top_k=args.top_k,
        top_p=args.top_p,
        repetition_penalty=args.repetition_penalty,
        seed=args.seed,
    )
    session = ChatSession(model, tokenizer, template=template, config=config, system=args.system)
    return run_chat(session, sys.stdin, sys.stdout, name=name)


def run_chat(session: ChatSession, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout, name: str = "") -> int:
    """The read-reply loop. Ends on ``/quit`` or end of input."""
    from glassformer.generate.chat import HELP

    stdout.write(f"glassformer chat{' with ' + name if name else ''} (context {session.context} tokens)\n{HELP}\n")
    while True:
        stdout.write("you> ")
        stdout.flush()
        line = stdin.readline()
        if not line:  # end of input
            stdout.write("\n")
            return 0
        line = line.strip()
        if not line:
            continue
        if line in ("/quit", "/exit"):
            return 0
        if line.startswith("/"):
            stdout.write(session.command(line) + "\n")
            continue
        stdout.write("bot> ")
        try:
            for piece in session.reply(line):
                stdout.write(piece)
                stdout.flush()
        except ValueError as err:
            stdout.write(f"(error: {err})")
        stdout.write("\n")


def _default_chat_model(name: str | None = None) -> tuple[Any, Any, str | None, str]:
    """The chat model a family offers when no checkpoint is given (``Family.chat_model``), by ``name`` if given."""
    from glassformer.registry import families, import_path

    offers = [f.chat_model for f in families().values() if f.chat_model]
    if not offers:
        raise FileNotFoundError("no checkpoint given, and no family offers a default chat model; "
                                "pass a model folder: glassformer chat CHECKPOINT")
    return import_path(offers[0])(name) if name else import_path(offers[0])()
