"""The lab's caps on what one request may ask for, enforced on the server.

A browser's ``maxlength`` is a courtesy: anyone can post to the queue directly. So every tab
function checks its inputs here before any model runs, and a refusal names the cap and the way
round it (send less, or restart the lab with a higher ``--max-chars``).
"""

from __future__ import annotations

from dataclasses import dataclass


class LabInputError(ValueError):
    """An input the lab refuses (too long, empty, out of range); the tab shows its message."""


@dataclass(frozen=True)
class Limits:
    """Per-request caps. ``concurrency``: requests the queue runs at once (the rest wait)."""

    max_chars: int = 4000
    max_new_tokens: int = 256
    max_upload_bytes: int = 1_000_000
    max_upload_lines: int = 200
    max_audio_seconds: int = 120  # a recording to transcribe: 2 min of tiny.en is a few seconds of CPU
    max_audio_bytes: int = 20_000_000  # 2 min of 44.1-kHz 16-bit stereo WAV is 21 MB; FLAC about half
    max_sentences: int = 32  # lines one translate request may send
    max_images: int = 16  # images one generate request may ask for
    max_unet_calls: int = 20_000  # images x sampler steps (x 2 with guidance): 16 DDPM-1000 images fit
    concurrency: int = 2
    queue_size: int = 64

    def __post_init__(self) -> None:
        for name in ("max_chars", "max_new_tokens", "max_upload_bytes", "max_upload_lines", "max_audio_seconds",
                     "max_audio_bytes", "max_sentences", "max_images", "max_unet_calls", "concurrency", "queue_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Limits.{name} must be a positive integer, got {value!r}")

    def text(self, value: object, what: str = "text") -> str:
        """``value`` as a non-empty string of at most ``max_chars`` characters, else a clear refusal."""
        if not isinstance(value, str):
            raise LabInputError(f"the {what} must be text, got {type(value).__name__}")
        if len(value) > self.max_chars:
            raise LabInputError(
                f"the {what} is {len(value):,} characters; the lab takes at most {self.max_chars:,}. "
                "Send a shorter one (or start the lab with a higher --max-chars)"
            )
        if not value.strip():
            raise LabInputError(f"the {what} is empty; type something first")
        return value

    def new_tokens(self, value: object) -> int:
        """A generation length within ``1..max_new_tokens``."""
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= self.max_new_tokens:
            raise LabInputError(
                f"max new tokens must be a whole number from 1 to {self.max_new_tokens}, got {value!r} "
                "(start the lab with a higher --max-new-tokens to allow more)"
            )
        return value

    def index(self, value: object, size: int, what: str) -> int:
        """An index in ``0..size-1`` (a layer, a head), as sliders send floats."""
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < size:
            raise LabInputError(f"{what} {value!r} is out of range: this model has {size} (0..{size - 1})")
        return value


MAX_BEAMS = 8  # beam search past 8 beams costs more than it changes a translation or a transcript


def beam_count(value: object) -> int:
    """A beam size from ``1..MAX_BEAMS`` (sliders send floats); 1 means greedy decoding."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_BEAMS:
        raise LabInputError(f"beam size must be a whole number from 1 (greedy) to {MAX_BEAMS}, got {value!r}")
    return value
