"""WordPiece: ids identical to BertTokenizerFast on a real BERT vocabulary, every character included."""

from __future__ import annotations

import random
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tok_texts import TORTURE

from glassformer.tokenizers import BertNormalizer, WordPiece, load_tokenizer
from glassformer.tokenizers.wordpiece import split_words

transformers = pytest.importorskip("transformers")
hf_tokenizers = pytest.importorskip("tokenizers")

# U+11938 (Dives Akuru, Unicode 13) has a canonical decomposition the reference's NFD tables predate.
NFD_NEWER_THAN_REFERENCE = "\U00011938"


@pytest.fixture(scope="module")
def bert_fast(minilm_folder: Path):
    reference = transformers.BertTokenizerFast.from_pretrained(str(minilm_folder))
    # MiniLM's tokenizer.json pads and truncates every encoding to 128; transformers clears that on
    # its first __call__, so clear it here too or tests that read backend_tokenizer depend on order.
    reference.backend_tokenizer.no_padding()
    reference.backend_tokenizer.no_truncation()
    return reference


@pytest.fixture(scope="module")
def minilm(minilm_folder: Path) -> WordPiece:
    return WordPiece.from_folder(minilm_folder)


@pytest.mark.parametrize("source", ["tokenizer.json", "vocab.txt + tokenizer_config.json"])
def test_real_vocabulary_gives_identical_ids(minilm_folder: Path, bert_fast, sst2_sentences: list[str],
                                             source: str) -> None:
    if source == "tokenizer.json":
        ours = load_tokenizer(minilm_folder)
    else:
        ours = WordPiece.from_vocab_and_config(minilm_folder / "vocab.txt")
    assert isinstance(ours, WordPiece) and ours.lowercase
    texts = sst2_sentences + TORTURE.splitlines() + [TORTURE, "[CLS] inside [SEP] text[MASK]", ""]
    expected = bert_fast(texts, truncation=False)["input_ids"]
    assert [ours.encode(t, add_special_tokens=True) for t in texts] == expected
    assert ours.encode_batch(texts, add_special_tokens=True)["input_ids"] == expected
    assert ours.with_backend("fast").encode_batch(texts, add_special_tokens=True)["input_ids"] == expected
    assert ours.vocab_size == bert_fast.vocab_size == 30522


def test_from_vocab_file(minilm_folder: Path, minilm: WordPiece) -> None:
    plain = WordPiece.from_vocab_file(minilm_folder / "vocab.txt", lowercase=True)
    assert plain.encode(TORTURE) == minilm.encode(TORTURE)
    assert plain.token_to_id("[CLS]") == 101 and plain.token_to_id("nonexistent-token") is None


def _assigned_code_points() -> list[int]:
    """Code points this Python's Unicode tables assign (the reference's newer case tables know
    characters an older Python does not), minus the one with a newer decomposition."""
    return [c for c in range(0x110000)
            if unicodedata.category(chr(c)) not in ("Cn", "Cs") and chr(c) != NFD_NEWER_THAN_REFERENCE]


@pytest.mark.parametrize("lowercase, strip_accents", [(True, None), (False, False), (False, True)])
def test_every_code_point_is_classified_like_the_reference(lowercase: bool, strip_accents: bool | None) -> None:
    """Cleaning, CJK splitting, accent stripping, lowercasing and word splitting of every character."""
    from tokenizers import normalizers, pre_tokenizers

    reference = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                           strip_accents=strip_accents, lowercase=lowercase)
    ours = BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=strip_accents,
                          lowercase=lowercase)
    splitter = pre_tokenizers.BertPreTokenizer()
    points = _assigned_code_points()
    differ: list[str] = []
    for start in range(0, len(points), 4096):
        chunk = points[start : start + 4096]
        text = "".join("a" + chr(c) for c in chunk) + "a"
        if ours(text) != reference.normalize_str(text):
            differ += [f"U+{c:04X}" for c in chunk if ours(f"a{chr(c)}a") != reference.normalize_str(f"a{chr(c)}a")]
        if split_words(text) != [piece for piece, _ in splitter.pre_tokenize_str(text)]:
            differ += [f"U+{c:04X} (split)" for c in chunk
                       if split_words(f"a{chr(c)}a") != [p for p, _ in splitter.pre_tokenize_str(f"a{chr(c)}a")]]
    assert not differ, f"{len(differ)} characters differ from the reference, first: {differ[:20]}"


def test_greedy_longest_match_first_like_the_reference() -> None:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    pieces = ["[UNK]", "[CLS]", "[SEP]", "un", "##aff", "##able", "a", "b", "c", "##a", "##b", "##c", "ab", "##bc",
              "abc", "##ca", "runn", "##ing", ",", "x"]
    vocab = {p: i for i, p in enumerate(pieces)}
    ours = WordPiece(vocab, max_chars_per_word=12)
    reference = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=12))
    reference.normalizer = normalizers.BertNormalizer()
    reference.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    assert [ours.id_to_token(i) for i in ours.encode("unaffable")] == ["un", "##aff", "##able"]
    assert ours.tokenize("abcabc abd running, x") == ["abc", "##a", "##bc", "[UNK]", "runn", "##ing", ",", "x"]
    assert ours.tokenize("abcabcabcabca") == ["[UNK]"]  # 13 characters: longer than the limit
    rng = random.Random(0)
    words = ["".join(rng.choice("abcdx") for _ in range(rng.randint(1, 14))) for _ in range(500)]
    text = " ".join(words) + " UNAFFABLE, Running"
    assert ours.encode(text) == reference.encode(text).ids


@pytest.mark.parametrize("lowercase, strip_accents", [(False, None), (False, True), (True, False)])
def test_case_and_accent_options_like_bert_tokenizer_fast(minilm_folder: Path, sst2_sentences: list[str],
                                                          lowercase: bool, strip_accents: bool | None) -> None:
    vocab = minilm_folder / "vocab.txt"
    table = {token: index for index, token in enumerate(vocab.read_text(encoding="utf-8").splitlines())}
    reference = transformers.BertTokenizerFast(vocab=table, do_lower_case=lowercase, strip_accents=strip_accents)
    ours = WordPiece.from_vocab_file(vocab, lowercase=lowercase, strip_accents=strip_accents)
    texts = sst2_sentences[:300] + TORTURE.splitlines()
    assert [ours.encode(t, add_special_tokens=True) for t in texts] == reference(texts)["input_ids"]


def test_decode_like_the_reference(minilm: WordPiece, bert_fast, sst2_sentences: list[str]) -> None:
    backend = bert_fast.backend_tokenizer
    for text in [*sst2_sentences[:200], *TORTURE.splitlines(), "I do not think it's what we're doing, is it ?"]:
        ids = minilm.encode(text, add_special_tokens=True)
        assert minilm.decode(ids) == backend.decode(ids, skip_special_tokens=False)
        assert minilm.decode(ids, skip_special_tokens=True) == backend.decode(ids, skip_special_tokens=True)


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=st.characters(exclude_categories=("Cs", "Cn"), exclude_characters=NFD_NEWER_THAN_REFERENCE),
               max_size=40))
def test_any_text_gives_the_reference_ids(minilm: WordPiece, bert_fast, text: str) -> None:
    assert minilm.encode(text) == bert_fast.backend_tokenizer.encode(text, add_special_tokens=False).ids


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=80))
def test_any_input_gives_well_formed_output(minilm: WordPiece, text: str) -> None:
    ids = minilm.encode(text, add_special_tokens=True, split_special_tokens=True)
    assert ids[0] == 101 and ids[-1] == 102
    assert all(isinstance(i, int) and minilm.id_to_token(i) is not None for i in ids)
    decoded = minilm.decode(ids, skip_special_tokens=True)
    assert isinstance(decoded, str)
    words = split_words(minilm.normalizer(text))
    assert len(ids) - 2 >= len(words)  # every word gives at least one piece ([UNK] included)


def test_long_and_unknown_words_become_one_unk(minilm: WordPiece) -> None:
    unk = minilm.unk_token_id
    assert minilm.encode("a" * 101) == [unk]
    assert minilm.encode("a" * 100) != [unk]
    assert minilm.encode("hello \U0001F9EA world") == [minilm.token_to_id("hello"), unk, minilm.token_to_id("world")]
