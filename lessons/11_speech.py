"""Lesson 11: speech to text: Whisper's log-mel front end by hand, and one decoding step explained.

Run:  python lessons/11_speech.py [--out DIR] [--quick]     (needs `make whisper-weights`)

Whisper (Radford et al. 2022) hears through a log-mel spectrogram: 80 numbers every 10 ms, which
say how much energy the sound has in 80 frequency bands spaced the way the ear spaces pitch. An
encoder turns 30 s of those frames into 1,500 vectors; a decoder writes the transcript one token
at a time, reading the audio through cross-attention.

This lesson
1. computes the log-mel spectrogram of jfk.flac by hand (framing, Hann window, |FFT|^2, mel
   filters, log and clamp) and checks it against ``glassformer.audio.log_mel_spectrogram``;
2. runs the encoder once and the decoder on the prompt ``<|startoftranscript|><|notimestamps|>``
   and prints the five likeliest next tokens: the first step of decoding, checked against
   ``glassformer.generate``;
3. transcribes the clip and draws where each token sits in the spectrogram, from the
   cross-attention of tiny.en's alignment heads (``glassformer.viz.speech``).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch
from _lesson import check, parse_args, save, section

from glassformer.audio import load_audio, log_mel_spectrogram, mel_filters
from glassformer.generate import generate
from glassformer.models.whisper.packaged import load_tiny_en, packaged_tiny_en_path
from glassformer.models.whisper.transcribe import transcribe
from glassformer.utils.paths import data_file
from glassformer.viz.speech import (
    align_tokens,
    alignment_heads,
    plot_spectrogram_tokens,
    plot_token_attention,
)

args = parse_args("11", __doc__)
torch.set_num_threads(1)
RATE, N_FFT, HOP, N_MELS, WINDOW_S = 16000, 400, 160, 80, 30

# ---------------------------------------------------------------------------------------------
section("1. The log-mel spectrogram, by hand")
jfk = data_file("whisper_samples", "jfk.flac")
if jfk is None:
    raise SystemExit("whisper_samples/jfk.flac is not in the shared data folder: set GLASSFORMER_DATA to it "
                     "(see its SOURCES.md)")
audio = load_audio(jfk)  # float32 mono at 16 kHz
print(f"jfk.flac: {len(audio)} samples = {len(audio) / RATE:.2f} s")

# Whisper always listens to 30 s: shorter audio is padded with silence (zeros).
padded = np.zeros(WINDOW_S * RATE, dtype=np.float64)
padded[: len(audio)] = audio
# Frames of 400 samples (25 ms) every 160 (10 ms), centred: reflect-pad half a frame each side.
edge = np.pad(padded, N_FFT // 2, mode="reflect")
n_frames = 1 + (len(edge) - N_FFT) // HOP
frames = np.stack([edge[i * HOP : i * HOP + N_FFT] for i in range(n_frames)])  # (frames, 400)
# A periodic Hann window tapers each frame to zero at its ends, so the FFT sees no false edge.
hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)
power = np.abs(np.fft.rfft(frames * hann, axis=-1)) ** 2  # (frames, 201): energy per frequency bin
power = power[:-1]  # Whisper drops the last frame: N samples give N // 160 frames
print(f"{n_frames - 1} frames x {power.shape[1]} frequency bins (0 to 8 kHz, 40 Hz apart)")


# Mel filters: triangles evenly spaced on the mel scale (Slaney's: linear below 1 kHz, log above),
# each normalised by its width so every band has the same total weight.
def hz_to_mel(hz):
    hz = np.asarray(hz, dtype=np.float64)
    log_part = 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(hz >= 1000.0, log_part, 3.0 * hz / 200.0)


def mel_to_hz(mel):
    mel = np.asarray(mel, dtype=np.float64)
    return np.where(mel >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel - 15.0)), 200.0 * mel / 3.0)


edges_hz = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(RATE / 2), N_MELS + 2))  # 82 band edges
bins_hz = np.linspace(0, RATE / 2, N_FFT // 2 + 1)
rising = (bins_hz[None, :] - edges_hz[:-2, None]) / (edges_hz[1:-1] - edges_hz[:-2])[:, None]
falling = (edges_hz[2:, None] - bins_hz[None, :]) / (edges_hz[2:] - edges_hz[1:-1])[:, None]
filters = np.maximum(0.0, np.minimum(rising, falling)) * (2.0 / (edges_hz[2:] - edges_hz[:-2]))[:, None]
check("mel filters (80 x 201) against glassformer.audio.mel_filters", filters, mel_filters(N_MELS), atol=1e-6)

mel = filters @ power.T  # (80, frames)
log_mel = np.log10(np.maximum(mel, 1e-10))  # log: loudness is heard on a log scale
log_mel = np.maximum(log_mel, log_mel.max() - 8.0)  # at most 80 dB below the loudest bin
log_mel = (log_mel + 4.0) / 4.0  # roughly in [-1, 1]
library = log_mel_spectrogram(audio).copy()  # a writable copy, for torch.from_numpy below
check("log-mel (80 x 3000) against glassformer.audio.log_mel_spectrogram", log_mel, library, atol=1e-4)

fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6))
top.plot(bins_hz, filters[::8].T)
top.set(title="every 8th mel filter: narrow at low pitch, wide at high", xlabel="Hz", ylabel="weight")
bottom.imshow(library[:, :1100], origin="lower", aspect="auto", cmap="magma", extent=(0, 11, 0, N_MELS))
bottom.set(title="log-mel of jfk.flac (the first 11 s of the 30-s window)", xlabel="s", ylabel="mel channel")
save(fig, args.out, "log_mel.png")

# ---------------------------------------------------------------------------------------------
section("2. One decoding step: what comes after the prompt?")
model, tokenizer = load_tiny_en()
features = torch.from_numpy(library)[None]  # (1, 80, 3000)
prompt = tokenizer.sot_sequence()  # <|startoftranscript|><|notimestamps|> for an English-only model
with torch.inference_mode():
    audio_states = model.encode(features).hidden  # (1, 1500, 384): one vector per 20 ms
    hidden = model.decode(torch.tensor([prompt]), audio_states).hidden  # (1, 2, 384)
    logits = model.logits(hidden)[0, -1]  # (51864,): a score for every token after the prompt
print(f"encoder: {tuple(features.shape)} -> {tuple(audio_states.shape)}; decoder on {len(prompt)} prompt tokens")
probs = torch.softmax(logits, dim=-1)
top = torch.topk(probs, 5)
suppressed = set(tokenizer.suppress_tokens()) | set(tokenizer.begin_suppress_tokens())
for p, i in zip(top.values.tolist(), top.indices.tolist(), strict=True):
    note = "  (suppressed: not speech)" if i in suppressed else ""
    print(f"  {tokenizer.decode([i], skip_special=False)!r:>14}  id {i:5d}  p = {p:.3f}{note}")
library_logits = generate(model, features, decoder_input_ids=prompt, max_new_tokens=1, output_logits=True,
                          cpu_kernels=False).logits[0, 0]  # fmt: skip
check("next-token logits against glassformer.generate", logits, library_logits, atol=1e-4)

fig, ax = plt.subplots(figsize=(7, 3))
ax.barh([repr(tokenizer.decode([i])) for i in top.indices.tolist()][::-1], top.values.tolist()[::-1])
ax.set(title="tiny.en's five likeliest first tokens for jfk.flac", xlabel="probability")
save(fig, args.out, "next_tokens.png")

# ---------------------------------------------------------------------------------------------
section("3. The whole transcript, and where each token listens")
result = transcribe(model, tokenizer, audio)
print(f"transcript: {result.text!r}")
print(f"real-time factor {result.real_time_factor:.2f} (processing time / audio duration, one core)")
tokens = result.windows[0].tokens
check("the greedy first token is the step-2 arg-max", tokens[0], int(logits.argmax()), atol=0)
heads = alignment_heads(packaged_tiny_en_path() / "config.json")
print(f"alignment heads (layer, head): {heads}")
words = tokens[:8] if args.quick else tokens
alignment = align_tokens(model, tokenizer, features, prompt, words, heads, duration=len(audio) / RATE)
for text, start in zip(alignment.texts, alignment.starts, strict=True):
    print(f"  {start:5.2f} s  {text!r}")
plot_spectrogram_tokens(features, alignment, args.out / "spectrogram_tokens.png", duration=len(audio) / RATE)
plot_token_attention(alignment, args.out / "cross_attention.png")
print(f"saved {args.out / 'spectrogram_tokens.png'} and {args.out / 'cross_attention.png'}")
