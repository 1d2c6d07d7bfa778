"""T5 (Raffel et al. 2020, "Exploring the Limits of Transfer Learning with a Unified Text-to-Text Transformer").

Read top to bottom, this is the model:

1. one shared embedding turns source and target tokens into vectors (no position table, no
   scaling), then dropout;
2. the encoder: pre-norm blocks (``x = x + sublayer(RMSNorm(x))``) of self-attention and an FFN,
   no biases anywhere; position enters only as a learned scalar per (head, bucket of relative
   offset) added to the attention scores, computed once by ``encoder_bias`` and shared by
   every layer (``glassformer.nn.positional.RelativePositionBias``, bidirectional buckets);
3. the decoder: the same blocks with causal self-attention (its own bias, causal buckets) and
   cross-attention over the encoder output (no position bias there);
4. the head: T5 1.0 reuses the embedding and scales the decoder output by ``dim**-0.5`` first;
   T5 1.1 has a separate ``lm_head`` and no scaling (``T5Config.tie_embeddings``).

Attention is not scaled by ``head_dim**-0.5`` (``attn_scale=1.0``): T5 folds that factor into the
initial query weights (std ``(dim * head_dim)**-0.5``). The norm is scale-only RMSNorm with its
statistic in float32, which is T5's ``T5LayerNorm``. With transformers' weights the two give the
same logits and the same greedy and beam outputs (``tests/models/t5/``). In training, dropout
(``T5Config.dropout``) acts on the embeddings, the attention weights, every residual branch and
each stack's output, as in T5; T5's one more dropout inside the FFN, after the activation, is left
out (``glassformer.nn``'s block has none there).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from glassformer.models.base import IGNORE_INDEX, EncoderDecoderModel, ModelOutput, check_token_ids
from glassformer.models.t5.config import T5Config, check_task_prefix, check_tokenizer
from glassformer.nn.blocks import StackOutput, TransformerStack
from glassformer.nn.cache import EncoderDecoderCache, KVCache
from glassformer.nn.masks import key_padding_mask
from glassformer.nn.positional import RelativePositionBias


def shift_right(labels: Tensor, start_token_id: int, pad_token_id: int) -> Tensor:
    """Decoder inputs for teacher forcing: ``[start] + labels[:-1]``, ignored labels read as padding.

    T5's ``_shift_right``: a batch of ``labels`` alone trains the same way here and in transformers.
    """
    start = labels.new_full((labels.shape[0], 1), start_token_id)
    shifted = torch.cat([start, labels[:, :-1]], dim=1)  # (B, T)
    return shifted.masked_fill(shifted == IGNORE_INDEX, pad_token_id)


class TanhGELU(nn.Module):
    """``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`` written out, as T5 1.1 computes its gate.

    The same function as torch's ``gelu(approximate="tanh")``, but that fused kernel rounds
    differently (2e-7 per element), and through a few random layers the logits then drift 1e-4 from
    transformers' ``gelu_new``, which spells the formula out like this.
    """

    def forward(self, x: Tensor) -> Tensor:
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


_VOCAB_FIX = (
    "the tokenizer does not fit this model (use the model's own tokenizer, "
    "or build the model with a larger T5Config.vocab_size)"
)


class T5(EncoderDecoderModel):
    """The text-to-text encoder-decoder: T5 1.0 (ReLU, tied head) and 1.1 (gated-GELU, own head).

    ``generate`` drives it through :class:`EncoderDecoderModel`'s contract: decoding starts from
    the pad token (``T5Config.decoder_start_token_id``).
    """

    family = "t5"
    config_class = T5Config

    def __init__(self, config: T5Config) -> None:
        super().__init__(config)
        c = config
        self.shared = nn.Embedding(c.vocab_size, c.dim)  # source, target and (tied) head
        block: dict[str, Any] = dict(
            head_dim=c.head_dim, ffn_dim=c.ffn_dim, activation=c.activation, norm="rmsnorm", norm_eps=c.norm_eps,
            norm_position="pre", bias=False, dropout=c.dropout, attn_dropout=c.dropout, attn_scale=1.0,
            backend=c.attn_backend,
        )  # fmt: skip
        self.encoder = TransformerStack(c.n_layers, c.dim, c.n_heads, **block)
        self.decoder = TransformerStack(c.n_decoder_layers, c.dim, c.n_heads, cross_attention=True, **block)
        self.encoder_bias = RelativePositionBias(c.n_heads, c.num_buckets, c.max_distance, bidirectional=True)
        self.decoder_bias = RelativePositionBias(c.n_heads, c.num_buckets, c.max_distance, bidirectional=False)
        self.dropout = nn.Dropout(c.dropout)
        self.lm_head = None if c.tie_embeddings else nn.Linear(c.dim, c.vocab_size, bias=False)
        if c.activation == "geglu_tanh":
            for layer in (*self.encoder.layers, *self.decoder.layers):
                layer.ffn.act = TanhGELU()  # no parameters: the state dict is unchanged
        self._init_weights()

    def _init_weights(self) -> None:
        """T5's initialisation (Mesh TensorFlow's, as transformers reproduces it), times ``init_factor``.

        Every matrix gets std ``fan_in**-0.5``, except the query's ``(dim * head_dim)**-0.5``: the
        attention scale ``head_dim**-0.5`` T5 never applies. The embedding starts at std 1 (RMSNorm
        follows it) and the untied head at ``dim**-0.5`` (unit-variance logits on normalised states).
        """
        c, f = self.config, self.config.init_factor
        std_of = {"q_proj": (c.dim * c.head_dim) ** -0.5, "k_proj": c.dim**-0.5, "v_proj": c.dim**-0.5,
                  "o_proj": (c.n_heads * c.head_dim) ** -0.5, "up": c.dim**-0.5, "gate": c.dim**-0.5,
                  "down": c.ffn_dim**-0.5}  # fmt: skip
        for name, module in self.named_modules():
            leaf = name.rsplit(".", 1)[-1]
            if isinstance(module, nn.Linear) and leaf in std_of:
                nn.init.normal_(module.weight, std=f * std_of[leaf])
        nn.init.normal_(self.shared.weight, std=f)
        for bias in (self.encoder_bias, self.decoder_bias):
            nn.init.normal_(bias.embedding.weight, std=f * c.dim**-0.5)
        if self.lm_head is not None:
            nn.init.normal_(self.lm_head.weight, std=f * c.dim**-0.5)

    # -- checks at our boundary ------------------------------------------------------------------

    def _check_source(self, input_ids: Tensor, attention_mask: Tensor | None) -> None:
        """Ids in the vocabulary, not empty, not past the length cap (see ``T5Config.max_seq_len``)."""
        check_token_ids(input_ids, self.config.vocab_size, "input_ids", _VOCAB_FIX)
        b, s = input_ids.shape
        if s == 0 or b == 0:
            raise ValueError(f"empty source: input_ids has shape {(b, s)}; T5 needs at least one token (eos)")
        if attention_mask is not None and attention_mask.shape == input_ids.shape:
            empty = (attention_mask.sum(dim=1) == 0).nonzero().flatten().tolist()
            if empty:
                raise ValueError(f"empty source: row(s) {empty} of attention_mask are all padding; drop them")
        if s > self.config.max_seq_len:
            raise ValueError(
                f"the source has {s} tokens but this T5 takes at most max_seq_len={self.config.max_seq_len}. T5 has "
                "no position table; glassformer caps the length because offsets past "
                f"max_distance={self.config.max_distance} all share one bias bucket (positions blur) and attention "
                "memory grows with the square of the length. Split the source, or raise T5Config.max_seq_len"
            )

    # -- the two stacks ------------------------------------------------------------------------

    def encode(
        self, input_ids: Tensor, attention_mask: Tensor | None = None, *, return_weights: bool = False
    ) -> StackOutput:
        """Source ids ``(B, S)`` -> encoder output ``(B, S, C)`` (``.hidden``), and per-layer weights if asked."""
        self._check_source(input_ids, attention_mask)
        key_mask = key_padding_mask(attention_mask, tuple(input_ids.shape), "attention_mask")
        s = input_ids.shape[1]
        x = self.dropout(self.shared(input_ids))  # (B, S, C)
        bias = self.encoder_bias(s, s)  # (1, H, S, S), shared by every layer
        out = self.encoder(x, mask=key_mask, bias=bias, return_weights=return_weights)
        out.hidden = self.dropout(out.hidden)  # (B, S, C)
        return out

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
        """Decoder ids ``(B, T)`` + encoder output ``(B, S, C)`` -> decoder states ``(B, T, C)``.

        With a ``cache`` the ids are the *next* tokens: the bias treats them as the last ``T`` of
        ``past + T`` positions, and ``decoder_attention_mask`` (if any) covers cached and new
        tokens together. An :class:`EncoderDecoderCache` keeps each layer's cross-attention keys
        and values from the first call on.
        """
        check_token_ids(decoder_input_ids, self.config.vocab_size, "decoder_input_ids", _VOCAB_FIX)
        past = cache.seq_len() if cache is not None else 0
        b, t = decoder_input_ids.shape
        self_mask = key_padding_mask(decoder_attention_mask, (b, past + t), "decoder_attention_mask")
        context_mask = key_padding_mask(attention_mask, tuple(encoder_hidden.shape[:2]), "attention_mask")
        x = self.dropout(self.shared(decoder_input_ids))  # (B, T, C)
        bias = self.decoder_bias(t, past + t)  # (1, H, T, past + T)
        self_cache, cross_cache = cache, None
        if isinstance(cache, EncoderDecoderCache):
            self_cache, cross_cache = cache.self_attn, cache.cross_attn
        out = self.decoder(
            x, mask=self_mask, bias=bias, is_causal=True, cache=self_cache, context=encoder_hidden,
            context_mask=context_mask, context_cache=cross_cache, return_weights=return_weights,
        )  # fmt: skip
        out.hidden = self.dropout(out.hidden)  # (B, T, C)
        return out

    def logits(self, hidden: Tensor) -> Tensor:
        """Decoder states ``(B, T, C)`` -> logits ``(B, T, V)``: tied and rescaled (1.0) or own head (1.1)."""
        if self.lm_head is None:
            return F.linear(hidden * self.config.dim**-0.5, self.shared.weight)
        return self.lm_head(hidden)

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
        """Teacher-forced pass, named as transformers' ``T5ForConditionalGeneration``.

        Without ``decoder_input_ids`` they are ``labels`` shifted right behind the pad token (T5's
        start token). ``labels`` of -100 add nothing to the loss; a pad id in ``labels`` is a real
        target, as in transformers (span corruption's collator pads with -100).
        """
        if decoder_input_ids is None:
            if labels is None:
                raise ValueError("pass decoder_input_ids, or labels (T5 shifts them right behind the pad token)")
            decoder_input_ids = shift_right(labels, self.config.decoder_start_token_id, self.config.pad_token_id)
        encoder_hidden = self.encode(input_ids, attention_mask).hidden  # (B, S, C)
        dec = self.decode(
            decoder_input_ids, encoder_hidden, attention_mask, decoder_attention_mask, return_weights=return_weights
        )
        return self.teacher_forced_output(dec, decoder_input_ids, labels)

    def loss(self, logits: Tensor, labels: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Cross-entropy over the labels that are not -100 (``label_smoothing`` as torch defines it).

        ``metrics["nll"]`` is the unsmoothed loss (its exp is the perplexity) and
        ``metrics["accuracy"]`` the share of argmax hits.
        """
        valid = labels != IGNORE_INDEX  # (B, T)
        flat = logits[valid].float()  # (N, V)
        gold = labels[valid]  # (N,)
        loss = F.cross_entropy(flat, gold, label_smoothing=self.config.label_smoothing)
        nll = F.cross_entropy(flat.detach(), gold)
        accuracy = (flat.argmax(-1) == gold).float().mean() if gold.numel() else flat.new_zeros(())
        return loss, {"nll": nll, "accuracy": accuracy.detach()}

    # -- text in ------------------------------------------------------------------------------

    def sources(self, texts: Sequence[str], tokenizer: Any, prefix: str = "") -> list[list[int]]:
        """Token ids of ``prefix + text`` followed by eos, as T5's inputs are framed.

        Checks once that the tokenizer fits the embedding, and warns when the prefix is not one
        the model was trained with (``T5Config.task_prefixes``).
        """
        check_tokenizer(self.config, tokenizer)
        texts = list(texts)
        empty = [i for i, t in enumerate(texts) if not t.strip()]
        if empty:
            raise ValueError(f"empty source: text(s) {empty} hold nothing to translate or answer; drop them")
        if texts:
            check_task_prefix(self.config, prefix + texts[0])
        return [tokenizer.encode(prefix + t) + [self.config.eos_token_id] for t in texts]
