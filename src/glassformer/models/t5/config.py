"""``T5Config``: the text-to-text encoder-decoder of Raffel et al. 2020, and its presets.

Field names are glassformer's shared vocabulary (``docs/config-vocabulary.md``); what is T5's own:

* ``head_dim`` is free (T5's ``d_kv``): t5-v1_1-small has 6 heads of 64 on a 512-wide stream;
* ``num_buckets`` / ``max_distance`` size the bucketed relative position bias, T5's only
  position signal. T5 has no position table, so nothing in the weights limits the length;
  ``max_seq_len`` is a cap we impose (see the field) and ``generate`` enforces;
* ``activation``: ``relu`` (T5 1.0) or ``geglu_tanh`` (T5 1.1's gated-GELU, transformers'
  ``gated-gelu`` with the tanh GELU);
* ``tie_embeddings``: T5 1.0 uses the shared embedding as the head and rescales the decoder
  output by ``dim**-0.5`` first; T5 1.1 has its own head and no rescaling;
* ``task_prefixes``: the prefixes the model was trained with ("translate English to German: "),
  so that a prefix it never saw is warned about (:func:`check_task_prefix`);
* ``n_sentinels`` / ``sentinel_start_id``: the ``<extra_id_i>`` tokens of span corruption, counting
  down from ``sentinel_start_id`` (``<extra_id_0>``; T5's is 32099, the tokenizer's top id).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from glassformer.nn.attention import BACKENDS, Backend
from glassformer.utils.config import ConfigError, ConfigMixin
from glassformer.utils.suggest import did_you_mean

T5Activation = Literal["relu", "geglu_tanh"]
ACTIVATIONS: tuple[str, ...] = ("relu", "geglu_tanh")

# The supervised tasks of T5's multi-task mixture (Raffel et al. 2020, appendix D), as t5-small knows them.
T5_TASK_PREFIXES: tuple[str, ...] = (
    "translate English to German: ", "translate English to French: ", "translate English to Romanian: ",
    "summarize: ", "cola sentence: ", "sst2 sentence: ", "mrpc sentence1: ", "qqp question1: ",
    "stsb sentence1: ", "mnli hypothesis: ", "qnli question: ", "rte sentence1: ", "wnli sentence1: ",
    "question: ",
)  # fmt: skip
MULTI30K_PREFIXES: tuple[str, ...] = ("translate English to German: ", "translate German to English: ")


@dataclass
class T5Config(ConfigMixin):
    """Sizes and choices of a T5 model. Defaults are t5-small (T5 1.0)."""

    vocab_size: int = 32128  # rows of the shared embedding (T5 pads its 32,100 tokens to a multiple of 128)
    dim: int = 512  # d_model
    n_heads: int = 8
    head_dim: int = 64  # d_kv: n_heads * head_dim need not equal dim
    n_layers: int = 6  # encoder blocks
    n_decoder_layers: int = 6
    ffn_dim: int = 2048  # d_ff
    activation: T5Activation = "relu"
    tie_embeddings: bool = True  # T5 1.0: the head is the embedding, after a dim**-0.5 rescale
    num_buckets: int = 32  # relative_attention_num_buckets
    max_distance: int = 128  # offsets beyond this share the last bucket
    # T5 has no position table; we cap sources and targets at 512 tokens, T5's pretraining length:
    # longer inputs are past what the relative bias was trained on (all in one far bucket) and
    # attention's memory grows with the square of the length. Raise it knowingly.
    max_seq_len: int = 512
    dropout: float = 0.1  # dropout_rate: embeddings, attention weights, every residual branch, final norm
    norm_eps: float = 1e-6
    label_smoothing: float = 0.0
    init_factor: float = 1.0  # initializer_factor: scales every initial std
    pad_token_id: int = 0  # also the decoder's start token, as in T5
    eos_token_id: int = 1
    n_sentinels: int = 100  # <extra_id_0> ... <extra_id_99>
    sentinel_start_id: int | None = 32099  # id of <extra_id_0>; None: no sentinels in the vocabulary
    task_prefixes: tuple[str, ...] = T5_TASK_PREFIXES
    attn_backend: Backend = "sdpa"

    def __post_init__(self) -> None:
        for name in ("vocab_size", "dim", "n_heads", "head_dim", "n_layers", "n_decoder_layers", "ffn_dim",
                     "num_buckets", "max_distance", "max_seq_len"):  # fmt: skip
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"T5Config.{name} must be a positive integer, got {value!r}")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(
                f"T5Config.activation={self.activation!r}: must be 'relu' (T5 1.0) or 'geglu_tanh' "
                "(T5 1.1's gated-GELU)"
                + did_you_mean(self.activation, ACTIVATIONS)
            )
        if self.num_buckets < 4:
            raise ConfigError(f"T5Config.num_buckets={self.num_buckets}: the bucketing needs at least 4")
        for name in ("dropout", "label_smoothing"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"T5Config.{name} must be in [0, 1), got {getattr(self, name)!r}")
        if self.attn_backend not in BACKENDS:
            raise ConfigError(f"T5Config.attn_backend={self.attn_backend!r}: must be one of {list(BACKENDS)}")
        self._check_token_ids()
        self.task_prefixes = tuple(self.task_prefixes)

    def _check_token_ids(self) -> None:
        for name in ("pad_token_id", "eos_token_id"):
            value = getattr(self, name)
            if not 0 <= value < self.vocab_size:
                raise ConfigError(f"T5Config.{name}={value} is not a token id (vocab_size={self.vocab_size})")
        if self.sentinel_start_id is None:
            return
        lowest = self.sentinel_start_id - self.n_sentinels + 1
        if self.n_sentinels <= 0 or self.sentinel_start_id >= self.vocab_size or lowest < 0:
            raise ConfigError(
                f"T5Config: {self.n_sentinels} sentinels counting down from "
                f"sentinel_start_id={self.sentinel_start_id} do not fit in vocab_size={self.vocab_size}; set sentinel_start_id=None for a model without them"
            )
        if any(lowest <= i <= self.sentinel_start_id for i in (self.pad_token_id, self.eos_token_id)):
            raise ConfigError(
                f"T5Config: the sentinels {lowest}..{self.sentinel_start_id} overlap pad/eos "
                f"({self.pad_token_id}, {self.eos_token_id})"
            )

    @property
    def decoder_start_token_id(self) -> int:
        """T5 starts every decoder sequence with the pad token (the labels shifted right)."""
        return self.pad_token_id

    @property
    def sentinel_ids(self) -> tuple[int, ...]:
        """``(<extra_id_0>, <extra_id_1>, ...)``: descending ids, as T5's vocabulary numbers them."""
        if self.sentinel_start_id is None:
            return ()
        return tuple(self.sentinel_start_id - i for i in range(self.n_sentinels))


def check_task_prefix(config: T5Config, text: str) -> bool:
    """Warn when ``text`` starts with none of the prefixes the model was trained with; True if it does.

    A model without recorded prefixes (``task_prefixes=()``, e.g. T5 1.1, pretrained on span
    corruption only) accepts any text silently.
    """
    if not config.task_prefixes or any(text.startswith(p) for p in config.task_prefixes):
        return True
    head = text.split(":", 1)[0] + ": " if ":" in text else text[:40]
    warnings.warn(
        f"T5: {head!r} is not a task prefix this model was trained with{did_you_mean(head, config.task_prefixes)}; "
        f"it knows {list(config.task_prefixes)}. Its output for an unseen task is unlikely to mean anything; "
        "fine-tune on the new prefix (and add it to T5Config.task_prefixes) first",
        UserWarning,
        stacklevel=2,
    )
    return False


def check_tokenizer(config: T5Config, tokenizer: Any) -> None:
    """Refuse a tokenizer with more ids than the model has embedding rows (its top ids would crash later)."""
    size = int(tokenizer.vocab_size)
    if size > config.vocab_size:
        raise ValueError(
            f"the tokenizer has {size} tokens but this T5 embeds only vocab_size={config.vocab_size}: ids "
            f"{config.vocab_size}..{size - 1} have no row. Use the tokenizer the model was trained with, or "
            f"build the model with T5Config.vocab_size >= {size}"
        )


def with_prefix(config: T5Config, prefix: str, texts: Sequence[str]) -> list[str]:
    """``prefix + text`` for each text (T5's task framing), warning once if the prefix is unknown."""
    if texts:
        check_task_prefix(config, prefix + texts[0])
    return [prefix + t for t in texts]


def t5_small() -> T5Config:
    """t5-small (T5 1.0): 6+6 layers, 512 wide, 8 heads of 64, ReLU FFN 2048, tied rescaled head, ~60M params."""
    return T5Config()


def t5_v1_1_small() -> T5Config:
    """t5-v1_1-small (T5 1.1): 8+8 layers, 512 wide, 6 heads of 64, gated-GELU FFN 1024, untied head, ~77M."""
    return T5Config(
        n_heads=6, n_layers=8, n_decoder_layers=8, ffn_dim=1024, activation="geglu_tanh", tie_embeddings=False,
        task_prefixes=(),  # pretrained on C4 span corruption only: no task prefix means anything to it
    )  # fmt: skip


def t5_multi30k() -> T5Config:
    """A ~6.8M-parameter T5 1.1-style model for Multi30k en<->de with task prefixes (the seq2seq experiment).

    An 8,000-token joint BPE whose top 100 ids are the sentinels; 3+3 layers, 256 wide, 4 heads of
    64, gated-GELU FFN 512, tied head (the embedding is a third of the model; untying would add 2M).
    """
    return T5Config(
        vocab_size=8000, dim=256, n_heads=4, head_dim=64, n_layers=3, n_decoder_layers=3, ffn_dim=512,
        activation="geglu_tanh", tie_embeddings=True, max_seq_len=256, dropout=0.1, sentinel_start_id=7999,
        task_prefixes=MULTI30K_PREFIXES,
    )  # fmt: skip


def tiny(config: T5Config) -> T5Config:
    """A toy twin: 2+2 layers, 32 wide, 4 heads of 8, a 96-token vocabulary with 8 sentinels; same choices."""
    return config.replace(
        vocab_size=96, dim=32, n_heads=4, head_dim=8, n_layers=2, n_decoder_layers=2, ffn_dim=64,
        num_buckets=8, max_distance=16, max_seq_len=64, n_sentinels=8, sentinel_start_id=95,
    )  # fmt: skip
