"""CLIP's BPE against ``transformers.CLIPTokenizer`` built from the same merges (ids identical).

The reference is built here the way OpenAI's ``simple_tokenizer.py`` builds its vocabulary, with
an independent copy of its byte table (printable bytes first, in the dict's insertion order), so
a wrong id order in ``clip_vocab`` would show as different ids, not cancel out.
"""

from __future__ import annotations

import gzip
import itertools
import json
import warnings
from pathlib import Path

import pytest
from tok_texts import TORTURE, embedded_corpus

from glassformer.tokenizers.clip import CLIPTokenizer, clean_text, clip_vocab, read_clip_merges
from glassformer.tokenizers.formats import load_tokenizer
from glassformer.utils.paths import data_file

transformers = pytest.importorskip("transformers")

EXTRA = "<|startoftext|>A photo<|endoftext|> of <|ENDOFTEXT|>\t\nTHE ΟΔΟΣ Straße  ﬁne Ⅻ 'S 'Ll x'd y'''s"


@pytest.fixture(scope="module")
def merges_gz() -> Path:
    path = data_file("tokenizers", "clip_bpe_simple_vocab_16e6.txt.gz")
    if path is None:
        pytest.skip("tokenizers/clip_bpe_simple_vocab_16e6.txt.gz is not in the shared data (set GLASSFORMER_DATA)")
    return path


def _openai_byte_table() -> dict[int, str]:
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


@pytest.fixture(scope="module")
def reference(merges_gz: Path, tmp_path_factory: pytest.TempPathFactory):
    """transformers' CLIPTokenizer from vocab.json + merges.txt written as OpenAI derives them."""
    lines = gzip.decompress(merges_gz.read_bytes()).decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    merges = [tuple(line.split()) for line in lines]
    chars = list(_openai_byte_table().values())
    tokens = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    folder = tmp_path_factory.mktemp("clip_reference")
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(lines) + "\n", encoding="utf-8")
    return transformers.CLIPTokenizer.from_pretrained(folder)


@pytest.fixture(scope="module")
def ours(merges_gz: Path) -> CLIPTokenizer:
    return CLIPTokenizer.from_merges_file(merges_gz)


def _captions() -> list[str]:
    """Generated captions in the style of the synthetic shapes set, with paraphrases and case."""
    sizes, colours = ("small", "LARGE", "big"), ("red", "Green", "blue", "yellow", "purple", "orange", "cyan", "grey")
    shapes, relations = ("circle", "square", "triangle", "star"), ("left of", "above", "to the right of", "below")
    out = []
    for (s, c, p), r in zip(itertools.product(sizes, colours, shapes), itertools.cycle(relations)):
        out.append(f"a {s} {c} {p} {r} a {colours[len(out) % 8]} {shapes[len(out) % 4]}")
        out.append(f"A photo of a {c.lower()} {p}, {s}!")
    return out


def _sentences() -> list[str]:
    lines = [line for line in embedded_corpus().splitlines() if line.strip()]
    return lines[::3][:3000] + _captions() + TORTURE.splitlines() + [TORTURE, EXTRA]


def test_vocabulary_matches_openai_layout(ours: CLIPTokenizer, reference) -> None:
    assert ours.vocab_size == len(reference) == 49408
    assert ours.vocab == reference.get_vocab()
    assert ours.bos_token_id == reference.bos_token_id == 49406
    assert ours.eos_token_id == ours.pad_token_id == reference.eos_token_id == 49407


def test_ids_equal_transformers_over_thousands_of_sentences(ours: CLIPTokenizer, reference) -> None:
    sentences = _sentences()
    assert len(sentences) > 3000
    theirs = reference(sentences)["input_ids"]
    for text, expected in zip(sentences, theirs, strict=True):
        assert ours.encode(text, add_special_tokens=True) == expected, text[:80]


def test_fast_backend_and_saved_folder_give_the_same_ids(ours: CLIPTokenizer, reference, tmp_path: Path) -> None:
    sentences = _sentences()[::7]
    expected = reference(sentences)["input_ids"]
    fast = ours.with_backend("fast")
    assert [fast.encode(t, add_special_tokens=True) for t in sentences] == expected
    ours.save(tmp_path)
    again = load_tokenizer(tmp_path, CLIPTokenizer)
    assert [again.encode(t, add_special_tokens=True) for t in sentences] == expected
    hf_again = transformers.CLIPTokenizer.from_pretrained(tmp_path)
    assert hf_again(sentences)["input_ids"] == expected


def test_torture_text_word_ends_and_cleaning(ours: CLIPTokenizer) -> None:
    assert clean_text("  Two\t\nSPACES  ") == " two spaces "
    assert ours.tokenize("a photo of a catalog") == ["a</w>", "photo</w>", "of</w>", "a</w>", "catalog</w>"]
    assert ours.tokenize("Cat cat CAT") == ["cat</w>"] * 3
    first, *_, last = ours.tokenize("glassformer")
    assert last.endswith("</w>") and not first.endswith("</w>")  # only a word's last token ends it
    assert ours.split("<|ENDOFTEXT|> it's 12") == ["<|", "endoftext", "|>", "it", "'s", "1", "2"]
    assert ours.decode(ours.encode("A small red circle, above a STAR!")) == "a small red circle , above a star !"


def test_captions_are_framed_padded_and_truncated_with_a_warning(ours: CLIPTokenizer, reference) -> None:
    long_caption = "a red circle above a blue square " * 20
    with pytest.warns(UserWarning, match="1 caption\\(s\\) longer than the 77-token context were truncated"):
        batch = ours.encode_captions(["a red circle", long_caption])
    ids = batch["input_ids"]
    assert tuple(ids.shape) == (2, 77)
    expected = reference(["a red circle", long_caption], padding="max_length", truncation=True, max_length=77)
    assert ids.tolist() == expected["input_ids"]
    assert batch["attention_mask"].tolist() == expected["attention_mask"]
    assert ids[1, -1] == ours.eos_token_id and ids[0, 0] == ours.bos_token_id
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a caption that fits is not warned about
        assert tuple(ours.encode_captions("a red circle", padding="longest")["input_ids"].shape) == (1, 5)


def test_missing_or_broken_merges_file_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="GLASSFORMER_DATA"):
        read_clip_merges(tmp_path / "none.txt.gz")
    short = tmp_path / "short.txt.gz"
    short.write_bytes(gzip.compress(b"#version: 0.2\ni n\nt h\n"))
    with pytest.raises(ValueError, match="cut short"):
        read_clip_merges(short)
    with pytest.raises(ValueError, match="clip_vocab"):
        CLIPTokenizer({"a": 0}, [])
    assert len(clip_vocab([("i", "n")])) == 515
