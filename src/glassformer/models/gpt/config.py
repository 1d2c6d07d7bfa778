"""``GPTConfig``: one decoder-only transformer, GPT-2 and Llama as two settings of its fields.

The two lineages differ in five choices, each a field here rather than a separate class:

=================  ==========================  ===============================
field              GPT-2 (2019)                Llama (2023), SmolLM2
=================  ==========================  ===============================
``pos_encoding``   ``"learned"`` (added)       ``"rope"`` (rotates q and k)
``norm``           ``"layernorm"``             ``"rmsnorm"``
``activation``     ``"gelu_tanh"``             ``"swiglu"`` (gated, 3 matrices)
``bias``           ``True``                    ``False``
``n_kv_heads``      ``= n_heads``                ``< n_heads`` (grouped-query)
=================  ==========================  ===============================

Fields that can be derived (``n_kv_heads``, ``head_dim``, ``ffn_dim``) stay ``None`` in the
config and are resolved by properties, so ``config.replace(dim=...)`` never leaves a stale
derived value behind.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from glassformer.nn.attention import BACKENDS, Backend
from glassformer.utils.config import ConfigError, ConfigMixin

PosEncoding = Literal["learned", "rope"]
Norm = Literal["layernorm", "rmsnorm"]
GPTActivation = Literal["gelu_tanh", "gelu", "relu", "silu", "swiglu", "geglu", "geglu_tanh"]

GATED_ACTIVATIONS = ("swiglu", "geglu", "geglu_tanh")


def llama_ffn_hidden(dim: int, multiple_of: int = 64) -> int:
    """The Llama rule for a gated FFN: ``8/3 * dim`` rounded up to ``multiple_of``.

    A gated FFN has three matrices instead of two; ``2/3 * 4 * dim`` keeps its parameter count
    equal to a plain FFN of width ``4 * dim``. Llama rounds to 256; 64 suits small models too.
    """
    hidden = int(2 * 4 * dim / 3)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


@dataclass
class GPTConfig(ConfigMixin):
    """A decoder-only language model. Defaults are GPT-2 small (124M)."""

    vocab_size: int = 50257
    max_seq_len: int = 1024  # the longest context the model accepts (past + new tokens)
    n_layers: int = 12
    n_heads: int = 12
    n_kv_heads: int | None = None  # key/value heads; None = n_heads (plain multi-head attention)
    dim: int = 768
    head_dim: int | None = None  # None = dim // n_heads
    ffn_dim: int | None = None  # None = 4 * dim, or the Llama 8/3 rule for gated FFNs
    pos_encoding: PosEncoding = "learned"
    rope_theta: float = 10000.0
    norm: Norm = "layernorm"
    norm_eps: float = 1e-5
    activation: GPTActivation = "gelu_tanh"
    bias: bool = True  # biases in every linear layer and LayerNorm (GPT-2); Llama has none
    tie_embeddings: bool = True  # lm_head shares the token embedding matrix
    dropout: float = 0.0  # on embeddings, attention weights and residual branches
    attn_backend: Backend = "sdpa"
    init_std: float = 0.02
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    # Gemma 3's choices (all off by default; see the module docstring's second table)
    qk_norm: bool = False  # RMSNorm over each query and key head before RoPE
    post_norms: bool = False  # a norm on each sublayer's output too, before the residual add
    norm_offset: float = 0.0  # RMSNorm scales by (norm_offset + weight), in float32; Gemma: 1.0
    scale_embeddings: bool = False  # token embeddings times sqrt(dim)
    query_pre_attn_scalar: float | None = None  # scores scaled by this ** -0.5; None: head_size
    sliding_window: int | None = None  # local layers see only the last sliding_window keys
    global_every: int | None = None  # with sliding_window: layers global_every-1, 2*global_every-1, ... are global
    rope_local_theta: float | None = None  # RoPE base of the local layers; None: rope_theta
    logit_softcap: float | None = None  # logits = cap * tanh(logits / cap); Gemma 2: 30, Gemma 3: none

    def __post_init__(self) -> None:
        for name in ("vocab_size", "max_seq_len", "n_layers", "n_heads", "dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"GPTConfig.{name} must be a positive integer, got {value!r}")
        for name in ("n_kv_heads", "head_dim", "ffn_dim"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
                raise ConfigError(f"GPTConfig.{name} must be a positive integer or None, got {value!r}")
        if self.head_dim is None and self.dim % self.n_heads != 0:
            raise ConfigError(
                f"GPTConfig.dim={self.dim} is not divisible by n_heads={self.n_heads}; "
                "change one of them or set head_dim"
            )
        if self.n_heads % self.kv_heads != 0:
            raise ConfigError(
                f"GPTConfig.n_heads={self.n_heads} must be a multiple of n_kv_heads={self.n_kv_heads} "
                "(each key/value head serves a whole group of query heads)"
            )
        self._check_choice("pos_encoding", ("learned", "rope"))
        self._check_choice("norm", ("layernorm", "rmsnorm"))
        self._check_choice("activation", ("gelu_tanh", "gelu", "relu", "silu", "swiglu", "geglu", "geglu_tanh"))
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
        self._check_gemma_fields()

    def _check_gemma_fields(self) -> None:
        for name in ("sliding_window", "global_every"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
                raise ConfigError(f"GPTConfig.{name} must be a positive integer or None, got {value!r}")
        if self.global_every is not None and self.sliding_window is None:
            raise ConfigError(
                f"GPTConfig.global_every={self.global_every} interleaves global layers with sliding-window "
                "ones; set sliding_window too (or leave global_every None)"
            )
        for name in ("query_pre_attn_scalar", "rope_local_theta", "logit_softcap"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"GPTConfig.{name} must be positive or None, got {value!r}")
        if (self.qk_norm or self.norm_offset) and self.norm != "rmsnorm":
            raise ConfigError(
                f"GPTConfig: qk_norm and norm_offset are RMSNorm options, but norm={self.norm!r}; set norm='rmsnorm'"
            )
        if self.rope_local_theta is not None and (self.pos_encoding != "rope" or self.sliding_window is None):
            raise ConfigError(
                "GPTConfig.rope_local_theta is the RoPE base of sliding-window layers: it needs "
                "pos_encoding='rope' and sliding_window"
            )

    def _check_choice(self, name: str, choices: tuple[str, ...]) -> None:
        if getattr(self, name) not in choices:
            raise ConfigError(f"GPTConfig.{name}={getattr(self, name)!r}: expected one of {list(choices)}")

    @property
    def kv_heads(self) -> int:
        return self.n_heads if self.n_kv_heads is None else self.n_kv_heads

    @property
    def head_size(self) -> int:
        return self.dim // self.n_heads if self.head_dim is None else self.head_dim

    def is_local(self, layer: int) -> bool:
        """Whether ``layer`` attends within ``sliding_window`` (True) or to every earlier key."""
        if self.sliding_window is None:
            return False
        return self.global_every is None or (layer + 1) % self.global_every != 0

    @property
    def gemma_blocks(self) -> bool:
        """Whether a Gemma option is on, so the model needs ``blocks.GemmaStack`` (per-layer masks, four norms)."""
        return self.qk_norm or self.post_norms or bool(self.norm_offset) or self.sliding_window is not None

    @property
    def attn_scale(self) -> float | None:
        """The factor on ``q . k``; None: attention's default ``head_size ** -0.5``."""
        return None if self.query_pre_attn_scalar is None else self.query_pre_attn_scalar**-0.5

    @property
    def ffn_size(self) -> int:
        if self.ffn_dim is not None:
            return self.ffn_dim
        return llama_ffn_hidden(self.dim) if self.activation in GATED_ACTIVATIONS else 4 * self.dim


# --------------------------------------------------------------------------------------------
# Presets. Each returns a fresh config; the package __init__ registers them (with -tiny twins).

LLAMA_STYLE = dict(pos_encoding="rope", norm="rmsnorm", activation="swiglu", bias=False)


def gpt2() -> GPTConfig:
    """GPT-2 small, 124M parameters (Radford et al. 2019)."""
    return GPTConfig(bos_token_id=50256, eos_token_id=50256)


def gpt2_medium() -> GPTConfig:
    """GPT-2 medium, 350M parameters."""
    return GPTConfig(n_layers=24, n_heads=16, dim=1024, bos_token_id=50256, eos_token_id=50256)


def smollm2_135m() -> GPTConfig:
    """SmolLM2-135M (Hugging Face 2024): Llama architecture, 30 layers, GQA 9 query / 3 kv heads."""
    return GPTConfig(
        vocab_size=49152, max_seq_len=8192, n_layers=30, n_heads=9, n_kv_heads=3, dim=576,
        ffn_dim=1536, rope_theta=100000.0, norm_eps=1e-5, tie_embeddings=True,
        bos_token_id=1, eos_token_id=2, **LLAMA_STYLE,
    )


GEMMA3_STYLE = dict(
    pos_encoding="rope", norm="rmsnorm", activation="geglu_tanh", bias=False, qk_norm=True, post_norms=True,
    norm_offset=1.0, scale_embeddings=True,
)  # fmt: skip


def gemma3_270m() -> GPTConfig:
    """Gemma 3 270M (Google 2025): 18 layers of width 640, 4 query heads of 256 sharing one kv head.

    Five of every six layers attend within 512 tokens with RoPE base 10k, the sixth to the whole
    context with base 1M; the 262k-token vocabulary makes the tied embedding 170M of the 270M.
    Values from the GGUF header and transformers' ``Gemma3TextConfig`` (window, pattern, bases,
    ``query_pre_attn_scalar``; no soft-capping).
    """
    return GPTConfig(
        vocab_size=262144, max_seq_len=32768, n_layers=18, n_heads=4, n_kv_heads=1, dim=640, head_dim=256,
        ffn_dim=2048, rope_theta=1_000_000.0, rope_local_theta=10_000.0, norm_eps=1e-6, tie_embeddings=True,
        query_pre_attn_scalar=256.0, sliding_window=512, global_every=6, bos_token_id=2, eos_token_id=1,
        **GEMMA3_STYLE,
    )  # fmt: skip


def shakespeare_char() -> GPTConfig:
    """nanoGPT's README CPU config for character-level Tiny Shakespeare (65 characters).

    4 layers, 4 heads, width 128, context 64, no dropout, and no biases (nanoGPT's default
    ``bias=False``): GPT-2's architecture at toy size, 0.80M parameters.
    """
    return GPTConfig(vocab_size=65, max_seq_len=64, n_layers=4, n_heads=4, dim=128, dropout=0.0, bias=False)


def shakespeare_char_rope() -> GPTConfig:
    """:func:`shakespeare_char` with rotary positions and a feed-forward of 2x the width (not 4x).

    Within nanoGPT's budget (2,000 steps of 12 x 64 characters) this learns faster and costs less:
    RoPE lets every layer see relative offsets directly, and the narrower FFN removes a third of
    the FLOPs per step (0.53M parameters instead of 0.80M). ``bench/gpt_train.py`` trains it.
    """
    return shakespeare_char().replace(pos_encoding="rope", ffn_dim=256)


def shakespeare_char_llama() -> GPTConfig:
    """The same budget as :func:`shakespeare_char` with Llama's choices: RoPE, RMSNorm, SwiGLU, no biases."""
    return GPTConfig(vocab_size=65, max_seq_len=64, n_layers=4, n_heads=4, dim=128, dropout=0.0, **LLAMA_STYLE)


def pydoc_char() -> GPTConfig:
    """Character level on the embedded corpus (Python's own help text, about 100 characters)."""
    return GPTConfig(vocab_size=128, max_seq_len=128, n_layers=4, n_heads=4, dim=128, dropout=0.0)


def tiny(config: GPTConfig, vocab_size: int = 96) -> GPTConfig:
    """A toy twin of a preset: same architecture choices, 2 layers, width 32, context 32."""
    n_heads = 4 if config.kv_heads < config.n_heads else 2
    n_kv_heads = 2 if config.kv_heads < config.n_heads else None
    # a window shorter than the context, and (with two layers) one local and one global layer
    window = {} if config.sliding_window is None else {"sliding_window": 8, "global_every": 2 if config.global_every else None}
    return config.replace(
        vocab_size=vocab_size, max_seq_len=32, n_layers=2, n_heads=n_heads, n_kv_heads=n_kv_heads, dim=32,
        head_dim=None, ffn_dim=None, bos_token_id=None, eos_token_id=None,
        query_pre_attn_scalar=None if config.query_pre_attn_scalar is None else 12.0, **window,
    )
