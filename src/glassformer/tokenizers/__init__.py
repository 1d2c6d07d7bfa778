"""glassformer.tokenizers: byte-level BPE, WordPiece and characters, trained or loaded, exact ids.

Every tokenizer shares one interface (``base.Tokenizer``): ``encode``/``decode``,
``encode_batch`` (padding left or right, truncation, ``attention_mask``, lists or tensors),
special tokens that are never split, ``vocab_size``, ``save`` (a folder with a ``tokenizer.json``
the ``tokenizers`` library reads too) and ``load_tokenizer``, and ``backend="fast"`` to run the same
vocabulary through the ``tokenizers`` library.

- ``ByteLevelBPE`` (``bpe``): GPT-2 and its descendants. Build it from GPT-2's files, a
  ``tokenizer.json``, a tiktoken rank file, or a GGUF-style vocabulary with
  ``ByteLevelBPE.from_vocab_merges(vocab, merges, special_tokens, pattern="gpt2"|"cl100k"|"smollm"|regex)``.
- ``WordPiece`` (``wordpiece``): BERT. ``WordPiece.from_vocab_file("vocab.txt", lowercase=True)``,
  ``WordPiece.from_folder(model_folder)``.
- ``CharTokenizer`` (``char``): one id per character (shakespeare_char).
- ``CLIPTokenizer`` (``clip``): CLIP's lower-cased BPE with ``</w>`` word ends and 77-token
  captions, ``CLIPTokenizer.from_merges_file()`` (the shared ``bpe_simple_vocab_16e6.txt.gz``).
- ``train_bpe`` / ``train_wordpiece`` (``trainers``): learn a vocabulary from text.
- ``load_tokenizer(path, kind=Tokenizer)`` (``formats``): whichever of the above a folder or file
  holds (``kind`` checks it is the one expected).

Ids match the reference implementations (``tokenizers``, ``tiktoken``, ``BertTokenizerFast``)
on the same vocabulary; ``tests/tokenizers`` checks it on real vocabularies.
"""

from glassformer.tokenizers.base import BatchEncoding, Template, Tokenizer
from glassformer.tokenizers.bpe import ByteLevelBPE
from glassformer.tokenizers.char import CharTokenizer
from glassformer.tokenizers.clip import CLIPTokenizer
from glassformer.tokenizers.formats import from_tokenizer_json, load_tokenizer
from glassformer.tokenizers.pretokenize import PATTERNS, bytes_to_unicode
from glassformer.tokenizers.trainers import train_bpe, train_wordpiece
from glassformer.tokenizers.wordpiece import BertNormalizer, WordPiece

__all__ = [
    "PATTERNS",
    "BatchEncoding",
    "BertNormalizer",
    "ByteLevelBPE",
    "CLIPTokenizer",
    "CharTokenizer",
    "Template",
    "Tokenizer",
    "WordPiece",
    "bytes_to_unicode",
    "from_tokenizer_json",
    "load_tokenizer",
    "train_bpe",
    "train_wordpiece",
]
