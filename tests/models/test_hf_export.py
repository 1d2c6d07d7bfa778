"""Every preset leaves for Hugging Face ``transformers``: one test over the registry.

For each registered ``-tiny`` twin whose family has a ``huggingface`` Format with ``exports``:
random weights (norms and biases too), ``save`` through the Format, open the folder with the
``transformers`` class named in ``config.json``, and compare logits to ours (fp32, eager
attention, 1e-5); then open it back with ``glassformer.models.load_model`` and compare the
weights. Presets that do not export must say why, and ``docs/hf-export.md`` must list them all.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch

from glassformer import registry
from glassformer.models import load_model

transformers = pytest.importorskip("transformers")

ATOL = 1e-5
DOCS = Path(__file__).resolve().parents[2] / "docs" / "hf-export.md"
INPUTS = ("input_ids", "attention_mask", "input_features", "decoder_input_ids", "pixel_values")  # keys both sides take; labels are ours


def _hf_format(preset: registry.Preset) -> registry.Format | None:
    fmt = registry.family(preset.family).format("huggingface")
    return fmt if fmt is not None and fmt.exports is not None and fmt.save is not None else None


def _export_error(preset: registry.Preset) -> str | None:
    """None where the preset exports, else the ValueError's message."""
    fmt = _hf_format(preset)
    assert fmt is not None
    try:
        registry.import_path(fmt.exports)(preset.make_config())
    except ValueError as error:
        return str(error)
    return None


def _presets(tiny: bool) -> list[registry.Preset]:
    return [p for n, p in registry.presets().items() if n.endswith("-tiny") == tiny and _hf_format(p) is not None]


EXPORTING = [p.name for p in _presets(tiny=True) if _export_error(p) is None]
REFUSED = [p.name for p in _presets(tiny=True) if _export_error(p) is not None]


def _randomize(model: torch.nn.Module) -> None:
    """Noise on every parameter, so a zero bias or a unit norm weight cannot hide a misplaced tensor."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)


def _logits(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        out = model(**{k: v for k, v in batch.items() if k in INPUTS})
    return out.logits_per_image if hasattr(out, "logits_per_image") else out.logits  # CLIP: images x captions


@pytest.mark.parametrize("name", EXPORTING)
def test_preset_exports_to_transformers_with_equal_logits(name: str, tmp_path: Path) -> None:
    preset = registry.get(name)
    torch.manual_seed(0)
    config = preset.make_config()
    ours = preset.build(config).eval()
    _randomize(ours)
    batch = preset.example_batch(config)
    registry.import_path(_hf_format(preset).save)(ours, tmp_path)

    arch = json.loads((tmp_path / "config.json").read_text())["architectures"][0]
    hf, info = getattr(transformers, arch).from_pretrained(
        tmp_path, attn_implementation="eager", output_loading_info=True
    )
    hf.eval()
    assert hf.dtype == torch.float32
    # transformers fills a missing tensor with its own init (zero biases!) and says so only here
    assert not info["missing_keys"] and not info["mismatched_keys"], info
    # the one tensor it may ignore: the pooler a masked-LM model carries for a later classifier
    assert all(".pooler." in k for k in info["unexpected_keys"]), info
    expected = _logits(ours, batch)
    torch.testing.assert_close(_logits(hf, batch), expected, atol=ATOL, rtol=0)

    back = load_model(tmp_path).eval()
    assert type(back) is type(ours)
    # a bias-free model comes back bias-free (its exact-zero biases dropped), not with zero biases
    assert getattr(back.config, "bias", None) == getattr(config, "bias", None)
    torch.testing.assert_close(_logits(back, batch), expected, atol=ATOL, rtol=0)
    state, again = ours.state_dict(), back.state_dict()
    for key, tensor in state.items():
        assert torch.equal(again[key], tensor), key
    # what the round trip adds computes nothing (BERT's segment row for a model without segments)
    for key in again.keys() - state.keys():
        assert not again[key].any(), key


def _docs_rows() -> tuple[dict[str, str], set[str]]:
    """``docs/hf-export.md``'s preset tables: {preset: architecture} and the presets that do not export."""
    exported, refused = {}, set()
    section = DOCS.read_text().split("## Which presets export")[1].split("\n## ")[0]
    for line in section.splitlines():
        if m := re.match(r"\| `([\w.-]+)` \| `(\w+)` \|", line):
            exported[m[1]] = m[2]
        elif m := re.match(r"\| `([\w.-]+)` \| [^`|]", line):
            refused.add(m[1])
    return exported, refused


def test_docs_table_matches_the_registry() -> None:
    exported, refused = _docs_rows()
    expected = {}
    for preset in _presets(tiny=False):
        if _export_error(preset) is None:
            expected[preset.name] = registry.import_path(_hf_format(preset).exports)(preset.make_config())
    assert exported == expected
    without_format = {n for n, p in registry.presets().items() if not n.endswith("-tiny") and _hf_format(p) is None}
    refusing = {p.name for p in _presets(tiny=False) if _export_error(p) is not None}
    assert refused == without_format | refusing


def test_presets_that_do_not_export_say_why() -> None:
    """A refusal names the architecture it misses or the field in the way; none is silent."""
    for name in REFUSED:
        message = _export_error(registry.get(name))
        assert message and re.search(r"Hugging Face|no .* equivalent", message), (name, message)


def _gpt(preset: str, **fields: Any) -> Any:
    return registry.get(preset).make_config().replace(**fields)


UNEXPORTABLE = {
    "rmsnorm+gelu": (_gpt("shakespeare-char-tiny", norm="rmsnorm"), "norm='rmsnorm'"),
    "learned+swiglu": (_gpt("shakespeare-char-tiny", activation="swiglu"), "activation='swiglu'"),
    "layernorm+swiglu": (_gpt("shakespeare-char-llama-tiny", norm="layernorm"), "norm='layernorm'"),
    "neox-gqa": (_gpt("shakespeare-char-rope-tiny", n_kv_heads=1), "n_kv_heads=1"),
}


@pytest.mark.parametrize("case", list(UNEXPORTABLE))
def test_gpt_configs_without_an_architecture_say_what_exports(case: str, tmp_path: Path) -> None:
    from glassformer.models.gpt import GPT
    from glassformer.models.gpt.hf import save_pretrained

    config, reason = UNEXPORTABLE[case]
    with pytest.raises(ValueError, match="no Hugging Face architecture") as error:
        save_pretrained(GPT(config), tmp_path / "out")
    assert reason in str(error.value)
    assert "GPT-NeoX" in str(error.value) or "GPTNeoXForCausalLM" in str(error.value)
    assert not (tmp_path / "out").exists()  # nothing half-written


def _saved(name: str, folder: Path) -> torch.nn.Module:
    from glassformer.models.gpt.hf import save_pretrained

    torch.manual_seed(0)
    model = registry.build(name).eval()
    _randomize(model)
    save_pretrained(model, folder)
    return model


def test_zero_biases_load_as_trainable_biases_on_request(tmp_path: Path) -> None:
    ours = _saved("shakespeare-char-tiny", tmp_path)
    kept = load_model(tmp_path, bias=True).eval()
    assert kept.config.bias and not ours.config.bias
    ids = torch.randint(0, ours.config.vocab_size, (2, 9))
    torch.testing.assert_close(_logits(kept, {"input_ids": ids}), _logits(ours, {"input_ids": ids}), atol=ATOL, rtol=0)


def test_dropping_non_zero_biases_is_refused(tmp_path: Path) -> None:
    _saved("gpt2-tiny", tmp_path)
    with pytest.raises(ValueError, match="non-zero biases"):
        load_model(tmp_path, bias=False)


def _hf_neox(**fields: Any) -> Any:
    cfg = transformers.GPTNeoXConfig(
        vocab_size=83, hidden_size=48, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96,
        max_position_embeddings=40, rotary_pct=1.0, rotary_emb_base=500.0, hidden_act="gelu",
        tie_word_embeddings=False, **fields,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.GPTNeoXForCausalLM(cfg).eval()
    _randomize(model)
    return model


@pytest.mark.parametrize("attention_bias", [True, False])
def test_transformers_gpt_neox_file_loads(attention_bias: bool, tmp_path: Path) -> None:
    """A GPT-NeoX checkpoint made by transformers itself (not by our export) opens with equal logits."""
    hf = _hf_neox(use_parallel_residual=False, attention_bias=attention_bias)
    hf.save_pretrained(tmp_path)
    ours = load_model(tmp_path)
    assert ours.config.pos_encoding == "rope" and ours.config.rope_theta == 500.0
    batch = {"input_ids": torch.randint(0, 83, (2, 11))}
    torch.testing.assert_close(_logits(ours, batch), _logits(hf, batch), atol=ATOL, rtol=0)


def test_parallel_residual_gpt_neox_is_refused(tmp_path: Path) -> None:
    _hf_neox(use_parallel_residual=True).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="use_parallel_residual"):
        load_model(tmp_path)
