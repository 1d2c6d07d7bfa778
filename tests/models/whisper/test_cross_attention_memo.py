"""The audio's cross-attention keys/values are projected once per encoder output, and the memo
that keeps them never changes what is decoded (checked against transformers' logits and tokens).

``transcribe`` makes two decoder passes over one window (the no-speech probability, then the
decode, then perhaps more at fallback temperatures); ``Whisper.decode_step`` keeps the keys and
values of that audio between them instead of projecting 1500 positions again each time.
"""

from __future__ import annotations

import gc

import pytest
import torch

from glassformer.generate import generate
from glassformer.models.whisper import model as whisper_model
from glassformer.models.whisper.hf import from_hf_state

transformers = pytest.importorskip("transformers")

N_MELS, POSITIONS, VOCAB = 20, 12, 61
START, EOS, PAD, NO_TS = 2, 1, 0, 3
PREFIX = [START, NO_TS]


@pytest.fixture()
def pair():
    """A small random Whisper in both libraries (ours loaded from transformers' weights)."""
    config = transformers.WhisperConfig(
        vocab_size=VOCAB, d_model=48, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=80, decoder_ffn_dim=80, num_mel_bins=N_MELS,
        max_source_positions=POSITIONS, max_target_positions=24, pad_token_id=PAD, bos_token_id=START,
        eos_token_id=EOS, decoder_start_token_id=START, suppress_tokens=None, begin_suppress_tokens=None,
    )  # fmt: skip
    torch.manual_seed(0)
    hf = transformers.WhisperForConditionalGeneration(config).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "encoder.embed_positions" not in name:  # fixed sinusoids, which ours computes
                p.add_(torch.randn_like(p) * 0.3)
    return hf, from_hf_state(hf.state_dict(), hf.config.to_dict()).eval()


def _features(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, N_MELS, 2 * POSITIONS, generator=torch.Generator().manual_seed(1))


def _count_projections(model) -> list[int]:
    """Wrap every cross-attention's key/value projection; the list counts the calls per layer."""
    counts = [0] * len(model.decoder.layers)
    for i, layer in enumerate(model.decoder.layers):
        inner = layer.cross_attn._project_kv

        def counted(src, i=i, inner=inner):
            counts[i] += 1
            return inner(src)

        layer.cross_attn._project_kv = counted
    return counts


def _hf_first_logits(hf, feats: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return hf(input_features=feats, decoder_input_ids=torch.tensor([[START]] * feats.shape[0])).logits[:, -1]


def _hf_tokens(hf, feats: torch.Tensor, **kwargs: object) -> list[list[int]]:
    prefix = torch.tensor([PREFIX] * feats.shape[0])
    with torch.no_grad():
        out = transformers.GenerationMixin.generate(
            hf, input_features=feats, decoder_input_ids=prefix, do_sample=False, pad_token_id=PAD,
            eos_token_id=EOS, max_new_tokens=8, **kwargs,
        )  # fmt: skip
    return [[t for t in row if t not in (PAD, EOS)] for row in out[:, len(PREFIX) :].tolist()]


def _strip(rows: list[list[int]]) -> list[list[int]]:
    return [[t for t in row if t not in (PAD, EOS)] for row in rows]


def test_one_projection_for_a_no_speech_pass_and_two_decodes(pair) -> None:
    """The flow of ``transcribe``: a cache-less pass, greedy, then beam search, on one state."""
    hf, ours = pair
    feats = _features()
    counts = _count_projections(ours)
    with torch.inference_mode():
        state = ours.encode_for_generation(feats)
        first = ours.decode_step(torch.tensor([[START]] * 2), encoder_state=state).logits[:, -1]
    greedy = generate(ours, state, decoder_input_ids=PREFIX, max_new_tokens=8, cpu_kernels=False).tokens
    beam = generate(ours, state, decoder_input_ids=PREFIX, strategy="beam", num_beams=3, max_new_tokens=8,
                    cpu_kernels=False).tokens  # fmt: skip
    assert counts == [1, 1]
    torch.testing.assert_close(first, _hf_first_logits(hf, feats), atol=1e-4, rtol=1e-4)
    assert _strip(greedy) == _hf_tokens(hf, feats)
    assert _strip(beam) == _hf_tokens(hf, feats, num_beams=3)


def test_new_audio_or_new_weights_are_projected_again(pair) -> None:
    """Another encoder output, or a weight update (a training step), never reads the old memo."""
    hf, ours = pair
    counts = _count_projections(ours)
    ids = torch.tensor([[START]] * 2)
    with torch.inference_mode():
        for seed in (1, 2):
            feats = torch.randn(2, N_MELS, 2 * POSITIONS, generator=torch.Generator().manual_seed(seed))
            got = ours.decode_step(ids, encoder_state=ours.encode_for_generation(feats)).logits[:, -1]
            torch.testing.assert_close(got, _hf_first_logits(hf, feats), atol=1e-4, rtol=1e-4)
        assert counts == [2, 2]
        state = ours.encode_for_generation(feats)
        ours.decode_step(ids, encoder_state=state)
    with torch.no_grad():  # in place, as an optimizer step: the same tensor, a new version
        theirs = hf.model.decoder.layers[0].encoder_attn.v_proj.weight
        theirs.mul_(-1.0)
        ours.decoder.layers[0].cross_attn.v_proj.weight.copy_(theirs)
    with torch.inference_mode():
        got = ours.decode_step(ids, encoder_state=state).logits[:, -1]
    torch.testing.assert_close(got, _hf_first_logits(hf, feats), atol=1e-4, rtol=1e-4)


def test_the_memo_goes_with_its_audio(pair) -> None:
    _, ours = pair
    with torch.inference_mode():
        state = ours.encode_for_generation(_features())
        ours.decode_step(torch.tensor([[START]] * 2), encoder_state=state)
    assert ours in whisper_model._CROSS_MEMO
    del state
    gc.collect()
    assert ours not in whisper_model._CROSS_MEMO


def test_no_memo_under_autograd(pair) -> None:
    """Training-time decoding builds a graph through the projections: nothing is kept."""
    _, ours = pair
    counts = _count_projections(ours)
    state = ours.encode_for_generation(_features())
    for _ in range(2):
        ours.decode_step(torch.tensor([[START]] * 2), encoder_state=state)
    assert counts == [2, 2] and ours not in whisper_model._CROSS_MEMO
