"""Logits processors: the tie rules, the nucleus, the penalty, and the same numbers as transformers'."""

import pytest
import torch

from glassformer.generate import GenerationConfig
from glassformer.generate.processors import (
    apply_repetition_penalty,
    choose_tokens,
    process_logits,
    seen_tokens,
    top_k_filter,
    top_p_filter,
)

hf_process = pytest.importorskip("transformers.generation.logits_process")


def test_top_k_keeps_every_value_tied_with_the_kth():
    logits = torch.tensor([[1.0, 3.0, 2.0, 2.0, 0.5, 2.0]])
    kept = torch.isfinite(top_k_filter(logits, 2))
    # the 2nd largest is 2.0, shared by three tokens: all of them stay, 0.5 and 1.0 go
    assert kept.tolist() == [[False, True, True, True, False, True]]
    assert torch.isfinite(top_k_filter(logits, 1)).sum() == 1
    assert torch.equal(top_k_filter(logits, 0), logits)  # 0 = off


def test_top_p_keeps_the_smallest_nucleus_and_at_least_one_token():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    logits = probs.log()
    assert torch.isfinite(top_p_filter(logits, 0.5)).tolist() == [[True, False, False, False]]
    assert torch.isfinite(top_p_filter(logits, 0.51)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(top_p_filter(logits, 0.8)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(top_p_filter(logits, 0.81)).tolist() == [[True, True, True, False]]
    assert torch.isfinite(top_p_filter(logits, 1e-6)).sum() == 1  # never empty
    # ties at the cut stay together
    tied = torch.tensor([[0.4, 0.2, 0.2, 0.2]]).log()
    assert torch.isfinite(top_p_filter(tied, 0.5)).tolist() == [[True, True, True, True]]


def test_filters_match_transformers_warpers_on_random_logits():
    torch.manual_seed(0)
    logits = torch.randn(8, 500) * 3
    ids = torch.randint(0, 500, (8, 20))
    for k in (1, 7, 50):
        ref = hf_process.TopKLogitsWarper(k)(ids, logits.clone())
        assert torch.equal(torch.isinf(top_k_filter(logits, k)), torch.isinf(ref))
    for p in (0.1, 0.5, 0.9, 0.99):
        ref = hf_process.TopPLogitsWarper(p)(ids, logits.clone())
        assert torch.equal(torch.isinf(top_p_filter(logits, p)), torch.isinf(ref))
    for penalty in (1.3, 0.7):
        ref = hf_process.RepetitionPenaltyLogitsProcessor(penalty)(ids, logits.clone())
        ours = apply_repetition_penalty(logits, seen_tokens(ids, None, 500), penalty)
        torch.testing.assert_close(ours, ref, rtol=0, atol=0)


def test_process_logits_in_transformers_order():
    torch.manual_seed(1)
    logits = torch.randn(4, 300) * 2
    ids = torch.randint(0, 300, (4, 10))
    config = GenerationConfig(strategy="sample", temperature=0.7, top_k=40, top_p=0.8, repetition_penalty=1.2)
    ref = logits.clone()
    for proc in (
        hf_process.RepetitionPenaltyLogitsProcessor(1.2),
        hf_process.TemperatureLogitsWarper(0.7),
        hf_process.TopKLogitsWarper(40),
        hf_process.TopPLogitsWarper(0.8),
    ):
        ref = proc(ids, ref)
    ours = process_logits(logits, config, seen_tokens(ids, None, 300))
    assert torch.equal(torch.isinf(ours), torch.isinf(ref))
    torch.testing.assert_close(ours[torch.isfinite(ours)], ref[torch.isfinite(ref)])


def test_seen_tokens_ignores_padding():
    ids = torch.tensor([[7, 7, 1, 2], [0, 3, 3, 7]])
    mask = torch.tensor([[0, 0, 1, 1], [0, 1, 1, 1]])
    seen = seen_tokens(ids, mask, 10)
    assert seen[0].nonzero().flatten().tolist() == [1, 2]  # the padded 7s do not count
    assert seen[1].nonzero().flatten().tolist() == [3, 7]


def test_sampling_never_leaves_the_top_k_or_the_nucleus():
    torch.manual_seed(2)
    logits = torch.randn(64, 100) * 2  # 64 rows, different distributions
    gen = torch.Generator().manual_seed(0)
    k_config = GenerationConfig(strategy="sample", top_k=5)
    allowed_k = torch.zeros_like(logits, dtype=torch.bool).scatter_(1, logits.topk(5).indices, True)
    p_config = GenerationConfig(strategy="sample", top_p=0.6)
    probs = logits.softmax(-1)
    sorted_p, order = probs.sort(-1, descending=True)
    in_nucleus_sorted = (sorted_p.cumsum(-1) - sorted_p) < 0.6
    allowed_p = torch.zeros_like(allowed_k).scatter_(1, order, in_nucleus_sorted)
    hits_outside_k = hits_outside_p = 0
    for _ in range(50):
        tok = choose_tokens(process_logits(logits, k_config), k_config, gen)
        hits_outside_k += int((~allowed_k.gather(1, tok[:, None])).sum())
        tok = choose_tokens(process_logits(logits, p_config), p_config, gen)
        hits_outside_p += int((~allowed_p.gather(1, tok[:, None])).sum())
    assert hits_outside_k == 0
    assert hits_outside_p == 0
    # and the filters do not collapse to greedy: several distinct tokens are drawn per row
    draws = torch.stack([choose_tokens(process_logits(logits, k_config), k_config, gen) for _ in range(20)])
    assert (torch.tensor([len(set(col.tolist())) for col in draws.T]) > 1).float().mean() > 0.9


def test_low_temperature_concentrates_on_the_argmax():
    torch.manual_seed(3)
    logits = torch.randn(32, 50)
    best = logits.argmax(-1)
    gen = torch.Generator().manual_seed(0)
    agreement = []
    for t in (2.0, 0.5, 0.1, 0.01, 1e-4):
        config = GenerationConfig(strategy="sample", temperature=t)
        hits = sum(
            (choose_tokens(process_logits(logits, config), config, gen) == best).float().mean().item()
            for _ in range(50)
        )
        agreement.append(hits / 50)
    assert agreement == sorted(agreement)  # closer to greedy as the temperature falls
    assert agreement[0] < 0.5 and agreement[-1] > 0.99
