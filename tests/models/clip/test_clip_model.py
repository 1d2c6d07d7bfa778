"""CLIP's own behaviour: InfoNCE against a hand-written loss, the duplicate-caption choices, the
clamped temperature, the config file and the errors at the model's boundary."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from glassformer import registry
from glassformer.models import load_model
from glassformer.models.clip import CLIP, CLIPConfig, contrastive_loss, example_batch
from glassformer.utils.config import ConfigError
from glassformer.utils.paths import data_file


def _tiny() -> CLIP:
    torch.manual_seed(0)
    return registry.build("clip-shapes-tiny").eval()


def _by_hand(logits_per_text: torch.Tensor, same: torch.Tensor | None = None, mode: str = "negatives") -> torch.Tensor:
    """Symmetric InfoNCE written out row by row: -log p(right answer), both directions, averaged."""
    n = logits_per_text.shape[0]
    total = 0.0
    for matrix in (logits_per_text, logits_per_text.T):
        for i in range(n):
            keep = [j for j in range(n) if mode != "mask" or same is None or j == i or not same[i, j]]
            row = matrix[i, keep]
            log_p = row - torch.logsumexp(row, dim=0)
            if mode == "soft_targets" and same is not None:
                hits = [k for k, j in enumerate(keep) if same[i, j]]
                total = total - log_p[hits].mean()
            else:
                total = total - log_p[keep.index(i)]
    return total / (2 * n)


def test_forward_loss_is_the_hand_written_infonce() -> None:
    model = _tiny()
    batch = example_batch(model.config)
    del batch["caption_ids"]
    with torch.no_grad():
        out = model(**batch)
        image = model.image_features(batch["pixel_values"])
        text = model.text_features(batch["input_ids"], batch["attention_mask"])
    image, text = image / image.norm(dim=-1, keepdim=True), text / text.norm(dim=-1, keepdim=True)
    logits_per_text = math.exp(model.config.logit_scale_init) * text @ image.T
    torch.testing.assert_close(out.logits_per_text, logits_per_text, atol=1e-6, rtol=0)
    torch.testing.assert_close(out.loss, _by_hand(logits_per_text), atol=1e-6, rtol=0)


@pytest.mark.parametrize("mode", ["negatives", "mask", "soft_targets"])
def test_each_duplicate_caption_choice_is_the_hand_written_loss(mode: str) -> None:
    logits = torch.randn(5, 5, generator=torch.Generator().manual_seed(3)) * 4  # not symmetric
    ids = torch.tensor([0, 1, 1, 2, 1])
    same = ids[:, None] == ids[None, :]
    expected = _by_hand(logits, same, mode)
    torch.testing.assert_close(contrastive_loss(logits, ids, mode), expected, atol=1e-6, rtol=0)  # type: ignore[arg-type]


def test_pairs_sharing_a_caption_are_not_pushed_apart() -> None:
    """Rows 1 and 2 hold the same caption. Plain InfoNCE raises the loss as caption 1 and image 2
    grow alike (a push apart); masking makes the loss blind to that cell; soft targets lower it."""
    ids = torch.tensor([0, 1, 1, 2])
    logits = torch.eye(4) * 10.0
    logits[1, 2] = logits[2, 1] = 5.0  # a duplicate pair already fairly similar
    grads = {}
    for mode in ("negatives", "mask", "soft_targets"):
        cell = logits.clone().requires_grad_(True)
        contrastive_loss(cell, ids, mode).backward()  # type: ignore[arg-type]
        grads[mode] = cell.grad[1, 2].item()
    assert grads["negatives"] > 1e-3  # gradient descent lowers the duplicate's similarity
    assert grads["mask"] == 0.0
    assert grads["soft_targets"] < -1e-3  # ... raises it
    # two identical pairs (same picture, same caption): only plain InfoNCE cannot get below ln 2 for them
    identical = torch.full((2, 2), 50.0)
    twins = torch.tensor([7, 7])
    assert contrastive_loss(identical, twins, "negatives").item() == pytest.approx(math.log(2))
    assert contrastive_loss(identical, twins, "mask").item() == pytest.approx(0.0)
    assert contrastive_loss(identical, None, "mask").item() == pytest.approx(math.log(2))  # no ids: plain


def test_model_reads_caption_ids_with_its_configured_choice() -> None:
    model = _tiny()
    batch = example_batch(model.config)
    assert batch["caption_ids"].tolist() == [0, 1, 1]
    with torch.no_grad():
        losses = {m: model(**batch).loss.item() for m in ("negatives", "mask", "soft_targets")
                  if not setattr(model.config, "duplicate_captions", m)}  # fmt: skip
    assert len(set(losses.values())) == 3, losses


def test_equal_token_captions_only_mask_lifts_the_floor() -> None:
    """Word-for-word duplicates embed alike: soft targets then equal plain InfoNCE; masking differs."""
    model = _tiny()
    batch = example_batch(model.config)
    batch["input_ids"][2], batch["attention_mask"][2] = batch["input_ids"][1], batch["attention_mask"][1]
    with torch.no_grad():
        logits = model(**batch).logits_per_text
    ids = batch["caption_ids"]
    plain, soft, masked = (contrastive_loss(logits, ids, m) for m in ("negatives", "soft_targets", "mask"))
    torch.testing.assert_close(soft, plain, atol=1e-6, rtol=0)
    assert masked < plain - 1e-3


def test_temperature_is_learned_and_clamped_at_100() -> None:
    model = _tiny()
    batch = example_batch(model.config)
    assert model(**batch).metrics["logit_scale"].item() == pytest.approx(1 / 0.07, rel=1e-5)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(200.0))
    out = model(**batch)
    assert out.metrics["logit_scale"].item() == pytest.approx(100.0)
    out.loss.backward()
    assert model.logit_scale.grad.item() == 0.0  # past the clamp it stops moving up
    with pytest.raises(ConfigError, match="max_logit_scale"):
        model.config.replace(logit_scale_init=math.log(150.0))


def test_config_and_weights_round_trip(tmp_path: Path) -> None:
    model = _tiny()
    model.save(tmp_path)
    back = load_model(tmp_path)
    assert isinstance(back, CLIP) and back.config == model.config
    assert back.config.vision.pre_norm and not back.config.vision.patch_bias
    with pytest.raises(ConfigError, match="duplicate_captions='dedupe'"):
        model.config.replace(duplicate_captions="dedupe")
    with pytest.raises(ConfigError, match="image tower has no head"):
        CLIPConfig(vision=model.config.vision.replace(num_labels=3))


def test_bad_inputs_say_what_to_do() -> None:
    model = _tiny()
    c = model.config
    batch = example_batch(c)
    too_long = torch.full((1, c.max_seq_len + 1), c.eos_token_id)
    with pytest.raises(ValueError, match="truncate the captions.*encode_captions"):
        model.encode_text(too_long)
    with pytest.raises(ValueError, match="no end-of-text token"):
        model.encode_text(torch.zeros(2, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="caption_ids must be one integer id per pair"):
        model(**{**batch, "caption_ids": torch.zeros(2, dtype=torch.long)})
    with pytest.raises(ValueError, match="3 images and 2 captions"):
        model(batch["pixel_values"], batch["input_ids"][:2])
    scores = model(batch["pixel_values"], batch["input_ids"][:2], return_loss=False)  # zero-shot: any counts
    assert scores.loss is None and tuple(scores.logits.shape) == (3, 2)


def test_a_caption_longer_than_the_context_is_truncated_with_a_warning() -> None:
    path = data_file("tokenizers", "clip_bpe_simple_vocab_16e6.txt.gz")
    if path is None:
        pytest.skip("tokenizers/clip_bpe_simple_vocab_16e6.txt.gz is not in the shared data (set GLASSFORMER_DATA)")
    from glassformer.tokenizers.clip import CLIPTokenizer

    config = registry.get("clip-shapes").make_config()
    tokenizer = CLIPTokenizer.from_merges_file(path)
    captions = ["a small red circle above a blue square", "a large green star left of " * 10]
    with pytest.warns(UserWarning, match="1 caption\\(s\\) longer than the 32-token context were truncated"):
        batch = tokenizer.encode_captions(captions, context_length=config.max_seq_len)
    assert tuple(batch["input_ids"].shape) == (2, config.max_seq_len)
    assert batch["input_ids"][1, -1] == config.eos_token_id  # the cut caption still ends with EOT
