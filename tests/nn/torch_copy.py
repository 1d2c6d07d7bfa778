"""Copy glassformer weights into torch.nn's attention and Transformer layers, for the comparisons.

torch packs the query/key/value projections into one ``in_proj_weight`` of shape ``(3C, C)``
(rows: q, then k, then v) when keys have the model's width, and keeps three separate matrices
otherwise; glassformer always keeps three ``nn.Linear``. Everything else maps one to one.
"""

from __future__ import annotations

import torch

from glassformer.nn.attention import MultiHeadAttention
from glassformer.nn.blocks import TransformerBlock, TransformerStack


@torch.no_grad()
def copy_mha(ours: MultiHeadAttention, ref: torch.nn.MultiheadAttention) -> None:
    if ref._qkv_same_embed_dim:
        ref.in_proj_weight.copy_(torch.cat([ours.q_proj.weight, ours.k_proj.weight, ours.v_proj.weight]))
    else:
        ref.q_proj_weight.copy_(ours.q_proj.weight)
        ref.k_proj_weight.copy_(ours.k_proj.weight)
        ref.v_proj_weight.copy_(ours.v_proj.weight)
    ref.in_proj_bias.copy_(torch.cat([ours.q_proj.bias, ours.k_proj.bias, ours.v_proj.bias]))
    ref.out_proj.load_state_dict(ours.o_proj.state_dict())


@torch.no_grad()
def copy_block(ours: TransformerBlock, ref: torch.nn.TransformerEncoderLayer | torch.nn.TransformerDecoderLayer) -> None:
    """torch's norm1/norm2(/norm3) follow the sublayer order: self-attention, (cross), FFN."""
    copy_mha(ours.attn, ref.self_attn)
    norms = [ours.attn_norm]
    if isinstance(ref, torch.nn.TransformerDecoderLayer):
        assert ours.cross_attn is not None and ours.cross_norm is not None
        copy_mha(ours.cross_attn, ref.multihead_attn)
        norms.append(ours.cross_norm)
    norms.append(ours.ffn_norm)
    for i, norm in enumerate(norms, start=1):
        getattr(ref, f"norm{i}").load_state_dict(norm.state_dict())
    ref.linear1.load_state_dict(ours.ffn.up.state_dict())
    ref.linear2.load_state_dict(ours.ffn.down.state_dict())


@torch.no_grad()
def copy_stack(ours: TransformerStack, ref: torch.nn.TransformerEncoder | torch.nn.TransformerDecoder) -> None:
    assert len(ours.layers) == len(ref.layers)
    for a, b in zip(ours.layers, ref.layers):
        copy_block(a, b)
    assert ours.final_norm is not None and ref.norm is not None
    ref.norm.load_state_dict(ours.final_norm.state_dict())
