"""Classify: a BERT sequence classifier's label for a text, and where its [CLS] looked.

A thin layer over ``glassformer.models.bert.finetune.classify`` (the label and the class
probabilities) and ``glassformer.viz.attention.model_attention`` (the attention of the first
token, [CLS], whose vector the classifier reads). The classifier comes from the lab's model list;
a file of texts can be uploaded to label many at once (one text per line, capped in size and lines).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from glassformer.lab.context import LabContext
from glassformer.lab.limits import LabInputError

TITLE = "Classify"
EXAMPLE = "a gripping, beautifully shot film"


@dataclass
class Classified:
    """One text's answer: class probabilities, and how much [CLS] attends to each token."""

    label: str
    probabilities: dict[str, float]
    cls_attention: list[tuple[str, float]]  # (token, weight) of the last layer, mean over heads


def classify_text(ctx: LabContext, model_name: str, text: str) -> Classified:
    """Label ``text`` with the classifier ``model_name`` and read its last layer's [CLS] attention."""
    from glassformer.models.bert.finetune import classify
    from glassformer.viz.attention import model_attention

    text = ctx.limits.text(text, "text to classify")
    loaded = ctx.catalog.get(model_name, "classifier")
    result = classify(loaded.model, loaded.tokenizer, [text])[0]
    attentions, tokens = model_attention(loaded.model, loaded.tokenizer, text)
    cls_row = attentions[-1][0, :, 0, :].mean(dim=0)  # (keys,): [CLS] is the first query
    weights = [(tok, round(float(w), 4)) for tok, w in zip(tokens, cls_row.tolist())]
    return Classified(result["label"], result["probabilities"], weights)


def read_upload(ctx: LabContext, path: str | os.PathLike[str]) -> list[str]:
    """The non-empty lines of an uploaded text file, refused when larger than the lab's caps.

    ``path`` is where Gradio stored the upload, inside the lab's own folder; anything else is
    refused, so no path a user could choose is ever opened.
    """
    path = Path(path).resolve()
    if ctx.workdir.resolve() not in path.parents:
        raise LabInputError("that file is not an upload of this lab; upload it again")
    size = path.stat().st_size
    if size > ctx.limits.max_upload_bytes:
        raise LabInputError(f"the file is {size:,} bytes; the lab takes at most {ctx.limits.max_upload_bytes:,}")
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError:
        raise LabInputError("the file is not UTF-8 text; upload a .txt file with one text per line") from None
    if not lines:
        raise LabInputError("the file holds no text; put one text per line")
    if len(lines) > ctx.limits.max_upload_lines:
        raise LabInputError(f"the file has {len(lines):,} texts; the lab labels at most {ctx.limits.max_upload_lines:,} at once")
    return [ctx.limits.text(line, f"text on line {i + 1}") for i, line in enumerate(lines)]


def classify_file(ctx: LabContext, model_name: str, path: str | os.PathLike[str]) -> list[list[object]]:
    """Rows ``[text, label, probability]`` for each line of an uploaded file."""
    from glassformer.models.bert.finetune import classify

    texts = read_upload(ctx, path)
    loaded = ctx.catalog.get(model_name, "classifier")
    return [[r["text"], r["label"], round(r["probability"], 4)] for r in classify(loaded.model, loaded.tokenizer, texts)]


def build(ctx: LabContext) -> None:
    import gradio as gr

    from glassformer.lab.ui import error_boundary

    names = ctx.catalog.names("classifier")
    notes = "; ".join(f"**{e.name}**: {e.note}" for e in ctx.catalog.entries if e.kind == "classifier" and e.note)
    model = gr.Dropdown(names, value=names[0] if names else None, label="Classifier", elem_id="cls-model")
    if notes:
        gr.Markdown(notes)
    text = gr.Textbox(EXAMPLE, label="Text", max_length=ctx.limits.max_chars, elem_id="cls-text")
    run = gr.Button("Classify", variant="primary", elem_id="cls-run")
    label = gr.Label(label="Prediction", elem_id="cls-label")
    attention = gr.HighlightedText(label="Attention of [CLS] in the last layer (mean over heads)",
                                   elem_id="cls-attention")
    with gr.Accordion("Label a file (one text per line)", open=False):
        upload = gr.File(label=f"Text file (at most {ctx.limits.max_upload_bytes:,} bytes)", file_types=[".txt"],
                         type="filepath", elem_id="cls-file")
        table = gr.Dataframe(headers=["text", "label", "probability"], elem_id="cls-table")

    @error_boundary
    def one(model_name: str, value: str) -> tuple[dict[str, float], list[tuple[str, float]]]:
        out = classify_text(ctx, model_name, value)
        return out.probabilities, out.cls_attention

    @error_boundary
    def many(model_name: str, path: str | None) -> list[list[object]]:
        if not path:
            raise LabInputError("no file uploaded")
        return classify_file(ctx, model_name, path)

    run.click(one, [model, text], [label, attention], concurrency_id="models")
    upload.upload(many, [model, upload], table, concurrency_id="models")
