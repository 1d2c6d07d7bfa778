"""BERT's configuration: one dataclass covers BERT, RoBERTa-style and DistilBERT-style encoders.

The variants differ only in numbers, so they are fields here rather than classes:

* RoBERTa-style: ``type_vocab_size=1`` (one segment) and ``position_offset=pad_token_id + 1``
  (positions count from ``pad_token_id + 1`` and padding sits at position ``pad_token_id``).
* DistilBERT-style: half the depth (``n_layers=6``) and no pooler.

``head`` chooses what sits on top of the encoder: nothing (embeddings), a masked-LM head tied to
the word embeddings, a sequence classifier (on the pooled ``[CLS]`` vector) or a token classifier.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from glassformer.nn.attention import Backend
from glassformer.utils.config import ConfigError, ConfigMixin

Head = Literal["none", "mlm", "sequence", "token"]
HEADS: tuple[str, ...] = ("none", "mlm", "sequence", "token")


@dataclass
class BertConfig(ConfigMixin):
    vocab_size: int = 30522
    dim: int = 768  # hidden size
    n_layers: int = 12
    n_heads: int = 12
    ffn_dim: int = 3072  # "intermediate_size"
    max_seq_len: int = 512  # rows in the position table
    position_offset: int = 0  # 0 for BERT; pad_token_id + 1 for RoBERTa
    type_vocab_size: int = 2  # segments A/B; 1 (or 0 = no table) for RoBERTa-style
    pad_token_id: int = 0
    norm_eps: float = 1e-12
    activation: Literal["gelu", "gelu_tanh", "relu"] = "gelu"  # exact erf GELU, as BERT
    dropout: float = 0.1  # embeddings and residual branches ("hidden_dropout_prob")
    attn_dropout: float = 0.1  # on attention weights
    classifier_dropout: float = 0.1
    init_std: float = 0.02
    pooler: bool = True  # dense + tanh on [CLS]; the sequence head reads it when present
    # what the sequence head reads: BERT's [CLS] (through the pooler), or the mean of the real tokens,
    # the way sentence-transformers models such as all-MiniLM-L6-v2 were trained to summarise a text
    pooling: Literal["cls", "mean"] = "cls"
    head: Head = "none"
    num_labels: int = 2
    label_names: tuple[str, ...] = ()  # names of the classes, in label-id order (optional)
    nsp: bool = False  # next-sentence prediction head beside the MLM head (BERT's original pretraining)
    attn_backend: Backend = "sdpa"

    def __post_init__(self) -> None:
        positive = ("vocab_size", "dim", "n_layers", "n_heads", "ffn_dim", "max_seq_len", "num_labels")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"BertConfig.{name} must be a positive integer, got {value!r}")
        if self.dim % self.n_heads:
            raise ConfigError(f"BertConfig.dim={self.dim} is not divisible by n_heads={self.n_heads}")
        if self.pooling not in ("cls", "mean"):
            raise ConfigError(f"BertConfig.pooling={self.pooling!r}; expected 'cls' or 'mean'")
        if self.head not in HEADS:
            raise ConfigError(f"BertConfig.head={self.head!r}; expected one of {HEADS}")
        if self.type_vocab_size < 0:
            raise ConfigError(f"BertConfig.type_vocab_size must be >= 0, got {self.type_vocab_size}")
        if not 0 <= self.position_offset < self.max_seq_len:
            raise ConfigError(
                f"BertConfig.position_offset={self.position_offset} must lie in [0, max_seq_len={self.max_seq_len})"
            )
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise ConfigError(f"BertConfig.pad_token_id={self.pad_token_id} is outside the vocabulary ({self.vocab_size})")
        for name in ("dropout", "attn_dropout", "classifier_dropout"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"BertConfig.{name} must be in [0, 1), got {value}")
        if self.norm_eps <= 0:
            raise ConfigError(f"BertConfig.norm_eps must be positive, got {self.norm_eps}")
        if self.label_names:
            self.label_names = tuple(str(n) for n in self.label_names)
            if len(self.label_names) != self.num_labels:
                raise ConfigError(
                    f"BertConfig.label_names has {len(self.label_names)} names but num_labels={self.num_labels}"
                )
        if self.nsp and not self.pooler:
            raise ConfigError("BertConfig.nsp=True needs pooler=True: next-sentence prediction reads the pooled [CLS]")

    @property
    def max_tokens(self) -> int:
        """The longest input the position table covers (RoBERTa-style offsets use up some rows)."""
        return self.max_seq_len - self.position_offset


# name -> (fields, description). Each has a "-tiny" twin registered beside it.
PRESETS: dict[str, tuple[dict, str]] = {
    "bert-base": (dict(), "BERT-base uncased shape: 12 layers, width 768, 12 heads (110M)"),
    "bert-mini": (
        dict(dim=256, n_layers=4, n_heads=4, ffn_dim=1024),
        "BERT-mini (Turc et al. 2019): 4 layers, width 256; small enough to pretrain on a CPU",
    ),
    "minilm-l6": (
        dict(dim=384, n_layers=6, n_heads=12, ffn_dim=1536),
        "all-MiniLM-L6-v2's shape: 6 layers, width 384, 12 heads",
    ),
    "roberta-base": (
        dict(vocab_size=50265, max_seq_len=514, position_offset=2, type_vocab_size=1, pad_token_id=1,
             norm_eps=1e-5),
        "RoBERTa-base shape: BERT-base with offset positions and a single segment",
    ),
    "distilbert-base": (
        dict(n_layers=6, type_vocab_size=0, pooler=False),
        "DistilBERT-base shape: BERT-base at half depth, no segments, no pooler",
    ),
}

TINY: dict = dict(vocab_size=128, dim=32, n_layers=2, n_heads=4, ffn_dim=64, max_seq_len=64)
