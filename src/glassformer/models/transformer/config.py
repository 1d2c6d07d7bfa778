"""``TransformerConfig``: the encoder-decoder of Vaswani et al. 2017, and its presets.

Field names are glassformer's shared vocabulary (``docs/config-vocabulary.md``): ``n_layers`` is the
encoder's depth, ``n_decoder_layers`` the decoder's; ``vocab_size`` is the source vocabulary and
``tgt_vocab_size`` the target's (equal when ``share_embeddings``).
"""

from __future__ import annotations

from dataclasses import dataclass

from glassformer.nn.attention import BACKENDS, Backend
from glassformer.utils.config import ConfigError, ConfigMixin


@dataclass
class TransformerConfig(ConfigMixin):
    """Sizes and choices of the encoder-decoder. Defaults are the paper's base model (table 3)."""

    vocab_size: int = 37000  # the source vocabulary: the paper's shared English-German BPE
    tgt_vocab_size: int = 37000
    dim: int = 512  # d_model
    n_heads: int = 8
    n_layers: int = 6
    n_decoder_layers: int = 6
    ffn_dim: int = 2048  # d_ff
    dropout: float = 0.1  # P_drop: on embeddings+positions and on every sublayer output
    attn_dropout: float = 0.0  # on attention weights (torch.nn.Transformer uses `dropout` here too)
    max_seq_len: int = 1024  # rows of the sinusoidal table: the longest source or target
    norm_eps: float = 1e-5
    share_embeddings: bool = True  # one matrix for source/target embeddings and the generator
    label_smoothing: float = 0.1  # epsilon_ls
    pad_token_id: int = 0
    bos_token_id: int = 1
    eos_token_id: int = 2
    attn_backend: Backend = "sdpa"

    def __post_init__(self) -> None:
        for name in ("vocab_size", "tgt_vocab_size", "dim", "n_heads", "n_layers",
                     "n_decoder_layers", "ffn_dim", "max_seq_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"TransformerConfig.{name} must be a positive integer, got {value!r}")
        if self.dim % self.n_heads != 0:
            raise ConfigError(
                f"TransformerConfig.dim={self.dim} is not divisible by n_heads={self.n_heads}"
            )
        if self.dim % 2 != 0:
            raise ConfigError(f"TransformerConfig.dim={self.dim} must be even for the sinusoidal table")
        for name in ("dropout", "attn_dropout", "label_smoothing"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"TransformerConfig.{name} must be in [0, 1), got {value!r}")
        if self.share_embeddings and self.vocab_size != self.tgt_vocab_size:
            raise ConfigError(
                "TransformerConfig.share_embeddings=True needs one joint vocabulary, but "
                f"vocab_size={self.vocab_size} != tgt_vocab_size={self.tgt_vocab_size}"
            )
        smallest = min(self.vocab_size, self.tgt_vocab_size)
        for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
            value = getattr(self, name)
            if not 0 <= value < smallest:
                raise ConfigError(
                    f"TransformerConfig.{name}={value} is not a token id of both vocabularies "
                    f"(sizes {self.vocab_size} and {self.tgt_vocab_size})"
                )
        if self.attn_backend not in BACKENDS:
            raise ConfigError(f"TransformerConfig.attn_backend={self.attn_backend!r}: must be one of {list(BACKENDS)}")


def transformer_base() -> TransformerConfig:
    """The paper's base model: 6+6 post-norm layers, 512 wide, 8 heads, FFN 2048, shared 37k BPE."""
    return TransformerConfig()


def tiny(config: TransformerConfig) -> TransformerConfig:
    """A toy twin: 2+2 layers, 32 wide, 4 heads, a 64-token vocabulary; the same post-norm choices."""
    return config.replace(
        vocab_size=64, tgt_vocab_size=64, dim=32, n_heads=4, n_layers=2, n_decoder_layers=2, ffn_dim=64,
        max_seq_len=128,
    )
