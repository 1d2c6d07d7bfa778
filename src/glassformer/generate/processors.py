"""Logits processors: the small functions between a model's logits and the next token.

Each takes ``(B, V)`` float logits and returns new ones. They run in the order of
``process_logits``, the same order Hugging Face's ``generate`` uses: repetition penalty,
temperature, top-k, top-p. Filtered tokens get ``-inf`` so softmax gives them probability 0.

Before them, :func:`shape_logits` applies what decides which tokens are *allowed* at all (the same
for every strategy, beam search included): the config's suppressed tokens, and a caller's
``logits_processor`` (``(tokens (B, T), logits (B, V)) -> logits``, Hugging Face's argument
order), which sees every token so far, prompt or decoder prefix included. Whisper's timestamp
rules are such a processor (``models/whisper/transcribe.py``).

Both filters keep every token *at or above* a threshold value. That makes ties well defined: two
tokens with the same logit are either both kept or both removed, whatever order a sort happened
to put them in.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from glassformer.generate.config import GenerationConfig

LogitsProcessor = Callable[[Tensor, Tensor], Tensor]  # (tokens (B, T), logits (B, V)) -> logits (B, V)


def apply_repetition_penalty(logits: Tensor, seen: Tensor, penalty: float) -> Tensor:
    """CTRL's penalty: for tokens already seen, positive logits / penalty, negative ones * penalty.

    Dividing a negative logit would *raise* it, hence the two cases. ``seen`` is a ``(B, V)``
    bool mask of tokens in the prompt (padding excluded) or generated so far.
    """
    if penalty == 1.0:
        return logits
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalised, logits)


def top_k_filter(logits: Tensor, k: int) -> Tensor:
    """Keep the logits >= the k-th largest of each row; the rest become ``-inf``.

    Tie rule: when several tokens share the k-th largest value, all of them are kept, so a row can
    keep more than ``k`` tokens (never fewer, unless the row has fewer than ``k``).
    """
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # (B, 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: Tensor, p: float) -> Tensor:
    """Nucleus filter (Holtzman et al. 2020): the smallest set of most likely tokens with mass >= p.

    A token is kept when the probability of the tokens ranked before it is still below ``p``; the
    most likely token is therefore always kept. Like ``top_k_filter``, the cut is a value
    threshold (the probability of the last kept token), so tokens tied with it are kept too.
    """
    if p >= 1.0:
        return logits
    probs = torch.softmax(logits.float(), dim=-1)
    sorted_probs, _ = torch.sort(probs, dim=-1, descending=True)  # (B, V)
    mass_before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs  # exclusive prefix sums
    n_keep = (mass_before < p).sum(dim=-1, keepdim=True).clamp_min(1)  # (B, 1), at least one
    threshold = sorted_probs.gather(-1, n_keep - 1)  # probability of the last kept token
    return logits.masked_fill(probs < threshold, float("-inf"))


def suppress_tokens(logits: Tensor, ids: tuple[int, ...]) -> Tensor:
    """``logits`` with the columns ``ids`` set to ``-inf`` (a new tensor; the model's stays as it was)."""
    if max(ids) >= logits.shape[-1]:
        raise ValueError(
            f"suppressed token id {max(ids)} is outside the model's vocabulary of {logits.shape[-1]} tokens; "
            "check suppress_tokens / begin_suppress_tokens"
        )
    index = torch.tensor(ids, dtype=torch.long, device=logits.device)
    return logits.index_fill(-1, index, float("-inf"))


def needs_shaping(config: GenerationConfig, processor: LogitsProcessor | None) -> bool:
    """Whether :func:`shape_logits` has anything to do (decided once, so plain decoding skips it)."""
    return bool(config.suppress_tokens or config.begin_suppress_tokens or processor is not None)


def shape_logits(
    logits: Tensor, tokens: Tensor, config: GenerationConfig, step: int, processor: LogitsProcessor | None
) -> Tensor:
    """Suppressed tokens (``begin_suppress_tokens`` at ``step`` 0 only), then the caller's processor."""
    ids = config.suppress_tokens + (config.begin_suppress_tokens if step == 0 else ())
    if ids:
        logits = suppress_tokens(logits.float(), ids)
    if processor is not None:
        logits = processor(tokens, logits.float())
    return logits


def process_logits(logits: Tensor, config: GenerationConfig, seen: Tensor | None = None) -> Tensor:
    """Apply the config's processors for sampling, in Hugging Face's order."""
    logits = logits.float()
    if seen is not None and config.repetition_penalty != 1.0:
        logits = apply_repetition_penalty(logits, seen, config.repetition_penalty)
    if config.greedy:
        return logits
    if config.temperature != 1.0:
        logits = logits / config.temperature
    logits = top_k_filter(logits, config.top_k)
    return top_p_filter(logits, config.top_p)


def choose_tokens(logits: Tensor, config: GenerationConfig, generator: torch.Generator | None) -> Tensor:
    """``(B, V)`` processed logits -> ``(B,)`` next tokens: arg-max, or a draw from the softmax."""
    if config.greedy:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)


def seen_tokens(input_ids: Tensor, attention_mask: Tensor | None, vocab_size: int) -> Tensor:
    """``(B, V)`` bool: which tokens occur in each prompt row (padding does not count)."""
    real = torch.ones_like(input_ids) if attention_mask is None else attention_mask.long()
    counts = torch.zeros(input_ids.shape[0], vocab_size, dtype=torch.long, device=input_ids.device)
    return counts.scatter_add_(1, input_ids, real) > 0
