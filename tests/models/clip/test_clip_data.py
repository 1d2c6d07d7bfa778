"""``glassformer train clip-shapes``'s data: the builder, its tokenizers and the command end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from glassformer import registry
from glassformer.cli import main
from glassformer.data.shapes import ShapesConfig, ShapesDataError, shapes_split
from glassformer.models.clip.config import clip_shapes, tiny
from glassformer.models.clip.data import (
    ShapesWordTokenizer,
    build_shapes_data,
    caption_tokenizer,
    shapes_words,
)


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GLASSFORMER_CACHE", str(tmp_path / "cache"))


def _request(**options: object) -> registry.DataRequest:
    return registry.DataRequest(registry.get("clip-shapes-tiny"), options)


def test_train_command_runs_on_the_tiny_twin(tmp_path: Path) -> None:
    out = tmp_path / "run"
    code = main(["train", "clip-shapes-tiny", f"out_dir={out}", "max_steps=3", "batch_size=8", "eval_interval=3",
                 "eval_batches=0", "progress=false", "plot=false", "data.n_train=24", "data.n_eval=8"])  # fmt: skip
    assert code == 0
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert any("eval_loss" in r for r in records)
    assert all(0 < r["logit_scale"] <= 100 for r in records if "logit_scale" in r)


def test_builder_uses_composition_ids_and_the_model_size() -> None:
    config = tiny(clip_shapes())
    train, evals = build_shapes_data(None, config, _request(n_train=64, n_eval=16))
    assert (len(train), len(evals)) == (64, 16)
    split = shapes_split("train", 64, config=ShapesConfig(image_size=32))
    assert torch.equal(train.caption_ids, split.composition_ids)  # paraphrases share an id
    assert not torch.equal(train.caption_ids, split.caption_ids)
    batch = train.collate([train[i] for i in range(4)])
    assert batch["pixel_values"].shape == (4, 3, 32, 32)
    assert (batch["input_ids"][:, 0] == config.bos_token_id).all()
    assert batch["input_ids"].max() < config.vocab_size
    out = registry.build("clip-shapes-tiny")(**batch)
    assert torch.isfinite(out.loss)


def test_bad_options_are_named() -> None:
    with pytest.raises(ValueError, match="n_train"):
        build_shapes_data(None, tiny(clip_shapes()), _request(n_trian=4))
    with pytest.raises(ShapesDataError, match="tokenizer"):
        caption_tokenizer(tiny(clip_shapes()), "bpe")
    with pytest.raises(ShapesDataError, match="vocab_size"):
        caption_tokenizer(tiny(clip_shapes()), "clip")


def test_word_tokenizer_covers_every_caption_and_tells_them_apart() -> None:
    tok = ShapesWordTokenizer(97, 98)
    split = shapes_split("train", 300, config=ShapesConfig(supersample=1))
    encoded = {tuple(tok(c)) for c in split.captions}
    assert len(encoded) == len(set(split.captions))  # no two captions collapse to one id sequence
    assert all(ids[0] == 97 and ids[-1] == 98 and max(ids[1:-1]) < len(shapes_words()) for ids in encoded)
    with pytest.raises(ShapesDataError, match="vocabulary of at least"):
        ShapesWordTokenizer(10, 11)
    with pytest.raises(ShapesDataError, match="not shapes-set words"):
        tok("a purple elephant")


def test_bpe_captions_are_framed(clip_merges: Path) -> None:
    config = clip_shapes()
    ids = caption_tokenizer(config)("a small red circle above a large blue square")
    assert ids[0] == config.bos_token_id and ids[-1] == config.eos_token_id and len(ids) < config.max_seq_len
