"""Whisper (Radford et al. 2022, "Robust Speech Recognition via Large-Scale Weak Supervision").

Read top to bottom, this is the model of the paper's figure 1:

1. the log-mel spectrogram ``(B, n_mels, frames)`` goes through two 3-wide convolutions, each
   followed by GELU; the second has stride 2, so 10-ms frames become 20-ms positions;
2. fixed sinusoids (Whisper's own formula, :func:`whisper_sinusoids`) are added, and pre-norm
   blocks (LayerNorm, attention, GELU MLP) with a final LayerNorm encode the audio;
3. the decoder embeds tokens plus learned positions and runs pre-norm blocks of causal
   self-attention, cross-attention over the audio, and the MLP, then a final LayerNorm;
4. the logits are the decoder states times the token embedding, transposed (a tied head).

Whisper's key projections have no bias. A key bias would add ``q . b`` to every score of a
query's row, which the softmax cancels, so it could never learn anything; ``_drop_key_bias``
removes it from our generic attention blocks. The encoder takes up to ``max_source_positions``
positions (``max_frames`` frames) and numbers fewer from the start of the table, so a model
trained on 1-s clips needs no 30-s padding; ``transformers`` insists on exactly
``max_frames`` frames. With those weights copied over (``hf.py``) both give the same encoder
states and logits (``tests/models/whisper/test_hf.py``).
"""

from __future__ import annotations

import math
import weakref
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from glassformer.models.base import IGNORE_INDEX, EncoderDecoderModel, ModelOutput, check_token_ids
from glassformer.models.whisper.config import WhisperConfig
from glassformer.nn.blocks import StackOutput, TransformerStack
from glassformer.nn.cache import (
    CrossAttentionCache,
    EncoderDecoderCache,
    EncoderState,
    KVCache,
)
from glassformer.nn.masks import padding_mask
from glassformer.nn.positional import LearnedPositionalEmbedding


def whisper_sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> Tensor:
    """``(length, channels)``: sines of all frequencies in the first half, cosines in the second.

    Frequencies fall geometrically from 1 to ``1 / max_timescale`` over ``channels / 2`` steps
    (log increment ``log(max_timescale) / (channels / 2 - 1)``), computed in float32 as Whisper
    does so the table matches the checkpoints' bit for bit.
    """
    half = channels // 2
    increment = math.log(max_timescale) / (half - 1)
    inv_timescales = torch.exp(-increment * torch.arange(half))  # (C/2,)
    angles = torch.arange(length)[:, None] * inv_timescales[None, :]  # (T, C/2)
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def _drop_key_bias(stack: TransformerStack) -> None:
    """Replace every attention's key projection with a bias-free one (see the module docstring)."""
    for layer in stack.layers:
        for attn in (layer.attn, layer.cross_attn):
            if attn is not None:
                old = attn.k_proj
                attn.k_proj = nn.Linear(old.in_features, old.out_features, bias=False)


def shift_right(labels: Tensor, start_token_id: int, pad_token_id: int) -> Tensor:
    """Decoder inputs for teacher forcing: ``[start] + labels[:-1]``, ignored labels read as padding.

    The same shift as Hugging Face's ``shift_tokens_right``, so a batch of ``labels`` alone trains
    the same way on both sides.
    """
    start = labels.new_full((labels.shape[0], 1), start_token_id)
    shifted = torch.cat([start, labels[:, :-1]], dim=1)
    return shifted.masked_fill(shifted == IGNORE_INDEX, pad_token_id)


class Whisper(EncoderDecoderModel):
    """Encoder-decoder speech recogniser: log-mel features in, transcript tokens out."""

    family = "whisper"
    config_class = WhisperConfig

    def __init__(self, config: WhisperConfig) -> None:
        super().__init__(config)
        c = config
        self.conv1 = nn.Conv1d(c.n_mels, c.dim, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(c.dim, c.dim, kernel_size=3, stride=2, padding=1)
        # fixed, never trained: recomputed on load rather than stored
        self.register_buffer("encoder_positions", whisper_sinusoids(c.max_source_positions, c.dim), persistent=False)
        block: dict[str, Any] = dict(
            ffn_dim=c.ffn_dim, activation="gelu", norm="layernorm", norm_eps=c.norm_eps, norm_position="pre",
            dropout=c.dropout, attn_dropout=c.attn_dropout, backend=c.attn_backend,
        )  # fmt: skip
        self.encoder = TransformerStack(c.n_layers, c.dim, c.n_heads, **block)
        self.token_embedding = nn.Embedding(c.vocab_size, c.dim)
        self.decoder_positions = LearnedPositionalEmbedding(c.max_seq_len, c.dim)
        self.decoder = TransformerStack(c.n_decoder_layers, c.dim, c.n_heads, cross_attention=True, **block)
        self.dropout = nn.Dropout(c.dropout)
        _drop_key_bias(self.encoder)
        _drop_key_bias(self.decoder)
        self._init_weights()

    def _init_weights(self) -> None:
        """Weights N(0, init_std), biases zero, norms one (as transformers initialises Whisper)."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Conv1d, nn.Embedding)):
                nn.init.normal_(module.weight, std=self.config.init_std)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
        nn.init.normal_(self.decoder_positions.weight, std=self.config.init_std)

    # -- the encoder ---------------------------------------------------------------------------

    def _check_features(self, features: Tensor) -> None:
        c = self.config
        if not isinstance(features, Tensor) or features.dim() != 3:
            shape = tuple(features.shape) if isinstance(features, Tensor) else type(features).__name__
            raise ValueError(
                f"input_features must be (batch, n_mels={c.n_mels}, frames) log-mel features, got {shape}; "
                "add a batch dimension with features[None]"
            )
        if not features.is_floating_point():
            raise TypeError(f"input_features must be floating point log-mel features, got dtype {features.dtype}")
        if features.dtype != self.conv1.weight.dtype:
            raise TypeError(
                f"input_features are {features.dtype} but the model's weights are {self.conv1.weight.dtype}; "
                f"convert one of them (input_features.to({self.conv1.weight.dtype}) or model.to(...))"
            )
        if features.shape[1] != c.n_mels:
            raise ValueError(
                f"input_features have {features.shape[1]} mel channels but this model takes n_mels={c.n_mels}; "
                f"compute them with log_mel_spectrogram(audio, n_mels={c.n_mels})"
            )
        frames = features.shape[2]
        if not 0 < frames <= c.max_frames:
            raise ValueError(
                f"input_features have {frames} frames; the encoder takes 1 to {c.max_frames} "
                f"(max_source_positions={c.max_source_positions}, two frames each): split longer audio "
                "into windows (30 s for Whisper)"
            )

    def _position_mask(self, attention_mask: Tensor | None, features: Tensor) -> Tensor | None:
        """A ``(B, frames)`` 1/0 frame mask -> ``(B, positions)``: position ``t`` is centred on frame ``2t``."""
        if attention_mask is None:
            return None
        if tuple(attention_mask.shape) != (features.shape[0], features.shape[2]):
            raise ValueError(
                f"attention_mask must be (batch, frames) = {(features.shape[0], features.shape[2])} for these "
                f"input_features, got {tuple(attention_mask.shape)}"
            )
        return attention_mask[:, ::2]

    def encode(
        self, input_features: Tensor, attention_mask: Tensor | None = None, *, return_weights: bool = False
    ) -> StackOutput:
        """Log-mel ``(B, n_mels, F)`` -> audio states ``(B, ceil(F / 2), C)`` (``.hidden``).

        ``attention_mask`` (optional, ``(B, F)``, 1 = a real frame) hides padded positions from
        the encoder's self-attention; transformers' Whisper takes no mask (it pads with silence).
        """
        self._check_features(input_features)
        positions = self._position_mask(attention_mask, input_features)
        x = F.gelu(self.conv1(input_features))  # (B, C, F)
        x = F.gelu(self.conv2(x)).transpose(1, 2)  # (B, T, C), T = ceil(F / 2)
        x = self.dropout(x + self.encoder_positions[: x.shape[1]].to(x.dtype))
        mask = None if positions is None else padding_mask(positions)
        return self.encoder(x, mask=mask, return_weights=return_weights)

    # -- the decoder ---------------------------------------------------------------------------

    def decode(
        self,
        decoder_input_ids: Tensor,
        audio: Tensor,
        audio_mask: Tensor | None = None,
        decoder_attention_mask: Tensor | None = None,
        *,
        cache: KVCache | None = None,
        context_cache: CrossAttentionCache | None = None,
        return_weights: bool = False,
    ) -> StackOutput:
        """Token ids ``(B, T)`` + audio states ``(B, S, C)`` -> decoder states ``(B, T, C)``.

        With a ``cache`` the ids are the next tokens: their positions continue after the cached
        ones, and ``decoder_attention_mask`` covers cached and new tokens together. ``audio_mask``
        is ``(B, S)`` over encoder positions (1 = real). ``context_cache`` keeps the audio's
        cross-attention keys/values when ``cache`` is not an ``EncoderDecoderCache`` (which has its own).
        """
        check_token_ids(decoder_input_ids, self.config.vocab_size, "decoder_input_ids")
        past = cache.seq_len() if cache is not None else 0
        b, t = decoder_input_ids.shape
        if past + t > self.config.max_seq_len:
            raise ValueError(
                f"the decoder would need {past + t} positions but has max_seq_len={self.config.max_seq_len}; "
                "shorten the transcript or decode fewer tokens"
            )
        self_mask = None
        if decoder_attention_mask is not None:
            if tuple(decoder_attention_mask.shape) != (b, past + t):
                raise ValueError(
                    f"decoder_attention_mask must be (batch, cached + new tokens) = {(b, past + t)}, got "
                    f"{tuple(decoder_attention_mask.shape)}"
                )
            self_mask = padding_mask(decoder_attention_mask)
        positions = torch.arange(past, past + t, device=decoder_input_ids.device)
        x = self.dropout(self.token_embedding(decoder_input_ids) + self.decoder_positions(positions))  # (B, T, C)
        self_cache, cross_cache = cache, context_cache
        if isinstance(cache, EncoderDecoderCache):
            self_cache, cross_cache = cache.self_attn, cache.cross_attn
        return self.decoder(
            x, mask=self_mask, is_causal=True, cache=self_cache, context=audio,
            context_mask=None if audio_mask is None else padding_mask(audio_mask), context_cache=cross_cache,
            return_weights=return_weights,
        )  # fmt: skip

    def logits(self, hidden: Tensor) -> Tensor:
        """``(B, T, C)`` decoder states -> ``(B, T, V)`` logits through the tied token embedding."""
        return F.linear(hidden, self.token_embedding.weight)

    # -- training ------------------------------------------------------------------------------

    def forward(
        self,
        input_features: Tensor,
        decoder_input_ids: Tensor | None = None,
        labels: Tensor | None = None,
        attention_mask: Tensor | None = None,
        decoder_attention_mask: Tensor | None = None,
        *,
        return_weights: bool = False,
    ) -> ModelOutput:
        """Teacher-forced pass. Without ``decoder_input_ids`` they are ``labels`` shifted right after
        ``decoder_start_token_id`` (:func:`shift_right`). ``loss`` is the mean cross-entropy over
        labels that are not ``IGNORE_INDEX`` (-100), as transformers computes it;
        ``metrics["accuracy"]`` is the share of those the arg-max gets right.
        """
        c = self.config
        if decoder_input_ids is None:
            if labels is None:
                raise ValueError("pass labels (the transcript tokens) or decoder_input_ids: the decoder needs input")
            check_token_ids(labels.masked_fill(labels == IGNORE_INDEX, 0), c.vocab_size, "labels")
            decoder_input_ids = shift_right(labels, c.decoder_start_token_id, c.pad_token_id)
        enc = self.encode(input_features, attention_mask)
        audio_mask = self._position_mask(attention_mask, input_features)
        dec = self.decode(decoder_input_ids, enc.hidden, audio_mask, decoder_attention_mask, return_weights=return_weights)
        return self.teacher_forced_output(dec, decoder_input_ids, labels)

    @staticmethod
    def loss(logits: Tensor, labels: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Mean cross-entropy over the labels that are not ``IGNORE_INDEX``, and the arg-max accuracy."""
        flat = logits.float().reshape(-1, logits.shape[-1])
        gold = labels.reshape(-1)
        loss = F.cross_entropy(flat, gold, ignore_index=IGNORE_INDEX)
        valid = gold != IGNORE_INDEX
        hits = (flat.argmax(-1) == gold) & valid
        return loss, {"accuracy": (hits.sum() / valid.sum().clamp(min=1)).detach()}

    # -- inference: EncoderDecoderModel's contract, with the audio's position mask and a memo ----

    def encode_for_generation(self, input_features: Tensor, attention_mask: Tensor | None = None) -> EncoderState:
        """Run the encoder once; its states and position mask are what every decoder step attends to."""
        hidden = self.encode(input_features, attention_mask).hidden
        return EncoderState(hidden, self._position_mask(attention_mask, input_features))

    def decode_step(
        self,
        decoder_input_ids: Tensor,
        *,
        encoder_state: EncoderState,
        cache: KVCache | None = None,
        attention_mask: Tensor | None = None,
        logits_to_keep: int = 0,
    ) -> ModelOutput:
        """Logits ``(B, T or logits_to_keep, V)`` after the decoder inputs (the next ones, with a cache)."""
        memo = self._cross_attention_memo(encoder_state.hidden)
        cross = cache.cross_attn if isinstance(cache, EncoderDecoderCache) else None
        if memo is not None and cross is not None and not cross.keys:
            cross.keys.update(memo.keys)  # the same tensors; a beam's reorder replaces, never edits, them
            cross.values.update(memo.values)
        dec = self.decode(
            decoder_input_ids, encoder_state.hidden, encoder_state.attention_mask, attention_mask, cache=cache,
            context_cache=memo if cross is None else None,
        )  # fmt: skip
        if memo is not None and cross is not None and not memo.keys:
            memo.keys.update(cross.keys)
            memo.values.update(cross.values)
        h = dec.hidden[:, -logits_to_keep:] if logits_to_keep > 0 else dec.hidden  # (B, T', C)
        return ModelOutput(logits=self.logits(h), cache=cache)

    def _cross_attention_memo(self, hidden: Tensor) -> CrossAttentionCache | None:
        """The cross-attention keys/values of the audio ``hidden``, kept for every decode of it.

        ``transcribe`` reads the no-speech probability in one decoder pass, then generates in
        another (and again at each fallback temperature); each would project the 1500 audio
        positions through every layer's key and value weights, a tenth of the encoder's work.
        The memo is keyed by the tensor itself (a weak reference: it goes when the audio goes) and
        by the versions of those weights (a training step makes it stale); never under autograd.
        """
        if torch.is_grad_enabled():
            return None
        versions = tuple(p._version for layer in self.decoder.layers
                         for p in (layer.cross_attn.k_proj.weight, layer.cross_attn.v_proj.weight))  # fmt: skip
        held = _CROSS_MEMO.get(self)
        if held is not None and held[0]() is hidden and held[1] == versions:
            return held[2]
        memo = CrossAttentionCache()
        _CROSS_MEMO[self] = (weakref.ref(hidden, _forgetter(weakref.ref(self))), versions, memo)
        return memo


# per model, the latest audio's cross-attention memo: (audio ref, weight versions, keys/values)
_CROSS_MEMO: weakref.WeakKeyDictionary[Whisper, tuple[weakref.ref[Tensor], tuple[int, ...], CrossAttentionCache]] = (
    weakref.WeakKeyDictionary()
)


def _forgetter(owner: weakref.ref[Whisper]) -> Any:
    """The callback that drops a model's memo once its audio is freed (unless a newer one replaced it)."""

    def forget(audio: weakref.ref[Tensor]) -> None:
        model = owner()
        held = None if model is None else _CROSS_MEMO.get(model)
        if held is not None and held[0] is audio:
            del _CROSS_MEMO[model]

    return forget
