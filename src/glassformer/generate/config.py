"""``GenerationConfig``: every knob of decoding in one validated dataclass.

The config checks itself when built (and again on ``replace``), so a bad value is reported with
the field's name before any model runs: ``top_p=1.5`` fails here, not as a silent no-op three
calls deeper.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from glassformer.utils.config import ConfigError, ConfigMixin

Strategy = Literal["greedy", "sample", "beam"]
CacheKind = Literal["static", "dynamic", "none"]
STRATEGIES: tuple[str, ...] = ("greedy", "sample", "beam")
CACHE_KINDS: tuple[str, ...] = ("static", "dynamic", "none")


@dataclass
class GenerationConfig(ConfigMixin):
    """How to continue a prompt.

    strategy: ``greedy`` (the most likely token each step), ``sample`` (draw from the processed
        distribution) or ``beam`` (keep the ``num_beams`` most likely continuations).
    max_new_tokens: how many tokens to add at most.
    temperature: divides the logits before sampling; ``0`` means greedy (the limit T -> 0).
    top_k: sample only among tokens whose logit is >= the k-th largest (ties at the boundary are
        all kept, so more than k tokens can survive when logits tie); ``0`` turns it off.
    top_p: nucleus sampling; keep the most likely tokens until their probability reaches ``top_p``
        (always at least one). ``1.0`` turns it off.
    repetition_penalty: CTRL's penalty (Keskar et al. 2019): logits of tokens already in the prompt
        or output are divided by it when positive and multiplied by it when negative; ``1.0`` is off.
    num_beams, length_penalty, early_stopping: beam search. A finished beam scores
        ``sum(log p) / n_generated ** length_penalty``; ``early_stopping`` stops as soon as
        ``num_beams`` beams have finished instead of when no running beam can still win.
    stop_token_ids: a row stops after producing one of these (the token is kept in the output).
    stop_strings: a row stops once its generated text contains one of these; the returned text is
        cut just before it (needs a tokenizer to turn tokens into text).
    seed: seeds a private random generator, so sampling is reproducible and leaves torch's
        global random state alone.
    cache: ``static`` (preallocated key/value buffers, the fastest), ``dynamic`` (grows with
        ``torch.cat``) or ``none`` (recompute the whole sequence each step: slow, for checking).
    pad_token_id: fills left padding of ragged prompts and the slots after a row has stopped.
    truncate_prompt: when prompt + ``max_new_tokens`` exceed the model's context, keep only the
        last tokens of the prompt that fit instead of raising an error.
    slide_window: decode past the model's context: whenever the sequence fills the context, the
        oldest quarter is dropped and the rest re-encoded, so the model always sees the latest
        3/4 to all of its context (nanoGPT's ``generate`` crops to the last ``block_size``
        tokens at every step instead; re-encoding once per quarter keeps the KV cache useful).
        A prompt longer than the context keeps its last ``block_size`` tokens.
    output_logits: also return the raw logits of every step (for inspection and tests).
    suppress_tokens: ids that are never generated (their logits become ``-inf`` at every step),
        as Hugging Face's ``suppress_tokens``; Whisper's non-speech symbols and control tokens.
    begin_suppress_tokens: ids suppressed at the first new step only (``begin_suppress_tokens``
        in Hugging Face): Whisper must not open a transcript with a blank or end it at once.
    prompt_lookup: greedy decoding of one prompt only: guess up to this many next tokens by
        copying what followed the latest earlier occurrence of the last few tokens (prompt lookup
        decoding, Saxena 2023), and let the model check all guesses in one forward pass. The
        output is the greedy output; text that repeats itself (or the prompt) comes out faster.
        ``0`` turns it off.
    greedy_shortlist: greedy decoding on a CPU scores the vocabulary with an int8 copy of the
        output head and computes float32 logits only for the tokens that can still win
        (``shortlist.py``): the same tokens, a third fewer bytes read per step. Applies without a
        repetition penalty or ``output_logits``; ``False`` always computes every logit.
    cpu_kernels: on a CPU, switches the model's linear layers to ``glassformer.kernels.FastLinear``
        in place (same parameters; ``glassformer.kernels.use_torch_linear(model)`` undoes it), or,
        where the kernels cannot be compiled, re-stores their weights column-major for MKL. The
        first switch on a model logs one line with the number of layers. ``False`` leaves the
        model as it is (decoding is then slower on a CPU).
    """

    strategy: Strategy = "greedy"
    max_new_tokens: int = 64
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    num_beams: int = 1
    length_penalty: float = 1.0
    early_stopping: bool = False
    stop_token_ids: tuple[int, ...] = ()
    stop_strings: tuple[str, ...] = ()
    seed: int | None = None
    cache: CacheKind = "static"
    pad_token_id: int = 0
    truncate_prompt: bool = False
    slide_window: bool = False
    output_logits: bool = False
    suppress_tokens: tuple[int, ...] = ()
    begin_suppress_tokens: tuple[int, ...] = ()
    prompt_lookup: int = 0
    greedy_shortlist: bool = True
    cpu_kernels: bool = True

    def __post_init__(self) -> None:
        self.stop_token_ids = tuple(self.stop_token_ids)
        self.stop_strings = tuple(self.stop_strings)
        self.suppress_tokens = tuple(self.suppress_tokens)
        self.begin_suppress_tokens = tuple(self.begin_suppress_tokens)
        if self.strategy not in STRATEGIES:
            raise ConfigError(
                f"strategy={self.strategy!r}: unknown decoding strategy; expected one of {', '.join(STRATEGIES)}"
            )
        if self.cache not in CACHE_KINDS:
            raise ConfigError(f"cache={self.cache!r}: expected one of {', '.join(CACHE_KINDS)}")
        _check_int(self, "max_new_tokens", minimum=1)
        _check_int(self, "top_k", minimum=0)
        _check_int(self, "num_beams", minimum=1)
        _check_int(self, "pad_token_id", minimum=0)
        _check_int(self, "prompt_lookup", minimum=0)
        if self.prompt_lookup and not self.greedy:
            raise ConfigError(f"prompt_lookup={self.prompt_lookup} works with greedy decoding only (strategy={self.strategy!r})")
        if self.prompt_lookup and self.slide_window:
            raise ConfigError(f"prompt_lookup={self.prompt_lookup} cannot be combined with slide_window")
        if self.prompt_lookup and (self.cache == "none" or self.output_logits):
            raise ConfigError(f"prompt_lookup={self.prompt_lookup} needs a KV cache and no output_logits")
        if self.seed is not None:
            _check_int(self, "seed", minimum=0)
        _check_number(self, "temperature")
        if self.temperature < 0:
            raise ConfigError(f"temperature={self.temperature}: must be >= 0 (0 means greedy)")
        _check_number(self, "top_p")
        if not 0.0 < self.top_p <= 1.0:
            raise ConfigError(f"top_p={self.top_p}: must be in (0, 1]; 1 turns nucleus sampling off")
        _check_number(self, "repetition_penalty")
        if self.repetition_penalty <= 0:
            raise ConfigError(f"repetition_penalty={self.repetition_penalty}: must be > 0 (1 is off)")
        _check_number(self, "length_penalty")
        if self.num_beams > 1 and self.strategy != "beam":
            raise ConfigError(f"num_beams={self.num_beams} only applies with strategy='beam' (got {self.strategy!r})")
        if self.stop_strings and self.strategy == "beam":
            raise ConfigError("stop_strings are not supported with strategy='beam'; use stop_token_ids")
        for name in ("stop_token_ids", "suppress_tokens", "begin_suppress_tokens"):
            for tok in getattr(self, name):
                if isinstance(tok, bool) or not isinstance(tok, int) or tok < 0:
                    raise ConfigError(f"{name}: {tok!r} is not a token id (a non-negative integer)")
        if self.prompt_lookup and (self.suppress_tokens or self.begin_suppress_tokens):
            raise ConfigError(f"prompt_lookup={self.prompt_lookup} cannot be combined with suppressed tokens")
        for text in self.stop_strings:
            if not isinstance(text, str) or not text:
                raise ConfigError(f"stop_strings: {text!r} is not a non-empty string")

    @property
    def greedy(self) -> bool:
        """Whether each step takes the arg-max (``sample`` at temperature 0 is greedy too)."""
        return self.strategy == "greedy" or (self.strategy == "sample" and self.temperature == 0)


def _check_int(cfg: GenerationConfig, name: str, minimum: int) -> None:
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name}={value!r}: expected an integer")
    if value < minimum:
        raise ConfigError(f"{name}={value}: must be >= {minimum}")


def _check_number(cfg: GenerationConfig, name: str) -> None:
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise ConfigError(f"{name}={value!r}: expected a number")
