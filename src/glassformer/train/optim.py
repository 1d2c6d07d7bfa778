"""AdamW with two parameter groups: weight decay on matrices only.

Weight decay pulls weights toward zero. That is a useful prior for the matrices of linear layers,
but not for biases (they only shift), norm gains (decaying them toward 0 fights the
normalization) or embeddings (rows of rare tokens get few gradient updates, so decay would erase
them). The rule, as in minGPT and Hugging Face:

- decay: parameters with ``ndim >= 2`` ...
- ... unless they belong to an embedding (``nn.Embedding``, ``nn.EmbeddingBag`` or any module whose
  class name contains ``Embedding``, such as ``LearnedPositionalEmbedding``) or a norm (any
  module whose class name contains ``Norm``),
- ... or a module marks them: a module may define ``no_weight_decay() -> Iterable[str]`` naming
  some of its own parameters (relative names, e.g. ``{"cls_token", "pos_embed"}``).

A parameter shared by several modules (tied input/output embeddings) is listed once, and is
exempt from decay if any of its owners exempts it. Frozen parameters (``requires_grad=False``)
are left out.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from glassformer.train.config import TrainConfig


def _exempt_module(module: nn.Module) -> bool:
    name = type(module).__name__
    return isinstance(module, (nn.Embedding, nn.EmbeddingBag)) or "Embedding" in name or "Norm" in name


def split_decay(model: nn.Module) -> tuple[list[str], list[str]]:
    """Names of trainable parameters with and without weight decay (each parameter once)."""
    exempt: set[int] = set()
    for module in model.modules():
        marked = set(module.no_weight_decay()) if hasattr(module, "no_weight_decay") else set()
        own = dict(module.named_parameters(recurse=False))
        unknown = marked - set(own)
        if unknown:
            raise ValueError(
                f"{type(module).__name__}.no_weight_decay() names {sorted(unknown)}, which are not its own "
                f"parameters; its parameters are {sorted(own)}"
            )
        for pname, p in own.items():
            if p.ndim < 2 or _exempt_module(module) or pname in marked:
                exempt.add(id(p))
    decay: list[str] = []
    no_decay: list[str] = []
    seen: set[int] = set()
    for name, p in model.named_parameters():  # shared parameters appear once here
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (no_decay if id(p) in exempt else decay).append(name)
    return decay, no_decay


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two optimizer groups: ``decay`` (``weight_decay``) and ``no_decay`` (0.0)."""
    decay, no_decay = split_decay(model)
    params = dict(model.named_parameters())
    return [
        {"params": [params[n] for n in decay], "weight_decay": weight_decay, "name": "decay"},
        {"params": [params[n] for n in no_decay], "weight_decay": 0.0, "name": "no_decay"},
    ]


def build_optimizer(model: nn.Module, config: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups`; the fused CUDA kernel when the weights live on a GPU."""
    groups = [g for g in param_groups(model, config.weight_decay) if g["params"]]
    if not groups:
        raise ValueError("the model has no trainable parameters (all have requires_grad=False)")
    fused = device.type == "cuda"
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, eps=config.eps, fused=fused or None)
