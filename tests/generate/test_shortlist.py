"""The greedy shortlist head: its error bound holds, and its arg-max is the full head's."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from glassformer.generate import generate
from glassformer.generate.shortlist import MAX_SHORTLIST, ShortlistHead, shortlist_head
from glassformer.kernels import available, unavailable_reason
from glassformer.kernels.build import load
from glassformer.models.gpt import GPT
from glassformer.models.gpt.config import LLAMA_STYLE, GPTConfig

pytestmark = pytest.mark.skipif(not available(), reason=f"C kernels unavailable: {unavailable_reason()}")
# both ways of scoring: int8 weights x float32 hidden state everywhere, int8 x int8 where VNNI exists
INT8_DOT = [False] + ([True] if available() and load().gf_has_vnni() else [])


def hidden_states(n: int, dim: int, seed: int = 0) -> torch.Tensor:
    """Rows like a final LayerNorm's output, at several scales."""
    g = torch.Generator().manual_seed(seed)
    h = F.layer_norm(torch.randn(n, dim, generator=g), (dim,))
    return h * torch.linspace(0.5, 4.0, n)[:, None]


@pytest.mark.parametrize("int8_dot", INT8_DOT)
def test_int8_scores_stay_within_the_bound(int8_dot):
    """|exact logit - int8 score| <= the slack, row by row: the inequality the shortlist relies on."""
    torch.manual_seed(0)
    w = torch.randn(3000, 97) * 0.02  # 97 inputs: not a multiple of the 4-byte groups
    head = ShortlistHead(w, int8_dot=int8_dot)
    assert head.dot_int8 == int8_dot
    h = hidden_states(16, 97)
    exact = h.double() @ w.double().t()
    score, xnorms = head.scores(h)
    gap = (exact - score.double()).abs()
    bound = head.bound(h, xnorms)
    assert (gap <= bound).all()
    assert (gap.amax(1) > 0.05 * bound.amax(1)).all()  # the bound is not vacuous either


@pytest.mark.parametrize("int8_dot", INT8_DOT)
def test_bound_covers_the_hidden_states_own_rounding(int8_dot):
    """Weights that int8 holds exactly (no weight error at all): what is left of the gap is the
    hidden state's quantization (int8 x int8 scoring) and float rounding, and the bound covers it."""
    g = torch.Generator().manual_seed(7)
    ints = torch.randint(-126, 127, (2000, 64), generator=g).float()
    ints[:, 0] = 127.0  # every row's largest magnitude is 127: the scale is exactly 0.001
    w = ints * torch.tensor(0.001)
    head = ShortlistHead(w, int8_dot=int8_dot)
    h = hidden_states(8, 64)
    score, xnorms = head.scores(h)
    gap = (h.double() @ w.double().t() - score.double()).abs()
    assert (gap <= head.bound(h, xnorms)).all()
    if int8_dot:
        assert (gap.amax(1) > 1e-3).all()  # the hidden state's rounding is what the bound must cover


@pytest.mark.parametrize("int8_dot", INT8_DOT)
def test_argmax_equals_full_head_and_values_are_exact(int8_dot):
    torch.manual_seed(1)
    w = torch.randn(5000, 128) * 0.02
    head = ShortlistHead(w, int8_dot=int8_dot)
    h = hidden_states(64, 128)
    full = h @ w.t()
    short = head(h)
    assert torch.equal(short.argmax(-1), full.argmax(-1))
    kept = torch.isfinite(short)
    assert kept.sum(1).max() < 200  # a shortlist, not the vocabulary
    torch.testing.assert_close(short[kept], full[kept], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("int8_dot", INT8_DOT)
def test_near_ties_are_resolved_in_float32(int8_dot):
    """Rows that differ by less than int8 can see: the shortlist keeps both and picks the larger."""
    torch.manual_seed(2)
    w = torch.randn(1000, 64) * 0.02
    h = hidden_states(1, 64)[0]
    best = int((w @ h).argmax())
    twin = w[best] + 1e-5 * h / h.norm()  # a hair better than the winner along h
    w[7] = twin
    head = ShortlistHead(w, int8_dot=int8_dot)
    assert int(head(h[None]).argmax()) == int((w @ h).argmax()) == 7


@pytest.mark.parametrize("int8_dot", INT8_DOT)
def test_flat_scores_fall_back_to_the_full_head(int8_dot):
    torch.manual_seed(6)
    # rows closer to each other than int8 can tell apart: no row can be ruled out
    w = 0.02 * torch.randn(1, 32) + 1e-5 * torch.randn(MAX_SHORTLIST + 500, 32)
    head = ShortlistHead(w, int8_dot=int8_dot)
    h = hidden_states(1, 32)
    out = head(h)
    assert torch.isfinite(out).all()
    assert int(out.argmax()) == int((h @ w.t()).argmax())


@pytest.mark.parametrize("int8_dot", INT8_DOT)
def test_bias_is_part_of_the_logit(int8_dot):
    torch.manual_seed(3)
    w, b = torch.randn(600, 48) * 0.02, torch.zeros(600)
    b[42] = 100.0
    assert int(ShortlistHead(w, b, int8_dot=int8_dot)(hidden_states(1, 48)).argmax()) == 42


@pytest.mark.parametrize("variant", [{}, dict(n_kv_heads=2, **LLAMA_STYLE)])
def test_greedy_decoding_gives_the_same_tokens_with_and_without_it(variant):
    torch.manual_seed(4)
    model = GPT(GPTConfig(vocab_size=2000, max_seq_len=64, n_layers=2, n_heads=4, dim=64, **variant)).eval()
    assert shortlist_head(model) is not None
    prompts = [[5, 17, 300, 4], [9, 1999]]
    for lookup in (0, 3):
        rows = prompts[:1] if lookup else prompts
        on = generate(model, rows, max_new_tokens=30, prompt_lookup=lookup)
        off = generate(model, rows, max_new_tokens=30, prompt_lookup=lookup, greedy_shortlist=False)
        assert on.tokens == off.tokens


def test_head_is_rebuilt_when_the_weights_change():
    torch.manual_seed(5)
    model = GPT(GPTConfig(vocab_size=512, max_seq_len=16, n_layers=1, n_heads=2, dim=32)).eval()
    first = shortlist_head(model)
    assert shortlist_head(model) is first
    with torch.no_grad():
        model.lm_head.weight.mul_(2)
    assert shortlist_head(model) is not first


def test_not_used_where_it_does_not_apply():
    small = GPT(GPTConfig(vocab_size=64, max_seq_len=16, n_layers=1, n_heads=2, dim=32))
    assert shortlist_head(small) is None  # fewer rows than it takes to pay off
    assert shortlist_head(torch.nn.Linear(4, 4)) is None  # no lm_head
    with pytest.raises(ValueError, match="float32 CPU"):
        ShortlistHead(torch.randn(300, 8, dtype=torch.float64))
