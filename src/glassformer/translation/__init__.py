"""Translation with the encoder-decoder families (Transformer, T5, BART) and its BLEU score on Multi30k."""

from glassformer.translation.translate import (
    BLEU_SIGNATURE,
    BleuReport,
    Translator,
    load_translator,
    score_bleu,
    score_checkpoint,
    translate,
)
from glassformer.translation.tuning import LengthPenaltySweep, sweep_length_penalty

__all__ = [
    "BLEU_SIGNATURE", "BleuReport", "LengthPenaltySweep", "Translator", "load_translator", "score_bleu",
    "score_checkpoint", "sweep_length_penalty", "translate",
]  # fmt: skip
