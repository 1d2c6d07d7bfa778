"""The issue's bad-input list, at both boundaries: ``sample()`` and ``glassformer sample``.

More steps than the training schedule, an unknown class (listing the classes), guidance on an
unconditional model, a seed that is not an integer; and the neighbours a user reaches the same
way (a class id out of range, too few or too many labels, a negative guidance, negative steps). Each
must fail before any UNet call with a message that names the problem and the fix; on the
command line that message is one line on stderr and the exit status is 2.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from glassformer import registry
from glassformer.cli import main
from glassformer.models.diffusion import DiffusionUNet, sample


@pytest.fixture(scope="module")
def conditional() -> DiffusionUNet:
    torch.manual_seed(0)
    return registry.build("ddpm-fashion-tiny").eval()  # 16x16, 50 training steps, 10 named classes


@pytest.fixture(scope="module")
def unconditional(conditional: DiffusionUNet) -> DiffusionUNet:
    return DiffusionUNet(conditional.config.replace(n_classes=0, class_names=())).eval()


@pytest.fixture(scope="module")
def folders(conditional: DiffusionUNet, unconditional: DiffusionUNet, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("checkpoints")
    conditional.save(root / "conditional")
    unconditional.save(root / "unconditional")
    return {"conditional": root / "conditional", "unconditional": root / "unconditional"}


def _never_called(model: DiffusionUNet, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any UNet call fail, so that a passing test shows the request was refused up front."""

    def refuse(*args, **kwargs):
        raise AssertionError("the UNet ran before the request was checked")

    monkeypatch.setattr(model, "denoise", refuse)


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_more_steps_than_the_schedule(conditional: DiffusionUNet, sampler: str, monkeypatch) -> None:
    _never_called(conditional, monkeypatch)
    with pytest.raises(ValueError, match=r"steps=51 is more than the 50 timesteps .*pass steps <= 50"):
        sample(conditional, 1, steps=51, sampler=sampler)
    with pytest.raises(ValueError, match="steps must be a positive integer, got -1"):
        sample(conditional, 1, steps=-1, sampler=sampler)


def test_classes_by_name_and_id(conditional: DiffusionUNet, monkeypatch) -> None:
    _never_called(conditional, monkeypatch)
    every = "t-shirt, trouser, pullover, dress, coat, sandal, shirt, sneaker, bag, ankle-boot"
    with pytest.raises(ValueError, match=rf"unknown class 'hat'; the classes are: {every}$"):
        sample(conditional, 2, labels=["sandal", "hat"])
    with pytest.raises(ValueError, match=r"class id 10 is out of range: this model has classes 0\.\.9"):
        sample(conditional, 1, labels=10)  # 10 is the null class: guidance's, not the user's
    with pytest.raises(ValueError, match=r"got 2 labels for n=3 images; give one label or one per image"):
        sample(conditional, 3, labels=[1, 2])


def test_guidance_needs_a_conditional_model_and_a_class(conditional, unconditional, monkeypatch) -> None:
    _never_called(unconditional, monkeypatch)
    with pytest.raises(ValueError, match=r"guidance needs a class-conditional model.*\(n_classes=0\): drop guidance"):
        sample(unconditional, 1, steps=2, guidance=3.0)
    with pytest.raises(ValueError, match=r"unconditional \(n_classes=0\): sample it without labels"):
        sample(unconditional, 1, steps=2, labels="sandal")
    with pytest.raises(ValueError, match=r"guidance must be a number >= 0 .*got -1"):
        sample(conditional, 1, steps=2, guidance=-1.0, labels=0)


@pytest.mark.parametrize("seed", [1.5, "0", None, True])
def test_a_seed_must_be_an_integer(conditional: DiffusionUNet, seed: object, monkeypatch) -> None:
    _never_called(conditional, monkeypatch)
    with pytest.raises(TypeError, match=rf"seed must be an integer, got {seed!r} \({type(seed).__name__}\)"):
        sample(conditional, 1, steps=2, seed=seed)


@pytest.mark.parametrize("extra,message", [
    (["--steps", "51"], "steps=51 is more than the 50 timesteps the model was trained with; pass steps <= 50"),
    (["--sampler", "ddpm", "--steps", "51"], "steps=51 is more than the 50 timesteps"),
    (["--class", "12"], "class id 12 is out of range: this model has classes 0..9"),
    (["--class", "sandle"], "unknown class 'sandle' (did you mean 'sandal'?); the classes are: t-shirt, trouser"),
])  # fmt: skip
def test_the_verb_reports_bad_requests(folders, tmp_path: Path, capsys, extra: list[str], message: str) -> None:
    png = tmp_path / "grid.png"
    assert main(["sample", str(folders["conditional"]), "--n", "2", "--out", str(png), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("glassformer sample: error: ") and message in err
    assert not png.exists()


def test_the_verb_refuses_guidance_on_an_unconditional_model(folders, tmp_path: Path, capsys) -> None:
    png = tmp_path / "grid.png"
    assert main(["sample", str(folders["unconditional"]), "--guidance", "3", "--out", str(png)]) == 2
    assert "guidance needs a class-conditional model" in capsys.readouterr().err
    assert not png.exists()


@pytest.mark.parametrize("seed", ["1.5", "abc"])
def test_the_verb_refuses_a_seed_that_is_not_an_integer(folders, tmp_path: Path, capsys, seed: str) -> None:
    with pytest.raises(SystemExit) as stopped:  # argparse's own usage error
        main(["sample", str(folders["conditional"]), "--seed", seed, "--out", str(tmp_path / "grid.png")])
    assert stopped.value.code == 2
    assert f"argument --seed: invalid int value: '{seed}'" in capsys.readouterr().err


def test_zero_steps_huge_seeds_and_numpy_seeds(conditional: DiffusionUNet) -> None:
    import numpy as np

    with pytest.raises(ValueError, match="steps must be a positive integer"):
        sample(conditional, 2, steps=0, labels=0)
    with pytest.raises(ValueError, match="64-bit generator seed"):
        sample(conditional, 2, steps=2, labels=0, seed=2**70)
    same = sample(conditional, 2, steps=2, labels=0, seed=np.int64(3)).images
    assert torch.equal(same, sample(conditional, 2, steps=2, labels=0, seed=3).images)


def test_the_verb_names_its_flag_when_guidance_lacks_a_class(folders, tmp_path: Path, capsys) -> None:
    code = main(["sample", str(folders["conditional"]), "--guidance", "3", "--n", "2", "--steps", "2",
                 "--out", str(tmp_path / "g.png")])  # fmt: skip
    assert code == 2 and "add --class NAME" in capsys.readouterr().err
    assert not (tmp_path / "g.png").exists()
