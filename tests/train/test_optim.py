"""AdamW parameter groups: weight decay on matrices only."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from glassformer.nn.norms import LayerNorm, RMSNorm
from glassformer.nn.positional import LearnedPositionalEmbedding
from glassformer.train import TrainConfig, build_optimizer, param_groups
from glassformer.train.optim import split_decay


class Marked(nn.Module):
    """A module that exempts one of its own matrices, as a ViT exempts its cls token."""

    def __init__(self) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 4))
        self.proj = nn.Linear(4, 4)

    def no_weight_decay(self) -> set[str]:
        return {"cls_token"}


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.tok = nn.Embedding(10, 4)
        self.pos = LearnedPositionalEmbedding(8, 4)
        self.ln = LayerNorm(4)
        self.rms = RMSNorm(4)
        self.torch_ln = nn.LayerNorm(4)
        self.fc = nn.Linear(4, 6)
        self.conv = nn.Conv1d(4, 4, 3)
        self.marked = Marked()
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)
        self.head = nn.Linear(4, 10, bias=False)
        self.head.weight = self.tok.weight  # tied: an embedding, so no decay


def test_split_decay_exempts_biases_norms_embeddings_and_marked() -> None:
    decay, no_decay = split_decay(Net())
    assert sorted(decay) == ["conv.weight", "fc.weight", "marked.proj.weight"]
    assert sorted(no_decay) == sorted([
        "tok.weight", "pos.weight", "ln.weight", "ln.bias", "rms.weight", "torch_ln.weight", "torch_ln.bias",
        "fc.bias", "conv.bias", "marked.cls_token", "marked.proj.bias",
    ])  # the tied head appears once (as tok.weight); frozen parameters are left out


def test_optimizer_groups_carry_the_decay() -> None:
    model = Net()
    groups = param_groups(model, 0.1)
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]
    opt = build_optimizer(model, TrainConfig(weight_decay=0.1, lr=1e-3, betas=(0.9, 0.99)), torch.device("cpu"))
    assert isinstance(opt, torch.optim.AdamW)
    n_trainable = len({id(p) for p in model.parameters() if p.requires_grad})
    assert sum(len(g["params"]) for g in opt.param_groups) == n_trainable
    assert opt.param_groups[0]["betas"] == (0.9, 0.99)
    # one step with zero gradients: only decayed matrices shrink
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p) if p.requires_grad else None
    opt.step()
    after = dict(model.named_parameters())
    assert not torch.equal(after["fc.weight"], before["fc.weight"])
    assert torch.equal(after["tok.weight"], before["tok.weight"]) and torch.equal(after["fc.bias"], before["fc.bias"])


def test_no_weight_decay_must_name_own_parameters() -> None:
    class Wrong(Marked):
        def no_weight_decay(self) -> set[str]:
            return {"clz_token"}

    with pytest.raises(ValueError, match="clz_token"):
        split_decay(Wrong())
