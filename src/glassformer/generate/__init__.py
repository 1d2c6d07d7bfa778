"""Text generation for any glassformer decoder or encoder-decoder: greedy, sampling, beam search, streaming.

``generate(model, input_ids, config=GenerationConfig(...))`` returns every new token at once;
``stream(...)`` yields them as they come. Both take batches of prompts of different lengths (left
padded here) and decode with a static or dynamic KV cache. See ``decode.py`` for the model
contracts a decoder or an encoder-decoder has to follow.
"""

from glassformer.generate.config import GenerationConfig
from glassformer.generate.decode import StreamPiece, generate, prepare_prompts, stream
from glassformer.generate.processors import apply_repetition_penalty, top_k_filter, top_p_filter
from glassformer.generate.stepper import GenerationOutput, PromptBatch

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
