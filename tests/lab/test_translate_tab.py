"""The translate tab against the library it wraps (a tiny random en-de Transformer), its caps, and
how the lab finds translation runs."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from glassformer.lab import translate_tab
from glassformer.lab.catalog import TINY_TRANSLATOR, entry_for, folder_kind, trained_translators
from glassformer.lab.limits import LabInputError, Limits
from glassformer.translation import translate
from glassformer.viz.alignment import translation_attention

LINES = "A man rides a bike.\nTwo dogs play in the snow."


@pytest.mark.parametrize("beams", [1, 3])
def test_the_tab_says_what_translate_says(ctx, beams):
    out = translate_tab.translate_text(ctx, TINY_TRANSLATOR, LINES, "en-de", beams, 1.2)
    loaded = ctx.catalog.get(TINY_TRANSLATOR, "translator")
    options = dict(direction="en-de", directions=loaded.directions, strategy="greedy" if beams == 1 else "beam",
                   num_beams=beams, length_penalty=1.2, cpu_kernels=False,
                   max_new_tokens=min(ctx.limits.max_new_tokens, loaded.model.max_seq_len))  # fmt: skip
    assert out.text.split("\n") == translate(loaded.model, loaded.tokenizer, LINES.split("\n"), **options)
    first = translation_attention(loaded.model, loaded.tokenizer, LINES.split("\n")[0], **options)
    assert out.text.split("\n")[0] == first.translation
    assert Image.open(out.picture).size[0] > 100
    assert "2 sentence(s)" in out.summary and ("greedy" if beams == 1 else "3 beams") in out.summary


def test_a_direction_the_run_never_learned_is_refused(ctx):
    with pytest.raises(ValueError, match="trained to translate en-de only, not de-en"):
        translate_tab.translate_text(ctx, TINY_TRANSLATOR, "Ein Mann.", "de-en")
    with pytest.raises(LabInputError, match="choose one of en-de, de-en"):
        translate_tab.translate_text(ctx, TINY_TRANSLATOR, "A man.", "en-fr")


def test_caps_on_text_lines_beams_and_length_penalty(ctx):
    from glassformer.lab.app import new_context

    small = new_context(ctx.catalog, Limits(max_sentences=2), workdir=ctx.workdir)
    with pytest.raises(LabInputError, match="3 lines; the lab translates at most 2"):
        translate_tab.translate_text(small, TINY_TRANSLATOR, "a\nb\nc")
    with pytest.raises(LabInputError, match="empty"):
        translate_tab.translate_text(ctx, TINY_TRANSLATOR, " \n ")
    with pytest.raises(LabInputError, match="1,000,000 characters"):
        translate_tab.translate_text(ctx, TINY_TRANSLATOR, "x" * 1_000_000)
    with pytest.raises(LabInputError, match="beam size must be a whole number from 1"):
        translate_tab.translate_text(ctx, TINY_TRANSLATOR, "A man.", "en-de", 9)
    with pytest.raises(LabInputError, match="length penalty must be a number from 0 to 3"):
        translate_tab.translate_text(ctx, TINY_TRANSLATOR, "A man.", "en-de", 2, 7.5)
    with pytest.raises(KeyError, match="no model named 'tiny-gpt'"):
        translate_tab.translate_text(ctx, "tiny-gpt", "A man.")  # a decoder is not a translator


def test_translation_runs_under_out_are_found_and_classified(ctx, tmp_path):
    run = ctx.catalog.entry(TINY_TRANSLATOR).load  # the tiny run's best/ folder, through its loader
    assert run().directions == ("en-de",)
    source = next(p for p in ctx.workdir.rglob("translation.json")).parent
    (tmp_path / "bench_seq2seq").mkdir()
    target = tmp_path / "bench_seq2seq" / "transformer_en_de"
    import shutil

    shutil.copytree(source, target)
    (tmp_path / "stray").mkdir()
    (tmp_path / "stray" / "translation.json").write_text(json.dumps({"directions": ["en-de"]}))  # no best/: skipped
    assert trained_translators(tmp_path) == [target / "best"]
    assert folder_kind(target / "best") == "translator"
    assert entry_for(target / "best").name == "transformer_en_de/best"
