"""The cross-attention alignment of encoder-decoders and the three-kind head view (glassformer.viz.alignment)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch

from glassformer import registry
from glassformer.cli import main
from glassformer.data import multi30k as m30k
from glassformer.generate import generate
from glassformer.models.transformer.data import transformer_layout
from glassformer.viz.alignment import (
    alignment_matrix,
    attention_kinds,
    plot_alignment,
    seq2seq_attention,
    translation_attention,
)
from glassformer.viz.attention import AttentionKind, write_kinds_head_view_html

CORPUS = [
    "A man is riding a bike down the street.",
    "Two dogs are playing in the snow.",
    "Ein Mann fährt mit dem Fahrrad die Straße hinunter.",
    "Zwei Hunde spielen im Schnee.",
] * 4
TEXT = "A dog is riding a bike."
SEQ2SEQ = ("transformer-base-tiny", "t5-small-tiny", "bart-base-tiny")


@pytest.fixture(scope="module")
def transformer_bpe():
    """A byte-level BPE with the Transformer's specials (<pad> 0, <s> 1, </s> 2, <unk> 3), as Multi30k's."""
    config = registry.get("transformer-base-tiny").make_config()
    layout = transformer_layout(config)
    merges = m30k.learn_merges(CORPUS, 40).merges  # every id is a token: no unused rows to draw
    return m30k.assemble_tokenizer(merges, layout, m30k.minimum_vocab_size(layout) + len(merges))


def _tiny(preset: str, vocab_size: int | None = None) -> torch.nn.Module:
    config = registry.get(preset).make_config()
    if vocab_size is not None:
        config = config.replace(vocab_size=vocab_size, tgt_vocab_size=vocab_size)
    torch.manual_seed(0)
    return registry.get(preset).build(config).eval()


@pytest.mark.parametrize("preset", SEQ2SEQ)
def test_every_kind_has_its_shape_and_rows_sum_to_one(preset):
    model = _tiny(preset)
    source, target = [5, 9, 17, 33, 12, 40, 7], [8, 21, 30, 11, 6]
    found = seq2seq_attention(model, source, target)
    c = model.config
    s, t = len(source), len(target)
    assert found.encoder.shape == (c.n_layers, c.n_heads, s, s)
    assert found.decoder.shape == (c.n_decoder_layers, c.n_heads, t, t)
    assert found.cross.shape == (c.n_decoder_layers, c.n_heads, t, s)
    for weights in (found.encoder, found.decoder, found.cross):
        np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
    assert np.triu(found.decoder, k=1).max() == 0  # the decoder cannot look ahead
    assert found.decoder_tokens == [str(model.decoder_start_token_id), *map(str, target[:-1])]
    assert found.target_tokens == [str(i) for i in target] and found.source_tokens == [str(i) for i in source]
    # the same numbers the model's own teacher-forced forward gives for these decoder inputs
    src, dec = torch.tensor([source]), torch.tensor([[model.decoder_start_token_id, *target[:-1]]])
    names = ("src", "src_attention_mask", "tgt") if preset.startswith("transformer") else (
        "input_ids", "attention_mask", "decoder_input_ids")  # fmt: skip
    with torch.no_grad():
        out = model(**dict(zip(names, (src, torch.ones_like(src), dec))), return_weights=True)
    for layer, weights in enumerate(out.cross_attentions):
        np.testing.assert_allclose(found.cross[layer], weights[0].numpy(), atol=1e-6)
        np.testing.assert_allclose(found.decoder[layer], out.attentions[layer][0].numpy(), atol=1e-6)


def test_alignment_matrix_averages_the_heads_of_a_layer():
    rng = np.random.default_rng(0)
    cross = rng.dirichlet(np.ones(6), size=(3, 4, 5))  # (layers, heads, target, source), rows sum to 1
    np.testing.assert_allclose(alignment_matrix(cross, 1), cross[1].mean(0))
    np.testing.assert_allclose(alignment_matrix(cross), cross[2].mean(0))
    np.testing.assert_allclose(alignment_matrix(cross, 0, head=3), cross[0, 3])
    np.testing.assert_allclose(alignment_matrix(cross, -2).sum(-1), 1.0)
    with pytest.raises(ValueError, match="layer=3 is out of range: the decoder has 3 layers"):
        alignment_matrix(cross, 3)
    with pytest.raises(ValueError, match="head=4 is out of range"):
        alignment_matrix(cross, 0, head=4)
    with pytest.raises(ValueError, match=r"\(layers, heads, target, source\)"):
        alignment_matrix(cross[0])


def test_the_picture_is_written_with_one_panel_per_head(tmp_path, transformer_bpe):
    model = _tiny("transformer-base-tiny", transformer_bpe.vocab_size)
    found = translation_attention(model, transformer_bpe, TEXT, strategy="greedy", max_new_tokens=8)
    mean = mpimg.imread(plot_alignment(found, tmp_path / "mean.png"))
    heads = mpimg.imread(plot_alignment(found, tmp_path / "heads.png", layer=0, per_head=True))
    assert mean.shape[0] > 100 and mean.shape[1] > 100
    assert heads.shape[0] == mean.shape[0]
    assert heads.shape[1] > 4 * mean.shape[1]  # the mean and the 4 heads side by side
    found.target_tokens = found.target_tokens[:-1]
    with pytest.raises(ValueError, match="target and .* source tokens were given"):
        plot_alignment(found, tmp_path / "bad.png")


def test_translation_attention_follows_the_decoded_tokens(transformer_bpe):
    model = _tiny("transformer-base-tiny", transformer_bpe.vocab_size)
    found = translation_attention(model, transformer_bpe, TEXT, strategy="greedy", max_new_tokens=6)
    source = transformer_bpe.encode(TEXT, add_special_tokens=True)
    decoded = generate(
        model, [source], strategy="greedy", max_new_tokens=6, stop_token_ids=(2,), pad_token_id=0
    )
    target = decoded.tokens[0]
    assert found.source_tokens == [transformer_bpe.id_to_token(i) for i in source]
    assert found.source_tokens[-1] == "</s>"
    assert found.target_tokens == [transformer_bpe.id_to_token(i) for i in target]
    assert found.decoder_tokens[0] == "<s>" and found.cross.shape[2:] == (len(target), len(source))
    assert found.translation == transformer_bpe.decode(target, skip_special_tokens=True).strip()
    with pytest.raises(ValueError, match="empty"):
        translation_attention(model, transformer_bpe, "  ")


def test_head_view_holds_encoder_decoder_and_cross_heads(tmp_path):
    found = seq2seq_attention(_tiny("bart-base-tiny"), [0, 9, 17, 33, 2], [0, 21, 30, 2])
    page = write_kinds_head_view_html(attention_kinds(found), tmp_path / "view.html").read_text(
        encoding="utf-8"
    )
    data = json.loads(re.findall(r'id="attention-data">(.*?)</script>', page, re.S)[0])
    views = {v["name"]: v for v in data["views"]}
    assert len(views) == 3
    cross = views["cross-attention (target reads source)"]
    assert cross["queries"] == found.decoder_tokens and cross["keys"] == found.source_tokens
    np.testing.assert_allclose(np.array(cross["attention"]), found.cross, atol=1e-4)
    encoder = views["encoder self-attention"]
    assert np.array(encoder["attention"]).shape == found.encoder.shape
    assert encoder["queries"] == encoder["keys"] == found.source_tokens
    with pytest.raises(ValueError, match="4 queries x 5 keys but 4 query and 4 key tokens"):
        bad = AttentionKind("cross", [found.cross[0][None]], found.decoder_tokens, found.decoder_tokens)
        write_kinds_head_view_html([bad], tmp_path / "bad.html")
    with pytest.raises(ValueError, match="distinct names"):
        write_kinds_head_view_html([bad, bad], tmp_path / "bad.html")


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_the_multi_kind_script_runs(tmp_path):
    """The page's script, run under node with a stub DOM: it builds every view without an error."""
    found = seq2seq_attention(_tiny("t5-small-tiny"), [5, 9, 17, 1], [8, 21, 1])
    page = write_kinds_head_view_html(attention_kinds(found), tmp_path / "view.html").read_text(
        encoding="utf-8"
    )
    data = re.findall(r'id="attention-data">(.*?)</script>', page, re.S)[0]
    script = re.findall(r"<script>(.*?)</script>", page, re.S)[0]
    stub = """
    function node() { return { style: {}, children: [], listeners: {}, setAttribute: function () {},
      appendChild: function (c) { this.children.push(c); this.firstChild = this.children[0]; },
      removeChild: function () { this.children.shift(); this.firstChild = this.children[0]; },
      addEventListener: function (k, f) { this.listeners[k] = f; },
      classList: { toggle: function () {} } }; }
    var nodes = {};
    var document = { createElement: node, createElementNS: node, getElementById: function (id) {
      if (!nodes[id]) { nodes[id] = node(); nodes[id].textContent = DATA; } return nodes[id]; } };
    """
    js = tmp_path / "view.js"
    choose_all = "for (var i = 0; i < 3; i++) { nodes.kind.value = i; nodes.kind.listeners.change(); }"
    js.write_text(stub.replace("DATA", json.dumps(data)) + script + choose_all, encoding="utf-8")
    subprocess.run(["node", str(js)], check=True, capture_output=True)


@pytest.mark.parametrize("preset", ["gpt2-tiny", "bert-mini-tiny"])
def test_a_model_without_cross_attention_is_refused(preset):
    with pytest.raises(ValueError, match="not an encoder-decoder.*transformer, t5, bart"):
        seq2seq_attention(_tiny(preset), [1, 2, 3], [4, 5])


def test_an_audio_encoder_is_refused():
    with pytest.raises(ValueError, match="encodes audio features"):
        seq2seq_attention(_tiny("whisper-tiny.en-tiny"), [1, 2, 3], [4, 5])


def test_the_attention_verb_on_an_encoder_decoder(tmp_path, transformer_bpe, capsys):
    folder = tmp_path / "ckpt"
    _tiny("transformer-base-tiny", transformer_bpe.vocab_size).save(folder)
    transformer_bpe.save(folder)
    out = tmp_path / "out"
    assert main(["attention", str(folder), TEXT, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "translation: " in printed and "2 encoder and 2 decoder layers x 4 heads" in printed
    assert mpimg.imread(out / "alignment_layer1.png").shape[1] > 100
    page = (out / "head_view.html").read_text(encoding="utf-8")
    assert page.count('"name":') == 3 and '"keys":' in page
    assert main(["attention", str(folder), TEXT, "--out", str(out), "--layer", "0"]) == 0
    assert (out / "alignment_layer0.png").is_file()
    assert main(["attention", str(folder), TEXT, "--out", str(out), "--layer", "2"]) == 2
    assert "--layer 2 is out of range: the decoder has 2 layers" in capsys.readouterr().err
