"""Texts shared by the tokenizer tests (a module of its own so test files can import it)."""

from __future__ import annotations

# Hand-written text with what tokenizers get wrong: emoji (with ZWJ sequences, flags, skin tones),
# CJK, combining accents next to precomposed ones, tabs, runs of spaces and newlines (also at the
# very end), digits, contractions in both cases, control characters, the byte-order mark, rare
# scripts, and valid UTF-8 that looks broken (U+FFFD itself, noncharacters, private use).
TORTURE = (
    "Hello, world! It's what we'll see: I'M sure they'VE done it, don't you think?\n"
    "Emoji: 🤗 😀😀 👨‍👩‍👧‍👦 👍🏽 🇯🇵 🏳️‍🌈 ❤️ ✨\n"
    "CJK: 日本語のテキストです。中文文本，繁體字。한국어 텍스트입니다.\n"
    "Accents: café vs cafe\u0301, naïve, Ångström, ÆØÅ æøå, Σίσυφος ΣΑΣ, İstanbul, straße ǅ\n"
    "Tabs\tand\t\ttabs,   three spaces,      six spaces, trailing spaces   \n"
    "\n\n\nthree blank lines above\r\nwindows line end\rcarriage return\n"
    "Digits: 0 12 345 6789 1234567890123 3.14159 1,000,000 ١٢٣ ௧௨௩ ½ ²\n"
    "Mixed: abc123def ___init___ foo.bar(baz) x+=1; <|notspecial|> [not special] ##hash\n"
    "Controls: \x00\x01\x07\x1b[0m\x1c\x1f\x7f\x85 nbsp\u00a0here\u2028line sep\u2029para\u3000ideographic\n"
    "Odd but valid: \ufeffBOM \ufffd replacement \uffff\U0010ffff noncharacters \ue000 private \U0001d518\U0001d52b\n"
    "Scripts: Ελληνικά русский עברית العربية हिन्दी ไทย ქართული አማርኛ ᚠᚢᚦ 𓀀\n"
    "Zero width: a\u200bb\u200cc\u200dd\u2060e soft\u00adhyphen\n"
    "Long: " + "a" * 300 + " " + "9" * 200 + " " + "!?" * 80 + "\n"
    "End with spaces and newlines   \n\n  "
)


def embedded_corpus() -> str:
    """Python's help text (about 465,000 characters), always installed."""
    from pydoc_data.topics import topics

    return "\n".join(topics[key] for key in sorted(topics))
