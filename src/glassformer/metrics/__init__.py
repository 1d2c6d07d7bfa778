"""Evaluation metrics that compare a model's text with a reference: word error rate (``wer``) and
corpus BLEU (``corpus_bleu``, the 13a conventions sacreBLEU reports); and the Frechet distance
between feature sets (``frechet_distance``) that scores generated images; recall@k of retrieval
when captions repeat (``recall_at_k``, ``chance_recall_at_k``, ``retrieval_table``)."""

from glassformer.metrics.bleu import BLEUScore, corpus_bleu, tokenize_13a
from glassformer.metrics.frechet import feature_stats, frechet_distance
from glassformer.metrics.retrieval import chance_recall_at_k, recall_at_k, retrieval_table
from glassformer.metrics.wer import edit_distance, normalize_text, normalized_wer, number_words, wer

__all__ = ["BLEUScore", "corpus_bleu", "tokenize_13a", "feature_stats", "frechet_distance", "chance_recall_at_k", "recall_at_k", "retrieval_table", "edit_distance", "normalize_text", "normalized_wer", "number_words", "wer"]
