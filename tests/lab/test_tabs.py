"""The lab's tab functions against the library they wrap, without a browser (tiny random models)."""

from __future__ import annotations

import json
import shutil
import threading

import numpy as np
import pytest
from PIL import Image

from glassformer.generate.chat import ChatSession
from glassformer.lab import attention_tab, chat_tab, classify_tab, rag_tab
from glassformer.lab.catalog import (
    MINILM,
    SMOLLM2,
    TINY_BERT,
    TINY_CLASSIFIER,
    TINY_GPT,
    WHISPER_TINY_EN,
    Catalog,
    Entry,
    Loaded,
    default_catalog,
)
from glassformer.lab.limits import LabInputError, Limits
from glassformer.models.bert.finetune import classify
from glassformer.viz.attention import DPI, head_view_data, heatmap_figure_size, model_attention

TEXT = "the film was good"


def test_a_megabyte_prompt_is_refused_with_the_cap_named(ctx):
    config = chat_tab.settings(ctx, "greedy", 0.7, 0, 0.9, 8)
    with pytest.raises(LabInputError, match=r"1,000,000 characters; the lab takes at most 4,000"):
        next(chat_tab.reply(ctx, TINY_GPT, "x" * 1_000_000, [], config))
    with pytest.raises(LabInputError, match="empty"):
        attention_tab.explain(ctx, TINY_BERT, "   ", 0, None)
    with pytest.raises(LabInputError, match="from 1 to 64"):
        chat_tab.settings(ctx, "greedy", 0.7, 0, 0.9, 65)
    with pytest.raises(ValueError, match="max_chars must be a positive integer"):
        Limits(max_chars=0)


@pytest.mark.parametrize("name", [TINY_GPT, TINY_BERT])
def test_attention_matches_viz(ctx, name):
    out = attention_tab.explain(ctx, name, TEXT, 1, 0)
    loaded = ctx.catalog.get(name)
    attentions, tokens = model_attention(loaded.model, loaded.tokenizer, TEXT)
    width, height = heatmap_figure_size(1, 1, tokens)  # one layer, one head
    with Image.open(out.png) as picture:
        assert picture.size == (int(width * DPI), int(height * DPI))
    embedded = out.head_view.split('id="attention-data">', 1)[1].split("</script>", 1)[0]
    data = json.loads(embedded)
    assert data["tokens"] == tokens
    np.testing.assert_allclose(data["attention"], head_view_data(attentions, tokens)["attention"])
    assert out.summary.endswith("showing layer 1 head 0")
    assert 'sandbox="allow-scripts"' in attention_tab.iframe(out.head_view)


def test_attention_refuses_a_layer_or_head_out_of_range(ctx):
    with pytest.raises(LabInputError, match=r"layer 2 is out of range: this model has 2 \(0..1\)"):
        attention_tab.explain(ctx, TINY_GPT, TEXT, 2, None)
    with pytest.raises(LabInputError, match=r"head 9 is out of range"):
        attention_tab.explain(ctx, TINY_GPT, TEXT, 0, 9)


def test_chat_streams_the_library_reply_and_keeps_the_history(ctx):
    config = chat_tab.settings(ctx, "greedy", 0.7, 0, 0.9, 12)
    first = list(chat_tab.reply(ctx, TINY_GPT, "hello", [], config))
    assert len(first) > 2  # streamed: one update per piece
    assert [len(s) for s in first] == [2] * len(first)
    history = first[-1]
    second = list(chat_tab.reply(ctx, TINY_GPT, "and then?", history, config))[-1]

    loaded = ctx.catalog.get(TINY_GPT)
    session = ChatSession(loaded.model, loaded.tokenizer, template=loaded.chat_template, config=config)
    expected = ["".join(session.reply(m)).strip() for m in ("hello", "and then?")]
    assert [history[1]["content"], second[3]["content"]] == expected
    assert [m["role"] for m in second] == ["user", "assistant", "user", "assistant"]


def test_chat_takes_gradio_message_parts(ctx):
    parts = [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    assert chat_tab.history_messages(parts) == [{"role": "user", "content": "hi"}]


def test_chat_refuses_a_model_that_does_not_generate(ctx):
    config = chat_tab.settings(ctx, "greedy", 0.7, 0, 0.9, 8)
    with pytest.raises(KeyError, match="pick one of: tiny-gpt"):
        next(chat_tab.reply(ctx, TINY_BERT, "hi", [], config))


def test_classify_matches_the_library_and_reads_cls_attention(ctx):
    out = classify_tab.classify_text(ctx, TINY_CLASSIFIER, TEXT)
    loaded = ctx.catalog.get(TINY_CLASSIFIER)
    expected = classify(loaded.model, loaded.tokenizer, [TEXT])[0]
    assert out.label == expected["label"] and out.probabilities == expected["probabilities"]
    attentions, tokens = model_attention(loaded.model, loaded.tokenizer, TEXT)
    assert tokens[0] == "[CLS]" and [t for t, _ in out.cls_attention] == tokens
    np.testing.assert_allclose([w for _, w in out.cls_attention],
                               attentions[-1][0, :, 0].mean(0).numpy(), atol=1e-4)


def test_uploads_are_capped_and_must_be_the_labs_own(ctx, tmp_path):
    outside = tmp_path / "texts.txt"
    outside.write_text("good\n")
    with pytest.raises(LabInputError, match="not an upload of this lab"):
        classify_tab.read_upload(ctx, outside)
    upload = ctx.workdir / "uploads" / "texts.txt"
    upload.write_text("a good film\n\nan awful plot\n")
    rows = classify_tab.classify_file(ctx, TINY_CLASSIFIER, upload)
    assert [r[0] for r in rows] == ["a good film", "an awful plot"]
    upload.write_bytes(b"x" * (ctx.limits.max_upload_bytes + 1))
    with pytest.raises(LabInputError, match="bytes; the lab takes at most 1,000,000"):
        classify_tab.read_upload(ctx, upload)
    upload.write_bytes(b"\xff\xfe bad")
    with pytest.raises(LabInputError, match="not UTF-8"):
        classify_tab.read_upload(ctx, upload)


def test_models_load_once_on_first_use_and_are_shared():
    calls = []
    barrier = threading.Barrier(4)

    def load() -> Loaded:
        calls.append(1)
        import torch

        return Loaded(torch.nn.Linear(2, 2), tokenizer=None)

    catalog = Catalog([Entry("model-a", "encoder", load)], cpu_kernels=False)
    assert not catalog.is_loaded("model-a") and not calls
    seen = []

    def worker() -> None:
        barrier.wait()
        seen.append(catalog.get("model-a"))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and all(s is seen[0] for s in seen)
    with pytest.raises(KeyError, match=r"no model named 'model-b' here \(did you mean 'model-a'\?\); pick one of: model-a"):
        catalog.get("model-b")


def test_rag_tab_waits_for_glassformer_rag():
    reason = rag_tab.unavailable()
    try:
        from glassformer.rag import answer, open_index  # noqa: F401
    except ImportError:
        assert reason is not None and "glassformer.rag" in reason
    else:
        assert reason is None


def test_default_list_names_packaged_models_and_finetuned_classifiers(ctx, tmp_path):
    """Nothing is loaded to make the list; a classifier under out/ replaces the untrained stand-in."""
    bare = default_catalog(out_dir=tmp_path)
    assert [(e.name, e.kind) for e in bare.entries] == [
        (SMOLLM2, "decoder"), (MINILM, "encoder"), (WHISPER_TINY_EN, "speech"),
        (f"{MINILM} (untrained head)", "classifier")]
    shutil.copytree(ctx.workdir / "models" / TINY_CLASSIFIER, tmp_path / "finetune-sst2" / "model")
    found = default_catalog([ctx.workdir / "models" / TINY_GPT], out_dir=tmp_path)
    assert [(e.name, e.kind) for e in found.entries] == [
        (SMOLLM2, "decoder"), (MINILM, "encoder"), (WHISPER_TINY_EN, "speech"), (TINY_GPT, "decoder"),
        ("finetune-sst2/model", "classifier")]
    assert not any(found.is_loaded(n) for n in found.names())
    with pytest.raises(FileNotFoundError, match="no such model folder"):
        default_catalog([tmp_path / "missing"], out_dir=tmp_path)
