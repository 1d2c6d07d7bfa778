"""Text generation for any glassformer decoder: greedy, sampling, beam search, streaming.

``generate(model, input_ids, config=GenerationConfig(...))`` returns every new token at once;
``stream(...)`` yields them as they come. Both take batches of prompts of different lengths (left
padded here) and decode with a static or dynamic KV cache. See ``decode.py`` for the model
contract a decoder has to follow.
"""

from glassformer.generate.config import GenerationConfig
from glassformer.generate.decode import (
    GenerationOutput,
    PromptBatch,
    StreamPiece,
    generate,
    prepare_prompts,
    stream,
)
from glassformer.generate.processors import apply_repetition_penalty, top_k_filter, top_p_filter

__all__ = [
    "GenerationConfig",
    "GenerationOutput",
    "PromptBatch",
    "StreamPiece",
    "apply_repetition_penalty",
    "generate",
    "prepare_prompts",
    "stream",
    "top_k_filter",
    "top_p_filter",
]
