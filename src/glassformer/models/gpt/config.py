"""``GPTConfig``: one decoder-only transformer, GPT-2 and Llama as two settings of its fields.

The two lineages differ in five choices, each a field here rather than a separate class:

=================  ==========================  ===============================
field              GPT-2 (2019)                Llama (2023), SmolLM2
=================  ==========================  ===============================
``pos_encoding``   ``"learned"`` (added)       ``"rope"`` (rotates q and k)
``norm``           ``"layernorm"``             ``"rmsnorm"``
``activation``     ``"gelu_tanh"``             ``"swiglu"`` (gated, 3 matrices)
``bias``           ``True``                    ``False``
``n_kv_head``      ``= n_head``                ``< n_head`` (grouped-query)
=================  ==========================  ===============================

Fields that can be derived (``n_kv_head``, ``head_dim``, ``ffn_hidden``) stay ``None`` in the
config and are resolved by properties, so ``config.replace(n_embd=...)`` never leaves a stale
derived value behind.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from glassformer.nn.attention import BACKENDS
from glassformer.utils.config import ConfigError, ConfigMixin

PosEncoding = Literal["learned", "rope"]
Norm = Literal["layernorm", "rmsnorm"]
GPTActivation = Literal["gelu_tanh", "gelu", "relu", "silu", "swiglu", "geglu"]
AttnBackend = Literal["sdpa", "eager", "flash"]

GATED_ACTIVATIONS = ("swiglu", "geglu")


def llama_ffn_hidden(n_embd: int, multiple_of: int = 64) -> int:
    """The Llama rule for a gated FFN: ``8/3 * n_embd`` rounded up to ``multiple_of``.

    A gated FFN has three matrices instead of two; ``2/3 * 4 * n_embd`` keeps its parameter count
    equal to a plain FFN of width ``4 * n_embd``. Llama rounds to 256; 64 suits small models too.
    """
    hidden = int(2 * 4 * n_embd / 3)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


@dataclass
class GPTConfig(ConfigMixin):
    """A decoder-only language model. Defaults are GPT-2 small (124M)."""

    vocab_size: int = 50257
    block_size: int = 1024  # the longest context the model accepts (past + new tokens)
    n_layer: int = 12
    n_head: int = 12
    n_kv_head: int | None = None  # key/value heads; None = n_head (plain multi-head attention)
    n_embd: int = 768
    head_dim: int | None = None  # None = n_embd // n_head
    ffn_hidden: int | None = None  # None = 4 * n_embd, or the Llama 8/3 rule for gated FFNs
    pos_encoding: PosEncoding = "learned"
    rope_theta: float = 10000.0
    norm: Norm = "layernorm"
    norm_eps: float = 1e-5
    activation: GPTActivation = "gelu_tanh"
    bias: bool = True  # biases in every linear layer and LayerNorm (GPT-2); Llama has none
    tie_embeddings: bool = True  # lm_head shares the token embedding matrix
    dropout: float = 0.0  # on embeddings, attention weights and residual branches
    attn_backend: AttnBackend = "sdpa"
    init_std: float = 0.02
    bos_token_id: int | None = None
    eos_token_id: int | None = None

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"GPTConfig.{name} must be a positive integer, got {value!r}")
        for name in ("n_kv_head", "head_dim", "ffn_hidden"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
                raise ConfigError(f"GPTConfig.{name} must be a positive integer or None, got {value!r}")
        if self.head_dim is None and self.n_embd % self.n_head != 0:
            raise ConfigError(
                f"GPTConfig.n_embd={self.n_embd} is not divisible by n_head={self.n_head}; "
                "change one of them or set head_dim"
            )
        if self.n_head % self.kv_heads != 0:
            raise ConfigError(
                f"GPTConfig.n_head={self.n_head} must be a multiple of n_kv_head={self.n_kv_head} "
                "(each key/value head serves a whole group of query heads)"
            )
        self._check_choice("pos_encoding", ("learned", "rope"))
        self._check_choice("norm", ("layernorm", "rmsnorm"))
        self._check_choice("activation", ("gelu_tanh", "gelu", "relu", "silu", "swiglu", "geglu"))
        self._check_choice("attn_backend", BACKENDS)
        if self.pos_encoding == "rope" and self.head_size % 2 != 0:
            raise ConfigError(f"GPTConfig: RoPE needs an even head size, got {self.head_size}")
        if not self.rope_theta > 0:
            raise ConfigError(f"GPTConfig.rope_theta must be positive, got {self.rope_theta!r}")
        if not self.norm_eps > 0:
            raise ConfigError(f"GPTConfig.norm_eps must be positive, got {self.norm_eps!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"GPTConfig.dropout must be in [0, 1), got {self.dropout!r}")
        if not self.init_std > 0:
            raise ConfigError(f"GPTConfig.init_std must be positive, got {self.init_std!r}")
        for name in ("bos_token_id", "eos_token_id"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < self.vocab_size:
                raise ConfigError(f"GPTConfig.{name}={value} is outside the vocabulary [0, {self.vocab_size})")

    def _check_choice(self, name: str, choices: tuple[str, ...]) -> None:
        if getattr(self, name) not in choices:
            raise ConfigError(f"GPTConfig.{name}={getattr(self, name)!r}: expected one of {list(choices)}")

    @property
    def kv_heads(self) -> int:
        return self.n_head if self.n_kv_head is None else self.n_kv_head

    @property
    def head_size(self) -> int:
        return self.n_embd // self.n_head if self.head_dim is None else self.head_dim

    @property
    def ffn_size(self) -> int:
        if self.ffn_hidden is not None:
            return self.ffn_hidden
        return llama_ffn_hidden(self.n_embd) if self.activation in GATED_ACTIVATIONS else 4 * self.n_embd


# --------------------------------------------------------------------------------------------
# Presets. Each returns a fresh config; the package __init__ registers them (with -tiny twins).

LLAMA_STYLE = dict(pos_encoding="rope", norm="rmsnorm", activation="swiglu", bias=False)


def gpt2() -> GPTConfig:
    """GPT-2 small, 124M parameters (Radford et al. 2019)."""
    return GPTConfig(bos_token_id=50256, eos_token_id=50256)


def gpt2_medium() -> GPTConfig:
    """GPT-2 medium, 350M parameters."""
    return GPTConfig(n_layer=24, n_head=16, n_embd=1024, bos_token_id=50256, eos_token_id=50256)


def smollm2_135m() -> GPTConfig:
    """SmolLM2-135M (Hugging Face 2024): Llama architecture, 30 layers, GQA 9 query / 3 kv heads."""
    return GPTConfig(
        vocab_size=49152, block_size=8192, n_layer=30, n_head=9, n_kv_head=3, n_embd=576,
        ffn_hidden=1536, rope_theta=100000.0, norm_eps=1e-5, tie_embeddings=True,
        bos_token_id=1, eos_token_id=2, **LLAMA_STYLE,
    )


def shakespeare_char() -> GPTConfig:
    """nanoGPT's README CPU config for character-level Tiny Shakespeare (65 characters).

    4 layers, 4 heads, width 128, context 64, no dropout, and no biases (nanoGPT's default
    ``bias=False``): GPT-2's architecture at toy size, 0.80M parameters.
    """
    return GPTConfig(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128, dropout=0.0, bias=False)


def shakespeare_char_rope() -> GPTConfig:
    """:func:`shakespeare_char` with rotary positions and a feed-forward of 2x the width (not 4x).

    Within nanoGPT's budget (2,000 steps of 12 x 64 characters) this learns faster and costs less:
    RoPE lets every layer see relative offsets directly, and the narrower FFN removes a third of
    the FLOPs per step (0.53M parameters instead of 0.80M). ``bench/gpt_train.py`` trains it.
    """
    return shakespeare_char().replace(pos_encoding="rope", ffn_hidden=256)


def shakespeare_char_llama() -> GPTConfig:
    """The same budget as :func:`shakespeare_char` with Llama's choices: RoPE, RMSNorm, SwiGLU, no biases."""
    return GPTConfig(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128, dropout=0.0, **LLAMA_STYLE)


def pydoc_char() -> GPTConfig:
    """Character level on the embedded corpus (Python's own help text, about 100 characters)."""
    return GPTConfig(vocab_size=128, block_size=128, n_layer=4, n_head=4, n_embd=128, dropout=0.0)


def tiny(config: GPTConfig, vocab_size: int = 96) -> GPTConfig:
    """A toy twin of a preset: same architecture choices, 2 layers, width 32, context 32."""
    n_head = 4 if config.kv_heads < config.n_head else 2
    n_kv_head = 2 if config.kv_heads < config.n_head else None
    return config.replace(
        vocab_size=vocab_size, block_size=32, n_layer=2, n_head=n_head, n_kv_head=n_kv_head, n_embd=32,
        head_dim=None, ffn_hidden=None, bos_token_id=None, eos_token_id=None,
    )
