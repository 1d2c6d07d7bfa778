"""The masked-LM collator: 15% chosen, 80/10/10, whole words, never special tokens or padding."""

from __future__ import annotations

import pytest
import torch

from glassformer.models.bert.mlm import MLMCollator, continuation_mask, nsp_examples

PAD, UNK, CLS, SEP, MASK = 0, 1, 2, 3, 4
VOCAB = 500


def _examples(n: int, seed: int) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        length = int(torch.randint(5, 60, (), generator=g))
        body = torch.randint(5, VOCAB, (length,), generator=g).tolist()
        out.append({"input_ids": [CLS, *body, SEP]})
    return out


def test_proportions_and_never_special_or_padding() -> None:
    collate = MLMCollator(VOCAB, mask_id=MASK, pad_id=PAD, special_ids=[PAD, UNK, CLS, SEP, MASK], seed=0)
    eligible = chosen = masked = randomised = kept = 0
    for step in range(200):
        examples = _examples(16, step)
        clean = collate.pad(examples)["input_ids"]
        batch = collate(examples)
        picked = batch["labels"] != -100
        special = (clean <= MASK)  # pad, unk, cls, sep, mask
        assert not (picked & special).any(), "a special token or padding was chosen"
        assert torch.equal(batch["labels"][picked], clean[picked]), "labels must be the original tokens"
        assert torch.equal(batch["input_ids"][~picked], clean[~picked]), "unchosen tokens must be untouched"
        eligible += int((~special).sum())
        chosen += int(picked.sum())
        masked += int((batch["input_ids"][picked] == MASK).sum())
        same = batch["input_ids"][picked] == clean[picked]
        kept += int(same.sum())
        randomised += int(((batch["input_ids"][picked] != MASK) & ~same).sum())
    assert chosen / eligible == pytest.approx(0.15, abs=0.005)
    assert masked / chosen == pytest.approx(0.80, abs=0.015)
    # a random replacement can hit the original token (1/495 of the time); both stay near 10%
    assert randomised / chosen == pytest.approx(0.10, abs=0.012)
    assert kept / chosen == pytest.approx(0.10, abs=0.012)


def test_whole_word_masking_takes_every_piece() -> None:
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(50)] + [f"##p{i}" for i in range(50)]
    cont = continuation_mask(vocab)
    collate = MLMCollator(len(vocab), MASK, PAD, [PAD, UNK, CLS, SEP, MASK], whole_word=True, continuation=cont, seed=1)
    g = torch.Generator().manual_seed(0)
    words_seen = words_chosen = 0
    for _ in range(100):
        examples = []
        for _ in range(8):
            ids = [CLS]
            for _ in range(int(torch.randint(3, 15, (), generator=g))):
                ids.append(int(torch.randint(5, 55, (), generator=g)))  # word start
                ids += torch.randint(55, 105, (int(torch.randint(0, 3, (), generator=g)),), generator=g).tolist()
            examples.append({"input_ids": ids + [SEP]})
        clean = collate.pad(examples)
        picked = collate.choose(clean["input_ids"], clean["attention_mask"])
        for row, mask in zip(clean["input_ids"], picked):
            word_flags: list[bool] = []
            for tok, p in zip(row.tolist(), mask.tolist()):
                if 5 <= tok < 55:
                    word_flags.append(p)
                elif tok >= 55:
                    assert p == word_flags[-1], "a word was split: some pieces chosen, others not"
                else:
                    assert not p
            words_seen += len(word_flags)
            words_chosen += sum(word_flags)
    assert words_chosen / words_seen == pytest.approx(0.15, abs=0.02)


def test_nsp_pairs_and_batch() -> None:
    docs = [[[10 + i, 11 + i] for i in range(0, 40, 2)] for _ in range(5)]
    examples = nsp_examples(docs, CLS, SEP, max_len=7, seed=0)
    labels = [e["next_sentence_label"] for e in examples]
    assert 0.3 < sum(labels) / len(labels) < 0.7
    assert all(len(e["input_ids"]) <= 7 and len(e["token_type_ids"]) == len(e["input_ids"]) for e in examples)
    collate = MLMCollator(VOCAB, MASK, PAD, [PAD, UNK, CLS, SEP, MASK], seed=0)
    batch = collate(examples[:4])
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "next_sentence_label", "labels"}


def test_bad_settings_are_named() -> None:
    with pytest.raises(ValueError, match="mlm_probability"):
        MLMCollator(VOCAB, MASK, PAD, [PAD], mlm_probability=0.0)
    with pytest.raises(ValueError, match="continuation"):
        MLMCollator(VOCAB, MASK, PAD, [PAD], whole_word=True)
    with pytest.raises(ValueError, match="no tokens"):
        MLMCollator(VOCAB, MASK, PAD, [PAD])([{"input_ids": []}])
