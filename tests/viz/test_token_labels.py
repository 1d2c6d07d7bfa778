"""Token labels in the pictures: byte-level BPE tokens read as text, everything else as it was."""

from __future__ import annotations

from glassformer.tokenizers.pretokenize import bytes_to_token
from glassformer.viz.attention import readable_token


def test_non_ascii_byte_tokens_show_their_letters() -> None:
    assert readable_token(bytes_to_token(" Mädchen".encode())) == "ĠMädchen"
    assert readable_token(bytes_to_token("fährt".encode())) == "fährt"


def test_ascii_other_vocabularies_and_split_characters_are_kept() -> None:
    assert readable_token("Ġthe") == "Ġthe"
    assert readable_token("##ing") == "##ing"  # WordPiece: not byte spelling
    half = bytes_to_token("ä".encode()[:1])  # the first byte of a two-byte character
    assert readable_token(half) == half
