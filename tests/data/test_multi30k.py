"""Multi30k files and the joint BPE: reading, round trips, each family's special ids, the cache.

The special-id checks use the real presets (8,000 ids) with merges learned on a slice: the
layout, not the number of merges, is what must agree with the configs.
"""

from __future__ import annotations

import pytest

from glassformer import registry
from glassformer.data import multi30k as m30k
from glassformer.data.span_corruption import sentinel_ids_from_tokenizer
from glassformer.models.bart.data import bart_layout
from glassformer.models.t5.data import t5_layout
from glassformer.models.transformer.data import transformer_layout
from glassformer.tokenizers import load_tokenizer, train_bpe
from tests.data._multi30k import multi30k_cache, skip_without_multi30k  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.usefixtures("multi30k_cache"),
              pytest.mark.filterwarnings("ignore:the corpus supports only")]  # slices hold fewer merges
SENTENCES = ["Zwei junge weiße Männer sind im Freien in der Nähe vieler Büsche.", "A man in an orange hat starring at something.",
             "Ein Boston Terrier läuft über saftig-grünes Gras vor einem weißen Zaun."]  # fmt: skip


def test_splits_have_the_published_sizes() -> None:
    for split, count in m30k.PAIR_COUNTS.items():
        pairs = m30k.load_pairs(split, "de-en")
        assert len(pairs) == count
    en, de = m30k.load_pairs("train")[0]
    assert en.startswith("Two young, White males") and de.startswith("Zwei junge weiße Männer")
    assert m30k.load_pairs("train", "de-en", limit=3)[0] == (de, en)


def test_missing_data_names_the_file_and_the_variable(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("GLASSFORMER_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="GLASSFORMER_DATA"):
        m30k.load_pairs("train")
    (tmp_path / "raw").mkdir()
    with pytest.raises(FileNotFoundError, match=r"raw/val\.en\.gz"):
        m30k.load_pairs("val", root=tmp_path / "raw")
    with pytest.raises(ValueError, match="'en-de' or 'de-en'"):
        m30k.parse_direction("en-fr")


@pytest.mark.parametrize("preset_name, layout_of", [
    ("t5-multi30k", t5_layout), ("bart-multi30k", bart_layout), ("transformer-base", transformer_layout)])  # fmt: skip
def test_special_ids_agree_with_the_preset(preset_name, layout_of) -> None:
    config = registry.get(preset_name).make_config()
    if preset_name == "transformer-base":
        config = config.replace(vocab_size=8000, tgt_vocab_size=8000)
    tok = m30k.multi30k_tokenizer(layout_of(config), config.vocab_size, limit=300)
    # the slice supports ~2,200 tokens: T5's and BART's top specials still sit on the preset's top ids
    assert tok.vocab_size == config.vocab_size if layout_of(config).high else tok.vocab_size <= config.vocab_size
    assert tok.pad_token_id == config.pad_token_id and tok.eos_token_id == config.eos_token_id
    assert tok.unk_token_id is not None
    if preset_name == "t5-multi30k":
        assert sentinel_ids_from_tokenizer(tok, config.n_sentinels) == config.sentinel_ids
        assert tok.token_to_id("<extra_id_0>") == 7999 and tok.token_to_id("<extra_id_99>") == 7900
        assert tok.encode("Ein Hund.", add_special_tokens=True)[-1] == config.eos_token_id
    else:
        assert tok.bos_token_id == config.bos_token_id
    if preset_name == "bart-multi30k":
        assert tok.token_to_id("<mask>") == 7999
        ids = tok.encode("Ein Hund.", add_special_tokens=True)
        assert ids[0] == config.bos_token_id and ids[-1] == config.eos_token_id
    ordinary = [i for i in tok.vocab.values() if i not in tok.special_tokens.values()]
    assert min(ordinary) == len(layout_of(config).low)  # the bytes follow the low specials


def test_round_trip_and_the_saved_file(tmp_path) -> None:
    config = tiny = registry.get("bart-multi30k").make_config()
    tok = m30k.multi30k_tokenizer(bart_layout(tiny), config.vocab_size, limit=300)
    for text in SENTENCES:
        ids = tok.encode(text, add_special_tokens=True)
        assert tok.decode(ids, skip_special_tokens=True) == text
        assert tok.decode(ids) == "<s>" + text + "</s>"
    tok.save(tmp_path)
    again = load_tokenizer(tmp_path)
    assert [again.encode(t, add_special_tokens=True) for t in SENTENCES] == [
        tok.encode(t, add_special_tokens=True) for t in SENTENCES]  # fmt: skip
    assert again.token_to_id("<mask>") == tok.token_to_id("<mask>") and again.pad_token_id == tok.pad_token_id


def test_a_smaller_vocabulary_is_the_bpe_trained_to_that_size() -> None:
    texts = m30k.training_texts(limit=300)
    layout = m30k.SpecialLayout(low=("<pad>",), roles={"pad": "<pad>"})
    merges = m30k.learn_merges(texts, 200).merges
    small = m30k.assemble_tokenizer(merges, layout, 1 + 256 + 80)
    direct = train_bpe(texts, 256 + 80, special_tokens=(), show_progress=False)
    assert small.merges == direct.merges
    for text in SENTENCES:
        assert small.encode(text) == [i + 1 for i in direct.encode(text)]  # shifted past <pad>


def test_a_second_build_reads_the_cache(monkeypatch) -> None:
    layout = t5_layout(registry.get("t5-multi30k").make_config())
    first = m30k.multi30k_tokenizer(layout, 8000, limit=250)

    def no_training(*args, **kwargs):
        raise AssertionError("the merges were learned again instead of read from the cache")

    monkeypatch.setattr(m30k, "learn_merges", no_training)
    again = m30k.multi30k_tokenizer(layout, 8000, limit=250)
    smaller = m30k.multi30k_tokenizer(layout, 4000, limit=250)  # a prefix of the cached merges
    assert again.vocab == first.vocab and again.merges == first.merges
    assert smaller.merges == first.merges[: len(smaller.merges)]


def test_a_vocabulary_without_room_for_the_bytes_names_the_fix() -> None:
    config = registry.get("t5-multi30k-tiny").make_config()  # 96 ids
    with pytest.raises(ValueError, match=r"model\.vocab_size=352 model\.sentinel_start_id=351"):
        registry.data_builder(registry.get("t5-multi30k-tiny"))(
            _train_config(), config, registry.DataRequest(registry.get("t5-multi30k-tiny"), {"limit": 50}))
    moved = config.replace(vocab_size=400, sentinel_start_id=390)
    with pytest.raises(ValueError, match=r"sentinel_start_id=399"):
        t5_layout(moved)


def _train_config():
    from glassformer.train import TrainConfig

    return TrainConfig(out_dir="unused", progress=False)


def test_unknown_option_is_named() -> None:
    with pytest.raises(ValueError, match="'limt'.*did you mean 'limit'"):
        m30k.Multi30kOptions.read({"limt": 5}, "bart-multi30k-tiny")
    with pytest.raises(ValueError, match="data.direction='en-fr'"):
        m30k.Multi30kOptions.read({"direction": "en-fr"}, "bart-multi30k", ("direction",), ("en-de", "de-en"))
    assert m30k.Multi30kOptions.read({}, "t5-multi30k-tiny").limit == m30k.TINY_LIMIT
    skip_without_multi30k()
