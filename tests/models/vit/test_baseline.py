"""The CNN baseline: its residual block equals transformers' ResNet basic layer; its loss is the ViT's."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from glassformer.models.vit.baseline import BasicBlock, CNNBaseline, CNNConfig
from glassformer.utils.config import ConfigError

transformers = pytest.importorskip("transformers")
from transformers.models.resnet.modeling_resnet import ResNetBasicLayer  # noqa: E402


def _copy_block(ours: BasicBlock, theirs: ResNetBasicLayer) -> None:
    """Our block's weights (convs, norms and running statistics, all randomised) into theirs."""
    pairs = [(ours.conv1, ours.bn1, theirs.layer[0]), (ours.conv2, ours.bn2, theirs.layer[1])]
    if not isinstance(ours.shortcut, torch.nn.Identity):
        pairs.append((ours.shortcut[0], ours.shortcut[1], theirs.shortcut))
    with torch.no_grad():
        for conv, bn, layer in pairs:
            conv.weight.normal_(std=0.2)
            bn.weight.uniform_(0.5, 1.5), bn.bias.normal_(std=0.1)
            bn.running_mean.normal_(std=0.1), bn.running_var.uniform_(0.5, 1.5)
            layer.convolution.load_state_dict(conv.state_dict())
            layer.normalization.load_state_dict(bn.state_dict())


@pytest.mark.parametrize(("c_in", "c_out", "stride"), [(8, 8, 1), (8, 16, 2)])
@pytest.mark.parametrize("training", [False, True])
def test_basic_block_matches_transformers_resnet(c_in: int, c_out: int, stride: int, training: bool) -> None:
    torch.manual_seed(0)
    ours, theirs = BasicBlock(c_in, c_out, stride), ResNetBasicLayer(c_in, c_out, stride)
    _copy_block(ours, theirs)
    ours.train(training), theirs.train(training)
    x = torch.randn(3, c_in, 10, 10)
    torch.testing.assert_close(ours(x), theirs(x), atol=1e-5, rtol=0)
    if training:  # the batch statistics moved the running ones the same way
        torch.testing.assert_close(ours.bn1.running_mean, theirs.layer[0].normalization.running_mean)


def test_size_and_shapes() -> None:
    model = CNNBaseline(CNNConfig())
    assert 500_000 < model.num_parameters() < 2_000_000
    out = model.eval()(torch.randn(2, 1, 28, 28))
    assert out.logits.shape == (2, 10) and out.loss is None


def test_loss_follows_the_vit_rules() -> None:
    torch.manual_seed(0)
    model = CNNBaseline(CNNConfig(label_smoothing=0.1, widths=(8, 16), blocks_per_stage=1)).eval()
    x, labels = torch.randn(4, 1, 28, 28), torch.tensor([0, 3, 9, 3])
    out = model(x, labels=labels)
    torch.testing.assert_close(out.loss, F.cross_entropy(out.logits, labels, label_smoothing=0.1))
    torch.testing.assert_close(model(x, labels=F.one_hot(labels, 10).float()).loss, out.loss)
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    with pytest.raises(ValueError, match="labels must be class ids"):
        model(x, labels=torch.zeros(4, 2, 2, dtype=torch.long))
    with pytest.raises(TypeError, match="floating point"):
        model(torch.zeros(1, 1, 28, 28, dtype=torch.uint8))


def test_config_checks_and_save_load(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="widths"):
        CNNConfig(widths=())
    with pytest.raises(ConfigError, match="label_smoothing"):
        CNNConfig(label_smoothing=1.5)
    model = CNNBaseline(CNNConfig(widths=(8, 16), blocks_per_stage=1)).eval()
    model.save(tmp_path)
    back = CNNBaseline.load(tmp_path).eval()
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(back(x).logits, model(x).logits)
