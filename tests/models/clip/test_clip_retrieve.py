"""CLIP retrieval: rankings against a brute-force cosine, the folder cache, bad input, the CLI."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from glassformer import registry
from glassformer.cli import main
from glassformer.data.images import ImageDataError, resize
from glassformer.models.clip import CLIP, retrieval
from glassformer.models.clip.retrieval import ClipCheckpoint, open_checkpoint

ENCODE_IMAGES = retrieval.encode_images  # the real one, for the uncounted comparisons
QUERIES = ["a red circle left of a star", "a small blue square", "there is a large green hexagon"]


def _brute_image_vectors(ckpt: ClipCheckpoint, paths: list[Path]) -> list[torch.Tensor]:
    """Each picture on its own: PIL to RGB, resized, (x - 0.5) / 0.5, the image tower, no normalising."""
    vectors = []
    for path in paths:
        with Image.open(path) as img:
            array = np.asarray(img.convert("RGB"))
        x = resize(torch.from_numpy(array.copy()).permute(2, 0, 1), ckpt.image_size).float() / 255.0
        with torch.no_grad():
            vectors.append(ckpt.model.image_features(((x - 0.5) / 0.5)[None])[0])
    return vectors


def _brute_text_vectors(ckpt: ClipCheckpoint, texts: list[str]) -> list[torch.Tensor]:
    vectors = []
    for text in texts:
        batch = ckpt.tokenizer.encode_captions([text], context_length=ckpt.model.config.max_seq_len)
        with torch.no_grad():
            vectors.append(ckpt.model.text_features(batch["input_ids"], batch["attention_mask"])[0])
    return vectors


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a @ b / (a.norm() * b.norm()))


def _brute_ranking(queries: list[torch.Tensor], keys: list[torch.Tensor]) -> list[list[tuple[int, float]]]:
    """Every (key, cosine) of each query, best first, from one dot product at a time."""
    return [
        sorted(((j, _cosine(q, key)) for j, key in enumerate(keys)), key=lambda p: -p[1]) for q in queries
    ]


def _assert_same_ranking(
    matches: list[list[retrieval.Match]], brute: list[list[tuple[int, float]]], k: int
) -> None:
    for found, expected in zip(matches, brute, strict=True):
        assert [m.index for m in found] == [j for j, _ in expected[:k]]
        np.testing.assert_allclose([m.score for m in found], [s for _, s in expected[:k]], atol=1e-5)
        assert [m.rank for m in found] == list(range(1, k + 1))


# --- rankings ------------------------------------------------------------------------------------


def test_text_to_image_is_the_brute_force_cosine_ranking(ckpt: ClipCheckpoint, picture_folder: Path) -> None:
    result = retrieval.text_to_image(ckpt, picture_folder, QUERIES, k=4, progress=False)
    assert [p.name for p in result.images.paths] == [f"{i:02d}.png" for i in range(7)]
    brute = _brute_ranking(
        _brute_text_vectors(ckpt, QUERIES), _brute_image_vectors(ckpt, result.images.paths)
    )
    _assert_same_ranking(result.matches, brute, k=4)
    assert all(m.item == result.images.paths[m.index] for found in result.matches for m in found)


def test_image_to_text_is_the_brute_force_cosine_ranking(ckpt: ClipCheckpoint, picture_folder: Path) -> None:
    lines = [*QUERIES, "an image of a purple ring", "a picture of a small white cross above a cyan star"]
    images = sorted(picture_folder.iterdir())[:3]
    result = retrieval.image_to_text(ckpt, images, lines, k=len(lines))
    brute = _brute_ranking(_brute_image_vectors(ckpt, images), _brute_text_vectors(ckpt, lines))
    _assert_same_ranking(result.matches, brute, k=len(lines))
    assert all(m.item == lines[m.index] for found in result.matches for m in found)


def test_k_larger_than_the_folder_returns_every_image(ckpt: ClipCheckpoint, picture_folder: Path) -> None:
    result = retrieval.text_to_image(ckpt, picture_folder, QUERIES[0], k=50, progress=False)
    assert sorted(m.index for m in result.matches[0]) == list(range(7))
    with pytest.raises(ValueError, match="k must be at least 1"):
        retrieval.text_to_image(ckpt, picture_folder, QUERIES[0], k=0, progress=False)


# --- the cache -----------------------------------------------------------------------------------


def _count_encodes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many pictures each call hands the image tower."""
    counts: list[int] = []

    def counting(ckpt: ClipCheckpoint, paths: list[Path], **options: object) -> object:
        counts.append(len(paths))
        return ENCODE_IMAGES(ckpt, paths, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(retrieval, "encode_images", counting)
    return counts


def _uncached(ckpt: ClipCheckpoint, paths: list[Path]) -> torch.Tensor:
    return ENCODE_IMAGES(ckpt, paths, progress=False)[0]


def test_a_cache_hit_encodes_nothing_and_gives_the_same_features(
    ckpt: ClipCheckpoint, picture_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    counts = _count_encodes(monkeypatch)
    first = retrieval.folder_features(ckpt, picture_folder, progress=False)
    second = retrieval.folder_features(ckpt, picture_folder, progress=False)
    assert counts == [7, 0] and (first.encoded, second.encoded) == (7, 0)
    assert first.cache == picture_folder.resolve() / retrieval.CACHE_DIRNAME
    assert {p.name for p in first.cache.iterdir()} == {retrieval.FEATURES_FILE, retrieval.INDEX_FILE}
    assert torch.equal(first.features, second.features)
    torch.testing.assert_close(second.features, _uncached(ckpt, second.paths))
    assert second.paths == first.paths


def test_a_changed_added_or_removed_file_misses(
    ckpt: ClipCheckpoint,
    picture_folder: Path,
    monkeypatch: pytest.MonkeyPatch,
    make_pictures: Callable[..., list[Path]],
) -> None:
    retrieval.folder_features(ckpt, picture_folder, progress=False)
    counts = _count_encodes(monkeypatch)
    changed = picture_folder / "03.png"
    make_pictures(picture_folder / "other", 4, seed=1)
    (picture_folder / "other" / "03.png").replace(changed)  # new content under the old name
    after_change = retrieval.folder_features(ckpt, picture_folder, progress=False)
    torch.testing.assert_close(after_change.features, _uncached(ckpt, after_change.paths))

    stat = (picture_folder / "05.png").stat()
    os.utime(picture_folder / "05.png", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched only
    retrieval.folder_features(ckpt, picture_folder, progress=False)

    (picture_folder / "other" / "00.png").replace(picture_folder / "07.png")
    added = retrieval.folder_features(ckpt, picture_folder, progress=False)
    (picture_folder / "00.png").unlink()
    removed = retrieval.folder_features(ckpt, picture_folder, progress=False)
    again = retrieval.folder_features(ckpt, picture_folder, progress=False)

    assert counts == [1, 1, 1, 0, 0]
    assert len(added.paths) == 8 and [p.name for p in removed.paths] == [f"{i:02d}.png" for i in range(1, 8)]
    torch.testing.assert_close(added.features[1:], removed.features)
    torch.testing.assert_close(again.features, _uncached(ckpt, again.paths))


def test_a_changed_checkpoint_misses(
    clip_merges: Path,
    make_clip: Callable[[int], CLIP],
    tmp_path: Path,
    picture_folder: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    make_clip(0).save(tmp_path / "model")
    before = retrieval.folder_features(open_checkpoint(tmp_path / "model"), picture_folder, progress=False)
    counts = _count_encodes(monkeypatch)
    make_clip(1).save(tmp_path / "model")  # retrained in place: new weights, same folder
    ckpt = open_checkpoint(tmp_path / "model")
    after = retrieval.folder_features(ckpt, picture_folder, progress=False)
    assert counts == [7]
    assert not torch.allclose(before.features, after.features)
    torch.testing.assert_close(after.features, _uncached(ckpt, after.paths))


def test_a_cache_dir_elsewhere_is_keyed_by_folder(
    ckpt: ClipCheckpoint,
    tmp_path: Path,
    picture_folder: Path,
    monkeypatch: pytest.MonkeyPatch,
    make_pictures: Callable[..., list[Path]],
) -> None:
    other = tmp_path / "more"
    make_pictures(other, 3, seed=2)
    counts = _count_encodes(monkeypatch)
    cache = tmp_path / "cache"
    for folder in (picture_folder, picture_folder, other, picture_folder):
        retrieval.folder_features(ckpt, folder, cache_dir=cache, progress=False)
    assert counts == [7, 0, 3, 7]  # one cache holds one folder: switching folders re-encodes
    assert not (picture_folder / retrieval.CACHE_DIRNAME).exists()
    assert (cache / retrieval.INDEX_FILE).is_file()


def test_an_unwritable_cache_warns_and_still_answers(ckpt: ClipCheckpoint, picture_folder: Path) -> None:
    blocker = picture_folder.parent / "not-a-folder"
    blocker.write_text("a file where the cache folder would go")
    with pytest.warns(UserWarning, match="could not write the feature cache"):
        result = retrieval.text_to_image(
            ckpt, picture_folder, QUERIES[0], k=3, cache_dir=blocker, progress=False
        )
    assert result.images.cache is None and len(result.matches[0]) == 3


# --- bad input -----------------------------------------------------------------------------------


def test_an_empty_folder_says_so(ckpt: ClipCheckpoint, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not a picture")
    with pytest.raises(ImageDataError, match="an empty folder: no image files in it"):
        retrieval.text_to_image(ckpt, tmp_path / "empty", QUERIES[0], progress=False)
    with pytest.raises(FileNotFoundError, match="no such image folder"):
        retrieval.text_to_image(ckpt, tmp_path / "missing", QUERIES[0], progress=False)


def test_unreadable_files_are_skipped_and_named(
    ckpt: ClipCheckpoint, picture_folder: Path, tmp_path: Path
) -> None:
    (picture_folder / "broken.png").write_bytes(b"not a png at all")
    (picture_folder / "cut.jpg").write_bytes(b"\xff\xd8\xff\xe0")
    with pytest.warns(UserWarning, match=r"skipped 2 unreadable file\(s\): broken.png, cut.jpg"):
        result = retrieval.text_to_image(ckpt, picture_folder, QUERIES, k=7, progress=False)
    assert [p.name for p in result.images.paths] == [f"{i:02d}.png" for i in range(7)]
    assert [p.name for p, _ in result.images.skipped] == ["broken.png", "cut.jpg"]
    with pytest.warns(UserWarning, match="broken.png"):  # named again on a cache hit
        retrieval.folder_features(ckpt, picture_folder, progress=False)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.png").write_bytes(b"nope")
    with pytest.raises(ImageDataError, match=r"none of the 1 image files could be read \(a.png\)"):
        retrieval.folder_features(ckpt, tmp_path / "bad", progress=False)


def test_a_caption_longer_than_the_context_is_truncated_with_a_warning(
    ckpt: ClipCheckpoint, picture_folder: Path
) -> None:
    long = "a small red circle left of a large blue star " * 4  # far past the tiny twin's 16 tokens
    with pytest.warns(UserWarning, match="1 caption\\(s\\) longer than the 16-token context were truncated"):
        result = retrieval.text_to_image(ckpt, picture_folder, [QUERIES[0], long], k=2, progress=False)
    ids = ckpt.tokenizer.encode(long, add_special_tokens=False)[:14]  # room left for SOT and EOT
    cut = ckpt.tokenizer.decode(ids)
    torch.testing.assert_close(result.query_features[1], retrieval.encode_texts(ckpt, [cut])[0])


def test_a_checkpoint_of_another_family_is_named(tmp_path: Path) -> None:
    registry.build("vit-fashion-tiny").save(tmp_path / "vit")
    with pytest.raises(ValueError, match="holds a vit checkpoint; retrieval needs a clip one"):
        open_checkpoint(tmp_path / "vit")


def test_a_text_tower_without_clip_s_vocabulary_is_refused(clip_merges: Path, tmp_path: Path) -> None:
    registry.build("clip-shapes-tiny").save(tmp_path / "words")  # 99 ids: the shapes-words vocabulary
    with pytest.raises(ValueError, match="knows 99 tokens .* trained with another tokenizer"):
        open_checkpoint(tmp_path / "words")


def test_an_empty_caption_file_says_so(tmp_path: Path) -> None:
    (tmp_path / "captions.txt").write_text("\n  \n")
    with pytest.raises(ValueError, match="no captions in it"):
        retrieval.read_lines(tmp_path / "captions.txt")
    (tmp_path / "captions.txt").write_text("a red star\n\n a blue ring \n")
    assert retrieval.read_lines(tmp_path / "captions.txt") == ["a red star", "a blue ring"]


# --- the command ---------------------------------------------------------------------------------


def _ranked_lines(out: str) -> list[tuple[int, float, str]]:
    rows = [line.split() for line in out.splitlines() if line.startswith("  ")]
    return [(int(r[0]), float(r[1]), " ".join(r[2:])) for r in rows]


def test_retrieve_command_text_to_image(
    clip_checkpoint: Path, picture_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (picture_folder / "broken.png").write_bytes(b"not a png")
    grid, sim, roll = tmp_path / "grid.png", tmp_path / "sim.png", tmp_path / "roll.png"
    code = main(["retrieve", str(clip_checkpoint), "--images", str(picture_folder), QUERIES[0], QUERIES[1],
                 "--k", "3", "--out", str(grid), "--similarity", str(sim), "--rollout", str(roll)])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0
    assert out.splitlines()[0] == f'"{QUERIES[0]}"'
    with pytest.warns(UserWarning, match="broken.png"):
        expected = retrieval.text_to_image(open_checkpoint(clip_checkpoint), picture_folder, QUERIES[:2], k=3)
    rows = _ranked_lines(out)
    assert [(r, Path(p)) for r, _, p in rows] == [
        (m.rank, picture_folder / m.item.name) for found in expected.matches for m in found
    ]
    np.testing.assert_allclose(
        [s for _, s, _ in rows], [m.score for f in expected.matches for m in f], atol=1e-4
    )
    assert "glassformer retrieve: warning:" in err and "broken.png" in err
    assert all(Image.open(p).size[0] > 100 for p in (grid, sim, roll))


def test_retrieve_command_image_to_text(
    clip_checkpoint: Path, picture_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "captions.txt").write_text("\n".join(QUERIES) + "\n")
    picture = picture_folder / "02.png"
    assert main(["retrieve", str(clip_checkpoint), "--text", str(tmp_path / "captions.txt"), str(picture),
                 "--k", "2"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert out.splitlines()[0] == str(picture)
    expected = retrieval.image_to_text(open_checkpoint(clip_checkpoint), [picture], QUERIES, k=2).matches[0]
    assert [(r, text) for r, _, text in _ranked_lines(out)] == [(m.rank, m.item) for m in expected]


def test_retrieve_command_names_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    registry.build("vit-fashion-tiny").save(tmp_path / "vit")
    (tmp_path / "pictures").mkdir()
    assert (
        main(["retrieve", str(tmp_path / "vit"), "--images", str(tmp_path / "pictures"), "a red star"]) == 2
    )
    assert "holds a vit checkpoint; retrieval needs a clip one" in capsys.readouterr().err


def test_unit_length_features_are_what_is_compared(ckpt: ClipCheckpoint, picture_folder: Path) -> None:
    features = retrieval.folder_features(ckpt, picture_folder, progress=False).features
    torch.testing.assert_close(features.norm(dim=1), torch.ones(len(features)))
    torch.testing.assert_close(F.normalize(features, dim=1), features)
