"""The length-penalty sweep: one beam-search BLEU per penalty, equal to scoring that penalty alone,
and the best one chosen by score (ties to the penalty nearest 1.0)."""

from __future__ import annotations

import pytest

from glassformer.metrics.bleu import BLEUScore
from glassformer.translation import BleuReport, load_translator, score_bleu, tuning
from glassformer.translation.tuning import sweep_length_penalty
from tests.data._multi30k import multi30k_cache, train_one_step  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.usefixtures("multi30k_cache"), pytest.mark.filterwarnings("ignore:the corpus supports only"),
              pytest.mark.filterwarnings("ignore:Multi30k .* dropped")]  # fmt: skip
OPTIONS = {"limit": 8, "max_new_tokens": 10, "cpu_kernels": False}


@pytest.fixture(scope="module")
def translator(tmp_path_factory, multi30k_cache):  # noqa: F811 (the fixture imported above)
    out = tmp_path_factory.mktemp("lp-run")
    train_one_step("transformer-base-tiny", out, steps=40, direction="en-de")
    return load_translator(out / "best")


def test_each_penalty_scores_as_alone_and_the_best_wins(translator) -> None:
    model, tok = translator.model, translator.tokenizer
    sweep = sweep_length_penalty(
        model, tok, (0.0, 1.0, 4.0), num_beams=2, directions=translator.directions, **OPTIONS
    )
    assert sweep.split == "val" and list(sweep.scores) == [0.0, 1.0, 4.0]
    for penalty in (0.0, 4.0):
        alone = score_bleu(
            model, tok, split="val", strategy="beam", num_beams=2, length_penalty=penalty, **OPTIONS
        )
        assert sweep.reports[penalty].hypotheses == alone.hypotheses
        assert sweep.scores[penalty] == alone.bleu.score
    assert sweep.scores[sweep.best] == max(sweep.scores.values())
    assert [row["length_penalty"] for row in sweep.table()] == [0.0, 1.0, 4.0]
    assert all(row["ref_len"] == sweep.reports[0.0].bleu.ref_len for row in sweep.table())


@pytest.mark.parametrize(("bleu", "best"), [
    ({0.6: 30.0, 0.8: 10.0, 1.0: 32.0, 1.4: 32.0}, 1.0),  # a tie goes to the penalty nearest 1.0
    ({0.6: 40.0, 1.0: 32.0, 1.2: 39.9}, 0.6),
    ({0.5: 5.0, 1.2: 5.0}, 1.2),
])  # fmt: skip
def test_the_highest_score_wins(monkeypatch, bleu: dict[float, float], best: float) -> None:
    """The choice alone, on made-up scores (a model trained in seconds scores about 0 at every penalty)."""
    seen = []

    def fake_score(model, tokenizer, *, length_penalty, **options):
        seen.append((length_penalty, options["strategy"], options["num_beams"], options["split"]))
        return BleuReport(
            BLEUScore(bleu[length_penalty], (0.0,) * 4, 1.0, 9, 9), "", "val", "en-de", [], [], []
        )

    monkeypatch.setattr(tuning, "score_bleu", fake_score)
    sweep = tuning.sweep_length_penalty(None, None, list(bleu), num_beams=5)
    assert sweep.best == best and sweep.scores == bleu
    assert seen == [(p, "beam", 5, "val") for p in bleu]


def test_bad_grids_and_tuning_on_test(translator) -> None:
    model, tok = translator.model, translator.tokenizer
    with pytest.raises(ValueError, match="at least one"):
        sweep_length_penalty(model, tok, ())
    with pytest.raises(ValueError, match="repeat"):
        sweep_length_penalty(model, tok, (1.0, 1))
    with pytest.warns(UserWarning, match="optimistic"):
        sweep_length_penalty(model, tok, (1.0,), split="test", num_beams=2, **{**OPTIONS, "limit": 2})
