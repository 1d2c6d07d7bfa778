"""What an encoder-decoder needs of ``generate`` for speech, checked against transformers.

A small random Whisper in both libraries (our weights loaded from transformers'): float features
as the source, a forced two-token decoder prefix, ``suppress_tokens`` and
``begin_suppress_tokens`` give the same tokens as transformers' ``GenerationMixin.generate``
(the base path, which applies ``SuppressTokensLogitsProcessor`` and
``SuppressTokensAtBeginLogitsProcessor``), greedy and beam search; an ``EncoderState`` source
gives what the features give; a ``logits_processor`` is obeyed by every strategy.
"""

from __future__ import annotations

import pytest
import torch

from glassformer.generate import GenerationConfig, generate
from glassformer.models.whisper.hf import from_hf_state
from glassformer.utils.config import ConfigError

transformers = pytest.importorskip("transformers")

N_MELS, POSITIONS, VOCAB = 20, 12, 61
START, EOS, PAD, NO_TS = 2, 1, 0, 3
PREFIX = [START, NO_TS]


@pytest.fixture(scope="module")
def pair():
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
            if "embed_positions" not in name or "decoder" in name:
                p.add_(torch.randn_like(p) * 0.3)
    ours = from_hf_state(hf.state_dict(), hf.config.to_dict()).eval()
    return hf, ours


def _features(batch: int = 3) -> torch.Tensor:
    return torch.randn(batch, N_MELS, 2 * POSITIONS, generator=torch.Generator().manual_seed(1))


def _favourites(ours, feats: torch.Tensor, n: int) -> list[int]:
    """The tokens the model emits most: suppressing them changes the output for sure."""
    tokens = generate(ours, feats, decoder_input_ids=PREFIX, max_new_tokens=10, cpu_kernels=False).tokens
    counts = torch.bincount(torch.tensor([t for row in tokens for t in row]), minlength=VOCAB)
    return counts.argsort(descending=True)[:n].tolist()


def _reference(hf, feats: torch.Tensor, **kwargs: object) -> list[list[int]]:
    prefix = torch.tensor([PREFIX] * feats.shape[0])
    with torch.no_grad():
        out = transformers.GenerationMixin.generate(
            hf, input_features=feats, decoder_input_ids=prefix, do_sample=False, pad_token_id=PAD,
            eos_token_id=EOS, max_new_tokens=10, **kwargs,
        )  # fmt: skip
    return _strip(out[:, len(PREFIX) :].tolist())


def _strip(rows: list[list[int]]) -> list[list[int]]:
    out = []
    for row in rows:
        while row and row[-1] in (PAD, EOS):
            row = row[:-1]
        out.append(row)
    return out


@pytest.mark.parametrize("strategy", ["greedy", "beam"])
def test_prefix_and_suppression_match_transformers(pair, strategy: str) -> None:
    hf, ours = pair
    feats = _features()
    beams = dict(num_beams=4, length_penalty=1.0, early_stopping=False) if strategy == "beam" else {}
    plain = generate(ours, feats, decoder_input_ids=PREFIX, strategy=strategy, max_new_tokens=10,
                     stop_token_ids=(EOS,), pad_token_id=PAD, cpu_kernels=False, **beams)  # fmt: skip
    begin = tuple(sorted({row[0] for row in plain.tokens}))  # what each row would open with
    first, second = [t for t in _favourites(ours, feats, 6) if t not in begin][:2]
    suppress = (first, second)
    ref = _reference(hf, feats, suppress_tokens=list(suppress), begin_suppress_tokens=list(begin), **beams)
    out = generate(
        ours, feats, decoder_input_ids=PREFIX, strategy=strategy, max_new_tokens=10, stop_token_ids=(EOS,),
        pad_token_id=PAD, suppress_tokens=suppress, begin_suppress_tokens=begin, cpu_kernels=False, **beams,
    )  # fmt: skip
    assert _strip(out.tokens) == ref
    assert out.prompt_length == len(PREFIX) and out.sequences[:, :2].tolist() == [PREFIX] * 3  # output: new tokens only
    assert not {first, second} & {t for row in out.tokens for t in row}
    assert all(row[0] not in begin for row in out.tokens)
    assert plain.tokens != out.tokens  # the suppression mattered


def test_sampling_never_draws_a_suppressed_token(pair) -> None:
    _, ours = pair
    feats = _features(4)
    banned = tuple(_favourites(ours, feats, 5))
    out = generate(ours, feats, decoder_input_ids=PREFIX, strategy="sample", temperature=1.5, max_new_tokens=12,
                   seed=3, suppress_tokens=banned, cpu_kernels=False)  # fmt: skip
    assert not set(banned) & {t for row in out.tokens for t in row}


def test_an_encoder_state_source_equals_features(pair) -> None:
    """Encoded once and reused by beam search twice: the caller's state is left as it was."""
    _, ours = pair
    feats = _features()
    state = ours.encode_for_generation(feats)
    hidden = state.hidden.clone()
    kwargs = dict(decoder_input_ids=PREFIX, strategy="beam", num_beams=3, max_new_tokens=8, cpu_kernels=False)
    expected = generate(ours, feats, **kwargs).tokens
    assert generate(ours, state, **kwargs).tokens == expected
    assert generate(ours, state, **kwargs).tokens == expected
    assert torch.equal(state.hidden, hidden)


def test_logits_processor_sees_the_prefix_in_every_strategy(pair) -> None:
    """A processor that allows only one token: every strategy must produce only that token."""
    _, ours = pair
    feats = _features(2)
    seen_lengths: list[int] = []

    def only_seven(tokens: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        seen_lengths.append(tokens.shape[1])
        assert tokens[:, :2].tolist() == [PREFIX] * tokens.shape[0]
        allowed = torch.full_like(logits, float("-inf"))
        allowed[:, 7] = 0.0
        return logits + allowed

    for strategy in ("greedy", "sample", "beam"):
        extra = {"num_beams": 2} if strategy == "beam" else {}
        out = generate(ours, feats, decoder_input_ids=PREFIX, strategy=strategy, max_new_tokens=4,
                       logits_processor=only_seven, cpu_kernels=False, **extra)  # fmt: skip
        assert out.tokens == [[7] * 4] * 2, strategy
    assert seen_lengths[:4] == [2, 3, 4, 5]  # the greedy run: the prefix, then one more token each step


def test_bad_prefixes_and_suppress_lists_are_named(pair) -> None:
    _, ours = pair
    feats = _features(2)
    with pytest.raises(ValueError, match="3 rows for 2 sources"):
        generate(ours, feats, decoder_input_ids=[PREFIX] * 3, cpu_kernels=False)
    with pytest.raises(ValueError, match="outside the model's vocabulary"):
        generate(ours, feats, decoder_input_ids=[START, VOCAB + 5], cpu_kernels=False)
    with pytest.raises(ValueError, match="max_seq_len=24"):
        generate(ours, feats, decoder_input_ids=[START] * 10, max_new_tokens=20, cpu_kernels=False)
    with pytest.raises(ValueError, match="suppressed token id 99"):
        generate(ours, feats, suppress_tokens=(99,), max_new_tokens=2, cpu_kernels=False)
    with pytest.raises(ConfigError, match="suppress_tokens"):
        GenerationConfig(suppress_tokens=(-1,))


def test_decoder_prefix_is_refused_for_a_decoder_only_model() -> None:
    from tests.generate.conftest import tiny_gpt

    with pytest.raises(ValueError, match="decoder_input_ids is for encoder-decoder models"):
        generate(tiny_gpt(), [1, 2, 3], decoder_input_ids=[1], max_new_tokens=2)
