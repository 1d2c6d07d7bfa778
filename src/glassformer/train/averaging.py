"""Checkpoint averaging: the element-wise mean of the weights of a run's last few checkpoints.

Vaswani et al. 2017 report their translation scores with "a single model obtained by averaging
the last 5 checkpoints" (20 for the big model). Late in training the weights wander around a
minimum with the learning rate still high; their mean sits closer to it than any one of them,
which buys some BLEU for free. It only makes sense for checkpoints of one run (same shapes, close
in weight space), so every folder must hold the same tensor names and shapes.

:func:`average_checkpoints` averages given folders (any ``model.safetensors`` folders);
:func:`average_last_checkpoints` takes the newest ``k`` complete checkpoints of a run's
``checkpoints/`` folder and writes the mean as a model folder (``model.safetensors`` +
``config.json`` + ``averaged.json`` naming the steps), which ``load_model``, ``glassformer translate``
and ``glassformer generate`` open like any checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from glassformer.train.checkpoint import CheckpointError, list_checkpoints
from glassformer.utils.config import write_text_atomic
from glassformer.utils.weights import WeightsError, read_safetensors, write_safetensors

PathLike = str | os.PathLike[str]
AVERAGE_RECORD = "averaged.json"


def _check_same_layout(
    first: dict[str, Tensor], other: dict[str, Tensor], name: Path, reference: Path
) -> None:
    if set(first) != set(other):
        missing, extra = sorted(set(first) - set(other)), sorted(set(other) - set(first))
        raise CheckpointError(f"{name}: its tensors differ from {reference}'s (missing {missing[:3]}, extra "
                              f"{extra[:3]}); average only checkpoints of one run")  # fmt: skip
    for key, tensor in first.items():
        if other[key].shape != tensor.shape or other[key].dtype != tensor.dtype:
            raise CheckpointError(f"{name}: {key} is {tuple(other[key].shape)} {other[key].dtype} but "
                                  f"{tuple(tensor.shape)} {tensor.dtype} in {reference}; average only checkpoints of one run")  # fmt: skip


def average_checkpoints(folders: Sequence[PathLike]) -> dict[str, Tensor]:
    """The mean of the ``model.safetensors`` weights in ``folders``, tensor by tensor.

    Floating tensors are summed in float64 and cast back, so the mean of identical weights is
    exactly those weights. Integer tensors (counters, index buffers) are not averaged: they must
    be equal in every folder, and are kept as they are.
    """
    paths = [Path(f) for f in folders]
    if not paths:
        raise ValueError("no checkpoints to average: give at least one folder")
    try:
        reference = read_safetensors(paths[0])
        sums = {k: v.double() if v.is_floating_point() else v for k, v in reference.items()}
        for path in paths[1:]:
            state = read_safetensors(path)
            _check_same_layout(reference, state, path, paths[0])
            for key, tensor in state.items():
                if tensor.is_floating_point():
                    sums[key] += tensor.double()
                elif not torch.equal(tensor, reference[key]):
                    raise CheckpointError(f"{path}: the integer tensor {key} differs from {paths[0]}'s; "
                                          "it cannot be averaged")  # fmt: skip
    except (WeightsError, FileNotFoundError) as err:
        raise CheckpointError(str(err)) from None
    return {k: (v / len(paths)).to(reference[k].dtype) if reference[k].is_floating_point() else v
            for k, v in sums.items()}  # fmt: skip


def average_last_checkpoints(checkpoints: PathLike, k: int, out: PathLike) -> Path:
    """Average the newest ``k`` complete checkpoints under ``checkpoints`` (a run's
    ``out_dir/checkpoints``) into the model folder ``out``; fewer when the run kept fewer.

    ``out`` gets the mean weights, the newest checkpoint's ``config.json`` and ``averaged.json``
    (the steps averaged). It is replaced if it exists.
    """
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k={k!r}: average at least one checkpoint")
    found = list_checkpoints(checkpoints)
    if not found:
        raise CheckpointError(
            f"{checkpoints}: no complete checkpoint to average (is it a run's checkpoints/ folder?)"
        )
    chosen = found[-k:]
    state = average_checkpoints([folder for _, folder in chosen])
    target = Path(out)
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    write_safetensors(state, target / "model.safetensors")
    shutil.copyfile(chosen[-1][1] / "config.json", target / "config.json")
    record = {"steps": [step for step, _ in chosen], "source": str(Path(checkpoints))}
    write_text_atomic(target / AVERAGE_RECORD, json.dumps(record, indent=2) + "\n")
    return target
