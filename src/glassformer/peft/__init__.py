"""Parameter-efficient fine-tuning: LoRA layers (``lora.py``) and adapters in peft's format (``io.py``).

``inject_lora(model, LoraConfig(r=8, alpha=16, target=("q_proj", "v_proj")))`` freezes a model
and adds trainable low-rank updates; ``save_adapter`` / ``load_adapter`` write and read the few
megabytes that a fine-tune then is, in the files Hugging Face ``peft`` reads and writes;
``merge_lora`` folds the updates in for inference at the base model's speed.
"""

from __future__ import annotations

from glassformer.peft.io import base_fingerprint, load_adapter, save_adapter
from glassformer.peft.lora import (
    LoraConfig,
    LoraError,
    LoraLinear,
    TrainableCount,
    find_targets,
    inject_lora,
    linear_layers,
    lora_layers,
    lora_state_dict,
    merge_lora,
    parse_lora_spec,
    set_merged,
    trainable_parameters,
)
from glassformer.peft.quantized import QLORA_FORMATS, dequantize_rest, quantize_base

__all__ = [
    "QLORA_FORMATS",
    "LoraConfig",
    "LoraError",
    "LoraLinear",
    "TrainableCount",
    "base_fingerprint",
    "dequantize_rest",
    "find_targets",
    "inject_lora",
    "linear_layers",
    "load_adapter",
    "lora_layers",
    "lora_state_dict",
    "merge_lora",
    "parse_lora_spec",
    "quantize_base",
    "save_adapter",
    "set_merged",
    "trainable_parameters",
]
