"""The decoding loop: ``generate`` (all at once) and ``stream`` (token by token).

Any decoder model works if it follows glassformer's decoder contract::

    model(input_ids (B, T), *, attention_mask=(B, T_past + T) or None, cache=KVCache or None,
          position_ids=None, logits_to_keep=0) -> ModelOutput(logits=(B, T or logits_to_keep, V))
    model.new_cache(batch_size, max_len, kind="dynamic" | "static") -> KVCache
    model.max_seq_len

and, optionally, a ``model.lm_head`` linear layer with an ``lm_head=`` keyword on ``forward``
that replaces it (greedy decoding then scores the vocabulary through ``shortlist.py``).

An encoder-decoder (the 2017 Transformer) follows the encoder-decoder contract instead; having
``encode_for_generation`` is what makes ``generate`` drive a model this way::

    model.encode_for_generation(src_ids (B, S), src_attention_mask (B, S) or None) -> EncoderState
    model.decode_step(decoder_input_ids (B, T), *, encoder_state=EncoderState,
                      cache=EncoderDecoderCache or None, attention_mask=(B, T_past + T) or None,
                      logits_to_keep=0) -> ModelOutput(logits=(B, T or logits_to_keep, V))
    model.new_cache(batch_size, max_len, kind="dynamic" | "static") -> EncoderDecoderCache
    model.decoder_start_token_id
    model.max_seq_len  # the longest source, and the most decoder positions

``glassformer.nn.cache`` defines the three types. The prompt is the source: right-padded (the
encoder numbers positions from the first column, as in training), encoded once per call; the
decoder starts from ``decoder_input_ids`` when given (a forced prefix, one row for the whole
batch or one per row: Whisper's ``<|startoftranscript|><|notimestamps|>``), else from
``decoder_start_token_id`` in every row, and the output holds only the new tokens. The source
may be token ids, float features (Whisper's log-mel ``(B, n_mels, frames)``, handed to the
encoder as they are: the model checks them), or an ``EncoderState`` already computed (a caller
that decodes the same audio several times, as Whisper's temperature fallback does, runs the
encoder once; generate works on a copy, so beam search leaves the caller's state alone). The first decoder step projects the encoder output into each layer's cross-attention
keys and values and stores them in the cache's ``cross_attn`` part; later steps feed one token
and reuse them. ``reorder`` (beam search) moves the self-attention cache, the cross-attention
cache and the ``EncoderState`` (encoder output and source mask) together.

One step of decoding feeds only the newest token; the cache holds the keys and values of
everything before it. Prompts of different lengths are padded on the *left*, so every row's next
token lands in the same column; the attention mask hides the padding and the positions count
only real tokens, so a padded row computes exactly what it would compute alone.

The loop is kept lean because a 124M-parameter model on a CPU spends only ~20-40 ms per token:
no per-step mask or position building when nothing is padded, logits for the last position
only, the output written into a preallocated buffer, one host sync per step, and on a CPU
(``GenerationConfig.cpu_kernels``) the linear layers switched to glassformer's matrix-vector
kernel (``glassformer.kernels``), or, where it cannot be compiled, their weights stored in the
layout MKL streams fastest (``layout.py``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from glassformer.generate.beam import beam_search
from glassformer.generate.config import GenerationConfig
from glassformer.generate.layout import decode_layout
from glassformer.generate.processors import (
    LogitsProcessor,
    choose_tokens,
    needs_shaping,
    process_logits,
    seen_tokens,
    shape_logits,
)
from glassformer.generate.stepper import GenerationOutput, PromptBatch, Stepper
from glassformer.generate.stopping import RowTracker, Tokenizer
from glassformer.kernels import available as kernels_available
from glassformer.kernels import use_fast_linear
from glassformer.nn.cache import EncoderState

logger = logging.getLogger(__name__)

PromptInput = Tensor | Sequence[int] | Sequence[Sequence[int]] | str | Sequence[str]
DecoderPrefix = Tensor | Sequence[int] | Sequence[Sequence[int]]


@dataclass
class StreamPiece:
    """One event of ``stream``: a new token of a row and the text it settled (may be empty)."""

    row: int
    token: int | None  # None for the final flush of a row's held-back text
    text: str


def prepare_prompts(
    input_ids: PromptInput,
    attention_mask: Tensor | None = None,
    *,
    pad_token_id: int = 0,
    tokenizer: Tokenizer | None = None,
    device: torch.device | str | None = None,
    padding_side: Literal["left", "right"] = "left",
) -> PromptBatch:
    """Turn a prompt (text, token list, ragged token lists or a tensor) into a padded batch.

    Decoder prompts are padded on the left (new tokens append on the right); an encoder-decoder's
    sources on the right (``padding_side="right"``), where its encoder expects the padding.
    """
    if isinstance(input_ids, str) or (
        isinstance(input_ids, Sequence) and input_ids and all(isinstance(p, str) for p in input_ids)
    ):
        if tokenizer is None:
            raise ValueError("a text prompt needs a tokenizer: pass tokenizer= or give token ids")
        texts = [input_ids] if isinstance(input_ids, str) else list(input_ids)
        input_ids = [tokenizer.encode(t) for t in texts]
    if isinstance(input_ids, Tensor):
        if input_ids.dtype.is_floating_point or input_ids.dtype == torch.bool or input_ids.is_complex():
            raise TypeError(f"input_ids must hold integer token ids, got dtype {input_ids.dtype}")
        ids = input_ids[None] if input_ids.dim() == 1 else input_ids
        if ids.dim() != 2:
            raise ValueError(f"input_ids must have shape (seq_len,) or (batch, seq_len); got {tuple(input_ids.shape)}")
        ids = ids.long()
    else:
        rows = _as_rows(input_ids)
        if attention_mask is not None:
            raise ValueError("attention_mask goes with a tensor of input_ids; lists of prompts are padded here")
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            if row:
                start = width - len(row) if padding_side == "left" else 0
                ids[i, start : start + len(row)] = torch.tensor(row, dtype=torch.long)
                attention_mask[i, start : start + len(row)] = 1
    if ids.shape[0] == 0:
        raise ValueError("no prompts given: input_ids has batch size 0")
    if ids.shape[1] == 0:
        raise ValueError("the prompt is empty: generation needs at least one token to condition on (e.g. BOS)")
    if attention_mask is not None:
        attention_mask = _check_mask(attention_mask, ids, padding_side)
    if device is not None:
        ids = ids.to(device)
        attention_mask = None if attention_mask is None else attention_mask.to(device)
    return PromptBatch(ids, attention_mask)


def _as_rows(prompts: Sequence[int] | Sequence[Sequence[int]]) -> list[list[int]]:
    if len(prompts) == 0:
        raise ValueError("the prompt is empty: generation needs at least one token to condition on (e.g. BOS)")
    if all(isinstance(t, int) and not isinstance(t, bool) for t in prompts):
        return [list(prompts)]  # type: ignore[arg-type]
    rows = []
    for i, row in enumerate(prompts):
        if isinstance(row, str | bytes) or not isinstance(row, Sequence):
            raise TypeError(f"prompt {i} is {type(row).__name__}; expected a list of token ids")
        if not all(isinstance(t, int) and not isinstance(t, bool) for t in row):
            raise TypeError(f"prompt {i} holds something other than integer token ids")
        rows.append(list(row))
    return rows


def _check_mask(mask: Tensor, ids: Tensor, padding_side: Literal["left", "right"]) -> Tensor | None:
    """Validate a (B, T) 0/1 padding mask; None when nothing is padded (the fast path)."""
    if tuple(mask.shape) != tuple(ids.shape):
        raise ValueError(f"attention_mask has shape {tuple(mask.shape)} but input_ids has {tuple(ids.shape)}")
    mask = mask.long()
    if ((mask != 0) & (mask != 1)).any():
        raise ValueError("attention_mask must hold only 0 (padding) and 1 (token)")
    empty = (mask.sum(-1) == 0).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"prompt {empty[0]} is empty (all padding): generation needs at least one token")
    if padding_side == "left":
        right_padded = (mask[:, 1:] < mask[:, :-1]).any(-1).nonzero().flatten().tolist()
        if right_padded:
            raise ValueError(
                f"prompt {right_padded[0]} has padding after its tokens; decoding appends on the right, so "
                "pad prompts on the left (padding first, then tokens)"
            )
    else:
        left_padded = (mask[:, 1:] > mask[:, :-1]).any(-1).nonzero().flatten().tolist()
        if left_padded:
            raise ValueError(
                f"source {left_padded[0]} has padding before its tokens; an encoder numbers positions "
                "from the first column, so pad sources on the right (tokens first, then padding)"
            )
    return None if bool(mask.all()) else mask


def fit_context(batch: PromptBatch, config: GenerationConfig, context: int | None) -> PromptBatch:
    """Check prompt + ``max_new_tokens`` fit the model's context; truncate the prompt if asked to."""
    length = batch.input_ids.shape[1]
    if context is None or length + config.max_new_tokens <= context:
        return batch
    if config.slide_window:
        if length <= context:
            return batch
        mask = None if batch.attention_mask is None else batch.attention_mask[:, -context:]
        mask = None if mask is None or bool(mask.all()) else mask
        return PromptBatch(batch.input_ids[:, -context:], mask, truncated=length - context)
    if not config.truncate_prompt:
        raise ValueError(
            f"the prompt ({length} tokens) plus max_new_tokens ({config.max_new_tokens}) exceed the model's "
            f"context of {context} positions; shorten the prompt, lower max_new_tokens, set "
            "truncate_prompt=True to keep only the prompt's last tokens, or slide_window=True to "
            "keep decoding past the context"
        )
    keep = context - config.max_new_tokens
    if keep < 1:
        raise ValueError(
            f"max_new_tokens ({config.max_new_tokens}) leaves no room for the prompt in the model's "
            f"context of {context} positions"
        )
    mask = batch.attention_mask
    if mask is not None:
        mask = mask[:, -keep:]
        mask = None if bool(mask.all()) else mask
    return PromptBatch(batch.input_ids[:, -keep:], mask, truncated=length - keep)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Decode without dropout, and hand the model back in the mode it came in."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def prepare_for_model(
    model: nn.Module,
    input_ids: PromptInput,
    attention_mask: Tensor | None,
    config: GenerationConfig,
    tokenizer: Tokenizer | None,
    decoder_input_ids: DecoderPrefix | None = None,
) -> PromptBatch:
    """Pad the prompts, check their ids against the vocabulary and fit them into the context.

    For an encoder-decoder the prompts are its sources: they are padded on the right and encoded
    here, once, and the batch returned holds the decoder's start (``decoder_input_ids`` or the
    start token) and the encoder state.
    With ``config.cpu_kernels`` on a CPU, the model's linear layers are readied first (see
    :func:`use_cpu_kernels`).
    """
    device = next(model.parameters()).device
    if config.cpu_kernels and device.type == "cpu":
        use_cpu_kernels(model)
    if is_encoder_decoder(model):
        return encode_sources(model, input_ids, attention_mask, config, tokenizer, device, decoder_input_ids)
    if decoder_input_ids is not None:
        raise ValueError(
            f"decoder_input_ids is for encoder-decoder models; {type(model).__name__} is a decoder: "
            "put the forced start into the prompt (input_ids) instead"
        )
    batch = prepare_prompts(
        input_ids, attention_mask, pad_token_id=config.pad_token_id, tokenizer=tokenizer, device=device
    )
    _check_vocabulary(model, batch)
    return fit_context(batch, config, getattr(model, "max_seq_len", None))


def use_cpu_kernels(model: nn.Module) -> None:
    """Ready a CPU model's linear layers for fast matrix-vector products, in place.

    With the C kernels, every ``nn.Linear`` becomes a ``glassformer.kernels.FastLinear`` (same
    parameters; ``glassformer.kernels.use_torch_linear(model)`` undoes it), and the first switch
    on a model says so in one log line. Without them, the weights are re-stored column-major for
    MKL (``layout.decode_layout``: same values, other strides). A second call finds nothing to do.
    """
    if not kernels_available():
        decode_layout(model)
        return
    switched = use_fast_linear(model)
    if switched:
        logger.warning(
            "generate: switched %d nn.Linear layers of %s to glassformer.kernels.FastLinear in place "
            "(same parameters, faster decoding on a CPU); glassformer.kernels.use_torch_linear(model) "
            "undoes it, and GenerationConfig(cpu_kernels=False) leaves the model as it is",
            switched, type(model).__name__,
        )  # fmt: skip


def is_encoder_decoder(model: nn.Module) -> bool:
    """Whether ``generate`` drives ``model`` through the encoder-decoder contract (``decode.py``)."""
    return callable(getattr(model, "encode_for_generation", None))


def encode_sources(
    model: nn.Module,
    input_ids: PromptInput,
    attention_mask: Tensor | None,
    config: GenerationConfig,
    tokenizer: Tokenizer | None,
    device: torch.device,
    decoder_input_ids: DecoderPrefix | None = None,
) -> PromptBatch:
    """Right-pad and check the sources, run the encoder once; the decoder's start batch."""
    for name in ("truncate_prompt", "slide_window"):
        if getattr(config, name):
            raise ValueError(
                f"{name}=True changes a decoder's prompt; an encoder-decoder's prompt is its source, "
                "which is kept whole: shorten the source instead"
            )
    context = model.max_seq_len
    if isinstance(input_ids, EncoderState):  # encoded already: a copy, as beam search reorders it
        state = EncoderState(input_ids.hidden.to(device), input_ids.attention_mask)
        start = decoder_start(model, decoder_input_ids, state.hidden.shape[0], config, device)
        return PromptBatch(start, None, encoder_state=state)
    if isinstance(input_ids, Tensor) and input_ids.is_floating_point():
        # features, not tokens (Whisper's log-mel (B, n_mels, frames)): the encoder checks them
        source = PromptBatch(input_ids.to(device), attention_mask)
    else:
        source = prepare_prompts(
            input_ids, attention_mask, pad_token_id=config.pad_token_id, tokenizer=tokenizer, device=device,
            padding_side="right",
        )  # fmt: skip
        _check_vocabulary(model, source)
        if source.input_ids.shape[1] > context:
            raise ValueError(
                f"the source ({source.input_ids.shape[1]} tokens) is longer than the model's max_seq_len="
                f"{context}; shorten it"
            )
    start = decoder_start(model, decoder_input_ids, source.input_ids.shape[0], config, device)
    state = model.encode_for_generation(source.input_ids, source.attention_mask)
    return PromptBatch(start, None, encoder_state=state)


def decoder_start(
    model: nn.Module, prefix: DecoderPrefix | None, batch_size: int, config: GenerationConfig, device: torch.device
) -> Tensor:
    """``(B, P)`` forced decoder prefix (one row is repeated for every source), checked to fit."""
    if prefix is None:
        start = torch.full((batch_size, 1), model.decoder_start_token_id, dtype=torch.long, device=device)
    else:
        start = torch.as_tensor(prefix, device=device)
        if start.dtype.is_floating_point or start.dtype == torch.bool or start.dim() not in (1, 2):
            raise ValueError(
                f"decoder_input_ids must be integer token ids of shape (P,) or (batch, P), got dtype {start.dtype} "
                f"and shape {tuple(start.shape)}"
            )
        start = start.long().reshape(-1, start.shape[-1])
        if start.shape[1] == 0:
            raise ValueError("decoder_input_ids is empty: give at least the start token, or leave it out")
        if start.shape[0] == 1:
            start = start.expand(batch_size, -1)
        elif start.shape[0] != batch_size:
            raise ValueError(f"decoder_input_ids has {start.shape[0]} rows for {batch_size} sources; give 1 or {batch_size}")
        _check_vocabulary(model, PromptBatch(start, None))
    context = model.max_seq_len
    # the decoder is fed the prefix and every new token but the last
    if start.shape[1] + config.max_new_tokens - 1 > context:
        raise ValueError(
            f"a decoder prefix of {start.shape[1]} tokens plus max_new_tokens={config.max_new_tokens} needs more "
            f"decoder positions than the model's max_seq_len={context}; lower max_new_tokens or shorten the prefix"
        )
    return start.contiguous()


def _check_vocabulary(model: nn.Module, batch: PromptBatch) -> None:
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    if vocab is None:
        return
    ids = batch.input_ids if batch.attention_mask is None else batch.input_ids[batch.attention_mask.bool()]
    bad = ids[(ids < 0) | (ids >= vocab)]
    if bad.numel():
        raise ValueError(f"token id {int(bad[0])} is outside the model's vocabulary of {vocab} tokens")


class SamplingLoop:
    """Greedy and sampling decoding, as an iterator over steps so ``generate`` and ``stream`` share it.

    Each iteration yields the tokens chosen for every row at that step; rows that already stopped
    get ``pad_token_id``. After the loop, ``output()`` assembles the result.
    """

    def __init__(
        self,
        model: nn.Module,
        batch: PromptBatch,
        config: GenerationConfig,
        tokenizer: Tokenizer | None,
        logits_processor: LogitsProcessor | None = None,
    ) -> None:
        self.model, self.batch, self.config = model, batch, config
        if config.prompt_lookup and batch.input_ids.shape[0] != 1:
            raise ValueError(f"prompt_lookup decodes one prompt at a time; got a batch of {batch.input_ids.shape[0]}")
        if config.prompt_lookup and logits_processor is not None:
            raise ValueError("prompt_lookup cannot be combined with a logits_processor (guesses are checked unprocessed)")
        self.rows = RowTracker(batch.input_ids.shape[0], config, tokenizer)
        self.processor = logits_processor
        self.shaping = needs_shaping(config, logits_processor)
        # the greedy shortlist leaves only the arg-max finite: a suppressed winner needs every logit
        self.stepper = Stepper(model, batch, config.replace(greedy_shortlist=False) if self.shaping else config)
        self.logits: list[Tensor] | None = [] if config.output_logits else None
        self.generator: torch.Generator | None = None
        if not config.greedy:
            self.generator = torch.Generator(device=batch.input_ids.device)
            if config.seed is not None:
                self.generator.manual_seed(config.seed)
            else:
                self.generator.seed()

    def __iter__(self) -> Iterator[list[int]]:
        if self.config.prompt_lookup:
            yield from self._lookup_iter()
            return
        config, rows = self.config, self.rows
        ids, mask = self.batch.input_ids, self.batch.attention_mask
        logits = self.stepper.prefill()  # (B, V)
        seen = None
        if config.repetition_penalty != 1.0:
            seen = seen_tokens(ids, mask, logits.shape[-1])  # (B, V)
        row_index = torch.arange(ids.shape[0], device=ids.device)
        alive: Tensor | None = None  # (B,) bool, once some row has stopped
        for step in range(config.max_new_tokens):
            if self.logits is not None:
                self.logits.append(logits.float().clone())
            if self.shaping:
                logits = shape_logits(logits, self.stepper.tokens[:, : self.stepper.length], config, step, self.processor)
            next_tokens = choose_tokens(process_logits(logits, config, seen), config, self.generator)  # (B,)
            if alive is not None:
                next_tokens = next_tokens.masked_fill(~alive, config.pad_token_id)
            if seen is not None:
                seen[row_index, next_tokens] = True
            step_tokens = next_tokens.tolist()
            if rows.add(step_tokens):
                alive = torch.tensor([not d for d in rows.done], device=ids.device)
            if rows.all_done or step == config.max_new_tokens - 1:
                self.stepper.append_only(next_tokens)
                yield step_tokens
                return
            yield step_tokens
            logits = self.stepper.step(next_tokens)

    def _lookup_iter(self) -> Iterator[list[int]]:
        """Greedy decoding that checks guessed continuations in one pass (one prompt).

        Feeding ``[next, g1, ..., gd]`` gives the model's own choice after each of them: the
        guesses it agrees with are kept, then its own token at the first disagreement, so every
        pass yields at least one token and the tokens are those of plain greedy decoding. The
        cache forgets the rejected guesses.
        """
        config, rows, stepper = self.config, self.rows, self.stepper
        history = self.batch.input_ids[0].tolist()
        next_token = int(stepper.prefill()[0].argmax())
        produced = 0
        while True:
            history.append(next_token)
            produced += 1
            rows.add([next_token])
            yield [next_token]
            if rows.all_done or produced == config.max_new_tokens:
                stepper.append_only(torch.tensor([next_token]))
                return
            guess = lookup_continuation(history, config.prompt_lookup)[: config.max_new_tokens - produced - 1]
            fed = torch.tensor([[next_token, *guess]], device=stepper.tokens.device)
            choices = stepper.feed(fed)[0].argmax(-1).tolist()  # the model's token after each fed one
            agreed = 0
            while agreed < len(guess) and guess[agreed] == choices[agreed]:
                agreed += 1
            stepper.rollback(len(guess) - agreed)
            for i, token in enumerate(guess[:agreed]):
                history.append(token)
                produced += 1
                rows.add([token])
                yield [token]
                if rows.all_done:  # a stop token among the guesses: drop what came after it
                    stepper.rollback(agreed - i - 1)
                    return
            next_token = choices[agreed]

    def output(self) -> GenerationOutput:
        rows, stepper = self.rows, self.stepper
        texts = None
        if rows.tokenizer is not None:
            texts = [rows.final_text(i) for i in range(len(rows.tokens))]
        logits = None if self.logits is None else torch.stack(self.logits, dim=1)  # (B, n, V)
        return GenerationOutput(
            sequences=stepper.tokens[:, : stepper.length],
            prompt_length=stepper.prompt_length,
            tokens=rows.tokens,
            finish_reasons=rows.reasons,
            texts=texts,
            logits=logits,
        )


def lookup_continuation(history: list[int], limit: int, max_ngram: int = 3) -> list[int]:
    """Up to ``limit`` tokens that followed the latest earlier occurrence of the last n-gram.

    Tries the last 3 tokens first, then 2, then 1 (longer matches guess better); returns ``[]``
    when the text has not repeated itself yet.
    """
    for n in range(min(max_ngram, len(history) - 1), 0, -1):
        tail = history[-n:]
        for start in range(len(history) - n - 1, -1, -1):
            if history[start : start + n] == tail:
                return history[start + n : start + n + limit]
    return []


def _resolve(config: GenerationConfig | None, overrides: dict) -> GenerationConfig:
    config = config if config is not None else GenerationConfig()
    return config.replace(**overrides) if overrides else config


def generate(
    model: nn.Module,
    input_ids: PromptInput,
    attention_mask: Tensor | None = None,
    config: GenerationConfig | None = None,
    *,
    tokenizer: Tokenizer | None = None,
    decoder_input_ids: DecoderPrefix | None = None,
    logits_processor: LogitsProcessor | None = None,
    **overrides,
) -> GenerationOutput:
    """Continue the prompt(s) with ``config``'s strategy; keyword overrides change single fields.

    ``input_ids``: a ``(T,)`` or ``(B, T)`` tensor (with ``attention_mask`` for left padding), a
    list of token ids, a list of such lists (padded here), or text when a ``tokenizer`` is given.
    For an encoder-decoder they are the sources (right padding; or float features, or an
    ``EncoderState``), ``decoder_input_ids`` an optional forced decoder prefix, and the output
    holds only the new target tokens; the tokenizer encodes the sources and decodes the targets.
    ``logits_processor(tokens (B, T), logits (B, V)) -> logits`` reshapes each step's logits
    before any strategy sees them (after ``suppress_tokens``; see ``processors.shape_logits``).
    """
    config = _resolve(config, overrides)
    with eval_mode(model), torch.inference_mode():
        batch = prepare_for_model(model, input_ids, attention_mask, config, tokenizer, decoder_input_ids)
        if config.strategy == "beam":
            return beam_search(model, batch, config, tokenizer, logits_processor)
        loop = SamplingLoop(model, batch, config, tokenizer, logits_processor)
        for _ in loop:
            pass
        return loop.output()


def stream(
    model: nn.Module,
    input_ids: PromptInput,
    attention_mask: Tensor | None = None,
    config: GenerationConfig | None = None,
    *,
    tokenizer: Tokenizer | None = None,
    decoder_input_ids: DecoderPrefix | None = None,
    logits_processor: LogitsProcessor | None = None,
    **overrides,
) -> Iterator[StreamPiece]:
    """Like ``generate`` but yields each new token (and, with a tokenizer, its text) as it comes.

    Text is handed out once settled (no half UTF-8 character, no possible start of a stop string),
    and a row's last piece (``token=None``) flushes what was held back. The prompt is checked
    here, before the first token, so bad input fails at the call rather than at the first ``next``.
    """
    config = _resolve(config, overrides)
    if config.strategy == "beam":
        raise ValueError(
            "beam search keeps several candidates until the end, so it cannot stream; use generate()"
        )
    with eval_mode(model), torch.inference_mode():  # an encoder-decoder's encoder runs here
        batch = prepare_for_model(model, input_ids, attention_mask, config, tokenizer, decoder_input_ids)
    return _stream_pieces(model, batch, config, tokenizer, logits_processor)


@torch.inference_mode()
def _stream_pieces(
    model: nn.Module,
    batch: PromptBatch,
    config: GenerationConfig,
    tokenizer: Tokenizer | None,
    logits_processor: LogitsProcessor | None,
) -> Iterator[StreamPiece]:
    # torch.inference_mode on a generator function applies only while the generator runs, so the
    # caller's code between pieces keeps its own grad mode.
    with eval_mode(model):
        loop = SamplingLoop(model, batch, config, tokenizer, logits_processor)
        rows = loop.rows
        was_done = [False] * len(rows.done)
        for step_tokens in loop:
            for row, tok in enumerate(step_tokens):
                if was_done[row]:
                    continue
                yield StreamPiece(row, tok, rows.new_text(row))
                if rows.done[row]:
                    was_done[row] = True
        for row in range(len(rows.done)):
            rest = rows.new_text(row, final=True)
            if rest:
                yield StreamPiece(row, None, rest)
