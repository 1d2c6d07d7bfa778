"""Our BERT against Hugging Face transformers on random weights: both directions, every head."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

transformers = pytest.importorskip("transformers")

from glassformer.models.bert.hf import from_pretrained, save_pretrained  # noqa: E402
from glassformer.models.bert.model import Bert  # noqa: E402

SMALL = dict(
    vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
    max_position_embeddings=40, type_vocab_size=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
)


def _batch(vocab: int = 99, pad: int = 0, generator_seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(generator_seed)
    ids = torch.randint(pad + 1, vocab, (3, 11), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0  # right padding on one row
    mask[2, 4:] = 0
    ids[mask == 0] = pad
    types = torch.zeros_like(ids)
    types[:, 5:] = 1
    return dict(input_ids=ids, attention_mask=mask, token_type_ids=types)


def _hf_model(cls_name: str, tmp_path, **extra):
    torch.manual_seed(0)
    config = transformers.BertConfig(**SMALL, **extra)
    hf = getattr(transformers, cls_name)(config).eval()
    with torch.no_grad():  # make the MLM bias and LayerNorms non-trivial so a mix-up would show
        for name, p in hf.named_parameters():
            if name.endswith("bias") or "LayerNorm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    hf.save_pretrained(tmp_path / "hf")
    return hf


@pytest.mark.parametrize(
    ("cls_name", "extra"),
    [
        ("BertModel", {}),
        ("BertForMaskedLM", {}),
        ("BertForSequenceClassification", {"num_labels": 3}),
        ("BertForTokenClassification", {"num_labels": 5}),
    ],
)
def test_hf_to_ours_and_back(cls_name, extra, tmp_path):
    hf = _hf_model(cls_name, tmp_path, **extra)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every weight must find its place: no missing, no unused
        ours = from_pretrained(tmp_path / "hf").eval()
    assert isinstance(ours, Bert)
    batch = _batch()
    with torch.no_grad():
        ref = hf(**batch, output_hidden_states=True)
        out = ours(**batch)
    real = batch["attention_mask"].bool()  # hidden states at padded positions are meaningless
    torch.testing.assert_close(out.hidden_states[real], ref.hidden_states[-1][real], atol=1e-5, rtol=1e-5)
    if cls_name == "BertModel":
        torch.testing.assert_close(ours.pool(out.hidden_states), ref.pooler_output, atol=1e-5, rtol=1e-5)
    else:
        if cls_name == "BertForSequenceClassification":
            torch.testing.assert_close(out.logits, ref.logits, atol=1e-5, rtol=1e-5)
        else:
            torch.testing.assert_close(out.logits[real], ref.logits[real], atol=1e-5, rtol=1e-5)

    # export and read back with transformers: same numbers, and no weight left uninitialised
    save_pretrained(ours, tmp_path / "ours")
    arch = json.loads((tmp_path / "ours" / "config.json").read_text())["architectures"][0]
    assert arch == cls_name
    back, info = getattr(transformers, cls_name).from_pretrained(tmp_path / "ours", output_loading_info=True)
    assert not info["missing_keys"], info
    back.eval()
    with torch.no_grad():
        again = back(**batch, output_hidden_states=True)
    torch.testing.assert_close(again.hidden_states[-1][real], ref.hidden_states[-1][real], atol=1e-5, rtol=1e-5)
    if cls_name != "BertModel":
        torch.testing.assert_close(again.logits, ref.logits, atol=1e-5, rtol=1e-5)


def test_masked_lm_loss_matches(tmp_path):
    hf = _hf_model("BertForMaskedLM", tmp_path)
    ours = from_pretrained(tmp_path / "hf").eval()
    batch = _batch()
    labels = torch.full_like(batch["input_ids"], -100)
    labels[:, 2] = batch["input_ids"][:, 2]
    labels[0, 6] = 5
    with torch.no_grad():
        ref = hf(**batch, labels=labels)
        out = ours(**batch, labels=labels)
    torch.testing.assert_close(out.loss, ref.loss, atol=1e-5, rtol=1e-5)
    assert out.logits.shape == (4, 99)  # only the labelled positions are scored


def test_roberta_style_positions_match(tmp_path):
    torch.manual_seed(0)
    config = transformers.RobertaConfig(**{**SMALL, "type_vocab_size": 1, "max_position_embeddings": 42}, pad_token_id=1)
    hf = transformers.RobertaForMaskedLM(config).eval()
    hf.save_pretrained(tmp_path / "hf")
    ours = from_pretrained(tmp_path / "hf").eval()
    assert ours.config.position_offset == 2 and ours.config.max_tokens == 40
    batch = _batch(pad=1)
    del batch["token_type_ids"]
    with torch.no_grad():
        ref = hf(**batch)
        out = ours(**batch)
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(out.logits[real], ref.logits[real], atol=1e-5, rtol=1e-5)


def test_attention_weights_match_transformers(tmp_path) -> None:
    """return_weights=True gives per-layer (B, H, T, T) weights (what the attention explainer draws)."""
    _hf_model("BertModel", tmp_path)
    hf = transformers.BertModel.from_pretrained(tmp_path / "hf", attn_implementation="eager").eval()
    ours = from_pretrained(tmp_path / "hf").eval()
    batch = _batch()
    with torch.no_grad():
        ref = hf(**batch, output_attentions=True)
        out = ours(**batch, return_weights=True)
    assert len(out.attentions) == 2 and out.attentions[0].shape == (3, 4, 11, 11)
    for a, b in zip(out.attentions, ref.attentions):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
