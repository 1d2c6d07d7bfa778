"""What every decoding strategy shares: the prompt batch, the output, and the ``Stepper``.

``decode.py`` (greedy, sampling, streaming) and ``beam.py`` (beam search) both build on these;
keeping them here lets ``decode.py`` import ``beam_search`` without either module importing the other.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from glassformer.generate.config import GenerationConfig
from glassformer.generate.shortlist import ShortlistHead, shortlist_head
from glassformer.nn.cache import EncoderState


@dataclass
class PromptBatch:
    """Prompts ready for a model: left-padded ids and a mask (None when no row is padded).

    For an encoder-decoder, ``input_ids`` are the decoder's start tokens ``(B, 1)`` and
    ``encoder_state`` the source, encoded once, that every decoder step attends to.
    """

    input_ids: Tensor  # (B, T)
    attention_mask: Tensor | None  # (B, T) 1 = token, 0 = padding
    truncated: int = 0  # tokens dropped from the front of every row (truncate_prompt)
    encoder_state: EncoderState | None = None


@dataclass
class GenerationOutput:
    """What ``generate`` returns.

    ``sequences`` holds the (left-padded) prompt followed by the new tokens; a row that stopped
    early is filled with ``pad_token_id``. ``tokens`` holds each row's new tokens only, up to and
    including a stop token. For an encoder-decoder the "prompt" in ``sequences`` is the decoder
    start token, never the source.
    """

    sequences: Tensor  # (B, T_prompt + n_new)
    prompt_length: int  # sequences[:, prompt_length:] are the new tokens
    tokens: list[list[int]]
    finish_reasons: list[str]  # "stop_token", "stop_string" or "length"
    texts: list[str] | None = None  # new text per row (with a tokenizer): no stop token, cut before a stop string
    scores: list[float] | None = None  # beam search: the length-penalised log-probability
    logits: Tensor | None = None  # (B, n_new, V) raw logits of every step (output_logits=True)


class Stepper:
    """Runs a decoder one token at a time over a growing batch of sequences.

    Holds the token buffer, the attention mask, each row's next position and the KV cache, so the
    strategies only decide *which* tokens come next. With ``cache="none"`` every step reruns the
    whole sequence (the reference the cached paths are tested against).

    With ``slide_window``, columns before ``offset`` have slid out of the model's view: when the
    sequence would outgrow the context, ``offset`` moves so that the latest 3/4 of the context
    remain, and they are re-encoded from scratch (positions restart at the window's start).

    With a batch that carries an ``encoder_state``, each step calls the encoder-decoder contract
    (``model.decode_step``, see ``decode.py``) instead of ``model(...)``; ``reorder`` then moves
    the encoder state with the cache (whose cross-attention part the model fills on the first step).
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
        self.encoder_state = batch.encoder_state
        self.head_override: dict[str, ShortlistHead] = {}
        if (
            self.encoder_state is None and config.greedy and config.greedy_shortlist
            and config.repetition_penalty == 1.0 and not config.output_logits
        ):  # fmt: skip
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
        if self.encoder_state is not None:
            out = self.model.decode_step(
                self.tokens[:, start:end],
                encoder_state=self.encoder_state,
                cache=self.cache,
                attention_mask=mask,
                logits_to_keep=keep or 1,
            )
        else:
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
            self.cache.reorder(index)  # an encoder-decoder's cache moves its cross-attention part too
        if self.encoder_state is not None:
            self.encoder_state.reorder(index)
