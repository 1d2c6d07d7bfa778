"""Pictures of speech recognition: where each transcript token sits in the spectrogram, and which
audio frames each token listens to.

Whisper's decoder reads the audio only through cross-attention, so its weights show what each
output token is about. Most heads look everywhere; a few, the *alignment heads* (``alignment_heads``
in tiny.en's packaged ``config.json``, as ``[layer, head]`` pairs), follow the speech
monotonically, and OpenAI's word timestamps are computed from them (``whisper/timing.py``). Here:

1. :func:`cross_attention` runs the decoder teacher-forced over prompt + transcript on the eager
   attention path (the only one that forms the weights) and keeps each layer's
   ``(heads, tokens, audio positions)`` weights;
2. :func:`align_tokens` averages the alignment heads (each normalised per audio position across
   tokens, so a loud head does not dominate), and finds the cheapest monotonic path through
   ``-weights`` by dynamic time warping: each token gets the stretch of audio it owns;
3. :func:`plot_spectrogram_tokens` draws the log-mel spectrogram with every token at its start time,
   :func:`plot_token_attention` the averaged weights, token by audio time.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from glassformer.viz.figures import pyplot, save_figure

SECONDS_PER_POSITION = 0.02  # one encoder position covers two 10-ms log-mel frames
FRAMES_PER_SECOND = 100


@dataclass
class TokenAlignment:
    """Transcript tokens with the audio they attend to and the times DTW gave them."""

    tokens: list[int]
    texts: list[str]  # each token's text, as the tokenizer writes it
    weights: np.ndarray  # (tokens, positions): alignment heads averaged, audio part only
    starts: np.ndarray  # (tokens,) seconds
    ends: np.ndarray  # (tokens,) seconds


def alignment_heads(config_path: str | Path) -> list[tuple[int, int]]:
    """``[(layer, head), ...]`` from a CTranslate2/Hugging Face ``config.json``'s ``alignment_heads``."""
    config = json.loads(Path(config_path).read_text(encoding="utf-8"))
    heads = config.get("alignment_heads")
    if not heads:
        raise ValueError(f"{config_path} has no alignment_heads; pass heads=[(layer, head), ...] yourself")
    return [(int(layer), int(head)) for layer, head in heads]


def cross_attention(model: nn.Module, features: Tensor, decoder_ids: Sequence[int]) -> list[Tensor]:
    """Per decoder layer, ``(heads, len(decoder_ids), positions)`` cross-attention weights of one clip.

    ``features`` are ``(n_mels, frames)`` or ``(1, n_mels, frames)`` log-mel; ``decoder_ids`` the
    prompt followed by the transcript tokens, fed teacher-forced.
    """
    feats = features[None] if features.dim() == 2 else features
    ids = torch.tensor([list(decoder_ids)], device=feats.device)
    with torch.inference_mode():
        out = model(input_features=feats, decoder_input_ids=ids, return_weights=True)
    if not out.cross_attentions:
        raise ValueError(f"{type(model).__name__} returned no cross-attention weights; an encoder-decoder is needed")
    return [w[0].float() for w in out.cross_attentions]


def dtw_path(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The cheapest monotonic path through ``cost`` (rows x columns) from corner to corner.

    Steps go right, down or diagonally (as in Whisper's ``timing.dtw``); returns the row and
    column index of every cell on the path, in order.
    """
    n, m = cost.shape
    total = np.full((n + 1, m + 1), np.inf)
    total[0, 0] = 0.0
    move = np.zeros((n + 1, m + 1), dtype=np.int8)  # 0 diagonal, 1 from above, 2 from the left
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            options = (total[i - 1, j - 1], total[i - 1, j], total[i, j - 1])
            best = int(np.argmin(options))
            total[i, j] = cost[i - 1, j - 1] + options[best]
            move[i, j] = best
    rows, cols = [], []
    i, j = n, m
    while i > 0 and j > 0:
        rows.append(i - 1)
        cols.append(j - 1)
        step = move[i, j]
        i, j = (i - 1, j - 1) if step == 0 else ((i - 1, j) if step == 1 else (i, j - 1))
    return np.array(rows[::-1]), np.array(cols[::-1])


def align_tokens(
    model: nn.Module,
    tokenizer,
    features: Tensor,
    prefix: Sequence[int],
    tokens: Sequence[int],
    heads: Sequence[tuple[int, int]],
    duration: float,
) -> TokenAlignment:
    """Times for ``tokens`` (the transcript, no prompt) from the alignment ``heads``' cross-attention.

    ``duration`` (seconds of real audio in the window) limits the search to the positions that
    hold speech rather than the silence padding.
    """
    if not tokens:
        raise ValueError("no tokens to align: the transcript is empty")
    layers = cross_attention(model, features, [*prefix, *tokens])
    for layer, head in heads:
        if not (0 <= layer < len(layers) and 0 <= head < layers[0].shape[0]):
            raise ValueError(f"alignment head ({layer}, {head}) is not in this model "
                             f"({len(layers)} layers x {layers[0].shape[0]} heads)")  # fmt: skip
    positions = max(1, min(layers[0].shape[-1], round(duration / SECONDS_PER_POSITION)))
    picked = torch.stack([layers[layer][head, len(prefix) :, :positions] for layer, head in heads])  # (H, N, P)
    mean, std = picked.mean(dim=-2, keepdim=True), picked.std(dim=-2, keepdim=True, unbiased=False)
    weights = ((picked - mean) / (std + 1e-6)).mean(dim=0).numpy()  # (N, P)
    rows, cols = dtw_path(-weights.astype(np.float64))
    starts = np.array([cols[rows == i].min() for i in range(len(tokens))]) * SECONDS_PER_POSITION
    ends = np.array([cols[rows == i].max() + 1 for i in range(len(tokens))]) * SECONDS_PER_POSITION
    texts = [tokenizer.decode([t]) for t in tokens]
    return TokenAlignment(list(tokens), texts, weights, starts, ends)


def plot_spectrogram_tokens(
    features: Tensor | np.ndarray, alignment: TokenAlignment, path: str | Path, duration: float | None = None,
    title: str = "log-mel spectrogram and transcript tokens",
) -> Path:
    """PNG: the ``(n_mels, frames)`` log-mel (cut to ``duration`` seconds) with each token at its start."""
    plt = pyplot()
    mel = features.detach().cpu().numpy() if isinstance(features, Tensor) else np.asarray(features)
    mel = mel[0] if mel.ndim == 3 else mel
    if duration is not None:
        mel = mel[:, : max(1, round(duration * FRAMES_PER_SECOND))]
    seconds = mel.shape[1] / FRAMES_PER_SECOND
    fig, ax = plt.subplots(figsize=(max(8.0, seconds * 1.2), 4.0))
    ax.imshow(mel, origin="lower", aspect="auto", cmap="magma", extent=(0, seconds, 0, mel.shape[0]))
    for k, (text, start) in enumerate(zip(alignment.texts, alignment.starts, strict=True)):
        ax.axvline(start, color="white", linewidth=0.6, alpha=0.7)
        ax.text(start, mel.shape[0] * (0.92 - 0.08 * (k % 3)), text.strip() or "␣", color="white", fontsize=8)
    ax.set(xlabel="time (s)", ylabel="mel channel", title=title)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_token_attention(alignment: TokenAlignment, path: str | Path,
                         title: str = "cross-attention of the alignment heads") -> Path:  # fmt: skip
    """PNG: which audio each token listens to (tokens down, audio time across), with the DTW times."""
    plt = pyplot()
    n, positions = alignment.weights.shape
    seconds = positions * SECONDS_PER_POSITION
    fig, ax = plt.subplots(figsize=(max(8.0, seconds * 1.2), max(3.0, 0.25 * n + 1.0)))
    ax.imshow(alignment.weights, aspect="auto", cmap="viridis", extent=(0, seconds, n - 0.5, -0.5))
    ax.plot((alignment.starts + alignment.ends) / 2, np.arange(n), color="red", linewidth=1.0, label="DTW path")
    ax.set_yticks(np.arange(n), [t.strip() or "␣" for t in alignment.texts], fontsize=7)
    ax.set(xlabel="audio time (s)", ylabel="output token", title=title)
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)

