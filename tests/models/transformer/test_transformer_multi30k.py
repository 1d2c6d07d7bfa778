"""The Transformer's Multi30k data (one joint vocabulary, ``<s>``-shifted decoder inputs) trained one
step by the engine, ``glassformer translate`` end to end on the run it leaves, and the BLEU scorer
against sacrebleu on the hypotheses it produced."""

from __future__ import annotations

import io

import pytest
import sacrebleu
import torch

from glassformer.cli import main
from glassformer.data.multi30k import load_pairs
from glassformer.metrics import corpus_bleu
from glassformer.models.base import IGNORE_INDEX
from glassformer.translation import BLEU_SIGNATURE, load_translator, score_bleu
from tests.data._multi30k import build_data, multi30k_cache, train_one_step  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.usefixtures("multi30k_cache"), pytest.mark.filterwarnings("ignore:the corpus supports only"),
              pytest.mark.filterwarnings("ignore:Multi30k .* dropped")]  # fmt: skip
PRESET = "transformer-base-tiny"


@pytest.fixture(scope="module")
def run(tmp_path_factory, multi30k_cache):  # noqa: F811 (the fixture imported above)
    out = tmp_path_factory.mktemp("transformer-run")
    train_one_step(PRESET, out, steps=60, direction="en-de")  # enough to emit frequent words: BLEU has matches
    return out


def test_batches_shift_the_target_behind_bos(tmp_path) -> None:
    config, _, train, _ = build_data(PRESET, tmp_path, direction="de-en")
    batch = train("train", 3, torch.Generator().manual_seed(1))
    labels, tgt, mask = batch["labels"], batch["tgt"], batch["tgt_attention_mask"].bool()
    assert (tgt[:, 0] == config.bos_token_id).all()
    assert torch.equal(tgt[:, 1:][mask[:, 1:]], labels[:, :-1][mask[:, 1:]])
    assert ((labels == IGNORE_INDEX) == ~mask).all()
    ends = labels.gather(1, mask.sum(1, keepdim=True) - 1)
    assert (ends == config.eos_token_id).all() and (batch["src"][batch["src_attention_mask"] == 0] == config.pad_token_id).all()
    again = train("train", 3, torch.Generator().manual_seed(1))
    assert all(torch.equal(batch[k], again[k]) for k in batch)  # a pure function of the step's generator


def test_translate_verb_end_to_end(run, capsys, monkeypatch) -> None:
    monkeypatch.setenv("GLASSFORMER_KERNELS", "0")
    best = str(run / "best")
    assert main(["translate", best, "A man is riding a bike.", "--beam", "2", "--max-new-tokens", "6"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and "</s>" not in lines[0]
    monkeypatch.setattr("sys.stdin", io.StringIO("A dog.\n\nTwo girls play.\n"))
    assert main(["translate", best, "--strategy", "greedy", "--max-new-tokens", "4"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3 and out[1] == ""  # blank lines stay blank, so output lines up with input
    assert main(["translate", best, "Ein Hund.", "--direction", "de-en"]) == 2
    assert "trained to translate en-de only" in capsys.readouterr().err
    assert main(["translate", best, "A " * 200]) == 2
    assert "max_seq_len=128" in capsys.readouterr().err


def _assert_same_bleu(ours, hypotheses: list[str], references: list[str]) -> None:
    theirs = sacrebleu.corpus_bleu(hypotheses, [references], tokenize="13a")
    assert ours.score == pytest.approx(theirs.score, abs=0.01)
    assert (ours.sys_len, ours.ref_len) == (theirs.sys_len, theirs.ref_len)
    if any(theirs.counts):  # sacrebleu reports no precisions at all when nothing matches
        assert ours.precisions == pytest.approx(theirs.precisions, abs=0.01)


def test_bleu_equals_sacrebleu_on_the_produced_hypotheses(run) -> None:
    translator = load_translator(run / "best")
    report = score_bleu(translator.model, translator.tokenizer, split="test", limit=12, strategy="greedy",
                        max_new_tokens=12, directions=translator.directions, cpu_kernels=False)  # fmt: skip
    assert len(report.hypotheses) == 12 and report.signature == BLEU_SIGNATURE and report.bleu.sys_len > 0
    assert report.references == [t for _, t in load_pairs("test", limit=12)]
    _assert_same_bleu(report.bleu, report.hypotheses, report.references)
    # a barely trained model matches little; the same output followed by half of each reference matches all orders
    helped = [f"{h} {' '.join(r.split()[: len(r.split()) // 2])}" for h, r in zip(report.hypotheses, report.references)]
    score = corpus_bleu(helped, [report.references])
    assert 5 < score.score < 100
    _assert_same_bleu(score, helped, report.references)
