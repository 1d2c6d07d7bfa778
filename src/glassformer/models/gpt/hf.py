"""Hugging Face checkpoints <-> glassformer GPT: GPT-2 (``GPT2LMHeadModel``), GPT-NeoX
(``GPTNeoXForCausalLM``), Llama (``LlamaForCausalLM``) and Gemma 3's text model (``Gemma3ForCausalLM``).

A Hugging Face folder holds ``config.json`` (field names differ per architecture) and
``model.safetensors`` (tensor names differ too). Converting is renaming, plus a few twists:

* GPT-2's layers are ``Conv1D`` modules that store their weight as ``(in, out)``, the transpose
  of ``nn.Linear``'s ``(out, in)``: every GPT-2 matrix is transposed on the way in and out.
* GPT-2 computes queries, keys and values with one fused ``c_attn`` of output width
  ``3 * dim``; its output columns are ``[q | k | v]``. After the transpose the rows are
  ``[q; k; v]``, so splitting into three equal row blocks gives our ``q_proj``, ``k_proj``,
  ``v_proj`` (and the bias splits the same way). Exporting concatenates them back.
* GPT-NeoX fuses them too, but per head: its ``query_key_value`` output is viewed as
  ``(heads, 3 * head_dim)`` and chunked, so the rows run ``[h0 q; h0 k; h0 v; h1 q; ...]``.
* GPT-2 and GPT-NeoX always have biases (NeoX's MLP and both architectures' LayerNorms cannot
  leave them out): a bias-free model (nanoGPT's ``bias=False``) is written with exact-zero
  biases, and a file whose biases are all exactly zero is read back as ``bias=False``.

Llama's and Gemma 3's names map one to one onto ours and need no transposes (Gemma's norm
weights are stored as offsets from one, as ``norm_offset=1`` reads them). Tied embeddings: the file
stores the embedding matrix once and ``lm_head.weight`` is absent (or equal to it). Which of
our configs export to which architecture: :func:`model_type` and ``docs/hf-export.md``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from glassformer.models.gpt.config import GEMMA3_STYLE, GPTConfig
from glassformer.models.gpt.model import GPT
from glassformer.utils.weights import CONFIG_NAME, read_hf_folder, read_safetensors, resolve, write_hf_folder

# A value that is a tuple means the Hugging Face tensor is our tensors concatenated along the
# output dimension (GPT-2's fused q/k/v). "{}" stands for the layer number.
KeyMap = dict[str, str | tuple[str, ...]]

GPT2_KEYS: KeyMap = {
    "transformer.wte.weight": "wte.weight",
    "transformer.wpe.weight": "wpe.weight",
    "transformer.h.{}.ln_1.weight": "stack.layers.{}.attn_norm.weight",
    "transformer.h.{}.ln_1.bias": "stack.layers.{}.attn_norm.bias",
    "transformer.h.{}.attn.c_attn.weight": (
        "stack.layers.{}.attn.q_proj.weight", "stack.layers.{}.attn.k_proj.weight", "stack.layers.{}.attn.v_proj.weight",
    ),
    "transformer.h.{}.attn.c_attn.bias": (
        "stack.layers.{}.attn.q_proj.bias", "stack.layers.{}.attn.k_proj.bias", "stack.layers.{}.attn.v_proj.bias",
    ),
    "transformer.h.{}.attn.c_proj.weight": "stack.layers.{}.attn.o_proj.weight",
    "transformer.h.{}.attn.c_proj.bias": "stack.layers.{}.attn.o_proj.bias",
    "transformer.h.{}.ln_2.weight": "stack.layers.{}.ffn_norm.weight",
    "transformer.h.{}.ln_2.bias": "stack.layers.{}.ffn_norm.bias",
    "transformer.h.{}.mlp.c_fc.weight": "stack.layers.{}.ffn.up.weight",
    "transformer.h.{}.mlp.c_fc.bias": "stack.layers.{}.ffn.up.bias",
    "transformer.h.{}.mlp.c_proj.weight": "stack.layers.{}.ffn.down.weight",
    "transformer.h.{}.mlp.c_proj.bias": "stack.layers.{}.ffn.down.bias",
    "transformer.ln_f.weight": "stack.final_norm.weight",
    "transformer.ln_f.bias": "stack.final_norm.bias",
    "lm_head.weight": "lm_head.weight",
}  # fmt: skip
# GPT-2 Conv1D weights, stored (in, out): transposed in both directions.
GPT2_TRANSPOSED = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# Buffers old GPT-2 files carry (the causal mask): not weights, safe to drop.
GPT2_IGNORED = re.compile(r"\.attn\.(bias|masked_bias)$")

LLAMA_KEYS: KeyMap = {
    "model.embed_tokens.weight": "wte.weight",
    "model.layers.{}.input_layernorm.weight": "stack.layers.{}.attn_norm.weight",
    "model.layers.{}.self_attn.q_proj.weight": "stack.layers.{}.attn.q_proj.weight",
    "model.layers.{}.self_attn.k_proj.weight": "stack.layers.{}.attn.k_proj.weight",
    "model.layers.{}.self_attn.v_proj.weight": "stack.layers.{}.attn.v_proj.weight",
    "model.layers.{}.self_attn.o_proj.weight": "stack.layers.{}.attn.o_proj.weight",
    "model.layers.{}.self_attn.q_proj.bias": "stack.layers.{}.attn.q_proj.bias",
    "model.layers.{}.self_attn.k_proj.bias": "stack.layers.{}.attn.k_proj.bias",
    "model.layers.{}.self_attn.v_proj.bias": "stack.layers.{}.attn.v_proj.bias",
    "model.layers.{}.self_attn.o_proj.bias": "stack.layers.{}.attn.o_proj.bias",
    "model.layers.{}.post_attention_layernorm.weight": "stack.layers.{}.ffn_norm.weight",
    "model.layers.{}.mlp.gate_proj.weight": "stack.layers.{}.ffn.gate.weight",
    "model.layers.{}.mlp.up_proj.weight": "stack.layers.{}.ffn.up.weight",
    "model.layers.{}.mlp.down_proj.weight": "stack.layers.{}.ffn.down.weight",
    "model.layers.{}.mlp.gate_proj.bias": "stack.layers.{}.ffn.gate.bias",
    "model.layers.{}.mlp.up_proj.bias": "stack.layers.{}.ffn.up.bias",
    "model.layers.{}.mlp.down_proj.bias": "stack.layers.{}.ffn.down.bias",
    "model.norm.weight": "stack.final_norm.weight",
    "lm_head.weight": "lm_head.weight",
}
LLAMA_IGNORED = re.compile(r"rotary_emb\.inv_freq$")  # a recomputable buffer some old files hold

NEOX_KEYS: KeyMap = {
    "gpt_neox.embed_in.weight": "wte.weight",
    "gpt_neox.layers.{}.input_layernorm.weight": "stack.layers.{}.attn_norm.weight",
    "gpt_neox.layers.{}.input_layernorm.bias": "stack.layers.{}.attn_norm.bias",
    "gpt_neox.layers.{}.attention.query_key_value.weight": (
        "stack.layers.{}.attn.q_proj.weight", "stack.layers.{}.attn.k_proj.weight", "stack.layers.{}.attn.v_proj.weight",
    ),
    "gpt_neox.layers.{}.attention.query_key_value.bias": (
        "stack.layers.{}.attn.q_proj.bias", "stack.layers.{}.attn.k_proj.bias", "stack.layers.{}.attn.v_proj.bias",
    ),
    "gpt_neox.layers.{}.attention.dense.weight": "stack.layers.{}.attn.o_proj.weight",
    "gpt_neox.layers.{}.attention.dense.bias": "stack.layers.{}.attn.o_proj.bias",
    "gpt_neox.layers.{}.post_attention_layernorm.weight": "stack.layers.{}.ffn_norm.weight",
    "gpt_neox.layers.{}.post_attention_layernorm.bias": "stack.layers.{}.ffn_norm.bias",
    "gpt_neox.layers.{}.mlp.dense_h_to_4h.weight": "stack.layers.{}.ffn.up.weight",
    "gpt_neox.layers.{}.mlp.dense_h_to_4h.bias": "stack.layers.{}.ffn.up.bias",
    "gpt_neox.layers.{}.mlp.dense_4h_to_h.weight": "stack.layers.{}.ffn.down.weight",
    "gpt_neox.layers.{}.mlp.dense_4h_to_h.bias": "stack.layers.{}.ffn.down.bias",
    "gpt_neox.final_layer_norm.weight": "stack.final_norm.weight",
    "gpt_neox.final_layer_norm.bias": "stack.final_norm.bias",
    # transformers 4 named the head embed_out; 5 reads that name too, so it is what we write
    "embed_out.weight": "lm_head.weight",
}  # fmt: skip
GEMMA3_KEYS: KeyMap = {
    "model.embed_tokens.weight": "wte.weight",
    "model.layers.{}.input_layernorm.weight": "stack.layers.{}.attn_norm.weight",
    "model.layers.{}.self_attn.q_proj.weight": "stack.layers.{}.attn.q_proj.weight",
    "model.layers.{}.self_attn.k_proj.weight": "stack.layers.{}.attn.k_proj.weight",
    "model.layers.{}.self_attn.v_proj.weight": "stack.layers.{}.attn.v_proj.weight",
    "model.layers.{}.self_attn.o_proj.weight": "stack.layers.{}.attn.o_proj.weight",
    "model.layers.{}.self_attn.q_norm.weight": "stack.layers.{}.attn.q_norm.weight",
    "model.layers.{}.self_attn.k_norm.weight": "stack.layers.{}.attn.k_norm.weight",
    "model.layers.{}.post_attention_layernorm.weight": "stack.layers.{}.post_attn_norm.weight",
    "model.layers.{}.pre_feedforward_layernorm.weight": "stack.layers.{}.ffn_norm.weight",
    "model.layers.{}.post_feedforward_layernorm.weight": "stack.layers.{}.post_ffn_norm.weight",
    "model.layers.{}.mlp.gate_proj.weight": "stack.layers.{}.ffn.gate.weight",
    "model.layers.{}.mlp.up_proj.weight": "stack.layers.{}.ffn.up.weight",
    "model.layers.{}.mlp.down_proj.weight": "stack.layers.{}.ffn.down.weight",
    "model.norm.weight": "stack.final_norm.weight",
    "lm_head.weight": "lm_head.weight",
}  # fmt: skip
GEMMA3_IGNORED = re.compile(r"rotary_emb\.\w+$")
# Buffers old GPT-NeoX files (Pythia) carry: the causal mask and the rotary frequencies.
NEOX_IGNORED = re.compile(r"\.attention\.(bias|masked_bias)$|rotary_emb\.inv_freq$")

# model_type -> (key map, buffers to ignore, HF class)
ARCHITECTURES: dict[str, tuple[KeyMap, re.Pattern[str], str]] = {
    "gpt2": (GPT2_KEYS, GPT2_IGNORED, "GPT2LMHeadModel"),
    "gpt_neox": (NEOX_KEYS, NEOX_IGNORED, "GPTNeoXForCausalLM"),
    "llama": (LLAMA_KEYS, LLAMA_IGNORED, "LlamaForCausalLM"),
    "gemma3_text": (GEMMA3_KEYS, GEMMA3_IGNORED, "Gemma3ForCausalLM"),
}
# Architectures whose files always hold biases: bias=False is written (and read) as exact zeros.
ALWAYS_BIASED = ("gpt2", "gpt_neox")
# Hugging Face's name of each plain activation GPT-2 and GPT-NeoX accept.
ACTIVATIONS_TO_HF = {"gelu_tanh": "gelu_new", "gelu": "gelu", "relu": "relu", "silu": "silu"}

HF_ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu_fast": "gelu_tanh",
                  "gelu": "gelu", "relu": "relu", "silu": "silu", "swish": "silu"}  # fmt: skip
# Files of a Hugging Face tokenizer that travel with the weights.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json")
# What a hub download fetches: the config, the weights (safetensors only) and the tokenizer.
HUB_FILES = ("config.json", "generation_config.json", "*.safetensors", "model.safetensors.index.json", *TOKENIZER_FILES)


# ---------------------------------------------------------------------------------------------
# configs


def config_from_hf(hf: dict[str, Any], source: str = "config.json") -> GPTConfig:
    """Translate a Hugging Face ``config.json`` (GPT-2 or Llama) into a :class:`GPTConfig`."""
    kind = hf.get("model_type")
    if kind == "gpt2":
        for field, ok in (("scale_attn_by_inverse_layer_idx", False), ("reorder_and_upcast_attn", False),
                          ("scale_attn_weights", True), ("add_cross_attention", False)):  # fmt: skip
            if hf.get(field, ok) != ok:
                raise ValueError(f"{source}: GPT-2 with {field}={hf[field]!r} is not supported")
        act = hf.get("activation_function", "gelu_new")
        if act not in HF_ACTIVATIONS:
            raise ValueError(f"{source}: unsupported activation_function {act!r}; known: {sorted(HF_ACTIVATIONS)}")
        return GPTConfig(
            vocab_size=hf["vocab_size"], max_seq_len=hf.get("n_positions", 1024), n_layers=hf["n_layer"],
            n_heads=hf["n_head"], dim=hf["n_embd"], ffn_dim=hf.get("n_inner"),
            pos_encoding="learned", norm="layernorm", norm_eps=hf.get("layer_norm_epsilon", 1e-5),
            activation=HF_ACTIVATIONS[act], bias=True, tie_embeddings=hf.get("tie_word_embeddings", True),
            dropout=0.0, init_std=hf.get("initializer_range", 0.02),
            **_special_ids(hf),
        )  # fmt: skip
    if kind == "gpt_neox":
        return _neox_config(hf, source)
    if kind == "gemma3_text":
        return _gemma3_config(hf, source)
    if kind == "llama":
        theta = _rope(hf, source).get("rope_theta", hf.get("rope_theta", 10000.0))
        if hf.get("hidden_act", "silu") != "silu":
            raise ValueError(f"{source}: Llama with hidden_act={hf['hidden_act']!r} is not supported (only 'silu')")
        attention_bias, mlp_bias = hf.get("attention_bias", False), hf.get("mlp_bias", False)
        if attention_bias != mlp_bias:
            raise ValueError(
                f"{source}: attention_bias={attention_bias} with mlp_bias={mlp_bias} is not supported; "
                "glassformer's GPTConfig.bias covers both"
            )
        n_heads = hf["num_attention_heads"]
        return GPTConfig(
            vocab_size=hf["vocab_size"], max_seq_len=hf.get("max_position_embeddings", 2048),
            n_layers=hf["num_hidden_layers"], n_heads=n_heads, n_kv_heads=hf.get("num_key_value_heads") or n_heads,
            dim=hf["hidden_size"], head_dim=hf.get("head_dim"), ffn_dim=hf["intermediate_size"],
            pos_encoding="rope", rope_theta=float(theta), norm="rmsnorm", norm_eps=hf.get("rms_norm_eps", 1e-6),
            activation="swiglu", bias=bool(attention_bias), tie_embeddings=hf.get("tie_word_embeddings", False),
            dropout=0.0, init_std=hf.get("initializer_range", 0.02),
            **_special_ids(hf),
        )  # fmt: skip
    raise ValueError(
        f"{source}: model_type {kind!r} is not a GPT-family architecture glassformer reads; "
        "supported: 'gpt2' (GPT2LMHeadModel), 'gpt_neox' (GPTNeoXForCausalLM), 'llama' (LlamaForCausalLM) "
        "and 'gemma3_text' (Gemma3ForCausalLM)"
    )


def _rope(hf: dict[str, Any], source: str) -> dict[str, Any]:
    """The RoPE parameters of a config.json (transformers 5's ``rope_parameters`` or the older
    ``rope_scaling``); only unscaled RoPE is something glassformer computes."""
    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type != "default":
        raise ValueError(f"{source}: RoPE scaling {rope_type!r} is not supported (only 'default')")
    return rope


def _neox_config(hf: dict[str, Any], source: str) -> GPTConfig:
    """GPT-NeoX as glassformer runs it: sequential residuals, RoPE on the whole head.

    ``bias`` comes out True here; :func:`from_pretrained` reads exact-zero biases as bias=False.
    """
    if hf.get("use_parallel_residual", True):
        raise ValueError(
            f"{source}: GPT-NeoX with use_parallel_residual=True (attention and MLP side by side, as in "
            "Pythia) is not supported; glassformer's blocks add them one after the other (False)"
        )
    rope = _rope(hf, source)
    fraction = rope.get("partial_rotary_factor", hf.get("rotary_pct", 0.25))  # transformers' default
    if fraction != 1.0:
        raise ValueError(f"{source}: GPT-NeoX rotating {fraction} of each head is not supported; only rotary_pct=1.0")
    act = hf.get("hidden_act", "gelu")
    if act not in HF_ACTIVATIONS:
        raise ValueError(f"{source}: unsupported hidden_act {act!r}; known: {sorted(HF_ACTIVATIONS)}")
    return GPTConfig(
        vocab_size=hf["vocab_size"], max_seq_len=hf.get("max_position_embeddings", 2048),
        n_layers=hf["num_hidden_layers"], n_heads=hf["num_attention_heads"], dim=hf["hidden_size"],
        ffn_dim=hf["intermediate_size"], pos_encoding="rope",
        rope_theta=float(rope.get("rope_theta", hf.get("rotary_emb_base", 10000.0))), norm="layernorm",
        norm_eps=hf.get("layer_norm_eps", 1e-5), activation=HF_ACTIVATIONS[act], bias=True,
        tie_embeddings=hf.get("tie_word_embeddings", False), dropout=0.0, init_std=hf.get("initializer_range", 0.02),
        **_special_ids(hf),
    )  # fmt: skip


def _gemma3_config(hf: dict[str, Any], source: str) -> GPTConfig:
    """Gemma 3's text model: ``layer_types`` becomes ``sliding_window`` + ``global_every``, and each
    kind's RoPE base comes from ``rope_parameters`` (transformers 5) or the older flat fields."""
    for field in ("attn_logit_softcapping", "use_bidirectional_attention", "attention_bias"):
        if hf.get(field):
            raise ValueError(f"{source}: Gemma 3 with {field}={hf[field]!r} is not supported")
    if hf.get("hidden_activation", "gelu_pytorch_tanh") not in ("gelu_pytorch_tanh", "gelu_new", "gelu_tanh"):
        raise ValueError(f"{source}: Gemma 3 with hidden_activation={hf['hidden_activation']!r} is not supported")
    n = hf["num_hidden_layers"]
    kinds = hf.get("layer_types") or [
        "full_attention" if (i + 1) % hf.get("sliding_window_pattern", 6) == 0 else "sliding_attention" for i in range(n)
    ]
    window, every = _window_pattern(kinds, hf.get("sliding_window"), source)
    rope = hf.get("rope_parameters") or {}
    full = _rope({"rope_parameters": rope.get("full_attention") or {"rope_theta": hf.get("rope_theta", 1e6)}}, source)
    local = _rope({"rope_parameters": rope.get("sliding_attention") or {"rope_theta": hf.get("rope_local_base_freq", 1e4)}},
                  source)  # fmt: skip
    n_heads = hf["num_attention_heads"]
    return GPTConfig(
        vocab_size=hf["vocab_size"], max_seq_len=hf.get("max_position_embeddings", 131072), n_layers=n,
        n_heads=n_heads, n_kv_heads=hf.get("num_key_value_heads") or n_heads, dim=hf["hidden_size"],
        head_dim=hf.get("head_dim", 256), ffn_dim=hf["intermediate_size"], rope_theta=float(full["rope_theta"]),
        rope_local_theta=float(local["rope_theta"]) if window else None, norm_eps=hf.get("rms_norm_eps", 1e-6),
        tie_embeddings=hf.get("tie_word_embeddings", True), dropout=0.0, init_std=hf.get("initializer_range", 0.02),
        query_pre_attn_scalar=float(hf.get("query_pre_attn_scalar", 256)), sliding_window=window,
        global_every=every, logit_softcap=hf.get("final_logit_softcapping"), **GEMMA3_STYLE, **_special_ids(hf),
    )  # fmt: skip


def _window_pattern(kinds: list[str], window: int | None, source: str) -> tuple[int | None, int | None]:
    """``layer_types`` -> ``(sliding_window, global_every)``; only "every N-th layer global" is expressible."""
    globals_ = [i for i, k in enumerate(kinds) if k == "full_attention"]
    if len(globals_) == len(kinds) or window is None:
        return None, None
    if not globals_:
        return window, None
    every = globals_[0] + 1
    expected = ["full_attention" if (i + 1) % every == 0 else "sliding_attention" for i in range(len(kinds))]
    if kinds != expected:
        raise ValueError(
            f"{source}: layer_types {kinds} is not 'every {every}th layer global'; GPTConfig.global_every "
            "expresses only that pattern"
        )
    return window, every


def _special_ids(hf: dict[str, Any]) -> dict[str, int | None]:
    """bos/eos ids. Hugging Face allows a list of eos ids (GPTConfig keeps the first) and, with only
    a warning, ids outside the vocabulary (a config copied from a bigger model): those become None."""
    out = {}
    for name in ("bos_token_id", "eos_token_id"):
        value = hf.get(name)
        if isinstance(value, list):
            value = value[0] if value else None
        out[name] = value if isinstance(value, int) and 0 <= value < hf["vocab_size"] else None
    return out


EXPORT_TABLE = (
    "learned positions + layernorm + gelu_tanh/gelu/relu/silu -> GPT-2 (GPT2LMHeadModel); "
    "rope + layernorm + gelu_tanh/gelu/relu/silu -> GPT-NeoX (GPTNeoXForCausalLM); "
    "rope + rmsnorm + swiglu -> Llama (LlamaForCausalLM); see docs/hf-export.md"
)


def model_type(config: GPTConfig) -> str:
    """The Hugging Face ``model_type`` a config is saved as: ``"gpt2"``, ``"gpt_neox"`` or ``"llama"``.

    Raises ``ValueError`` naming the reason where no architecture transformers has computes the
    same function (``docs/hf-export.md`` has the table).
    """
    c = config
    if c.gemma_blocks:
        return _gemma3_type(c)
    if c.norm == "layernorm" and c.activation in ACTIVATIONS_TO_HF:
        arch = "gpt2" if c.pos_encoding == "learned" else "gpt_neox"
        if c.kv_heads != c.n_heads or c.head_size * c.n_heads != c.dim:
            raise ValueError(
                f"no Hugging Face architecture fits n_kv_heads={c.kv_heads}, head_dim={c.head_size} with "
                f"n_heads={c.n_heads}, dim={c.dim}: {ARCHITECTURES[arch][2]} needs n_kv_heads == n_heads and "
                "head_dim == dim // n_heads; use plain multi-head attention, or rope + rmsnorm + swiglu (Llama)"
            )
        return arch
    if (c.pos_encoding, c.norm, c.activation) == ("rope", "rmsnorm", "swiglu"):
        return "llama"
    raise ValueError(
        f"no Hugging Face architecture matches pos_encoding={c.pos_encoding!r}, norm={c.norm!r}, "
        f"activation={c.activation!r}; what exports: {EXPORT_TABLE}"
    )


def _gemma3_type(c: GPTConfig) -> str:
    """``"gemma3_text"`` when every Gemma choice is Gemma 3's, else the first one that is not."""
    for field, value in GEMMA3_STYLE.items():
        if getattr(c, field) != value:
            raise ValueError(
                f"GPTConfig.{field}={getattr(c, field)!r}: a config with Gemma's options exports only as "
                f"Gemma 3 (Gemma3ForCausalLM), which needs {field}={value!r}"
            )
    if c.sliding_window is not None and c.rope_local_theta is None:
        raise ValueError("GPTConfig.rope_local_theta=None: Gemma 3's sliding-window layers have their own RoPE base")
    return "gemma3_text"


def architecture(config: GPTConfig) -> str:
    """The transformers class a config is saved as (``GPT2LMHeadModel``, ...): the GPT Format's ``exports``."""
    return ARCHITECTURES[model_type(config)][2]


def config_to_hf(config: GPTConfig) -> dict[str, Any]:
    """The Hugging Face ``config.json`` for a config (see :func:`model_type`)."""
    c = config
    arch = model_type(c)
    common = {
        "architectures": [ARCHITECTURES[arch][2]], "model_type": arch, "vocab_size": c.vocab_size,
        "initializer_range": c.init_std, "tie_word_embeddings": c.tie_embeddings,
        "bos_token_id": c.bos_token_id, "eos_token_id": c.eos_token_id,
    }  # fmt: skip
    if arch == "gpt2":
        return {
            **common, "n_positions": c.max_seq_len, "n_embd": c.dim, "n_layer": c.n_layers, "n_head": c.n_heads,
            "n_inner": c.ffn_dim, "activation_function": ACTIVATIONS_TO_HF[c.activation],
            "layer_norm_epsilon": c.norm_eps, "resid_pdrop": c.dropout, "embd_pdrop": c.dropout,
            "attn_pdrop": c.dropout,
        }  # fmt: skip
    rope = {"rope_type": "default", "rope_theta": c.rope_theta}
    shape = {
        "max_position_embeddings": c.max_seq_len, "hidden_size": c.dim, "intermediate_size": c.ffn_size,
        "num_hidden_layers": c.n_layers, "num_attention_heads": c.n_heads, "attention_dropout": c.dropout,
    }  # fmt: skip
    if arch == "gemma3_text":
        return _gemma3_to_hf(c, common, shape)
    if arch == "gpt_neox":
        # rotary_pct / rotary_emb_base are what transformers 4 reads; 5 reads rope_parameters
        return {
            **common, **shape, "hidden_act": ACTIVATIONS_TO_HF[c.activation], "layer_norm_eps": c.norm_eps,
            "use_parallel_residual": False, "attention_bias": True, "hidden_dropout": c.dropout,
            "rotary_pct": 1.0, "rotary_emb_base": c.rope_theta,
            "rope_parameters": {**rope, "partial_rotary_factor": 1.0},
        }  # fmt: skip
    return {
        **common, **shape, "num_key_value_heads": c.kv_heads, "head_dim": c.head_size, "hidden_act": "silu",
        "rms_norm_eps": c.norm_eps, "rope_theta": c.rope_theta, "rope_parameters": rope,
        "attention_bias": c.bias, "mlp_bias": c.bias,
    }  # fmt: skip


def _gemma3_to_hf(c: GPTConfig, common: dict[str, Any], shape: dict[str, Any]) -> dict[str, Any]:
    kinds = ["sliding_attention" if c.is_local(i) else "full_attention" for i in range(c.n_layers)]
    local_theta = c.rope_local_theta or c.rope_theta
    scalar = c.query_pre_attn_scalar or c.head_size
    return {
        **common, **shape, "num_key_value_heads": c.kv_heads, "head_dim": c.head_size,
        "hidden_activation": "gelu_pytorch_tanh", "rms_norm_eps": c.norm_eps,
        "query_pre_attn_scalar": int(scalar) if float(scalar).is_integer() else scalar, "layer_types": kinds,
        "sliding_window": c.sliding_window or c.max_seq_len, "final_logit_softcapping": c.logit_softcap,
        "attn_logit_softcapping": None, "attention_bias": False,
        "rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": c.rope_theta},
                            "sliding_attention": {"rope_type": "default", "rope_theta": local_theta}},
    }  # fmt: skip


# ---------------------------------------------------------------------------------------------
# weights


def expand_keys(keys: KeyMap, n_layers: int) -> Iterator[tuple[str, str | tuple[str, ...]]]:
    """The flat map with ``{}`` replaced by each layer number."""
    for hf_key, ours in keys.items():
        for i in range(n_layers) if "{}" in hf_key else [None]:
            number = "" if i is None else str(i)
            hf_name = hf_key.replace("{}", number)
            if isinstance(ours, tuple):
                yield hf_name, tuple(o.replace("{}", number) for o in ours)
            else:
                yield hf_name, ours.replace("{}", number)


def _transposed(arch: str, hf_key: str) -> bool:
    return arch == "gpt2" and hf_key.endswith(GPT2_TRANSPOSED)


def _split_fused(arch: str, tensor: Tensor, sizes: list[int], n_heads: int) -> tuple[Tensor, ...]:
    """A fused q/k/v tensor -> our three: GPT-2 stacks whole blocks, GPT-NeoX interleaves per head."""
    if arch == "gpt_neox":
        per_head = tensor.reshape(n_heads, 3, -1, *tensor.shape[1:])  # (H, q/k/v, head_dim, ...)
        return tuple(part.flatten(0, 1) for part in per_head.unbind(1))
    return torch.split(tensor, sizes, dim=0)  # [q; k; v] row blocks


def _fuse(arch: str, parts: list[Tensor], n_heads: int) -> Tensor:
    """The inverse of :func:`_split_fused`."""
    if arch == "gpt_neox":
        return torch.stack([p.reshape(n_heads, -1, *p.shape[1:]) for p in parts], dim=1).flatten(0, 2)
    return torch.cat(parts, dim=0)


def _normalise(hf_state: dict[str, Tensor], arch: str, hf_config: dict[str, Any]) -> dict[str, Tensor]:
    """The names one architecture's files go by, made one: GPT2Model files (the original
    openai-community/gpt2 upload) lack the ``transformer.`` prefix; transformers 5 saves GPT-NeoX's
    head as ``lm_head`` where version 4 said ``embed_out``; a GPT-NeoX file with
    ``attention_bias=False`` has no attention biases, which are zeros as far as the function goes."""
    if arch == "gpt2":
        return {k if k.startswith(("transformer.", "lm_head.")) else f"transformer.{k}": v for k, v in hf_state.items()}
    if arch != "gpt_neox":
        return hf_state
    out = {"embed_out.weight" if k == "lm_head.weight" else k: v for k, v in hf_state.items()}
    if not hf_config.get("attention_bias", True):
        dim = hf_config["hidden_size"]
        for i in range(hf_config["num_hidden_layers"]):
            out.setdefault(f"gpt_neox.layers.{i}.attention.query_key_value.bias", torch.zeros(3 * dim))
            out.setdefault(f"gpt_neox.layers.{i}.attention.dense.bias", torch.zeros(dim))
    return out


def _read_bias(hf_state: dict[str, Tensor], config: GPTConfig, arch: str, wanted: bool | None, source: str) -> bool:
    """Whether the imported model has biases: ``wanted`` when given; else, for GPT-2 and GPT-NeoX
    (whose files always hold biases), whether any is non-zero, so a bias-free export comes back
    bias-free. Dropping biases that are not all zero would change the model: that is an error."""
    keys = [k for k, _ in expand_keys(ARCHITECTURES[arch][0], config.n_layers) if k.endswith(".bias")]
    nonzero = [k for k in keys if k in hf_state and bool(hf_state[k].any())]
    if wanted is None:
        wanted = bool(nonzero) if arch in ALWAYS_BIASED else config.bias
    if not wanted and nonzero:
        raise ValueError(
            f"{source}: bias=False was asked for, but the checkpoint has non-zero biases ({nonzero[0]}, ...); "
            "load it with bias=True, or leave bias unset"
        )
    return wanted


def state_dict_from_hf(hf_state: dict[str, Tensor], model: GPT, arch: str, source: str) -> dict[str, Tensor]:
    """Rename (and for GPT-2 transpose, for GPT-2 and GPT-NeoX split) Hugging Face tensors into our state dict.

    Biases a bias-free ``model`` has no place for must be exact zeros; they are dropped.
    """
    keys, ignored, _ = ARCHITECTURES[arch]
    ours_expected = model.state_dict()
    out: dict[str, Tensor] = {}
    used: set[str] = set()
    head = ""
    for hf_key, ours in expand_keys(keys, model.config.n_layers):
        names = ours if isinstance(ours, tuple) else (ours,)
        if names[0] == "lm_head.weight":
            head = hf_key
        if names[0] not in ours_expected:  # the biases of a bias-free model
            if hf_key in hf_state and not hf_state[hf_key].any():
                used.add(hf_key)  # zeros: leaving them out changes nothing
            continue
        if hf_key not in hf_state:
            if hf_key == head and model.config.tie_embeddings:
                continue  # tied: the embedding matrix serves as lm_head
            raise ValueError(f"{source}: missing tensor {hf_key!r} (needed for {names[0]})")
        tensor = hf_state[hf_key]
        used.add(hf_key)
        if _transposed(arch, hf_key):
            tensor = tensor.t()  # Conv1D (in, out) -> Linear (out, in)
        if len(names) > 1:
            sizes = [ours_expected[n].shape[0] for n in names]
            if tensor.shape[0] != sum(sizes):
                raise ValueError(f"{source}: {hf_key} has {tensor.shape[0]} output rows, expected {sum(sizes)}")
            parts = _split_fused(arch, tensor, sizes, model.config.n_heads)
        else:
            parts = (tensor,)
        for name, part in zip(names, parts, strict=True):
            if part.shape != ours_expected[name].shape:
                raise ValueError(
                    f"{source}: {hf_key} has shape {tuple(tensor.shape)}, which does not fit {name} "
                    f"{tuple(ours_expected[name].shape)}; does config.json match the weights?"
                )
            out[name] = part.contiguous()
    unexpected = [k for k in hf_state if k not in used and not ignored.search(k) and k != head]
    if unexpected:
        raise ValueError(f"{source}: tensors glassformer does not know how to place: {unexpected[:8]}")
    return out


def _zero_bias(state: dict[str, Tensor], name: str) -> Tensor:
    """Zeros in the shape of the bias ``name`` its layer would have (one per output of its weight)."""
    weight = state[name.removesuffix("bias") + "weight"]
    return torch.zeros(weight.shape[0], dtype=weight.dtype)


def state_dict_to_hf(model: GPT) -> dict[str, Tensor]:
    """Our weights under Hugging Face names (tied ``lm_head`` left out, as transformers does).

    A bias-free model exported as GPT-2 or GPT-NeoX gets exact-zero biases, which those need.
    """
    arch = model_type(model.config)
    zero_biases = arch in ALWAYS_BIASED and not model.config.bias
    ours = dict(model.state_dict())
    out: dict[str, Tensor] = {}
    for hf_key, names in expand_keys(ARCHITECTURES[arch][0], model.config.n_layers):
        names = names if isinstance(names, tuple) else (names,)
        if names[0] == "lm_head.weight" and model.config.tie_embeddings:
            continue
        if names[0] not in ours:
            if not zero_biases:
                continue  # Llama without biases: config.json says so
            ours.update({n: _zero_bias(ours, n) for n in names})
        parts = [ours[n] for n in names]
        tensor = _fuse(arch, parts, model.config.n_heads) if len(parts) > 1 else parts[0]
        if _transposed(arch, hf_key):
            tensor = tensor.t()  # Linear (out, in) -> Conv1D (in, out)
        out[hf_key] = tensor.detach().contiguous().cpu()
    return out


def hf_tensor_names(model: GPT) -> dict[str, str]:
    """Our tensor name -> the Hugging Face one, for tensors that map one to one: what a tool that
    addresses single layers (LoRA adapters in peft's format, ``glassformer.peft.io``) translates with.
    GPT-2's fused ``c_attn`` and its transposed ``Conv1D`` layers have no such name and are left out."""
    arch = model_type(model.config)
    return {
        ours: hf for hf, ours in expand_keys(ARCHITECTURES[arch][0], model.config.n_layers)
        if isinstance(ours, str) and not _transposed(arch, hf)
    }


def from_pretrained(
    path_or_hub_id: str | os.PathLike[str],
    *,
    revision: str | None = None,
    dtype: torch.dtype = torch.float32,
    bias: bool | None = None,
) -> GPT:
    """Load a GPT-2, GPT-NeoX or Llama checkpoint in the Hugging Face layout (a folder or a Hub id).

    ``bias``: None reads a GPT-2 / GPT-NeoX file whose biases are all exactly zero as a bias-free
    model (what :func:`save_pretrained` writes for ``bias=False``); True keeps such zeros as
    trainable biases; False refuses a checkpoint whose biases are not all zero.
    """
    folder = read_hf_folder(path_or_hub_id, revision, allow_patterns=HUB_FILES)
    directory = folder.folder
    config = config_from_hf(folder.data, source=str(directory / CONFIG_NAME))
    arch = folder.data["model_type"]
    hf_state = _normalise(read_safetensors(directory), arch, folder.data)
    config = config.replace(bias=_read_bias(hf_state, config, arch, bias, str(directory)))
    with torch.device("meta"):
        skeleton = GPT(config)  # only the expected names and shapes are needed here
    state = state_dict_from_hf(hf_state, skeleton, arch, str(directory))
    model = GPT.from_weights(config, {k: v.to(dtype) for k, v in state.items()}, str(directory))
    return model.eval()


def tokenizer_from_pretrained(path_or_hub_id: str | os.PathLike[str], *, revision: str | None = None) -> Any:
    """The tokenizer stored beside a checkpoint (``tokenizer.json``, or ``vocab.json`` + ``merges.txt``),
    as a glassformer tokenizer; None when the folder has none."""
    from glassformer.tokenizers import load_tokenizer

    directory = resolve(path_or_hub_id, revision, allow_patterns=HUB_FILES)
    if not any((directory / name).is_file() for name in ("tokenizer.json", "vocab.json")):
        return None
    return load_tokenizer(directory)


def save_pretrained(model: GPT, directory: str | os.PathLike[str], tokenizer: Any = None) -> Path:
    """Write ``config.json`` + ``model.safetensors`` that ``transformers`` loads (GPT-2, GPT-NeoX or Llama).

    A ``tokenizer`` with a ``save_pretrained`` or ``save`` method is written alongside.
    """
    return write_hf_folder(directory, config_to_hf(model.config), state_dict_to_hf(model), tokenizer)
