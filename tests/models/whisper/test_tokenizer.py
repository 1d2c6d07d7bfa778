"""The Whisper tokenizer against transformers' ``WhisperTokenizer`` built from the same files, and
its control lists against what ctranslate2's converter wrote into the packaged folder."""

from __future__ import annotations

import gzip
import json

import pytest

from glassformer.models.whisper import packaged
from glassformer.models.whisper.tokenizer import WhisperTokenizer
from glassformer.utils.paths import data_file

pytestmark = pytest.mark.skipif(not packaged.packaged_tiny_en_available(),
                                reason="Whisper tiny.en tokenizer absent: run `make whisper-weights`")
TORTURE = [
    "",
    " ",
    "Hello <|startoftranscript|> world  \t\n\n  1234567890 3.14159 -42",
    "héllo naïve café Ünïcödé 日本語のテキスト 한국어 العربية 🙂👍🏽 \u200b zero\u00a0width",
    "<|endoftext|><|notimestamps|>text<|en|> <|transcribe|>  trailing   ",
    "a , b . c ' d n't can't I'm we'll they've 'quoted' \"double\" ♪ music ♪ (laughs) [applause]",
    "    leading spaces and\ttabs\r\nand CRLF" + " ".join(["word"] * 50),
    "1" * 300 + " " + "ab" * 200,
]


def _sentences() -> list[str]:
    texts: list[str] = []
    multi30k = data_file("multi30k", "task1", "raw", "train.en.gz")
    if multi30k is not None:
        with gzip.open(multi30k, "rt", encoding="utf-8") as f:
            texts += [line.rstrip("\n") for _, line in zip(range(1500), f)]
    shakespeare = data_file("tinyshakespeare", "input.txt")
    if shakespeare is not None:
        texts += [line for line in shakespeare.read_text(encoding="utf-8").splitlines() if line][:1500]
    if len(texts) < 1000:
        pytest.skip("../shared/data (multi30k, tinyshakespeare) is not available")
    return texts


@pytest.fixture(scope="module")
def tokenizer() -> WhisperTokenizer:
    return WhisperTokenizer.from_folder(packaged.packaged_tiny_en_path())


@pytest.fixture(scope="module")
def both(tokenizer: WhisperTokenizer) -> tuple[WhisperTokenizer, object]:
    transformers = pytest.importorskip("transformers")
    return tokenizer, transformers.WhisperTokenizer.from_pretrained(str(packaged.packaged_tiny_en_path()))


def test_ids_equal_transformers(both: tuple) -> None:
    ours, hf = both
    texts = _sentences() + TORTURE
    theirs = hf(texts, add_special_tokens=False)["input_ids"]
    mismatched = [t for t, ids in zip(texts, theirs) if ours.encode(t) != ids]
    assert not mismatched, f"{len(mismatched)} texts differ, first: {mismatched[0]!r}"


def test_decoding_equals_transformers(both: tuple) -> None:
    ours, hf = both
    prompt = ours.sot_sequence()
    for text in _sentences()[::10] + TORTURE:
        ids = prompt + ours.encode(text) + [ours.eot]
        assert ours.decode(ids) == hf.decode(ids, skip_special_tokens=True), text
        assert ours.decode(ids, skip_special=False) == hf.decode(ids, skip_special_tokens=False), text
        # timestamps are dropped with the control tokens, as transformers drops them
        stamped = prompt[:1] + [ours.timestamp_begin] + ours.encode(text) + [ours.timestamp_begin + 50, ours.eot]
        assert ours.decode(stamped) == hf.decode(stamped, skip_special_tokens=True), text


def test_previous_text_prompt_is_dropped(both: tuple) -> None:
    ours, hf = both
    ids = [ours.ids["<|startofprev|>"], *ours.encode(" earlier words"), *ours.sot_sequence(), *ours.encode(" now")]
    assert ours.decode(ids) == hf.decode(ids, skip_special_tokens=True) == " now"


def test_timestamp_tokens_are_ctranslate2s(tokenizer: WhisperTokenizer) -> None:
    """ctranslate2's converter lists every id's token in vocabulary.txt, timestamps included."""
    listing = (packaged.packaged_tiny_en_path() / "vocabulary.txt").read_text(encoding="utf-8").splitlines()
    stamps = tokenizer.timestamp_tokens
    assert list(stamps) == listing[tokenizer.timestamp_begin:]
    assert (stamps["<|0.00|>"], stamps["<|30.00|>"]) == (50363, 51863)
    ids = [tokenizer.sot, stamps["<|1.08|>"], *tokenizer.encode(" Hi."), stamps["<|2.00|>"]]
    assert tokenizer.decode(ids, skip_special=False) == "<|startoftranscript|><|1.08|> Hi.<|2.00|>"


def test_suppress_lists_are_the_packaged_configs(tokenizer: WhisperTokenizer) -> None:
    """config.json holds the generation config's suppress_tokens, as Whisper computed them."""
    config = json.loads((packaged.packaged_tiny_en_path() / "config.json").read_text(encoding="utf-8"))
    assert tokenizer.suppress_tokens() == config["suppress_ids"]
    assert tokenizer.begin_suppress_tokens() == config["suppress_ids_begin"]


def test_prompts(tokenizer: WhisperTokenizer) -> None:
    assert not tokenizer.is_multilingual
    assert tokenizer.sot_sequence() == tokenizer.sot_sequence("en") == [50257, 50362]
    assert tokenizer.sot_sequence(timestamps=True) == [50257]
    with pytest.raises(ValueError, match="English-only"):
        tokenizer.sot_sequence("de")
    with pytest.raises(ValueError, match="English-only"):
        tokenizer.sot_sequence(task="translate")
    with pytest.raises(ValueError, match="task='summarize'"):
        tokenizer.sot_sequence(task="summarize")  # type: ignore[arg-type]


def test_multilingual_prompt_orders_language_then_task(tokenizer: WhisperTokenizer) -> None:
    """The same vocabulary read as a multilingual one (51865 ids): HF's prefix_tokens order."""
    transformers = pytest.importorskip("transformers")
    multilingual = WhisperTokenizer(tokenizer.bpe, vocab_size=51865)
    hf = transformers.WhisperTokenizer.from_pretrained(str(packaged.packaged_tiny_en_path()), language="de",
                                                       task="translate")
    assert multilingual.sot_sequence("de", "translate") == hf.prefix_tokens
    with pytest.raises(ValueError, match="did you mean 'de'"):
        multilingual.sot_sequence("dee")


def test_out_of_range_id_is_named(tokenizer: WhisperTokenizer) -> None:
    with pytest.raises(ValueError, match="id 51864 is outside"):
        tokenizer.decode([51864])
