"""Every lesson runs to the end in quick mode (its own checks against glassformer pass) and draws its figures."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import matplotlib.image as mpimg
import pytest

LESSONS = Path(__file__).resolve().parents[1] / "lessons"
FIGURES = {
    "01_attention.py": ["scaling.png", "attention_weights.png", "causal_attention.png"],
    "02_multi_head.py": ["heads.png", "gqa_heads.png", "mqa_heads.png", "kv_cache.png"],
    "03_positional.py": ["sinusoidal.png", "rope_similarity.png", "alibi_bias.png"],
    "04_encoder_block.py": ["block_attention.png", "pre_vs_post.png"],
    "05_full_encoder.py": ["tagging.png", "pooling.png", "attention_pooling.png"],
    "06_decoder.py": ["causal_mask.png", "sampling.png"],
    "07_complete_transformer.py": ["loss.png", "alignment.png", "bleu.png"],
    "08_training.py": ["lr_schedule.png", "loss_curves.png"],
    "09_vision_transformer.py": ["patches.png", "positions.png", "rollout.png"],
    "10_clip.py": ["infonce.png", "duplicate_floor.png", "similarity.png", "training.png"],
    "11_speech.py": ["log_mel.png", "next_tokens.png", "spectrogram_tokens.png", "cross_attention.png"],
    "12_diffusion.py": ["forward.png", "strip.png", "class_grid.png"],
    "13_lora_and_quantization.py": ["quantization.png", "lora_finetune.png"],
    "14_decoding_speed.py": ["memory_bound.png", "shortlist.png"],
}
NEEDS_WHISPER = {"11_speech.py"}  # lessons that open the packaged tiny.en weights
NEEDS_DATA = {  # lessons that read a file of the shared data folder (GLASSFORMER_DATA, default ../shared/data)
    "10_clip.py": ("tokenizers", "clip_bpe_simple_vocab_16e6.txt.gz"),
    "11_speech.py": ("whisper_samples", "jfk.flac"),
}


def test_every_lesson_is_listed():
    assert sorted(p.name for p in LESSONS.glob("[0-9][0-9]_*.py")) == sorted(FIGURES)


@pytest.mark.parametrize("lesson", sorted(FIGURES))
def test_lesson_runs_and_draws(lesson, tmp_path):
    if lesson in NEEDS_WHISPER:
        from glassformer.models.whisper.packaged import packaged_tiny_en_available

        if not packaged_tiny_en_available():
            pytest.skip("Whisper tiny.en weights absent: run `make whisper-weights`")
    if lesson in NEEDS_DATA:
        from glassformer.utils.paths import data_file

        if data_file(*NEEDS_DATA[lesson]) is None:
            pytest.skip(f"{'/'.join(NEEDS_DATA[lesson])} is not in the shared data folder (GLASSFORMER_DATA or ../shared/data)")
    out = tmp_path / "figures"
    result = subprocess.run(
        [sys.executable, str(LESSONS / lesson), "--quick", "--out", str(out)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, f"{lesson} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    assert "CHECK FAILED" not in result.stdout
    assert result.stdout.count("check ok") >= 3  # each lesson compares itself with glassformer
    for name in FIGURES[lesson]:
        image = mpimg.imread(out / name)
        assert image.shape[0] > 100 and image.shape[1] > 100, name
    assert sorted(p.name for p in out.glob("*.png")) == sorted(FIGURES[lesson])
