"""ViT attention views: rollout against hand-worked numbers and a loop version, [CLS] maps, pictures, CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from glassformer.viz.vit import attention_rollout, cls_attention_maps, patch_grid, rollout_cls_map

# --- rollout ----------------------------------------------------------------------------------------

# Two layers, two heads, two tokens ([CLS], one patch), worked out on paper:
# layer 1: head mean [[.5, .5], [.5, .5]]; + I -> [[1.5, .5], [.5, 1.5]]; rows / 2 -> [[.75, .25], [.25, .75]]
# layer 2: head mean [[1, 0], [.5, .5]];   + I -> [[2, 0], [.5, 1.5]];    rows / 2 -> [[1, 0], [.25, .75]]
# rollout = A2 @ A1 = [[.75, .25], [.25*.75 + .75*.25, .25*.25 + .75*.75]] = [[.75, .25], [.375, .625]]
LAYER1 = [[[1.0, 0.0], [0.5, 0.5]], [[0.0, 1.0], [0.5, 0.5]]]
LAYER2 = [[[1.0, 0.0], [1.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]]]


def _paper_example() -> list[torch.Tensor]:
    return [torch.tensor([LAYER1]), torch.tensor([LAYER2])]  # each (B=1, H=2, T=2, T=2)


def test_rollout_matches_the_two_layer_example_worked_by_hand():
    got = attention_rollout(_paper_example())
    np.testing.assert_allclose(got[0].numpy(), [[0.75, 0.25], [0.375, 0.625]], atol=1e-7)


def test_rollout_without_the_residual_is_the_product_of_head_means():
    # mean2 @ mean1 = [[1, 0], [.5, .5]] @ [[.5, .5], [.5, .5]] = [[.5, .5], [.5, .5]]
    got = attention_rollout(_paper_example(), add_residual=False)
    np.testing.assert_allclose(got[0].numpy(), [[0.5, 0.5], [0.5, 0.5]], atol=1e-7)


def _loop_rollout(layers: list[np.ndarray]) -> list[list[float]]:
    """Rollout for one image in plain Python loops (no matrix code), to check the tensor version."""
    t = layers[0].shape[-1]
    result = [[1.0 if i == j else 0.0 for j in range(t)] for i in range(t)]
    for heads in layers:  # (H, T, T)
        a = [
            [sum(heads[h][i][j] for h in range(len(heads))) / len(heads) + (i == j) for j in range(t)]
            for i in range(t)
        ]
        a = [[v / sum(row) for v in row] for row in a]
        result = [[sum(a[i][k] * result[k][j] for k in range(t)) for j in range(t)] for i in range(t)]
    return result


def _random_attentions(layers: int, batch: int, heads: int, t: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.softmax(3 * torch.randn(batch, heads, t, t, generator=g), dim=-1) for _ in range(layers)]


def test_rollout_matches_a_loop_version_on_random_weights():
    att = _random_attentions(layers=3, batch=2, heads=4, t=5)
    got = attention_rollout(att)
    for b in range(2):
        expected = _loop_rollout([a[b].double().numpy() for a in att])
        np.testing.assert_allclose(got[b].numpy(), expected, atol=1e-6)


@pytest.mark.parametrize("fusion", ["mean", "max", "min"])
@pytest.mark.parametrize("discard", [0.0, 0.5])
def test_rollout_rows_sum_to_one(fusion, discard):
    got = attention_rollout(_random_attentions(4, 2, 3, 10), head_fusion=fusion, discard_ratio=discard)
    assert got.shape == (2, 10, 10)
    torch.testing.assert_close(got.sum(-1), torch.ones(2, 10))
    assert (got >= 0).all()


def test_rollout_of_identity_attention_is_the_identity():
    eye = torch.eye(5).expand(1, 2, 5, 5)
    torch.testing.assert_close(attention_rollout([eye, eye, eye]), torch.eye(5)[None])


def test_discard_zeroes_the_weakest_patches_but_keeps_cls():
    # one layer, one head; row weights over [CLS] + 4 patches. discard 0.5 of the 4 patches = 2 zeroed.
    row = torch.tensor([0.05, 0.4, 0.1, 0.3, 0.15])
    att = [row.expand(1, 1, 5, 5).clone()]
    got = attention_rollout(att, add_residual=False, discard_ratio=0.5)[0, 0]
    kept = torch.tensor([0.05, 0.4, 0.0, 0.3, 0.0])
    torch.testing.assert_close(got, kept / kept.sum())


def test_rollout_refuses_bad_input():
    with pytest.raises(ValueError, match="non-empty"):
        attention_rollout([])
    with pytest.raises(ValueError, match="layer 0 .*expected \\(batch, heads, T, T\\)"):
        attention_rollout([torch.rand(2, 5, 5)])
    with pytest.raises(ValueError, match="layer 1 attention has shape"):
        attention_rollout([torch.rand(1, 2, 5, 5), torch.rand(1, 3, 5, 5)])
    with pytest.raises(ValueError, match="non-negative"):
        attention_rollout([-torch.rand(1, 2, 5, 5)])
    with pytest.raises(ValueError, match="did you mean 'mean'"):
        attention_rollout(_paper_example(), head_fusion="meen")
    with pytest.raises(ValueError, match="discard_ratio"):
        attention_rollout(_paper_example(), discard_ratio=1.0)


# --- [CLS] maps ---------------------------------------------------------------------------------------


def test_cls_maps_fold_the_cls_row_into_the_patch_grid():
    att = _random_attentions(layers=2, batch=2, heads=3, t=1 + 9)
    maps = cls_attention_maps(att, layer=0)
    assert maps.shape == (2, 3, 3, 3)
    for b in range(2):
        for h in range(3):
            for i in range(3):
                for j in range(3):
                    assert maps[b, h, i, j].item() == pytest.approx(att[0][b, h, 0, 1 + 3 * i + j].item())
    torch.testing.assert_close(cls_attention_maps(att), cls_attention_maps(att, layer=1))


def test_rollout_cls_map_is_the_cls_row():
    rollout = attention_rollout(_random_attentions(2, 1, 2, 1 + 4))
    torch.testing.assert_close(rollout_cls_map(rollout)[0].flatten(), rollout[0, 0, 1:])


def test_maps_refuse_a_token_count_that_is_no_grid():
    with pytest.raises(ValueError, match="not a square grid"):
        patch_grid(1 + 8)
    with pytest.raises(ValueError, match="out of range"):
        cls_attention_maps(_random_attentions(2, 1, 1, 5), layer=2)


def test_mean_pooled_maps_average_every_query_row():
    att = _random_attentions(layers=1, batch=1, heads=2, t=4)  # no [CLS]: 4 patches, a 2x2 grid
    maps = cls_attention_maps(att, n_prefix=0)
    for h in range(2):
        for p in range(4):
            mean = sum(att[0][0, h, q, p].item() for q in range(4)) / 4
            assert maps[0, h, p // 2, p % 2].item() == pytest.approx(mean)


# --- the model and the pictures -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_vit():
    from glassformer.models.vit.config import tiny, vit_fashion
    from glassformer.models.vit.model import ViT

    torch.manual_seed(0)
    return ViT(tiny(vit_fashion()))  # 28x28 grayscale, 4x4 patches of 7 pixels, [CLS], 10 labels


def test_eager_attention_switches_every_block_and_switches_back(tiny_vit):
    from glassformer.viz.vit import eager_attention

    backends = [m.backend for m in tiny_vit.modules() if isinstance(getattr(m, "backend", None), str)]
    assert backends and set(backends) == {"sdpa"}
    with eager_attention(tiny_vit):
        assert {m.backend for m in tiny_vit.modules() if isinstance(getattr(m, "backend", None), str)} == {
            "eager"
        }
    assert [m.backend for m in tiny_vit.modules() if isinstance(getattr(m, "backend", None), str)] == backends


def test_vit_attentions_are_softmax_rows_over_cls_and_patches(tiny_vit):
    from glassformer.viz.vit import vit_attentions

    tiny_vit.train()
    x = torch.randn(3, 1, 28, 28)
    attentions, logits = vit_attentions(tiny_vit, x)
    assert tiny_vit.training  # put back as it was
    assert len(attentions) == 2 and attentions[0].shape == (3, 4, 17, 17)
    torch.testing.assert_close(attentions[1].sum(-1), torch.ones(3, 4, 17))
    tiny_vit.eval()
    with torch.no_grad():
        torch.testing.assert_close(logits, tiny_vit(x).logits)  # the eager path gives the fused path's answer


def _png_size(path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:
        return im.size


def test_pictures_are_drawn(tiny_vit, tmp_path):
    from glassformer.viz.vit import plot_class_grid, plot_head_overlays, plot_rollout_overlay, vit_attentions

    x = torch.randn(6, 1, 28, 28)
    attentions, _ = vit_attentions(tiny_vit, x[:1])
    heads = plot_head_overlays(x[:1], attentions, tmp_path / "heads.png", title="random weights")
    rollout = plot_rollout_overlay(x[:1], attentions, tmp_path / "rollout.png")
    grid = plot_class_grid(
        tiny_vit,
        x,
        [0, 1, 2, 0, 1, 2],
        tmp_path / "grid.png",
        class_names=tiny_vit.config.label_names,
        per_class=2,
    )
    for png in (heads, rollout, grid):
        width, height = _png_size(png)
        assert width > 200 and height > 150, png
    assert _png_size(grid)[1] > _png_size(grid)[0]  # three class rows of two images


def test_top_k_names_classes_or_falls_back_to_indices():
    from glassformer.viz.vit import top_k_classes

    logits = torch.log(torch.tensor([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]]))
    named = top_k_classes(logits, ("cat", "dog", "eel"), k=2)
    assert [n for n, _ in named[0]] == ["dog", "eel"] and named[0][0][1] == pytest.approx(0.6)
    assert [n for n, _ in top_k_classes(logits)[1]] == ["0", "2", "1"]


# --- the command line: classify and attention for a ViT checkpoint ---------------------------------------


def _write_png(path, array: np.ndarray):
    from PIL import Image

    Image.fromarray(array).save(path)
    return path


@pytest.fixture(scope="module")
def fashion_folder(tmp_path_factory, tiny_vit):
    """A saved grayscale 28x28 ViT with Fashion-MNIST class names."""
    return tiny_vit.save(tmp_path_factory.mktemp("vit") / "model")


@pytest.fixture(scope="module")
def hf_colour_folder(tmp_path_factory):
    """A 3-channel 32x32 ViT written in Hugging Face's layout, with HF's own preprocessor config."""
    transformers = pytest.importorskip("transformers")
    from glassformer.models.vit.config import tiny, vit_ti16
    from glassformer.models.vit.hf import save_pretrained
    from glassformer.models.vit.model import ViT

    torch.manual_seed(1)
    config = tiny(vit_ti16()).replace(num_labels=5, label_names=("cat", "dog", "eel", "fox", "gnu"))
    folder = save_pretrained(ViT(config), tmp_path_factory.mktemp("hf") / "vit")
    transformers.ViTImageProcessor(
        do_resize=False, image_mean=[0.4, 0.5, 0.6], image_std=[0.2, 0.3, 0.25]
    ).save_pretrained(folder)
    return folder


def test_classify_prints_the_top_three_of_transformers(hf_colour_folder, tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    from PIL import Image

    from glassformer.cli import main

    rng = np.random.default_rng(0)
    image = _write_png(tmp_path / "photo.png", rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    assert main(["classify", str(hf_colour_folder), str(image)]) == 0
    line = capsys.readouterr().out.strip()
    got = [(name, float(p)) for name, p in zip(*[iter(line.split("\t")[1].split())] * 2, strict=True)]

    processor = transformers.ViTImageProcessor.from_pretrained(hf_colour_folder)
    reference = transformers.ViTForImageClassification.from_pretrained(hf_colour_folder).eval()
    with torch.no_grad():
        pixels = processor(images=Image.open(image), return_tensors="pt")["pixel_values"]
        probs = reference(pixel_values=pixels).logits.softmax(-1)[0]
    top = probs.topk(3)
    names = [reference.config.id2label[i] for i in top.indices.tolist()]
    assert [n for n, _ in got] == names
    np.testing.assert_allclose([p for _, p in got], top.values.numpy(), atol=1e-3)  # printed with 3 decimals


def test_classify_a_folder_names_classes_and_notes_conversions(fashion_folder, tmp_path, capsys):
    from glassformer.cli import main

    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(1)
    _write_png(folder / "a.png", rng.integers(0, 256, (28, 28), dtype=np.uint8))
    _write_png(folder / "b.png", rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))  # colour, wrong size
    assert main(["classify", str(fashion_folder), str(folder), "--json"]) == 0
    captured = capsys.readouterr()
    rows = [__import__("json").loads(line) for line in captured.out.splitlines()]
    assert [r["image"].rsplit("/", 1)[1] for r in rows] == ["a.png", "b.png"]
    for row in rows:
        assert len(row["top"]) == 3 and row["top"][0]["label"] in tiny_vit_names()
        probs = [t["probability"] for t in row["top"]]
        assert probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6
    assert (
        "converted to grayscale" in captured.err
        and "40x40 pixels resized to the model's 28x28" in captured.err
    )


def tiny_vit_names() -> tuple[str, ...]:
    from glassformer.data.images import FASHION_MNIST_CLASSES

    return FASHION_MNIST_CLASSES


def test_classify_copies_a_grayscale_image_to_a_colour_model_with_a_note(hf_colour_folder, tmp_path, capsys):
    from glassformer.cli import main

    gray = _write_png(tmp_path / "gray.png", np.full((32, 32), 128, dtype=np.uint8))
    assert main(["classify", str(hf_colour_folder), str(gray)]) == 0
    captured = capsys.readouterr()
    assert "gray value copied to 3 channels" in captured.err
    assert captured.out.startswith(str(gray))


def test_classify_refuses_bad_images(fashion_folder, tmp_path, capsys):
    from glassformer.cli import main

    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["classify", str(fashion_folder), str(empty)]) == 2
    assert "empty folder" in capsys.readouterr().err
    corrupt = tmp_path / "broken.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    assert main(["classify", str(fashion_folder), str(corrupt)]) == 2
    assert "broken.png: not a readable image" in capsys.readouterr().err
    assert main(["classify", str(fashion_folder)]) == 2
    assert "no images given" in capsys.readouterr().err


def test_attention_verb_writes_the_overlays(fashion_folder, tmp_path, capsys):
    from glassformer.cli import main

    image = _write_png(
        tmp_path / "shoe.png", np.random.default_rng(2).integers(0, 256, (28, 28), dtype=np.uint8)
    )
    out = tmp_path / "out"
    assert main(["attention", str(fashion_folder), str(image), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for name in ("shoe_heads.png", "shoe_rollout.png"):
        assert (out / name).is_file() and str(out / name) in printed
    assert main(["attention", str(fashion_folder), str(image), "--out", str(out), "--layer", "5"]) == 2
    assert "layer=5 is out of range" in capsys.readouterr().err


def test_fashion_test_grid_draws_one_row_per_class(fashion_folder, tmp_path):
    from glassformer.data.images import FASHION_MNIST_DIR
    from glassformer.viz.vit import fashion_test_grid

    if not (FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip("Fashion-MNIST is not installed: run `make fashion-mnist`")
    png = fashion_test_grid(fashion_folder, tmp_path / "grid.png", per_class=1)
    width, height = _png_size(png)
    assert height > 4 * width  # ten class rows of one image


def test_classify_keeps_another_size_when_the_positions_interpolate(tmp_path, capsys):
    from glassformer.cli import main
    from glassformer.models.vit.config import tiny, vit_fashion
    from glassformer.models.vit.model import ViT

    folder = ViT(tiny(vit_fashion()).replace(interpolate_positions=True)).save(tmp_path / "model")
    image = _write_png(
        tmp_path / "big.png", np.random.default_rng(3).integers(0, 256, (42, 42), dtype=np.uint8)
    )
    assert main(["classify", str(folder), str(image)]) == 0  # 6x6 patches of 7 pixels, positions resized
    assert "resized" not in capsys.readouterr().err
    odd = _write_png(tmp_path / "odd.png", np.zeros((30, 30), dtype=np.uint8))  # not whole patches: resized
    assert main(["classify", str(folder), str(odd)]) == 0
    assert "30x30 pixels resized to the model's 28x28" in capsys.readouterr().err
