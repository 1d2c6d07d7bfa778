"""Beam search with a length penalty, following the rules of Hugging Face's ``generate``.

Each prompt keeps ``K = num_beams`` running sequences. Every step:

1. Each beam's next-token log-probabilities are added to its running score, giving ``K * V``
   candidates per prompt; the best ``2K`` are kept (``(1 + n_stop_tokens) * K`` with several stop
   tokens), so that even if the best ``K`` all end, ``K`` can still continue.
2. A candidate that ends (a stop token, or the length limit) and ranks among the top ``K`` becomes
   a finished hypothesis scored ``sum(log p) / n_generated ** length_penalty``; each prompt keeps
   its best ``K`` finished hypotheses. ``length_penalty > 0`` favours longer outputs.
3. The best ``K`` candidates that did not end become the new beams; the KV cache rows are
   reordered to follow them (for an encoder-decoder, the cross-attention cache and the encoder
   output and source mask too).
4. A prompt is done once it holds ``K`` finished hypotheses and its best running beam, scored as
   if it ended now, cannot beat the worst of them (or at once, with ``early_stopping``).

At the start only beam 0 is live (the others score -1e9), so the first step does not pick the
same token ``K`` times. With ``num_beams=1`` this reduces to greedy decoding.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from glassformer.generate.config import GenerationConfig
from glassformer.generate.processors import (
    LogitsProcessor,
    apply_repetition_penalty,
    needs_shaping,
    seen_tokens,
    shape_logits,
)
from glassformer.generate.stepper import GenerationOutput, PromptBatch, Stepper
from glassformer.generate.stopping import Tokenizer

DEAD = -1.0e9  # score of a beam that must not be chosen (finite, as in the reference)


def beam_search(
    model: nn.Module,
    batch: PromptBatch,
    config: GenerationConfig,
    tokenizer: Tokenizer | None = None,
    logits_processor: LogitsProcessor | None = None,
) -> GenerationOutput:
    """Run beam search on a prepared batch; returns each prompt's best finished hypothesis.

    Suppressed tokens and ``logits_processor`` act on each beam's log-probabilities (after the
    repetition penalty), as in Hugging Face's beam search: a suppressed token's probability is
    removed, not shared out among the others.
    """
    k, n_new = config.num_beams, config.max_new_tokens
    bsz = batch.input_ids.shape[0]
    device = batch.input_ids.device
    stepper = Stepper(model, batch, config)
    logits = stepper.prefill()  # (B, V): the prompt (or the source) runs once, then its cache is copied per beam
    expand = torch.arange(bsz, device=device).repeat_interleave(k)  # (B*K,)
    stepper.reorder(expand)
    logits = logits.index_select(0, expand)  # (B*K, V)
    vocab = logits.shape[-1]
    seen = None
    if config.repetition_penalty != 1.0:
        seen = seen_tokens(batch.input_ids, batch.attention_mask, vocab).index_select(0, expand)

    stop_ids = torch.tensor(config.stop_token_ids, dtype=torch.long, device=device)
    n_candidates = max(2, 1 + len(config.stop_token_ids)) * k
    running = torch.zeros((bsz, k), device=device)  # (B, K) summed log-probs of the live beams
    running[:, 1:] = DEAD
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(bsz)]  # (score, tokens), best first
    done = [False] * bsz
    batch_offset = torch.arange(bsz, device=device)[:, None] * k  # (B, 1)
    all_logits: list[Tensor] | None = [] if config.output_logits else None
    prompt_len = stepper.prompt_length
    shaping = needs_shaping(config, logits_processor)

    for step in range(n_new):
        if all_logits is not None:
            all_logits.append(logits.float().clone())
        log_probs = torch.log_softmax(logits.float(), dim=-1)  # (B*K, V)
        if seen is not None:  # like the reference, the penalty acts on log-probabilities here
            log_probs = apply_repetition_penalty(log_probs, seen, config.repetition_penalty)
        if shaping:
            log_probs = shape_logits(log_probs, stepper.tokens[:, : stepper.length], config, step, logits_processor)
        scores = (log_probs.view(bsz, k, vocab) + running[:, :, None]).view(bsz, k * vocab)
        top_scores, top_index = torch.topk(scores, n_candidates, dim=-1)  # (B, 2K)
        top_beam = top_index // vocab  # which beam each candidate extends
        top_token = top_index % vocab
        last_step = step == n_new - 1
        ends = torch.isin(top_token, stop_ids) if stop_ids.numel() else torch.zeros_like(top_token, dtype=torch.bool)
        if last_step:
            ends = torch.ones_like(ends)
        n_generated = step + 1

        # 2. finished hypotheses from the top-K ranked candidates that end
        ended = ends[:, :k].nonzero().tolist()
        if ended:
            history = stepper.tokens[:, prompt_len : prompt_len + step]  # (B*K, step)
            for b, rank in ended:
                if done[b]:
                    continue
                beam = int(batch_offset[b, 0] + top_beam[b, rank])
                tokens = history[beam].tolist() + [int(top_token[b, rank])]
                score = float(top_scores[b, rank]) / (n_generated**config.length_penalty)
                _add_hypothesis(finished[b], score, tokens, k)

        # 3. the best K candidates that go on
        live_scores = top_scores + ends.float() * DEAD
        live = torch.topk(live_scores, k, dim=-1).indices  # (B, K)
        running = live_scores.gather(1, live)
        source = (batch_offset + top_beam.gather(1, live)).flatten()  # (B*K,) rows to continue
        next_tokens = top_token.gather(1, live).flatten()  # (B*K,)

        # 4. is any prompt done?
        for b in range(bsz):
            if not done[b] and len(finished[b]) == k:
                best_possible = float(running[b, 0]) / (n_generated**config.length_penalty)
                done[b] = config.early_stopping or best_possible <= finished[b][-1][0]
        if last_step or all(done):
            break
        stepper.reorder(source)
        if seen is not None:
            seen = seen.index_select(0, source)
            seen[torch.arange(bsz * k, device=device), next_tokens] = True
        logits = stepper.step(next_tokens)

    return _best_hypotheses(finished, batch, config, tokenizer, all_logits, prompt_len)


def _add_hypothesis(hyps: list[tuple[float, list[int]]], score: float, tokens: list[int], k: int) -> None:
    """Insert a finished hypothesis, keeping the best ``k`` sorted best first."""
    hyps.append((score, tokens))
    hyps.sort(key=lambda h: h[0], reverse=True)
    del hyps[k:]


def _best_hypotheses(
    finished: list[list[tuple[float, list[int]]]],
    batch: PromptBatch,
    config: GenerationConfig,
    tokenizer: Tokenizer | None,
    all_logits: list[Tensor] | None,
    prompt_len: int,
) -> GenerationOutput:
    best = [hyps[0] for hyps in finished]
    width = max(len(tokens) for _, tokens in best)
    ids = batch.input_ids
    sequences = ids.new_full((ids.shape[0], prompt_len + width), config.pad_token_id)
    sequences[:, :prompt_len] = ids
    stop = set(config.stop_token_ids)
    reasons = []
    for row, (_, tokens) in enumerate(best):
        sequences[row, prompt_len : prompt_len + len(tokens)] = torch.tensor(tokens, dtype=ids.dtype)
        reasons.append("stop_token" if tokens and tokens[-1] in stop else "length")
    texts = None
    if tokenizer is not None:  # like the other strategies: a final stop token is not part of the text
        texts = [tokenizer.decode(t[:-1] if t and t[-1] in stop else t) for _, t in best]
    return GenerationOutput(
        sequences=sequences,
        prompt_length=prompt_len,
        tokens=[tokens for _, tokens in best],
        finish_reasons=reasons,
        texts=texts,
        scores=[score for score, _ in best],
        logits=None if all_logits is None else torch.stack(all_logits, dim=1),
    )
