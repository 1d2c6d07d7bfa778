"""Checkpoints that are either complete or invisible, and that never run code when loaded.

Layout of ``<out_dir>/checkpoints/step-00001200/``:

- ``model.safetensors`` + ``config.json`` (model config and ``family``): the same files as a saved
  model, so ``glassformer.models.load_model`` opens a checkpoint directly;
- ``train_config.json``: the ``TrainConfig`` of the run;
- ``train_state.pt``: optimizer, grad scaler, step, data position, RNG states of python, numpy,
  torch and CUDA (one set per process), best metric and early-stopping count. It holds only
  tensors and plain Python values and is read with ``torch.load(weights_only=True)``, which
  refuses any other pickled object instead of running it;
- ``ema.safetensors`` when the run keeps an EMA;
- ``meta.json``, written last: the step and the size of every file.

**Atomic write**: everything goes into ``.tmp-step-…`` first, each file is flushed to disk, then
the folder is renamed to its final name in one ``os.rename``. A process killed half-way leaves
only a ``.tmp-`` folder, which resume ignores and the next run deletes. Resume takes the newest
``step-*`` folder whose ``meta.json`` exists and whose files have the recorded sizes, so even a
file system without atomic renames cannot hand it a torn checkpoint.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from glassformer.utils.config import write_text_atomic
from glassformer.utils.weights import (
    WeightsError,
    load_into,
    read_safetensors,
    safe_torch_load,
    save_model_weights,
)

FORMAT_VERSION = 1
_STEP_DIR = re.compile(r"^step-(\d+)$")
TEMP_PREFIX = ".tmp-"


class CheckpointError(ValueError):
    """A checkpoint is missing, incomplete, unsafe or does not fit the model being trained."""


def step_dir_name(step: int) -> str:
    return f"step-{step:08d}"


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def list_checkpoints(root: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """``(step, folder)`` for every complete checkpoint under ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _STEP_DIR.match(child.name)
        if match and child.is_dir() and is_complete(child):
            found.append((int(match.group(1)), child))
    return sorted(found)


def latest_checkpoint(root: str | os.PathLike[str]) -> Path | None:
    """The newest complete checkpoint under ``root``, or None."""
    found = list_checkpoints(root)
    return found[-1][1] if found else None


def is_complete(folder: Path) -> bool:
    """True when ``meta.json`` exists and every file it lists has the recorded size."""
    meta_path = folder / "meta.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        files = meta["files"]
        return bool(files) and all((folder / name).stat().st_size == size for name, size in files.items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def remove_temporaries(root: Path) -> None:
    """Delete folders left by writes that were killed half-way."""
    if root.is_dir():
        for child in root.iterdir():
            if child.name.startswith(TEMP_PREFIX) and child.is_dir():
                shutil.rmtree(child, ignore_errors=True)


def _config_json(model_config: dict[str, Any], family: str | None) -> str:
    data = {"family": family, **model_config} if family else dict(model_config)
    return json.dumps(data, indent=2, sort_keys=True, default=str) + "\n"


def _publish(tmp: Path, final: Path) -> None:
    """Rename a fully written ``tmp`` folder to ``final``, replacing an older folder of that name."""
    for child in tmp.iterdir():
        _fsync_path(child)
    _fsync_path(tmp)
    if final.exists():  # e.g. a run resumed from an older checkpoint reaches this step again
        old = final.with_name(f"{TEMP_PREFIX}old-{final.name}-{os.getpid()}")
        os.rename(final, old)
        os.rename(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, final)
    _fsync_path(final.parent)


def save_checkpoint(
    root: str | os.PathLike[str],
    step: int,
    *,
    model: nn.Module,
    model_config: dict[str, Any],
    family: str | None,
    train_config: dict[str, Any],
    train_state: dict[str, Any],
    ema_state: dict[str, Tensor] | None = None,
    keep_last: int | None = None,
) -> Path:
    """Write one checkpoint atomically and delete all but the newest ``keep_last``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / step_dir_name(step)
    tmp = root / f"{TEMP_PREFIX}{final.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_model_weights(model, tmp / "model.safetensors")
    (tmp / "config.json").write_text(_config_json(model_config, family), encoding="utf-8")
    (tmp / "train_config.json").write_text(json.dumps(train_config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    if ema_state is not None:
        save_file({k: v.detach().contiguous().cpu() for k, v in ema_state.items()}, str(tmp / "ema.safetensors"))
    torch.save({"format": FORMAT_VERSION, **train_state}, tmp / "train_state.pt")
    files = {child.name: child.stat().st_size for child in sorted(tmp.iterdir())}
    meta = {"format": FORMAT_VERSION, "step": step, "time": time.time(), "files": files}
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    _publish(tmp, final)
    if keep_last is not None:
        for _, old in list_checkpoints(root)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def load_train_state(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """Read ``train_state.pt`` with ``weights_only=True``: tensors and plain values only."""
    path = Path(folder) / "train_state.pt"
    if not path.is_file():
        raise CheckpointError(f"{path}: missing; {folder} is not a complete glassformer checkpoint")
    try:
        state = safe_torch_load(path, "training state")
    except WeightsError as err:
        raise CheckpointError(str(err)) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: not a glassformer training state (format {FORMAT_VERSION})")
    return state


def load_weights(model: nn.Module, folder: str | os.PathLike[str], map_location: str = "cpu") -> None:
    """Load ``model.safetensors`` into ``model`` (safetensors holds tensors only)."""
    path = Path(folder) / "model.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weights file not found")
    try:
        load_into(model, read_safetensors(path, device=map_location), source=str(path))
    except WeightsError as err:
        raise CheckpointError(str(err)) from None


def load_ema(folder: str | os.PathLike[str]) -> dict[str, Tensor] | None:
    path = Path(folder) / "ema.safetensors"
    if not path.is_file():
        return None
    try:
        return load_file(str(path))
    except SafetensorError as err:
        raise CheckpointError(f"{path}: not a valid safetensors file ({err})") from None


def read_model_config(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The model config stored with a checkpoint (``family`` included when there is one)."""
    path = Path(folder) / "config.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path}: cannot read the model config ({err})") from None


def config_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``field: checkpoint=A, now=B`` for every field that differs (after a JSON round trip)."""
    current = json.loads(json.dumps(current, default=str))
    lines = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key, "<absent>"), current.get(key, "<absent>")
        if a != b:
            lines.append(f"{key}: checkpoint={a!r}, now={b!r}")
    return lines


def save_best(out_dir: Path, *, model: nn.Module, model_config: dict[str, Any], family: str | None,
              metrics: dict[str, float], step: int) -> Path:
    """Replace ``<out_dir>/best`` with the current weights, atomically (a model folder + metrics.json)."""
    final = out_dir / "best"
    tmp = out_dir / f"{TEMP_PREFIX}best-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_model_weights(model, tmp / "model.safetensors")
    (tmp / "config.json").write_text(_config_json(model_config, family), encoding="utf-8")
    write_text_atomic(tmp / "metrics.json", json.dumps({"step": step, **metrics}, indent=2) + "\n")
    _publish(tmp, final)
    return final
