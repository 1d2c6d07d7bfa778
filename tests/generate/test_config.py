import pytest

from glassformer.generate import GenerationConfig
from glassformer.utils.config import ConfigError


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(strategy="nucleus"), "strategy='nucleus': unknown decoding strategy"),
        (dict(top_p=0.0), "top_p=0.0: must be in (0, 1]"),
        (dict(top_p=1.5), "top_p=1.5: must be in (0, 1]"),
        (dict(top_p=-0.1), "top_p=-0.1"),
        (dict(temperature=-1.0), "temperature=-1.0: must be >= 0"),
        (dict(top_k=-3), "top_k=-3: must be >= 0"),
        (dict(max_new_tokens=0), "max_new_tokens=0: must be >= 1"),
        (dict(repetition_penalty=0.0), "repetition_penalty=0.0"),
        (dict(num_beams=0, strategy="beam"), "num_beams=0"),
        (dict(num_beams=3), "num_beams=3 only applies with strategy='beam'"),
        (dict(cache="paged"), "cache='paged'"),
        (dict(stop_token_ids=(-1,)), "stop_token_ids: -1"),
        (dict(stop_strings=("",)), "stop_strings: ''"),
        (dict(strategy="beam", num_beams=2, stop_strings=("x",)), "stop_strings are not supported"),
        (dict(temperature="hot"), "temperature='hot': expected a number"),
    ],
)
def test_bad_values_name_the_field(changes, message):
    with pytest.raises(ConfigError) as err:
        GenerationConfig(**changes)
    assert message in str(err.value)


def test_replace_and_overrides_are_checked_too():
    config = GenerationConfig(strategy="sample", top_p=0.9)
    assert config.replace(top_p=1.0).top_p == 1.0
    with pytest.raises(ConfigError, match="top_p=2.0"):
        config.replace(top_p=2.0)
    assert config.with_overrides(["top_k=5", "stop_token_ids=[1, 2]"]).stop_token_ids == (1, 2)
    with pytest.raises(ConfigError, match="unknown key"):
        config.with_overrides(["topk=5"])


def test_temperature_zero_is_greedy():
    assert GenerationConfig(strategy="sample", temperature=0).greedy
    assert not GenerationConfig(strategy="sample", temperature=0.5).greedy
    assert GenerationConfig().greedy
