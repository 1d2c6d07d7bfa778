"""The GPT model: token embeddings -> a stack of pre-norm decoder blocks -> a language-model head.

Read top to bottom, this is the whole of a decoder-only language model (GPT-2, Llama, SmolLM2):

1. look up an embedding vector per token; GPT-2 adds a learned vector per position, Llama
   instead rotates queries and keys inside attention (RoPE);
2. ``n_layers`` blocks of causal self-attention and a feed-forward network, each wrapped as
   ``x = x + sublayer(norm(x))`` (``glassformer.nn.blocks``), then a final norm;
3. a linear map back to vocabulary logits, usually sharing the embedding matrix (tied).

The loss is next-token cross-entropy: the caller passes ``targets`` already shifted by one (the
data loader's ``y`` is ``x`` moved one step), so the model knows no task beyond "predict targets".
For generation, a KV cache keeps each layer's keys and values so each new token costs one query.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from glassformer.models.base import IGNORE_INDEX, ModelBase, ModelOutput
from glassformer.models.gpt.blocks import GemmaStack, LayerInputs
from glassformer.models.gpt.config import GPTConfig
from glassformer.nn.blocks import TransformerStack
from glassformer.nn.cache import DynamicCache, KVCache, StaticCache
from glassformer.nn.masks import build_attention_mask
from glassformer.nn.positional import LearnedPositionalEmbedding, RotaryEmbedding


class GPT(ModelBase):
    """A decoder-only transformer language model; see :class:`GPTConfig` for the variants."""

    family = "gpt"
    config_class = GPTConfig

    def __init__(self, config: GPTConfig) -> None:
        if not isinstance(config, GPTConfig):
            raise TypeError(f"GPT expects a GPTConfig, got {type(config).__name__}")
        super().__init__(config)
        c = config
        self.wte = nn.Embedding(c.vocab_size, c.dim)  # token embeddings
        self.wpe = LearnedPositionalEmbedding(c.max_seq_len, c.dim) if c.pos_encoding == "learned" else None
        self.rotary = RotaryEmbedding(c.head_size, c.rope_theta) if c.pos_encoding == "rope" else None
        # Gemma 3: sliding-window layers rotate with their own base
        self.rotary_local = RotaryEmbedding(c.head_size, c.rope_local_theta) if c.rope_local_theta else None
        self.drop = nn.Dropout(c.dropout)
        self.stack: TransformerStack | GemmaStack
        if c.gemma_blocks:
            self.stack = GemmaStack(c)
        else:
            self.stack = TransformerStack(
                c.n_layers, c.dim, c.n_heads,
                n_kv_heads=c.kv_heads, head_dim=c.head_size, ffn_dim=c.ffn_size, activation=c.activation,
                norm=c.norm, norm_eps=c.norm_eps, norm_position="pre", bias=c.bias,
                dropout=c.dropout, attn_dropout=c.dropout, backend=c.attn_backend, attn_scale=c.attn_scale,
            )  # fmt: skip
        self.lm_head = nn.Linear(c.dim, c.vocab_size, bias=False)
        if c.tie_embeddings:
            # One matrix both reads tokens in and scores them out (Press & Wolf 2017): fewer
            # parameters and, for small models, a better loss.
            self.lm_head.weight = self.wte.weight
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """GPT-2's initialisation: N(0, 0.02) everywhere, zero biases, and the two projections that
        write into the residual stream (attention output, FFN down) scaled by ``1/sqrt(2 * n_layers)``
        so the residual's variance does not grow with depth (each block adds two branches)."""
        std = self.config.init_std
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, mean=0.0, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=std)
        if self.wpe is not None:
            nn.init.normal_(self.wpe.weight, mean=0.0, std=std)
        residual_std = std / math.sqrt(2 * self.config.n_layers)
        for layer in self.stack.layers:
            nn.init.normal_(layer.attn.o_proj.weight, mean=0.0, std=residual_std)
            nn.init.normal_(layer.ffn.down.weight, mean=0.0, std=residual_std)

    @classmethod
    def from_weights(cls, config: GPTConfig, state: dict[str, Tensor], source: str = "weights") -> GPT:
        """Build a model straight from a state dict, skipping the random initialisation.

        The model is first built on the ``meta`` device (shapes only), so converting a checkpoint
        does not spend seconds drawing random numbers that are overwritten at once. A tied
        ``lm_head.weight`` may be absent from ``state``.
        """
        with torch.device("meta"):
            model = cls(config)
        expected = model.state_dict()
        optional = {"lm_head.weight"} if config.tie_embeddings else set()
        missing = sorted(set(expected) - set(state) - optional)
        unexpected = sorted(set(state) - set(expected))
        if missing or unexpected:
            raise ValueError(f"{source}: weights do not fit the model; missing {missing[:8]}, unexpected {unexpected[:8]}")
        for name, tensor in state.items():
            if tensor.shape != expected[name].shape:
                raise ValueError(
                    f"{source}: {name} has shape {tuple(tensor.shape)}, the model expects {tuple(expected[name].shape)}"
                )
        model = model.to_empty(device="cpu")  # real (uninitialised) memory; every tensor is filled below
        model.load_state_dict(state, strict=False)
        if config.tie_embeddings:
            model.lm_head.weight = model.wte.weight  # to_empty() made separate tensors: tie them again
        if model.rotary is not None:  # a buffer computed from the config, not stored in files
            model.rotary.inv_freq = RotaryEmbedding(config.head_size, config.rope_theta).inv_freq
        if model.rotary_local is not None:
            model.rotary_local.inv_freq = RotaryEmbedding(config.head_size, config.rope_local_theta).inv_freq
        return model

    @property
    def max_seq_len(self) -> int:
        """The longest sequence (cached plus new tokens) the model accepts."""
        return self.config.max_seq_len

    def new_cache(
        self, batch_size: int, max_len: int | None = None, kind: Literal["dynamic", "static"] = "dynamic"
    ) -> KVCache:
        """An empty KV cache for this model: ``"dynamic"`` grows, ``"static"`` preallocates ``max_len``."""
        if kind == "dynamic":
            return DynamicCache()
        if kind != "static":
            raise ValueError(f"unknown cache kind {kind!r}; expected 'dynamic' or 'static'")
        max_len = self.max_seq_len if max_len is None else max_len
        if not 0 < max_len <= self.max_seq_len:
            raise ValueError(f"static cache max_len={max_len} must be in [1, max_seq_len={self.max_seq_len}]")
        weight = self.wte.weight
        c = self.config
        return StaticCache(
            c.n_layers, batch_size, c.kv_heads, max_len, c.head_size, dtype=weight.dtype, device=weight.device
        )

    def forward(
        self,
        input_ids: Tensor,
        *,
        attention_mask: Tensor | None = None,
        targets: Tensor | None = None,
        cache: KVCache | None = None,
        position_ids: Tensor | None = None,
        return_weights: bool = False,
        logits_to_keep: int = 0,
        lm_head: Callable[[Tensor], Tensor] | None = None,
    ) -> ModelOutput:
        """Logits for every position (or the last ``logits_to_keep``), and the loss when ``targets`` are given.

        ``input_ids``: ``(B, T)`` token ids, the *new* tokens when a ``cache`` holds earlier ones.
        ``attention_mask``: ``(B, past + T)`` of 1 (token) and 0 (padding), covering cached tokens
        too; with left padding, positions then count real tokens only, as Hugging Face does.
        ``targets``: ``(B, T)`` next-token ids, ``-100`` where no loss is wanted.
        ``lm_head``: computes the logits from the final hidden states in place of ``self.lm_head``
        (greedy decoding passes ``generate.shortlist.ShortlistHead``, which skips hopeless tokens).
        """
        b, t = self._check_inputs(input_ids, attention_mask, targets, position_ids, logits_to_keep)
        past = cache.seq_len() if cache is not None else 0
        if past + t > self.max_seq_len:
            raise ValueError(
                f"sequence of {past + t} tokens ({past} cached + {t} new) is longer than the model's "
                f"context of max_seq_len={self.max_seq_len}; truncate the prompt or use a model with a "
                "longer context"
            )
        if attention_mask is not None and attention_mask.shape != (b, past + t):
            raise ValueError(
                f"attention_mask has shape {tuple(attention_mask.shape)}; expected (batch, cached + new) "
                f"= ({b}, {past + t})"
            )
        if position_ids is None:
            if attention_mask is not None:
                # left padding: a row's first real token is position 0, whatever precedes it
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -t:]  # (B, T)
            else:
                position_ids = torch.arange(past, past + t, device=input_ids.device)[None]  # (1, T)

        x = self.wte(input_ids)  # (B, T, C)
        if self.config.scale_embeddings:  # Gemma: sqrt(dim), rounded to the weights' dtype as Gemma does
            x = x * torch.tensor(math.sqrt(self.config.dim), dtype=x.dtype)
        if self.wpe is not None:
            x = x + self.wpe(position_ids)  # (B, T, C)
        x = self.drop(x)
        rope = self.rotary.cos_sin(position_ids, dtype=x.dtype) if self.rotary is not None else None
        mask, is_causal = self._mask(t, past, attention_mask, input_ids.device)
        if isinstance(self.stack, GemmaStack):
            local = self._local_inputs(t, past, attention_mask, position_ids, x.dtype, LayerInputs(mask, is_causal, rope))
            out = self.stack(
                x, local=local, global_=LayerInputs(mask, is_causal, rope), cache=cache, return_weights=return_weights
            )
        else:
            out = self.stack(x, mask=mask, is_causal=is_causal, rope=rope, cache=cache, return_weights=return_weights)
        h = out.hidden  # (B, T, C)
        if logits_to_keep > 0:
            h = h[:, -logits_to_keep:]  # generation needs only the last position's logits
        logits = (lm_head or self.lm_head)(h)  # (B, T or logits_to_keep, V)
        if self.config.logit_softcap is not None:  # squash into (-cap, cap), keeping the order
            cap = self.config.logit_softcap
            logits = torch.tanh(logits / cap) * cap

        loss = None
        if targets is not None:
            loss = F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=IGNORE_INDEX
            )
        return ModelOutput(loss=loss, logits=logits, attentions=out.attentions, cache=cache)

    @staticmethod
    def _mask(t: int, past: int, attention_mask: Tensor | None, device: torch.device) -> tuple[Tensor | None, bool]:
        """The causal (and padding) mask of global attention, or None where a kernel's flag does it."""
        if attention_mask is None and (past == 0 or t == 1):
            # the fused kernels' own causal path: no mask tensor at all; and one new token after a
            # cache sees every key, so a decoding step needs no mask either
            return None, t > 1
        mask = build_attention_mask(t, past + t, causal=True, attention_mask=attention_mask, device=device)
        return mask, False  # (B or 1, 1, T, past + T) bool

    def _local_inputs(
        self, t: int, past: int, attention_mask: Tensor | None, position_ids: Tensor, dtype: torch.dtype,
        global_: LayerInputs,
    ) -> LayerInputs:
        """Sliding-window layers: the global mask, minus keys ``sliding_window`` or more columns back.

        The window counts cache columns, as Hugging Face's does, so a left-padded row sees the same
        keys as it does alone. The KV cache keeps every key; only the mask forgets the old ones.
        """
        rope = global_.rope if self.rotary_local is None else self.rotary_local.cos_sin(position_ids, dtype=dtype)
        window = self.config.sliding_window
        if window is None or past + t <= window:
            return LayerInputs(global_.mask, global_.is_causal, rope)
        q_pos = torch.arange(past, past + t, device=position_ids.device)[:, None]
        k_pos = torch.arange(past + t, device=position_ids.device)[None, :]
        band = (k_pos > q_pos - window) & (k_pos <= q_pos)  # (T, past + T): causal and within the window
        mask = band if global_.mask is None else global_.mask & band
        return LayerInputs(mask, False, rope)

    def _check_inputs(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None,
        targets: Tensor | None,
        position_ids: Tensor | None,
        logits_to_keep: int,
    ) -> tuple[int, int]:
        if not isinstance(input_ids, Tensor) or input_ids.dim() != 2:
            shape = tuple(input_ids.shape) if isinstance(input_ids, Tensor) else type(input_ids).__name__
            raise ValueError(f"input_ids must be a (batch, seq_len) tensor of token ids, got {shape}")
        if input_ids.dtype.is_floating_point or input_ids.dtype == torch.bool:
            raise TypeError(f"input_ids must hold integer token ids, got dtype {input_ids.dtype}")
        b, t = input_ids.shape
        if t == 0:
            raise ValueError("input_ids is empty: give at least one token")
        lo, hi = torch.aminmax(input_ids)
        if lo < 0 or hi >= self.config.vocab_size:
            raise ValueError(
                f"input_ids hold token ids in [{int(lo)}, {int(hi)}] but the vocabulary has "
                f"{self.config.vocab_size} entries"
            )
        if targets is not None:
            if targets.shape != input_ids.shape:
                raise ValueError(
                    f"targets have shape {tuple(targets.shape)}; expected the shape of input_ids {(b, t)}"
                )
            if logits_to_keep:
                raise ValueError("logits_to_keep drops positions the loss needs; leave it 0 when passing targets")
        if position_ids is not None and position_ids.shape[-1] != t:
            raise ValueError(f"position_ids have shape {tuple(position_ids.shape)}; expected ({b}, {t})")
        if logits_to_keep < 0:
            raise ValueError(f"logits_to_keep must be >= 0, got {logits_to_keep}")
        return b, t


def parameter_breakdown(model: GPT) -> dict[str, int]:
    """Parameters per part of the model; tied weights are counted once, under the embedding."""
    groups = {"token embedding": 0, "position embedding": 0, "attention": 0, "feed-forward": 0, "norms": 0,
              "lm_head (untied)": 0}  # fmt: skip
    for name, p in model.named_parameters():  # named_parameters() lists a tied matrix once
        if name.startswith("wte."):
            key = "token embedding"
        elif name.startswith("wpe."):
            key = "position embedding"
        elif name.startswith("lm_head."):
            key = "lm_head (untied)"
        elif ".attn." in name:
            key = "attention"
        elif ".ffn." in name:
            key = "feed-forward"
        else:
            key = "norms"
        groups[key] += p.numel()
    return groups


def parameter_report(model: GPT) -> str:
    """A small table of :func:`parameter_breakdown` with shares of the total."""
    groups = parameter_breakdown(model)
    total = sum(groups.values())
    lines = [f"{'part':<20}{'parameters':>14}{'share':>8}"]
    lines += [f"{k:<20}{v:>14,}{v / total:>8.1%}" for k, v in groups.items() if v]
    lines.append(f"{'total':<20}{total:>14,}")
    return "\n".join(lines)
