"""Evaluation metrics that compare a model's text with a reference: word error rate (``wer``)."""

from glassformer.metrics.wer import edit_distance, normalize_text, normalized_wer, number_words, wer

__all__ = ["edit_distance", "normalize_text", "normalized_wer", "number_words", "wer"]
