"""Whisper: an encoder-decoder speech recogniser (log-mel features in, transcript tokens out).

``FAMILY`` declares the presets (``whisper-tiny.en``, the real tiny English model's shape, and
``whisper-digits``, a mini recogniser trained here, each with a ``-tiny`` twin) and that
``generate`` drives the model as an encoder-decoder whose source is ``input_features``.
``hf.py`` reads and writes transformers' ``WhisperForConditionalGeneration`` layout.
"""

from __future__ import annotations

import torch
from torch import Tensor

from glassformer.models.base import IGNORE_INDEX
from glassformer.models.whisper import config as _cfg
from glassformer.models.whisper.config import DIGITS_CHARS, DIGITS_SPECIALS, WhisperConfig
from glassformer.models.whisper.model import Whisper, shift_right, whisper_sinusoids
from glassformer.registry import Family, Format

__all__ = [
    "DIGITS_CHARS", "DIGITS_SPECIALS", "FAMILY", "Whisper", "WhisperConfig", "example_batch", "shift_right",
    "whisper_sinusoids",
]  # fmt: skip


def example_batch(config: WhisperConfig, batch_size: int = 2, tgt_len: int = 6) -> dict[str, Tensor]:
    """Random features of the full window (``max_frames``: what transformers requires) and labels.

    Labels are ordinary tokens ending in ``eos_token_id``; the last row is one token shorter
    (``IGNORE_INDEX`` after its end), as a data loader pads transcripts of different lengths.
    """
    g = torch.Generator().manual_seed(0)
    features = torch.randn(batch_size, config.n_mels, config.max_frames, generator=g)
    specials = {config.pad_token_id, config.bos_token_id, config.eos_token_id, config.decoder_start_token_id}
    ordinary = torch.tensor([i for i in range(config.vocab_size) if i not in specials])
    tgt_len = min(tgt_len, config.max_seq_len)
    labels = ordinary[torch.randint(0, len(ordinary), (batch_size, tgt_len), generator=g)]
    labels[:, -1] = config.eos_token_id
    if batch_size > 1 and tgt_len > 1:
        labels[-1, -2], labels[-1, -1] = config.eos_token_id, IGNORE_INDEX
    decoder_input_ids = shift_right(labels, config.decoder_start_token_id, config.pad_token_id)
    return {"input_features": features, "decoder_input_ids": decoder_input_ids, "labels": labels}


FAMILY = Family(
    name="whisper",
    model=Whisper,
    config=WhisperConfig,
    presets={
        "whisper-tiny.en": (
            _cfg.whisper_tiny_en, "Whisper tiny.en (Radford et al. 2022): 4+4 pre-norm layers, 384 wide, 6 heads, 80 mels",
        ),
        "whisper-digits": (
            _cfg.whisper_digits, "mini Whisper for spoken digit strings: 2+2 layers, 192 wide, characters, ~2.2M params",
        ),
    },
    tiny=_cfg.tiny,
    example_batch=example_batch,
    formats=(
        Format("huggingface", load="glassformer.models.whisper.hf:from_pretrained",
               save="glassformer.models.whisper.hf:save_pretrained",
               exports="glassformer.models.whisper.hf:architecture", model_types=("whisper",)),
    ),  # fmt: skip
    generation="encoder-decoder",
    cli="glassformer.models.whisper.cli",
    data={"whisper-digits": "glassformer.data.speech:build_digits"},
)
