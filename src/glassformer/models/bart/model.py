"""BART (Lewis et al. 2019, "BART: Denoising Sequence-to-Sequence Pre-training"), read top to bottom:

1. source tokens become embeddings (times ``sqrt(dim)`` only with ``scale_embedding``) plus
   learned positions, read from row ``p + 2`` of their table (BART's offset: the checkpoints keep
   two unused rows at the top), then ``layernorm_embedding`` and dropout;
2. the encoder is post-norm blocks (``x = LayerNorm(x + sublayer(x))``) with a GELU FFN and no
   final norm;
3. the decoder embeds its tokens the same way (its own position table and embedding norm) and
   runs post-norm blocks of causal self-attention, cross-attention over the encoder output and
   the FFN;
4. the head is the token embedding transposed (one matrix for encoder, decoder and head) plus
   ``final_logits_bias``, a fixed buffer of zeros in the released checkpoints.

Decoding starts from ``</s>`` (``decoder_start_token_id``) and the first generated token is
forced to ``<s>`` (``forced_bos_token_id``), as transformers' generation settings for BART do;
``decode_step`` applies that forcing, ``forward`` returns plain logits. With the weights copied
(``hf.py``) logits, greedy and beam outputs equal ``BartForConditionalGeneration``'s
(``tests/models/bart/test_bart_hf.py``). The training objective is ``glassformer.data.denoising``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from glassformer.models.bart.config import POSITION_OFFSET, BartConfig
from glassformer.models.base import IGNORE_INDEX, EncoderDecoderModel, ModelOutput
from glassformer.nn.blocks import StackOutput, TransformerStack
from glassformer.nn.cache import EncoderDecoderCache, EncoderState, KVCache
from glassformer.nn.masks import key_padding_mask
from glassformer.nn.norms import LayerNorm
from glassformer.nn.positional import LearnedPositionalEmbedding


def shift_tokens_right(labels: Tensor, start_token_id: int, pad_token_id: int) -> Tensor:
    """Decoder inputs for teacher forcing: ``[start] + labels[:-1]``, ignored labels read as padding.

    Hugging Face's ``shift_tokens_right``, so a batch of ``labels`` alone trains the same way on both sides.
    """
    start = labels.new_full((labels.shape[0], 1), start_token_id)
    shifted = torch.cat([start, labels[:, :-1]], dim=1)
    return shifted.masked_fill(shifted == IGNORE_INDEX, pad_token_id)


def _check_ids(ids: Tensor, config: BartConfig, name: str, past: int = 0) -> None:
    """Shape, dtype, vocabulary and length of token ids, each failure naming the fix."""
    if not isinstance(ids, Tensor) or ids.dim() != 2:
        shape = tuple(ids.shape) if isinstance(ids, Tensor) else type(ids).__name__
        raise ValueError(
            f"{name} must be (batch, seq_len) token ids, got {shape}; add a batch dimension with ids[None]"
        )
    if ids.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"{name} must hold integer token ids, got dtype {ids.dtype}")
    if ids.shape[1] == 0 and past == 0:
        raise ValueError(
            f"{name} has no tokens (shape {tuple(ids.shape)}); BART needs at least one (an empty sentence "
            f"is still <s> </s>: [{config.bos_token_id}, {config.eos_token_id}])"
        )
    if past + ids.shape[1] > config.max_seq_len:
        raise ValueError(
            f"{name} needs {past + ids.shape[1]} positions but BART has max_seq_len={config.max_seq_len} "
            "learned positions; shorten or split the text (or build the model with a larger max_seq_len)"
        )
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= config.vocab_size):
        raise ValueError(
            f"{name} holds token ids in [{int(ids.min())}, {int(ids.max())}] but the model's vocab_size is "
            f"{config.vocab_size}; was it tokenized with another vocabulary?"
        )


class Bart(EncoderDecoderModel):
    """BART's encoder-decoder: denoising pretraining, then summarisation or translation."""

    family = "bart"
    config_class = BartConfig

    def __init__(self, config: BartConfig) -> None:
        super().__init__(config)
        c = config
        self.embed_scale = math.sqrt(c.dim) if c.scale_embedding else 1.0
        self.embed_tokens = nn.Embedding(c.vocab_size, c.dim, padding_idx=c.pad_token_id)
        rows = c.max_seq_len + POSITION_OFFSET
        self.encoder_positions = LearnedPositionalEmbedding(rows, c.dim)
        self.encoder_embed_norm = LayerNorm(c.dim, c.norm_eps)
        self.decoder_positions = LearnedPositionalEmbedding(rows, c.dim)
        self.decoder_embed_norm = LayerNorm(c.dim, c.norm_eps)
        block: dict[str, Any] = dict(
            ffn_dim=c.ffn_dim, activation=c.activation, norm="layernorm", norm_eps=c.norm_eps,
            norm_position="post", dropout=c.dropout, attn_dropout=c.attn_dropout, backend=c.attn_backend,
            final_norm=False,
        )  # fmt: skip
        self.encoder = TransformerStack(c.n_layers, c.dim, c.n_heads, **block)
        self.decoder = TransformerStack(c.n_decoder_layers, c.dim, c.n_heads, cross_attention=True, **block)
        # a buffer, not a parameter: BART's checkpoints keep it at zero, and so does training here
        self.register_buffer("final_logits_bias", torch.zeros(1, c.vocab_size))
        self.dropout = nn.Dropout(c.dropout)
        self._init_weights()

    def _init_weights(self) -> None:
        """Matrices and embeddings N(0, init_std), biases zero, norms one, the padding row zero (as transformers)."""
        std = self.config.init_std
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding, LearnedPositionalEmbedding)):
                nn.init.normal_(module.weight, std=std)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        with torch.no_grad():
            self.embed_tokens.weight[self.config.pad_token_id].zero_()

    # -- embeddings ----------------------------------------------------------------------------

    def _embed(
        self, ids: Tensor, positions: LearnedPositionalEmbedding, norm: LayerNorm, past: int = 0
    ) -> Tensor:
        """``(B, T)`` ids -> ``(B, T, C)``: token (scaled) + position ``p + 2``, LayerNorm, dropout."""
        pos = torch.arange(past, past + ids.shape[1], device=ids.device) + POSITION_OFFSET  # (T,)
        x = self.embed_tokens(ids) * self.embed_scale + positions(pos)  # (B, T, C)
        return self.dropout(norm(x))

    # -- the two stacks ------------------------------------------------------------------------

    def encode(
        self, input_ids: Tensor, attention_mask: Tensor | None = None, *, return_weights: bool = False
    ) -> StackOutput:
        """Source ids ``(B, S)`` (right-padded) -> encoder states ``(B, S, C)`` (``.hidden``)."""
        _check_ids(input_ids, self.config, "input_ids")
        mask = key_padding_mask(attention_mask, tuple(input_ids.shape), "attention_mask")
        x = self._embed(input_ids, self.encoder_positions, self.encoder_embed_norm)  # (B, S, C)
        return self.encoder(x, mask=mask, return_weights=return_weights)

    def decode(
        self,
        decoder_input_ids: Tensor,
        encoder_hidden: Tensor,
        attention_mask: Tensor | None = None,
        decoder_attention_mask: Tensor | None = None,
        *,
        cache: KVCache | None = None,
        return_weights: bool = False,
    ) -> StackOutput:
        """Target ids ``(B, T)`` + encoder states ``(B, S, C)`` -> decoder states ``(B, T, C)``.

        ``attention_mask`` is the source's ``(B, S)``; ``decoder_attention_mask`` covers cached and
        new target tokens together. With a ``cache`` the ids are the next tokens and their positions
        continue after the cached ones; an :class:`EncoderDecoderCache` also keeps each layer's
        cross-attention keys/values from the first call on.
        """
        past = cache.seq_len() if cache is not None else 0
        _check_ids(decoder_input_ids, self.config, "decoder_input_ids", past)
        b, t = decoder_input_ids.shape
        self_mask = key_padding_mask(decoder_attention_mask, (b, past + t), "decoder_attention_mask")
        context_mask = key_padding_mask(attention_mask, tuple(encoder_hidden.shape[:2]), "attention_mask")
        x = self._embed(decoder_input_ids, self.decoder_positions, self.decoder_embed_norm, past)  # (B, T, C)
        self_cache, cross_cache = cache, None
        if isinstance(cache, EncoderDecoderCache):
            self_cache, cross_cache = cache.self_attn, cache.cross_attn
        return self.decoder(
            x, mask=self_mask, is_causal=True, cache=self_cache, context=encoder_hidden, context_mask=context_mask,
            context_cache=cross_cache, return_weights=return_weights,
        )  # fmt: skip

    def logits(self, hidden: Tensor) -> Tensor:
        """``(B, T, C)`` decoder states -> ``(B, T, V)``: the tied embedding, plus ``final_logits_bias``."""
        return F.linear(hidden, self.embed_tokens.weight) + self.final_logits_bias.to(hidden.dtype)

    # -- training ------------------------------------------------------------------------------

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        decoder_input_ids: Tensor | None = None,
        decoder_attention_mask: Tensor | None = None,
        labels: Tensor | None = None,
        *,
        return_weights: bool = False,
    ) -> ModelOutput:
        """Teacher-forced pass with transformers' argument names. Without ``decoder_input_ids`` they
        are ``labels`` shifted right after ``decoder_start_token_id`` (:func:`shift_tokens_right`).
        ``loss``: mean cross-entropy over labels that are not ``IGNORE_INDEX`` (-100), with
        ``label_smoothing``; ``attentions``/``cross_attentions`` are the decoder's.
        """
        c = self.config
        if decoder_input_ids is None:
            if labels is None:
                raise ValueError(
                    "pass labels (the target tokens) or decoder_input_ids: the decoder needs input"
                )
            _check_ids(labels.masked_fill(labels == IGNORE_INDEX, c.pad_token_id), c, "labels")
            decoder_input_ids = shift_tokens_right(labels, c.decoder_start_token_id, c.pad_token_id)
        enc = self.encode(input_ids, attention_mask)
        dec = self.decode(
            decoder_input_ids,
            enc.hidden,
            attention_mask,
            decoder_attention_mask,
            return_weights=return_weights,
        )
        return self.teacher_forced_output(dec, decoder_input_ids, labels)

    def loss(self, logits: Tensor, labels: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Cross-entropy (label-smoothed by ``label_smoothing``) over labels that are not -100;
        ``metrics["nll"]`` is the unsmoothed one, ``metrics["accuracy"]`` the arg-max hit rate."""
        flat = logits.float().reshape(-1, logits.shape[-1])  # (B*T, V)
        gold = labels.reshape(-1)
        loss = F.cross_entropy(
            flat, gold, ignore_index=IGNORE_INDEX, label_smoothing=self.config.label_smoothing
        )
        valid = gold != IGNORE_INDEX
        n = valid.sum().clamp(min=1)
        nll = F.cross_entropy(flat, gold, ignore_index=IGNORE_INDEX, reduction="sum") / n
        hits = ((flat.argmax(-1) == gold) & valid).sum() / n
        return loss, {"nll": nll.detach(), "accuracy": hits.detach()}

    def check_tokenizer(self, tokenizer: Any) -> None:
        """Refuse a tokenizer whose ids do not all have a row in this model's embedding."""
        size = int(getattr(tokenizer, "vocab_size", 0) or 0)
        if size > self.config.vocab_size:
            raise ValueError(
                f"the tokenizer has {size} tokens but the model's vocab_size is {self.config.vocab_size}; "
                f"build the model with vocab_size={size} or use the tokenizer it was trained with"
            )

    # -- inference: EncoderDecoderModel's contract, the first prediction forced ------------------

    def decode_step(
        self,
        decoder_input_ids: Tensor,
        *,
        encoder_state: EncoderState,
        cache: KVCache | None = None,
        attention_mask: Tensor | None = None,
        logits_to_keep: int = 0,
    ) -> ModelOutput:
        """Logits ``(B, T or logits_to_keep, V)`` after the decoder inputs, the first prediction forced.

        The row that predicts position 1 (right after the start token) allows only
        ``forced_bos_token_id`` (0 there, ``-inf`` elsewhere), as transformers'
        ``ForcedBOSTokenLogitsProcessor`` does when the decoder holds only its start token.
        """
        past = cache.seq_len() if cache is not None else 0
        out = super().decode_step(
            decoder_input_ids, encoder_state=encoder_state, cache=cache, attention_mask=attention_mask,
            logits_to_keep=logits_to_keep,
        )  # fmt: skip
        logits = out.logits  # (B, T', V)
        first = past + decoder_input_ids.shape[1] - logits.shape[1]  # position of the first kept row
        forced = self.config.forced_bos_token_id
        if forced is not None and first == 0:
            logits[:, 0] = float("-inf")
            logits[:, 0, forced] = 0.0
        return out
