"""t5-multi30k's data: prefixed translation in both directions and span corruption, each trained one
step by the engine on a slice of Multi30k; then translation through the saved run."""

from __future__ import annotations

import json

import pytest
import torch

from glassformer.data import multi30k as m30k
from glassformer.data.span_corruption import uncorrupt
from glassformer.models.base import IGNORE_INDEX
from glassformer.tokenizers import load_tokenizer
from glassformer.translation import load_translator, translate
from tests.data._multi30k import build_data, multi30k_cache, train_one_step  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.usefixtures("multi30k_cache"), pytest.mark.filterwarnings("ignore:the corpus supports only"),
              pytest.mark.filterwarnings("ignore:Multi30k .* dropped")]  # a slice: few merges, long pieces


def _rows(batch, key):
    return [[t for t in row if t != IGNORE_INDEX] for row in batch[key].tolist()]


def test_prefixed_pairs_in_both_directions_train(tmp_path) -> None:
    config, _, train, _ = build_data("t5-multi30k-tiny", tmp_path, direction="both")
    tokenizer = load_tokenizer(tmp_path)
    assert json.loads((tmp_path / m30k.RUN_RECORD).read_text())["directions"] == ["en-de", "de-en"]
    batch = train(split="train", step=0, generator=torch.Generator().manual_seed(0))
    mask = batch["attention_mask"].bool()
    for row, keep, labels in zip(batch["input_ids"], mask, _rows(batch, "labels")):
        source = tokenizer.decode(row[keep].tolist())
        assert source.startswith(("translate English to German: ", "translate German to English: "))
        assert source.endswith("</s>") and labels[-1] == config.eos_token_id
        assert config.pad_token_id not in row[keep].tolist()
    assert train_one_step("t5-multi30k-tiny", tmp_path / "run", direction="both").best_value is not None


def test_span_corruption_restores_training_sentences_and_trains(tmp_path) -> None:
    config, _, train, val = build_data("t5-multi30k-tiny", tmp_path, "multi30k-span-corruption")
    tokenizer = load_tokenizer(tmp_path)
    batch = next(iter(val))
    for inputs, targets in zip(_rows(batch, "input_ids"), _rows(batch, "labels")):
        inputs = [t for t in inputs if t != config.pad_token_id]
        assert any(t in config.sentinel_ids for t in inputs) and targets[0] == config.sentinel_ids[0]
        restored = tokenizer.decode(uncorrupt(inputs, targets, config.sentinel_ids, config.eos_token_id))
        assert restored in set(m30k.read_lines("val", "en", limit=16) + m30k.read_lines("val", "de", limit=16))
    assert next(iter(val))["input_ids"].equal(batch["input_ids"])  # evaluation sees the same noise every time
    train_one_step("t5-multi30k-tiny", tmp_path / "run", "multi30k-span-corruption")


def test_translate_reads_the_run_and_uses_the_prefix(tmp_path) -> None:
    train_one_step("t5-multi30k-tiny", tmp_path, direction="en-de")
    translator = load_translator(tmp_path / "best")
    assert translator.directions == ("en-de",)
    out = translate(translator.model, translator.tokenizer, ["A dog runs.", "Two men are talking."],
                    directions=translator.directions, num_beams=2, max_new_tokens=6, cpu_kernels=False)  # fmt: skip
    assert len(out) == 2 and all(isinstance(t, str) and "</s>" not in t for t in out)
    with pytest.raises(ValueError, match="trained to translate en-de only"):
        translate(translator.model, translator.tokenizer, ["Ein Hund."], direction="de-en", directions=translator.directions)
