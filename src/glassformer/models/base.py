"""What every family's model shares: an output record, glassformer's own save/load format, the
token-id check at a model's boundary and the encoder-decoder generation contract.

A saved model is a folder with ``config.json`` (the config dataclass plus ``"family"``) and
``model.safetensors``. Safetensors holds tensors only, so loading a model never runs code from the
file. The Hugging Face layout (``save_pretrained`` / ``from_pretrained``) lives in each family's
``hf.py``, because the key names are family-specific.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

import torch
from torch import Tensor, nn

from glassformer.nn.cache import EncoderDecoderCache, EncoderState, KVCache
from glassformer.utils.config import ConfigMixin
from glassformer.utils.weights import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    FolderConfig,
    load_into,
    read_config,
    read_safetensors,
    save_model_weights,
    write_json,
)

IGNORE_INDEX = -100  # a label or target with this value adds nothing to a loss (padding, prompt, unmasked)


@dataclass
class ModelOutput:
    """What a model's forward returns. ``loss`` is set when targets were given."""

    loss: Tensor | None = None
    logits: Tensor | None = None
    hidden_states: Tensor | None = None
    attentions: list[Tensor] | None = None  # one (B, H, Tq, Tk) per layer (bertviz layout)
    cross_attentions: list[Tensor] | None = None
    encoder_attentions: list[Tensor] | None = None  # an encoder-decoder's encoder, from attention_maps
    metrics: dict[str, Tensor] = field(default_factory=dict)
    cache: Any = None


class ModelBase(nn.Module):
    """Base class: ``config`` attribute, parameter counting, and the glassformer folder format."""

    family: ClassVar[str] = ""
    config_class: ClassVar[type[ConfigMixin]]

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.config = config

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Parameter count; tied weights are counted once."""
        seen: set[int] = set()
        total = 0
        for p in self.parameters():
            if id(p) in seen or (trainable_only and not p.requires_grad):
                continue
            seen.add(id(p))
            total += p.numel()
        return total

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``config.json`` and ``model.safetensors`` (each atomically) into ``directory``."""
        directory = Path(directory)
        write_json({"family": self.family, **self.config.to_dict()}, directory / CONFIG_NAME)
        save_model_weights(self, directory / WEIGHTS_NAME)
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike[str], map_location: str = "cpu") -> Self:
        """Load a folder written by :meth:`save`; refuses a folder of another family."""
        return cls.from_folder(read_config(directory), map_location=map_location)

    @classmethod
    def from_folder(cls, folder: FolderConfig, map_location: str = "cpu") -> Self:
        """The model of a folder whose ``config.json`` has already been read (no second read)."""
        if folder.kind != "glassformer" or folder.family != cls.family:
            found = folder.family or f"Hugging Face {folder.model_type}"
            raise ValueError(
                f"{folder.folder} holds a {found} checkpoint, not a {cls.family} one; "
                "open it with glassformer.models.load_model, which picks the family"
            )
        config = cls.config_class.from_dict(folder.fields(), source=str(folder.folder / CONFIG_NAME))
        model = cls(config)
        weights = folder.folder / WEIGHTS_NAME
        if not weights.is_file():
            raise FileNotFoundError(f"{weights}: weights file not found")
        load_into(model, read_safetensors(weights, device=map_location), source=str(weights))
        return model


def check_token_ids(ids: Tensor, vocab_size: int, name: str, fix: str = "") -> None:
    """Refuse anything but a ``(B, T)`` integer tensor of ids below ``vocab_size``.

    An id past the embedding would fail deep inside ``nn.Embedding`` (or index garbage on some
    devices), so the check names the tensor, the ids found and ``fix``, a family's advice.
    """
    if not isinstance(ids, Tensor) or ids.dim() != 2:
        shape = tuple(ids.shape) if isinstance(ids, Tensor) else type(ids).__name__
        raise ValueError(f"{name} must be (batch, seq_len) token ids, got shape {shape}")
    if ids.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"{name} must hold integer token ids, got dtype {ids.dtype}")
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab_size):
        raise ValueError(
            f"{name} holds token ids in [{int(ids.min())}, {int(ids.max())}] but the vocabulary has "
            f"{vocab_size} entries" + (f": {fix}" if fix else "")
        )


class EncoderDecoderModel(ModelBase):
    """glassformer.generate's encoder-decoder contract (``generate/decode.py``), written once.

    A family supplies ``encode(ids, mask)`` and ``decode(ids, encoder_hidden, source_mask,
    target_mask, *, cache)``, both returning a ``StackOutput``, ``logits(hidden)`` and a stack
    ``self.decoder``; its config has ``max_seq_len``, ``decoder_start_token_id``,
    ``n_decoder_layers`` and ``n_heads``. A family whose decoding differs (a forced first token,
    a memo of the cross-attention keys) overrides the method concerned.
    """

    def teacher_forced_output(self, dec: Any, decoder_input_ids: Tensor, labels: Tensor | None) -> ModelOutput:
        """``forward``'s tail: logits of the decoder output ``dec`` (a ``StackOutput``) and, with
        ``labels`` of the decoder inputs' shape, the family's ``self.loss(logits, labels)``."""
        logits = self.logits(dec.hidden)  # (B, T, V)
        loss, metrics = None, {}
        if labels is not None:
            if labels.shape != decoder_input_ids.shape:
                raise ValueError(
                    f"labels must have the shape of decoder_input_ids {tuple(decoder_input_ids.shape)}, got "
                    f"{tuple(labels.shape)}"
                )
            loss, metrics = self.loss(logits, labels)
        return ModelOutput(
            loss=loss, logits=logits, hidden_states=dec.hidden, attentions=dec.attentions,
            cross_attentions=dec.cross_attentions, metrics=metrics,
        )  # fmt: skip

    def attention_maps(
        self,
        input_ids: Tensor,
        decoder_input_ids: Tensor,
        attention_mask: Tensor | None = None,
        decoder_attention_mask: Tensor | None = None,
    ) -> ModelOutput:
        """A teacher-forced pass that keeps all three kinds of attention, one ``(B, H, T_query, T_key)``
        per layer: ``encoder_attentions`` (source x source), ``attentions`` (the decoder's causal
        target x target) and ``cross_attentions`` (target x source, what each output token read).

        ``forward`` returns only the decoder's two, because training never needs the encoder's;
        a picture of a translation (``glassformer.viz.alignment``) needs them all from one pass.
        """
        enc = self.encode(input_ids, attention_mask, return_weights=True)
        dec = self.decode(
            decoder_input_ids, enc.hidden, attention_mask, decoder_attention_mask, return_weights=True
        )
        out = self.teacher_forced_output(dec, decoder_input_ids, None)
        out.encoder_attentions = enc.attentions
        return out

    @property
    def max_seq_len(self) -> int:
        """The longest source, and the most decoder positions (``config.max_seq_len``)."""
        return self.config.max_seq_len

    @property
    def decoder_start_token_id(self) -> int:
        """The token every decoder row starts from."""
        return self.config.decoder_start_token_id

    def new_cache(
        self, batch_size: int, max_len: int | None = None, kind: Literal["dynamic", "static"] = "dynamic"
    ) -> EncoderDecoderCache:
        """An empty decoder cache: self-attention (``kind``) plus the cross-attention keys/values.

        The head size is read off the decoder's attention (T5's need not be ``dim / n_heads``);
        the dtype and device are those of the weights (quantized linears keep theirs in buffers).
        """
        c = self.config
        length = c.max_seq_len if max_len is None else max_len
        head_dim = self.decoder.layers[0].attn.head_dim
        like = next(self.parameters())
        return EncoderDecoderCache.empty(kind, c.n_decoder_layers, batch_size, c.n_heads, length, head_dim, like=like)

    def encode_for_generation(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> EncoderState:
        """Run the encoder once: its output and the source mask, which every decoder step attends to."""
        return EncoderState(self.encode(input_ids, attention_mask).hidden, attention_mask)

    def decode_step(
        self,
        decoder_input_ids: Tensor,
        *,
        encoder_state: EncoderState,
        cache: KVCache | None = None,
        attention_mask: Tensor | None = None,
        logits_to_keep: int = 0,
    ) -> ModelOutput:
        """Logits ``(B, T or logits_to_keep, V)`` after the decoder inputs (the next ones, with a cache)."""
        dec = self.decode(
            decoder_input_ids, encoder_state.hidden, encoder_state.attention_mask, attention_mask, cache=cache
        )
        h = dec.hidden[:, -logits_to_keep:] if logits_to_keep > 0 else dec.hidden  # (B, T', C)
        return ModelOutput(logits=self.logits(h), cache=cache)
