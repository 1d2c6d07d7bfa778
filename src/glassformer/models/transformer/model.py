"""The original encoder-decoder Transformer (Vaswani et al. 2017, "Attention Is All You Need").

Read top to bottom, this is the model of the paper's figure 1:

1. source and target tokens become embeddings scaled by ``sqrt(dim)``, plus the fixed sinusoidal
   position table, then dropout;
2. the encoder (post-norm blocks: ``x = LayerNorm(x + sublayer(x))``, ReLU FFN) turns the source
   into the "memory";
3. the decoder runs causal self-attention over the target, cross-attention over the memory and
   the FFN, in the same post-norm blocks;
4. the generator (a linear layer) turns each decoder state into logits over the target vocabulary;
   the loss takes their ``log_softmax``.

Both stacks end with one more LayerNorm, as ``torch.nn.Transformer`` does; with those weights
copied over, the two give the same outputs (``tests/models/transformer/test_transformer.py``). As in the paper,
the source embedding, the target embedding and the generator can share one matrix
(``share_embeddings``, which needs one joint vocabulary).

The presets (``transformer-base``, the paper's base model, and its tiny twin) are in ``config.py``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from glassformer.generate import generate
from glassformer.models.base import IGNORE_INDEX, EncoderDecoderModel, ModelOutput, check_token_ids
from glassformer.models.transformer.config import TransformerConfig
from glassformer.nn.blocks import StackOutput, TransformerStack
from glassformer.nn.cache import EncoderDecoderCache, KVCache
from glassformer.nn.masks import key_padding_mask
from glassformer.nn.positional import SinusoidalPositionalEncoding


class Generator(nn.Module):
    """The output head: ``linear(h)``, logits over the target vocabulary (the paper's pre-softmax layer)."""

    def __init__(self, dim: int, vocab_size: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, vocab_size, bias=False)

    def forward(self, h: Tensor) -> Tensor:  # (B, T, C) -> (B, T, V)
        return self.proj(h)


class Transformer(EncoderDecoderModel):
    """Encoder-decoder for sequence-to-sequence tasks such as translation.

    ``generate`` drives it through :class:`EncoderDecoderModel`'s contract; ``max_seq_len`` bounds
    the source and the target alike (one sinusoidal table serves both).
    """

    family = "transformer"
    config_class = TransformerConfig

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__(config)
        c = config
        self.embed_scale = math.sqrt(c.dim)
        self.src_embed = nn.Embedding(c.vocab_size, c.dim)
        self.tgt_embed = self.src_embed if c.share_embeddings else nn.Embedding(c.tgt_vocab_size, c.dim)
        self.positions = SinusoidalPositionalEncoding(c.dim, c.max_seq_len, dropout=c.dropout)
        block: dict[str, Any] = dict(
            ffn_dim=c.ffn_dim, activation="relu", norm="layernorm", norm_eps=c.norm_eps,
            norm_position="post", dropout=c.dropout, attn_dropout=c.attn_dropout, backend=c.attn_backend,
        )
        self.encoder = TransformerStack(c.n_layers, c.dim, c.n_heads, **block)
        self.decoder = TransformerStack(c.n_decoder_layers, c.dim, c.n_heads, cross_attention=True, **block)
        self.generator = Generator(c.dim, c.tgt_vocab_size)
        self._init_weights()
        if c.share_embeddings:
            self.generator.proj.weight = self.tgt_embed.weight

    def _init_weights(self) -> None:
        """Xavier-uniform matrices (as torch.nn.Transformer); embeddings N(0, dim^-1/2).

        The embedding's small scale undoes the ``sqrt(dim)`` factor, so token embeddings start at
        unit size, comparable to the sinusoidal table, and the tied generator starts with small logits.
        """
        for name, p in self.named_parameters():
            if "embed" in name:
                nn.init.normal_(p, std=self.config.dim**-0.5)
            elif p.dim() > 1:
                nn.init.xavier_uniform_(p)

    # -- embeddings ----------------------------------------------------------------------------

    def embed_source(self, src: Tensor) -> Tensor:
        """``(B, S)`` ids -> ``(B, S, C)``: ``embedding * sqrt(dim) + sinusoid``, then dropout."""
        check_token_ids(src, self.config.vocab_size, "src")
        return self.positions(self.src_embed(src) * self.embed_scale)

    def embed_target(self, tgt: Tensor, offset: int = 0) -> Tensor:
        """Like :meth:`embed_source`; ``offset`` is the position of ``tgt[:, 0]`` (cached tokens)."""
        check_token_ids(tgt, self.config.tgt_vocab_size, "tgt")
        return self.positions(self.tgt_embed(tgt) * self.embed_scale, offset=offset)

    # -- the two stacks ------------------------------------------------------------------------

    def encode(
        self, src: Tensor, src_attention_mask: Tensor | None = None, *, return_weights: bool = False
    ) -> StackOutput:
        """Source ids ``(B, S)`` -> memory ``(B, S, C)`` (``.hidden``), and per-layer weights if asked."""
        key_mask = key_padding_mask(src_attention_mask, tuple(src.shape), "src_attention_mask")
        x = self.embed_source(src)  # (B, S, C)
        return self.encoder(x, mask=key_mask, return_weights=return_weights)

    def decode(
        self,
        tgt: Tensor,
        memory: Tensor,
        src_attention_mask: Tensor | None = None,
        tgt_attention_mask: Tensor | None = None,
        *,
        cache: KVCache | None = None,
        return_weights: bool = False,
    ) -> StackOutput:
        """Target ids ``(B, T)`` + memory ``(B, S, C)`` -> decoder states ``(B, T, C)``.

        With a ``cache`` the ids are the *next* tokens: their positions continue after the cached
        ones, and ``tgt_attention_mask`` (if any) must cover cached and new tokens together. An
        :class:`EncoderDecoderCache` also keeps the cross-attention keys/values of ``memory``
        from the first call on.
        """
        past = cache.seq_len() if cache is not None else 0
        b, t = tgt.shape
        self_mask = key_padding_mask(tgt_attention_mask, (b, past + t), "tgt_attention_mask")
        context_mask = key_padding_mask(src_attention_mask, tuple(memory.shape[:2]), "src_attention_mask")
        x = self.embed_target(tgt, offset=past)  # (B, T, C)
        self_cache, cross_cache = cache, None
        if isinstance(cache, EncoderDecoderCache):
            self_cache, cross_cache = cache.self_attn, cache.cross_attn
        return self.decoder(
            x, mask=self_mask, is_causal=True, cache=self_cache, context=memory, context_mask=context_mask,
            context_cache=cross_cache, return_weights=return_weights,
        )

    def logits(self, hidden: Tensor) -> Tensor:
        """Decoder states ``(B, T, C)`` -> logits ``(B, T, V)`` through the generator."""
        return self.generator(hidden)

    # -- training ------------------------------------------------------------------------------

    def forward(
        self,
        src: Tensor,
        tgt: Tensor,
        src_attention_mask: Tensor | None = None,
        tgt_attention_mask: Tensor | None = None,
        labels: Tensor | None = None,
        *,
        return_weights: bool = False,
    ) -> ModelOutput:
        """Teacher-forced pass. ``tgt`` is the decoder input (starting with ``bos_token_id``); ``labels``
        are the tokens each position must predict (``tgt`` shifted left), ``pad_token_id`` or -100 where
        there is nothing to predict. ``logits`` are the generator's ``(B, T, V)``;
        ``attentions`` / ``cross_attentions`` are the decoder's (use :meth:`encode` for the encoder's).
        """
        memory = self.encode(src, src_attention_mask).hidden  # (B, S, C)
        dec = self.decode(tgt, memory, src_attention_mask, tgt_attention_mask, return_weights=return_weights)
        logits = self.logits(dec.hidden)  # (B, T, V)
        loss, metrics = None, {}
        if labels is not None:
            if labels.shape != tgt.shape:
                raise ValueError(f"labels must have the shape of tgt {tuple(tgt.shape)}, got {tuple(labels.shape)}")
            loss, metrics = self.loss(logits, labels)
        return ModelOutput(
            loss=loss, logits=logits, hidden_states=dec.hidden, attentions=dec.attentions,
            cross_attentions=dec.cross_attentions, metrics=metrics,
        )

    def loss(self, logits: Tensor, labels: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Label-smoothed NLL (section 5.4), averaged over the predicted tokens.

        With smoothing ``eps`` the target distribution puts ``1 - eps`` on the label and spreads
        ``eps`` evenly over the whole vocabulary (``torch.nn.functional.cross_entropy``'s convention),
        so the loss is ``(1 - eps) * nll + eps * mean_v(-log p_v)``. ``metrics["nll"]`` is the plain
        NLL (its exp is the perplexity) and ``metrics["accuracy"]`` the share of argmax hits.
        """
        eps = self.config.label_smoothing
        targets = labels.masked_fill(labels == self.config.pad_token_id, IGNORE_INDEX)
        valid = targets != IGNORE_INDEX  # (B, T)
        lp = torch.log_softmax(logits[valid].float(), dim=-1)  # (N, V) log-probabilities
        gold = targets[valid]  # (N,)
        nll = -lp.gather(-1, gold[:, None]).squeeze(-1)  # (N,)
        smooth = -lp.mean(dim=-1)  # (N,)
        n = valid.sum().clamp(min=1)
        loss = ((1.0 - eps) * nll + eps * smooth).sum() / n
        metrics = {
            "nll": (nll.sum() / n).detach(),
            "accuracy": ((lp.argmax(-1) == gold).sum() / n).detach(),
        }
        return loss, metrics

    # -- inference: glassformer.generate's encoder-decoder contract (EncoderDecoderModel) -----------

    @property
    def decoder_start_token_id(self) -> int:
        """Every translation starts from ``bos_token_id`` (the decoder input of training, shifted right)."""
        return self.config.bos_token_id

    def greedy_translate(
        self, src: Tensor, src_attention_mask: Tensor | None = None, max_new_tokens: int | None = None
    ) -> Tensor:
        """Greedy decoding: ``(B, S)`` right-padded source ids -> ``(B, T)`` target ids (no ``bos``).

        ``glassformer.generate.generate`` with a KV cache and the cross-attention keys/values
        computed once, in eval mode, leaving the model's layers as they are (``cpu_kernels=False``).
        A row that produced ``eos_token_id`` is filled with ``pad_token_id`` afterwards; decoding
        stops when every row has finished or after ``max_new_tokens`` (default: source length +
        50, the paper's limit, capped by ``max_seq_len``).
        """
        c = self.config
        if max_new_tokens is None:
            max_new_tokens = min(src.shape[1] + 50, c.max_seq_len)
        out = generate(
            self, src, src_attention_mask, strategy="greedy", max_new_tokens=max_new_tokens,
            stop_token_ids=(c.eos_token_id,), pad_token_id=c.pad_token_id, cpu_kernels=False,
        )  # fmt: skip
        return out.sequences[:, out.prompt_length :].clone()  # a clone made here is no inference tensor
