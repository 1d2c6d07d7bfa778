"""CLIP against Hugging Face ``transformers.CLIPModel`` on small random weights, both ways (fp32, 1e-5).

Each direction compares the image and text embeddings (projected, before and after the L2 norm),
the text tower's last states, both logit matrices and the loss; captions of different lengths
with EOT padding and an attention mask exercise the end-of-text pooling.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from glassformer.models import load_model
from glassformer.models.clip import CLIP, CLIPConfig, clip_vision
from glassformer.models.clip.hf import architecture, from_pretrained, save_pretrained

transformers = pytest.importorskip("transformers")

ATOL = 1e-5
VOCAB, BOS, EOS = 99, 97, 98


def _randomize(model: torch.nn.Module) -> None:
    """Noise on every parameter, so a zero bias or a unit norm weight cannot hide a misplaced tensor."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)


def _hf_model(text_act: str = "quick_gelu", vision_act: str = "quick_gelu", eos: int = EOS) -> Any:
    config = transformers.CLIPConfig(
        text_config=dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=12, hidden_act=text_act, bos_token_id=BOS,
                         eos_token_id=eos, pad_token_id=EOS),
        vision_config=dict(hidden_size=40, intermediate_size=56, num_hidden_layers=2, num_attention_heads=5,
                           image_size=16, patch_size=4, hidden_act=vision_act),
        projection_dim=24, attn_implementation="eager",
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.CLIPModel(config).eval()
    _randomize(model)
    return model


def _batch(n: int = 3) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(0, BOS, (n, 10), generator=g)
    ids[:, 0] = BOS
    mask = torch.ones_like(ids)
    for row, end in enumerate([9, 5, 3][:n]):
        ids[row, end:] = EOS  # EOT, then EOT padding: the feature is read at the first one
        mask[row, end + 1 :] = 0
    return {"input_ids": ids, "attention_mask": mask, "pixel_values": torch.randn(n, 3, 16, 16, generator=g)}


def _assert_same(ours: CLIP, hf: Any, batch: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        theirs = hf(**batch, return_loss=True)
        mine = ours(**batch)
        text = (batch["input_ids"], batch["attention_mask"])
        torch.testing.assert_close(ours.image_features(batch["pixel_values"]),
                                   hf.get_image_features(pixel_values=batch["pixel_values"]).pooler_output,
                                   atol=ATOL, rtol=0)  # fmt: skip
        torch.testing.assert_close(ours.text_features(*text),
                                   hf.get_text_features(*text).pooler_output, atol=ATOL, rtol=0)
        torch.testing.assert_close(ours.text_states(*text), theirs.text_model_output.last_hidden_state,
                                   atol=ATOL, rtol=0)  # fmt: skip
    for name in ("image_embeds", "text_embeds", "logits_per_text", "loss"):
        torch.testing.assert_close(getattr(mine, name), getattr(theirs, name), atol=ATOL, rtol=0, msg=name)
    torch.testing.assert_close(mine.logits, theirs.logits_per_image, atol=ATOL, rtol=0)


@pytest.mark.parametrize("acts", [("quick_gelu", "quick_gelu"), ("gelu", "gelu_new")])
def test_ours_loads_a_transformers_clip(acts: tuple[str, str], tmp_path: Path) -> None:
    hf = _hf_model(*acts)
    hf.save_pretrained(tmp_path)
    ours = from_pretrained(tmp_path).eval()
    assert ours.config.vision.dim == 40 and ours.config.projection_dim == 24 and ours.config.max_seq_len == 12
    _assert_same(ours, hf, _batch())
    assert type(load_model(tmp_path)) is CLIP  # the registry's Format finds the family by model_type


def test_legacy_eos_token_id_2_reads_the_largest_id(tmp_path: Path) -> None:
    """Hub checkpoints from before transformers#24773 say eos_token_id=2 and pool at argmax(ids)."""
    hf = _hf_model(eos=2)
    hf.save_pretrained(tmp_path)
    ours = from_pretrained(tmp_path).eval()
    assert ours.config.eos_token_id == VOCAB - 1 == EOS
    _assert_same(ours, hf, _batch())


def _ours(**fields: Any) -> CLIP:
    vision = clip_vision(image_size=16, patch_size=4, dim=40, n_layers=2, n_heads=5, ffn_dim=56)
    config = CLIPConfig(vision=vision, vocab_size=VOCAB, dim=32, n_layers=2, n_heads=4, ffn_dim=48, max_seq_len=12,
                        projection_dim=24, pad_token_id=EOS, bos_token_id=BOS, eos_token_id=EOS, **fields)  # fmt: skip
    torch.manual_seed(0)
    model = CLIP(config).eval()
    _randomize(model)
    return model


def test_our_export_loads_in_transformers_with_nothing_missing(tmp_path: Path) -> None:
    ours = _ours(logit_scale_init=3.0, duplicate_captions="mask")
    save_pretrained(ours, tmp_path)
    hf, info = transformers.CLIPModel.from_pretrained(tmp_path, attn_implementation="eager", output_loading_info=True)
    assert not any(info.values()), info  # nothing missing, unexpected or mis-shaped
    _assert_same(ours, hf.eval(), _batch())
    back = load_model(tmp_path)
    assert back.config == ours.config  # the glassformer_ keys bring back what HF has no field for
    for key, tensor in ours.state_dict().items():
        assert torch.equal(back.state_dict()[key], tensor), key


def test_towers_without_a_transformers_equivalent_are_refused(tmp_path: Path) -> None:
    vit_like = clip_vision(image_size=16, patch_size=4, dim=32, n_layers=1, n_heads=4, ffn_dim=48, pre_norm=False)
    model = CLIP(CLIPConfig(vision=vit_like, vocab_size=VOCAB, dim=32, n_layers=1, n_heads=4, ffn_dim=48,
                            max_seq_len=12, projection_dim=24, pad_token_id=EOS, bos_token_id=BOS, eos_token_id=EOS))  # fmt: skip
    with pytest.raises(ValueError, match="no Hugging Face CLIP equivalent.*pre_norm=False"):
        architecture(model.config)
    with pytest.raises(ValueError, match="pre_norm"):
        save_pretrained(model, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing half-written
