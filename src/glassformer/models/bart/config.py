"""``BartConfig``: BART's encoder-decoder (Lewis et al. 2019), and its presets.

Field names are glassformer's shared vocabulary (``docs/config-vocabulary.md``): ``n_layers`` is the
encoder's depth, ``n_decoder_layers`` the decoder's, ``max_seq_len`` the positions each side has
(BART's table holds two more rows: its learned positions start at index 2). Special ids follow
BART's vocabulary: ``<s>`` = 0, ``<pad>`` = 1, ``</s>`` = 2; the decoder starts from ``</s>``
(``decoder_start_token_id``) and its first generated token is forced to ``<s>``
(``forced_bos_token_id``), as the released checkpoints' generation settings do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from glassformer.nn.attention import BACKENDS, Backend
from glassformer.utils.config import ConfigError, ConfigMixin

BartActivation = Literal["gelu", "gelu_tanh", "relu"]
ACTIVATIONS: tuple[str, ...] = ("gelu", "gelu_tanh", "relu")
POSITION_OFFSET = 2  # BART's learned positions: position p reads row p + 2 of the table


@dataclass
class BartConfig(ConfigMixin):
    """Sizes and choices of BART. Defaults are ``facebook/bart-base``."""

    vocab_size: int = 50265  # one vocabulary shared by encoder, decoder and the tied head
    dim: int = 768  # d_model
    n_layers: int = 6
    n_decoder_layers: int = 6
    n_heads: int = 12
    ffn_dim: int = 3072
    max_seq_len: int = 1024  # max_position_embeddings: the longest source and the most target positions
    dropout: float = 0.1  # on embeddings (after layernorm_embedding) and every sublayer output
    attn_dropout: float = 0.1  # on attention weights
    activation: BartActivation = "gelu"
    norm_eps: float = 1e-5
    scale_embedding: bool = False  # token embeddings times sqrt(dim) (bart-base/large: no)
    label_smoothing: float = 0.0
    init_std: float = 0.02
    pad_token_id: int = 1
    bos_token_id: int = 0
    eos_token_id: int = 2
    decoder_start_token_id: int = 2  # BART starts decoding from </s>
    forced_bos_token_id: int | None = 0  # the first generated token; None: not forced
    attn_backend: Backend = "sdpa"

    def __post_init__(self) -> None:
        for name in (
            "vocab_size",
            "dim",
            "n_layers",
            "n_decoder_layers",
            "n_heads",
            "ffn_dim",
            "max_seq_len",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"BartConfig.{name} must be a positive integer, got {value!r}")
        if self.dim % self.n_heads != 0:
            raise ConfigError(f"BartConfig.dim={self.dim} is not divisible by n_heads={self.n_heads}")
        for name in ("dropout", "attn_dropout", "label_smoothing"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"BartConfig.{name} must be in [0, 1), got {value!r}")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(
                f"BartConfig.activation={self.activation!r}: must be one of {list(ACTIVATIONS)}"
            )
        for name in (
            "pad_token_id",
            "bos_token_id",
            "eos_token_id",
            "decoder_start_token_id",
            "forced_bos_token_id",
        ):
            value = getattr(self, name)
            if value is None and name == "forced_bos_token_id":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < self.vocab_size:
                raise ConfigError(
                    f"BartConfig.{name}={value!r} is not a token id of the vocabulary (vocab_size={self.vocab_size})"
                )
        if self.attn_backend not in BACKENDS:
            raise ConfigError(
                f"BartConfig.attn_backend={self.attn_backend!r}: must be one of {list(BACKENDS)}"
            )


def bart_base() -> BartConfig:
    """``facebook/bart-base``: 6+6 post-norm layers, 768 wide, 12 heads, FFN 3072, GPT-2's 50k BPE."""
    return BartConfig()


def bart_large() -> BartConfig:
    """``facebook/bart-large``: 12+12 layers, 1024 wide, 16 heads, FFN 4096."""
    return BartConfig(dim=1024, n_layers=12, n_decoder_layers=12, n_heads=16, ffn_dim=4096)


def bart_multi30k() -> BartConfig:
    """A small BART for Multi30k (en+de joint BPE of 8,000 tokens): 3+3 layers, 256 wide, ~7.7M parameters.

    Special ids as BART's: ``<s>`` 0, ``<pad>`` 1, ``</s>`` 2 (the denoising mask token is the
    tokenizer's ``<mask>``). Heavier dropout and label smoothing suit 29,000 sentence pairs.
    """
    return BartConfig(
        vocab_size=8000, dim=256, n_layers=3, n_decoder_layers=3, n_heads=4, ffn_dim=1024, max_seq_len=256,
        dropout=0.3, attn_dropout=0.1, label_smoothing=0.1,
    )  # fmt: skip


def tiny(config: BartConfig) -> BartConfig:
    """A toy twin: 2+2 layers, 32 wide, 4 heads, a 64-token vocabulary; the preset's other choices kept."""
    return config.replace(
        vocab_size=64, dim=32, n_layers=2, n_decoder_layers=2, n_heads=4, ffn_dim=64, max_seq_len=64,
    )  # fmt: skip
