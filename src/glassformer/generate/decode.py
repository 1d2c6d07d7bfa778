"""The decoding loop: ``generate`` (all at once) and ``stream`` (token by token).

Any decoder model works if it follows glassformer's decoder contract::

    model(input_ids (B, T), *, attention_mask=(B, T_past + T) or None, cache=KVCache or None,
          position_ids=None, logits_to_keep=0) -> ModelOutput(logits=(B, T or logits_to_keep, V))
    model.new_cache(batch_size, max_len, kind="dynamic" | "static") -> KVCache
    model.max_seq_len

and, optionally, a ``model.lm_head`` linear layer with an ``lm_head=`` keyword on ``forward``
that replaces it (greedy decoding then scores the vocabulary through ``shortlist.py``).

One step of decoding feeds only the newest token; the cache holds the keys and values of
everything before it. Prompts of different lengths are padded on the *left*, so every row's next
token lands in the same column; the attention mask hides the padding and the positions count
only real tokens, so a padded row computes exactly what it would compute alone.

The loop is kept lean because a 124M-parameter model on a CPU spends only ~20-40 ms per token:
no per-step mask or position building when nothing is padded, logits for the last position
only, the output written into a preallocated buffer, one host sync per step, and on a CPU the
linear layers switched to glassformer's matrix-vector kernel (``glassformer.kernels``), or, where
it cannot be compiled, their weights stored in the layout MKL streams fastest (``layout.py``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from glassformer.generate.config import GenerationConfig
from glassformer.generate.layout import decode_layout
from glassformer.generate.processors import choose_tokens, process_logits, seen_tokens
from glassformer.generate.shortlist import ShortlistHead, shortlist_head
from glassformer.generate.stopping import RowTracker, Tokenizer
from glassformer.kernels import available as kernels_available
from glassformer.kernels import use_fast_linear

PromptInput = Tensor | Sequence[int] | Sequence[Sequence[int]] | str | Sequence[str]


@dataclass
class PromptBatch:
    """Prompts ready for a model: left-padded ids and a mask (None when no row is padded)."""

    input_ids: Tensor  # (B, T)
    attention_mask: Tensor | None  # (B, T) 1 = token, 0 = padding
    truncated: int = 0  # tokens dropped from the front of every row (truncate_prompt)


@dataclass
class GenerationOutput:
    """What ``generate`` returns.

    ``sequences`` holds the (left-padded) prompt followed by the new tokens; a row that stopped
    early is filled with ``pad_token_id``. ``tokens`` holds each row's new tokens only, up to and
    including a stop token.
    """

    sequences: Tensor  # (B, T_prompt + n_new)
    prompt_length: int  # sequences[:, prompt_length:] are the new tokens
    tokens: list[list[int]]
    finish_reasons: list[str]  # "stop_token", "stop_string" or "length"
    texts: list[str] | None = None  # new text per row (with a tokenizer): no stop token, cut before a stop string
    scores: list[float] | None = None  # beam search: the length-penalised log-probability
    logits: Tensor | None = None  # (B, n_new, V) raw logits of every step (output_logits=True)


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
) -> PromptBatch:
    """Turn a prompt (text, token list, ragged token lists or a tensor) into a left-padded batch."""
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
                ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
                attention_mask[i, width - len(row) :] = 1
    if ids.shape[0] == 0:
        raise ValueError("no prompts given: input_ids has batch size 0")
    if ids.shape[1] == 0:
        raise ValueError("the prompt is empty: generation needs at least one token to condition on (e.g. BOS)")
    if attention_mask is not None:
        attention_mask = _check_mask(attention_mask, ids)
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


def _check_mask(mask: Tensor, ids: Tensor) -> Tensor | None:
    """Validate a (B, T) 0/1 left-padding mask; None when nothing is padded (the fast path)."""
    if tuple(mask.shape) != tuple(ids.shape):
        raise ValueError(f"attention_mask has shape {tuple(mask.shape)} but input_ids has {tuple(ids.shape)}")
    mask = mask.long()
    if ((mask != 0) & (mask != 1)).any():
        raise ValueError("attention_mask must hold only 0 (padding) and 1 (token)")
    empty = (mask.sum(-1) == 0).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"prompt {empty[0]} is empty (all padding): generation needs at least one token")
    right_padded = (mask[:, 1:] < mask[:, :-1]).any(-1).nonzero().flatten().tolist()
    if right_padded:
        raise ValueError(
            f"prompt {right_padded[0]} has padding after its tokens; decoding appends on the right, so "
            "pad prompts on the left (padding first, then tokens)"
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


class Stepper:
    """Runs a decoder one token at a time over a growing batch of sequences.

    Holds the token buffer, the attention mask, each row's next position and the KV cache, so the
    strategies only decide *which* tokens come next. With ``cache="none"`` every step reruns the
    whole sequence (the reference the cached paths are tested against).

    With ``slide_window``, columns before ``offset`` have slid out of the model's view: when the
    sequence would outgrow the context, ``offset`` moves so that the latest 3/4 of the context
    remain, and they are re-encoded from scratch (positions restart at the window's start).
    """

    def __init__(self, model: nn.Module, batch: PromptBatch, config: GenerationConfig) -> None:
        self.model = model
        ids, mask = batch.input_ids, batch.attention_mask
        b, t = ids.shape
        self.prompt_length = t
        self.length = t
        self.offset = 0
        context = getattr(model, "max_seq_len", None)
        self.window: int | None = context if config.slide_window else None  # None: no sliding
        self.cache_kind = config.cache
        total = t + config.max_new_tokens
        self.cache_len = total if self.window is None else min(total, self.window)
        self.tokens = ids.new_full((b, total), config.pad_token_id)  # (B, T + n_new)
        self.tokens[:, :t] = ids
        self.mask: Tensor | None = None
        self.next_pos: Tensor | None = None
        if mask is not None:
            self.mask = torch.ones((b, total), dtype=mask.dtype, device=mask.device)
            self.mask[:, :t] = mask
            self.next_pos = mask.sum(-1, keepdim=True)  # (B, 1): position of column pos_base
        self.pos_base = t
        self.cache = None if config.cache == "none" else model.new_cache(b, max_len=self.cache_len, kind=config.cache)
        self.head_override: dict[str, ShortlistHead] = {}
        if config.greedy and config.greedy_shortlist and config.repetition_penalty == 1.0 and not config.output_logits:
            head = shortlist_head(model)
            if head is not None:  # logits are -inf where a token cannot win: argmax is unchanged
                self.head_override = {"lm_head": head}

    def _positions(self, start: int, end: int) -> Tensor | None:
        if self.mask is None:
            return None
        window = self.mask[:, self.offset : end]
        return (window.cumsum(-1) - 1).clamp_min(0)[:, start - self.offset :]  # (B, end - start)

    def prefill(self) -> Tensor:
        """Run the prompt; ``(B, V)`` logits for the first new token."""
        return self._run(0, self.length)

    def step(self, next_tokens: Tensor) -> Tensor:
        """Append ``(B,)`` tokens; ``(B, V)`` logits for the token after them."""
        self.tokens[:, self.length] = next_tokens
        self.length += 1
        if self.window is not None and self.length - self.offset > self.window:
            self._slide()
            return self._run(self.offset, self.length)
        if self.cache is None:
            return self._run(self.offset, self.length)
        return self._run(self.length - 1, self.length)

    def _slide(self) -> None:
        """Drop the oldest columns so the latest 3/4 of the context remain; restart the cache."""
        keep = max(1, self.window - self.window // 4)
        self.offset = self.length - keep
        if self.cache is not None:
            self.cache = self.model.new_cache(self.tokens.shape[0], max_len=self.cache_len, kind=self.cache_kind)
        if self.mask is not None:
            self.next_pos = self.mask[:, self.offset : self.length].sum(-1, keepdim=True)
            self.pos_base = self.length

    def feed(self, tokens: Tensor) -> Tensor:
        """Append ``(B, n)`` tokens in one forward pass; ``(B, n, V)`` logits after each of them."""
        n = tokens.shape[1]
        self.tokens[:, self.length : self.length + n] = tokens
        self.length += n
        return self._run(self.length - n, self.length, keep=n)

    def rollback(self, n: int) -> None:
        """Forget the last ``n`` tokens (rejected guesses), in the buffer and in the cache."""
        self.length -= n
        self.cache.crop(self.length)

    def append_only(self, next_tokens: Tensor) -> None:
        """Record the last tokens without running the model (the loop is over)."""
        self.tokens[:, self.length] = next_tokens
        self.length += 1

    def _run(self, start: int, end: int, keep: int = 0) -> Tensor:
        """Logits after position ``end - 1`` (``(B, V)``), or after each of the last ``keep`` positions."""
        mask = None if self.mask is None else self.mask[:, self.offset : end]
        if self.next_pos is not None and end - start == 1 and start >= self.pos_base:
            positions = self.next_pos + (end - 1 - self.pos_base)  # (B, 1), no cumsum per step
        else:
            positions = self._positions(start, end)
        out = self.model(
            self.tokens[:, start:end],
            attention_mask=mask,
            cache=self.cache,
            position_ids=positions,
            logits_to_keep=keep or 1,
            **self.head_override,
        )
        return out.logits if keep else out.logits[:, -1]  # (B, keep, V) or (B, V)

    def reorder(self, index: Tensor) -> None:
        """Keep rows ``index`` (beam search: the surviving beams, possibly repeated)."""
        self.tokens = self.tokens.index_select(0, index)
        if self.mask is not None:
            self.mask = self.mask.index_select(0, index)
            self.next_pos = self.next_pos.index_select(0, index)
        if self.cache is not None:
            self.cache.reorder(index)


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
) -> PromptBatch:
    """Pad the prompts, check their ids against the vocabulary and fit them into the context.

    Also readies the model's linear layers for fast matrix-vector products on a CPU: the C kernel
    (``kernels.use_fast_linear``), else column-major weights for MKL (``layout.decode_layout``).
    Both keep the same values and parameters; a second call finds nothing left to do.
    """
    device = next(model.parameters()).device
    if device.type == "cpu":
        if kernels_available():
            use_fast_linear(model)
        else:
            decode_layout(model)
    batch = prepare_prompts(
        input_ids, attention_mask, pad_token_id=config.pad_token_id, tokenizer=tokenizer, device=device
    )
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    if vocab is not None:
        ids = batch.input_ids if batch.attention_mask is None else batch.input_ids[batch.attention_mask.bool()]
        bad = ids[(ids < 0) | (ids >= vocab)]
        if bad.numel():
            raise ValueError(f"token id {int(bad[0])} is outside the model's vocabulary of {vocab} tokens")
    return fit_context(batch, config, getattr(model, "max_seq_len", None))


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
    ) -> None:
        self.model, self.batch, self.config = model, batch, config
        if config.prompt_lookup and batch.input_ids.shape[0] != 1:
            raise ValueError(f"prompt_lookup decodes one prompt at a time; got a batch of {batch.input_ids.shape[0]}")
        self.rows = RowTracker(batch.input_ids.shape[0], config, tokenizer)
        self.stepper = Stepper(model, batch, config)
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
    **overrides,
) -> GenerationOutput:
    """Continue the prompt(s) with ``config``'s strategy; keyword overrides change single fields.

    ``input_ids``: a ``(T,)`` or ``(B, T)`` tensor (with ``attention_mask`` for left padding), a
    list of token ids, a list of such lists (padded here), or text when a ``tokenizer`` is given.
    """
    config = _resolve(config, overrides)
    with eval_mode(model), torch.inference_mode():
        batch = prepare_for_model(model, input_ids, attention_mask, config, tokenizer)
        if config.strategy == "beam":
            from glassformer.generate.beam import beam_search

            return beam_search(model, batch, config, tokenizer)
        loop = SamplingLoop(model, batch, config, tokenizer)
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
    with torch.inference_mode():
        batch = prepare_for_model(model, input_ids, attention_mask, config, tokenizer)
    return _stream_pieces(model, batch, config, tokenizer)


@torch.inference_mode()
def _stream_pieces(
    model: nn.Module, batch: PromptBatch, config: GenerationConfig, tokenizer: Tokenizer | None
) -> Iterator[StreamPiece]:
    # torch.inference_mode on a generator function applies only while the generator runs, so the
    # caller's code between pieces keeps its own grad mode.
    with eval_mode(model):
        loop = SamplingLoop(model, batch, config, tokenizer)
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
