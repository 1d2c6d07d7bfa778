"""did_you_mean, and that a mistyped name on the command line gets the guess."""

from __future__ import annotations

import pytest

from glassformer.cli import main
from glassformer.utils.suggest import did_you_mean


def test_did_you_mean_names_the_closest_choice_or_nothing() -> None:
    assert did_you_mean("max_stpes", ["lr", "max_steps", "warmup_steps"]) == " (did you mean 'max_steps'?)"
    assert did_you_mean("gpt2-smal", {"gpt2-small": 1, "gpt2-medium": 2}) == " (did you mean 'gpt2-small'?)"
    assert did_you_mean("colour", ["lr", "max_steps"]) == ""
    assert did_you_mean("x", []) == ""


@pytest.mark.parametrize(("override", "expected"), [
    ("max_stpes=10", "unknown key 'max_stpes' (did you mean 'max_steps'?) for TrainConfig"),
    ("model.n_layer=2", "unknown key 'n_layer' (did you mean 'n_layers'?)"),
    ("modle.dim=8", "unknown section 'modle' (did you mean 'model'?)"),
    ("n_layers=2", "'n_layers' is a field of the model config"),
    ("model.lr=0.1", "'lr' is a TrainConfig field"),
])
def test_train_command_guesses_the_meant_key(override: str, expected: str, tmp_path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "shakespeare-char-tiny", override, f"out_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("glassformer train: error: ") and expected in err
    assert not any(tmp_path.iterdir())  # refused before anything was prepared or written


def test_train_command_guesses_the_meant_preset(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "shakespeare-chr", "max_steps=1"]) == 2
    assert "(did you mean 'shakespeare-char'?)" in capsys.readouterr().err


def test_registry_guesses_the_meant_preset() -> None:
    from glassformer import registry

    with pytest.raises(KeyError, match=r"unknown preset 'shakespeare-chr' \(did you mean 'shakespeare-char'\?\)"):
        registry.get("shakespeare-chr")
