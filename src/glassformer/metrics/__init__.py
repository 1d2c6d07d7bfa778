"""Evaluation metrics that compare a model's text with a reference: word error rate (``wer``) and
corpus BLEU (``corpus_bleu``, the 13a conventions sacreBLEU reports)."""

from glassformer.metrics.bleu import BLEUScore, corpus_bleu, tokenize_13a
from glassformer.metrics.wer import edit_distance, normalize_text, normalized_wer, number_words, wer

__all__ = ["BLEUScore", "corpus_bleu", "tokenize_13a", "edit_distance", "normalize_text", "normalized_wer", "number_words", "wer"]
