"""BERT (Devlin et al. 2018): a post-norm Transformer encoder with a choice of heads.

Reading order: embeddings (word + position + segment, then LayerNorm), the encoder stack from
``glassformer.nn`` (post-norm blocks: ``x = norm(x + sublayer(x))``, exact GELU), the pooler
(dense + tanh on the ``[CLS]`` vector), then one head picked by ``config.head``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from glassformer.models.base import IGNORE_INDEX, ModelBase, ModelOutput
from glassformer.models.bert.config import BertConfig
from glassformer.nn.blocks import TransformerStack
from glassformer.nn.ffn import activation_fn
from glassformer.nn.masks import padding_mask, to_additive
from glassformer.nn.norms import LayerNorm
from glassformer.nn.positional import LearnedPositionalEmbedding


class BertEmbeddings(nn.Module):
    """``norm(word[ids] + position[pos] + segment[type_ids])``, then dropout."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = config
        self.word = nn.Embedding(config.vocab_size, config.dim, padding_idx=config.pad_token_id)
        self.position = LearnedPositionalEmbedding(config.max_seq_len, config.dim)
        self.token_type = nn.Embedding(config.type_vocab_size, config.dim) if config.type_vocab_size else None
        self.norm = LayerNorm(config.dim, eps=config.norm_eps)
        self.dropout = nn.Dropout(config.dropout)

    def positions(self, input_ids: Tensor) -> Tensor:
        """``(B, T)`` position ids. BERT counts 0, 1, 2...; RoBERTa-style counts from
        ``pad_token_id + 1`` over real tokens only, and puts padding at ``pad_token_id``."""
        offset = self.config.position_offset
        if offset == 0:
            return torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
        real = (input_ids != self.config.pad_token_id).long()
        return torch.cumsum(real, dim=1) * real + (offset - 1)

    def forward(self, input_ids: Tensor, token_type_ids: Tensor | None = None) -> Tensor:
        x = self.word(input_ids) + self.position(self.positions(input_ids))  # (B, T, C)
        if self.token_type is not None:
            if token_type_ids is None:
                x = x + self.token_type.weight[0]  # every token in segment A
            else:
                if int(token_type_ids.max()) >= self.config.type_vocab_size or int(token_type_ids.min()) < 0:
                    raise ValueError(
                        f"token_type_ids must lie in [0, {self.config.type_vocab_size}); "
                        f"got values {int(token_type_ids.min())}..{int(token_type_ids.max())}"
                    )
                x = x + self.token_type(token_type_ids)
        elif token_type_ids is not None and bool(token_type_ids.any()):
            raise ValueError("this model has no segment embeddings (type_vocab_size=0); drop token_type_ids")
        return self.dropout(self.norm(x))  # (B, T, C)


class Bert(ModelBase):
    """The BERT encoder with the head ``config.head`` names."""

    family = "bert"
    config_class = BertConfig

    def __init__(self, config: BertConfig) -> None:
        super().__init__(config)
        c = config
        self.embeddings = BertEmbeddings(c)
        self.encoder = TransformerStack(
            c.n_layers, c.dim, c.n_heads,
            final_norm=False,  # post-norm blocks already end in a norm
            ffn_dim=c.ffn_dim, activation=c.activation, norm="layernorm", norm_eps=c.norm_eps,
            norm_position="post", bias=True, dropout=c.dropout, attn_dropout=c.attn_dropout,
            backend=c.attn_backend,
        )
        self.pooler = nn.Linear(c.dim, c.dim) if c.pooler else None
        # masked-LM head: dense + GELU + norm, then a decoder whose weight IS the word embedding matrix
        if c.head == "mlm":
            self.mlm_transform = nn.Linear(c.dim, c.dim)
            self.mlm_act = activation_fn(c.activation)
            self.mlm_norm = LayerNorm(c.dim, eps=c.norm_eps)
            self.mlm_bias = nn.Parameter(torch.zeros(c.vocab_size))
        self.nsp = nn.Linear(c.dim, 2) if c.nsp else None
        if c.head in ("sequence", "token"):
            self.classifier_dropout = nn.Dropout(c.classifier_dropout)
            self.classifier = nn.Linear(c.dim, c.num_labels)
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        """BERT's initialisation: N(0, 0.02) weights, zero biases, zero padding embedding."""
        std = self.config.init_std
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=std)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()
        elif isinstance(module, LearnedPositionalEmbedding):
            nn.init.normal_(module.weight, std=std)

    # -- pieces --------------------------------------------------------------------------------

    def _check_inputs(self, input_ids: Tensor, attention_mask: Tensor | None) -> None:
        if input_ids.dim() != 2 or input_ids.dtype not in (torch.long, torch.int, torch.int32):
            raise ValueError(
                f"input_ids must be an integer tensor of shape (batch, seq_len); got {tuple(input_ids.shape)} "
                f"{input_ids.dtype}"
            )
        if input_ids.shape[1] == 0:
            raise ValueError("input_ids is empty (seq_len 0): even an empty text encodes to [CLS] [SEP]")
        if input_ids.shape[1] > self.config.max_tokens:
            raise ValueError(
                f"input of {input_ids.shape[1]} tokens is longer than the position table allows "
                f"({self.config.max_tokens}); truncate it (the tokenizer helpers do, with a warning)"
            )
        if int(input_ids.max()) >= self.config.vocab_size or int(input_ids.min()) < 0:
            raise ValueError(
                f"input_ids must lie in [0, vocab_size={self.config.vocab_size}); got values "
                f"{int(input_ids.min())}..{int(input_ids.max())}: was the text encoded with another vocabulary?"
            )
        if attention_mask is not None and attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask {tuple(attention_mask.shape)} must match input_ids {tuple(input_ids.shape)}"
            )

    def encode(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        return_weights: bool = False,
    ) -> tuple[Tensor, list[Tensor] | None]:
        """The encoder's last hidden states ``(B, T, C)`` and, if asked, per-layer attention weights."""
        self._check_inputs(input_ids, attention_mask)
        x = self.embeddings(input_ids, token_type_ids)  # (B, T, C)
        mask = None
        if attention_mask is not None and not bool(attention_mask.all()):
            # built once as an additive float mask, (B, 1, 1, T), shared by every layer
            mask = to_additive(padding_mask(attention_mask), x.dtype)
        out = self.encoder(x, mask=mask, return_weights=return_weights)
        return out.hidden, out.attentions

    def pool(self, hidden: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """One vector per text ``(B, C)``: BERT's ``tanh(dense(h[CLS]))`` (the raw ``[CLS]`` vector
        without a pooler), or with ``pooling="mean"`` the mean over real tokens."""
        if self.config.pooling == "mean":
            return mean_pool(hidden, attention_mask, normalize=False)
        cls = hidden[:, 0]  # (B, C)
        return torch.tanh(self.pooler(cls)) if self.pooler is not None else cls

    def mlm_logits(self, hidden: Tensor) -> Tensor:
        """``(..., C) -> (..., vocab)``: the decoder shares the word-embedding matrix (weight tying)."""
        h = self.mlm_norm(self.mlm_act(self.mlm_transform(hidden)))
        return F.linear(h, self.embeddings.word.weight, self.mlm_bias)

    # -- forward -------------------------------------------------------------------------------

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        labels: Tensor | None = None,
        next_sentence_label: Tensor | None = None,
        return_weights: bool = False,
    ) -> ModelOutput:
        """``labels``: for ``mlm`` and ``token`` heads ``(B, T)`` with ``-100`` where no loss is taken;
        for the ``sequence`` head ``(B,)`` class ids.

        The MLM head scores every position when no labels are given (``logits`` ``(B, T, vocab)``),
        but only the labelled positions when they are (``logits`` ``(N, vocab)``): in pretraining
        85% of the ``(B, T, vocab)`` product would be thrown away.
        """
        hidden, attentions = self.encode(input_ids, attention_mask, token_type_ids, return_weights)  # (B, T, C)
        head = self.config.head
        out = ModelOutput(hidden_states=hidden, attentions=attentions)
        if head == "none":
            if labels is not None:
                raise ValueError("this BERT has head='none' and takes no labels; build it with a head")
            return out
        if head == "mlm":
            if labels is not None:
                # score only the chosen positions: the full (B, T, vocab) product is mostly wasted
                chosen = labels != IGNORE_INDEX  # (B, T)
                logits = self.mlm_logits(hidden[chosen])  # (N, vocab)
                targets = labels[chosen]
                out.loss = F.cross_entropy(logits, targets) if targets.numel() else hidden.sum() * 0.0
                with torch.no_grad():
                    out.metrics["masked_accuracy"] = (
                        (logits.argmax(-1) == targets).float().mean() if targets.numel() else hidden.new_zeros(())
                    )
                out.metrics["mlm_loss"] = out.loss.detach()
            else:
                logits = self.mlm_logits(hidden)  # (B, T, vocab)
            out.logits = logits
            if next_sentence_label is not None:
                if self.nsp is None:
                    raise ValueError("next_sentence_label given but the model has no NSP head (config.nsp=False)")
                nsp_logits = self.nsp(self.pool(hidden, attention_mask))  # (B, 2): is segment B the real continuation?
                nsp_loss = F.cross_entropy(nsp_logits, next_sentence_label)
                out.metrics["nsp_loss"] = nsp_loss.detach()
                out.metrics["nsp_accuracy"] = (nsp_logits.argmax(-1) == next_sentence_label).float().mean().detach()
                out.loss = nsp_loss if out.loss is None else out.loss + nsp_loss
            return out
        if head == "sequence":
            logits = self.classifier(self.classifier_dropout(self.pool(hidden, attention_mask)))  # (B, num_labels)
            out.logits = logits
            if labels is not None:
                self._check_labels(labels)
                out.loss = F.cross_entropy(logits, labels)
                out.metrics["accuracy"] = (logits.argmax(-1) == labels).float().mean().detach()
            return out
        # token classification
        logits = self.classifier(self.classifier_dropout(hidden))  # (B, T, num_labels)
        out.logits = logits
        if labels is not None:
            self._check_labels(labels)
            out.loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX)
            keep = labels != IGNORE_INDEX
            out.metrics["accuracy"] = (logits.argmax(-1)[keep] == labels[keep]).float().mean().detach()
        return out

    def _check_labels(self, labels: Tensor) -> None:
        real = labels[labels != IGNORE_INDEX]
        if real.numel() and (int(real.max()) >= self.config.num_labels or int(real.min()) < 0):
            raise ValueError(
                f"labels must lie in [0, num_labels={self.config.num_labels}); got values "
                f"{int(real.min())}..{int(real.max())}"
            )


def mean_pool(hidden: Tensor, attention_mask: Tensor | None = None, normalize: bool = True) -> Tensor:
    """Sentence embeddings the sentence-transformers way: mean over real tokens, then L2-normalize."""
    if attention_mask is None:
        pooled = hidden.mean(dim=1)
    else:
        m = attention_mask.to(hidden.dtype).unsqueeze(-1)  # (B, T, 1)
        pooled = (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)  # (B, C)
    return F.normalize(pooled, p=2, dim=-1) if normalize else pooled
