"""bart-multi30k's data: ``<s> ... </s>`` translation pairs and denoising on the same text, each trained
one step by the engine on a slice of Multi30k; translation output loses the forced ``<s>``."""

from __future__ import annotations

import pytest

from glassformer.data import multi30k as m30k
from glassformer.models.base import IGNORE_INDEX
from glassformer.tokenizers import load_tokenizer
from glassformer.translation import load_translator, translate
from tests.data._multi30k import build_data, multi30k_cache, train_one_step  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.usefixtures("multi30k_cache"), pytest.mark.filterwarnings("ignore:the corpus supports only"),
              pytest.mark.filterwarnings("ignore:Multi30k .* dropped")]  # fmt: skip
PRESET = "bart-multi30k-tiny"


def _rows(batch, key, drop):
    return [[t for t in row if t != drop] for row in batch[key].tolist()]


def test_translation_pairs_are_framed_and_train(tmp_path) -> None:
    config, _, _, val = build_data(PRESET, tmp_path, direction="de-en")
    tokenizer = load_tokenizer(tmp_path)
    batch = next(iter(val))
    pairs = m30k.load_pairs("val", "de-en", limit=16)
    for source, labels in zip(_rows(batch, "input_ids", config.pad_token_id), _rows(batch, "labels", IGNORE_INDEX)):
        assert source[0] == labels[0] == config.bos_token_id and source[-1] == labels[-1] == config.eos_token_id
        assert (tokenizer.decode(source, skip_special_tokens=True), tokenizer.decode(labels, skip_special_tokens=True)) in pairs
    train_one_step(PRESET, tmp_path / "run")


def test_denoising_masks_spans_and_trains(tmp_path) -> None:
    config, _, _, val = build_data(PRESET, tmp_path, "multi30k-denoising")
    tokenizer = load_tokenizer(tmp_path)
    mask = tokenizer.token_to_id("<mask>")
    assert mask == config.vocab_size - 1
    batch = next(iter(val))
    sentences = set(m30k.read_lines("val", "en", limit=16) + m30k.read_lines("val", "de", limit=16))
    sources = _rows(batch, "input_ids", config.pad_token_id)
    assert sum(row.count(mask) for row in sources) > 0
    for labels in _rows(batch, "labels", IGNORE_INDEX):
        assert tokenizer.decode(labels, skip_special_tokens=True) in sentences
    train_one_step(PRESET, tmp_path / "run", "multi30k-denoising")


def test_translation_strips_the_forced_bos(tmp_path) -> None:
    train_one_step(PRESET, tmp_path)
    translator = load_translator(tmp_path / "best")
    out = translate(translator.model, translator.tokenizer, ["A dog runs."], num_beams=2, max_new_tokens=5,
                    directions=translator.directions, cpu_kernels=False)  # fmt: skip
    assert len(out) == 1 and "<s>" not in out[0] and "</s>" not in out[0]
    with pytest.raises(ValueError, match="source 0 is empty"):
        translate(translator.model, translator.tokenizer, [" "])
