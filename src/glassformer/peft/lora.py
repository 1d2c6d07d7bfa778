"""LoRA: a frozen linear layer plus a trainable low-rank update, ``y = W x + (alpha / r) B A x``.

Hu et al. 2021. ``A`` is ``(r, in)`` and ``B`` is ``(out, r)``; ``B`` starts at zero, so an injected
model computes exactly what the base did until training moves ``B``. The numbers follow Hugging
Face ``peft`` (same scaling, same initialisation, dropout on the LoRA branch only) so that an
adapter trained here and one trained there are interchangeable (``glassformer.peft.io``).

:class:`LoraLinear` wraps any module that has ``in_features``, ``out_features`` and a ``weight``
(an ``nn.Linear``, or a quantized linear layer whose ``weight`` dequantizes: LoRA over that is
QLoRA). :func:`inject_lora` swaps the chosen layers of a model for wrappers and freezes
everything else except the ``modules_to_save`` (a classifier head, typically); with
``LoraConfig(quantize="nf4")`` it first stores the frozen base's linear layers in NF4
(:mod:`glassformer.peft.quantized`), which is QLoRA.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from glassformer.peft.quantized import (
    QLORA_FORMATS,
    base_forward,
    dequantize_rest,
    dequantized,
    is_quantized_layer,
    quantize_base,
)
from glassformer.utils.suggest import did_you_mean

Init = Literal["kaiming", "gaussian"]
ALL_LINEAR = "all-linear"
# Layers "all-linear" leaves out, as peft does: the output layer of a language model.
OUTPUT_LAYERS = ("lm_head",)


class LoraError(ValueError):
    """A LoRA config, target or adapter that does not fit the model; the message names the fix."""


@dataclass(frozen=True)
class LoraConfig:
    """What to adapt and how.

    ``target``: a regular expression matched against the whole module name (as peft reads a
    string), or a sequence of names each matching a module whose name is it or ends with
    ``".<name>"`` (``("q_proj", "v_proj")``), or ``"all-linear"`` (every linear layer except
    ``lm_head`` and the ``modules_to_save``). ``modules_to_save``: modules trained in full and
    saved with the adapter (a new classifier head has no pretrained weights to fall back on).
    ``use_rslora`` scales by ``alpha / sqrt(r)`` (Kalajdzievski 2023) instead of ``alpha / r``.
    ``init``: how ``A`` starts, ``"kaiming"`` (uniform, peft's default) or ``"gaussian"``
    (normal with std ``1 / r``); ``B`` always starts at zero. ``quantize``: QLoRA, the frozen base's
    linear layers stored in this 4-bit format (``"nf4"`` or ``"fp4"``) before the adapters go on;
    the adapters and the saved modules stay float32.
    """

    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target: str | tuple[str, ...] = ("q_proj", "v_proj")
    use_rslora: bool = False
    modules_to_save: tuple[str, ...] = ()
    init: Init = "kaiming"
    quantize: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.target, list):
            object.__setattr__(self, "target", tuple(self.target))
        if isinstance(self.modules_to_save, (list, str)):
            saved = (self.modules_to_save,) if isinstance(self.modules_to_save, str) else self.modules_to_save
            object.__setattr__(self, "modules_to_save", tuple(saved))
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r < 1:
            raise LoraError(
                f"LoraConfig.r={self.r!r}: the rank must be a positive integer (8 is a common start)"
            )
        if not isinstance(self.alpha, (int, float)) or self.alpha <= 0:
            raise LoraError(f"LoraConfig.alpha={self.alpha!r}: must be a positive number (often 2 * r)")
        if not 0.0 <= self.dropout < 1.0:
            raise LoraError(f"LoraConfig.dropout={self.dropout!r}: must be in [0, 1)")
        if self.init not in ("kaiming", "gaussian"):
            raise LoraError(f"LoraConfig.init={self.init!r}: expected 'kaiming' or 'gaussian'")
        if self.quantize is not None and self.quantize not in QLORA_FORMATS:
            raise LoraError(f"LoraConfig.quantize={self.quantize!r}: a QLoRA base is stored in one of "
                            f"{', '.join(QLORA_FORMATS)} (or None for a float base)")  # fmt: skip
        self._check_target()

    def _check_target(self) -> None:
        if isinstance(self.target, str):
            if not self.target:
                raise LoraError(
                    "LoraConfig.target is empty: give layer names like ('q_proj', 'v_proj') or 'all-linear'"
                )
            try:
                re.compile(self.target)
            except re.error as err:
                raise LoraError(
                    f"LoraConfig.target={self.target!r} is not a valid regular expression: {err}"
                ) from None
        elif not self.target or not all(isinstance(t, str) and t for t in self.target):
            raise LoraError(
                f"LoraConfig.target={self.target!r}: expected non-empty layer names, a regex or 'all-linear'"
            )

    @property
    def scaling(self) -> float:
        """The factor on ``B A x``: ``alpha / r``, or ``alpha / sqrt(r)`` with rsLoRA."""
        return lora_scaling(self.alpha, self.r, self.use_rslora)


def lora_scaling(alpha: float, r: int, use_rslora: bool) -> float:
    """peft's scaling: ``alpha / r`` (``alpha / sqrt(r)`` with rsLoRA, which keeps large ranks learning)."""
    return alpha / math.sqrt(r) if use_rslora else alpha / r


def is_linear(module: nn.Module) -> bool:
    """Whether a module can carry LoRA: duck-typed, so a quantized linear layer qualifies too."""
    # looked up without reading ``weight``: on a quantized layer that would dequantize it
    has_weight = module._parameters.get("weight") is not None or isinstance(
        getattr(type(module), "weight", None), property
    )
    return (
        not isinstance(module, LoraLinear)
        and has_weight
        and all(hasattr(module, a) for a in ("in_features", "out_features"))
    )


class LoraLinear(nn.Module):
    """``base(x) + scaling * B(A(dropout(x)))``, with ``base`` frozen.

    ``merge()`` folds ``scaling * B A`` into the base weight for inference at the base's speed and
    keeps the unmerged weight, so ``unmerge()`` restores it bit for bit (subtracting the update
    again would not: ``(w + d) - d`` rounds). :func:`merge_lora` folds for good and frees both.
    """

    def __init__(
        self,
        base: nn.Module,
        r: int,
        alpha: float,
        dropout: float = 0.0,
        use_rslora: bool = False,
        init: Init = "kaiming",
    ) -> None:
        super().__init__()
        if not is_linear(base):
            raise LoraError(
                f"{type(base).__name__} is not a linear layer (needs in_features, out_features, weight)"
            )
        self.in_features, self.out_features = int(base.in_features), int(base.out_features)
        if r > min(self.in_features, self.out_features):
            raise LoraError(
                f"rank r={r} is larger than this {self.in_features}->{self.out_features} layer allows "
                f"(min(in, out) = {min(self.in_features, self.out_features)}); choose r <= that"
            )
        self.base = base
        self.r, self.alpha, self.use_rslora = r, float(alpha), use_rslora
        self.scaling = lora_scaling(alpha, r, use_rslora)
        weight = base.weight  # read once (a quantized base dequantizes on each read)
        dtype = weight.dtype if weight.dtype.is_floating_point else torch.float32
        device = weight.device
        self.lora_A = nn.Linear(self.in_features, r, bias=False, device=device, dtype=dtype)
        self.lora_B = nn.Linear(r, self.out_features, bias=False, device=device, dtype=dtype)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False
        self._unmerged: Tensor | None = None
        self.reset_lora(init)

    @property
    def weight(self) -> Tensor:
        """The base weight (what callers that read ``layer.weight.dtype`` expect to find)."""
        return self.base.weight

    @property
    def bias(self) -> Tensor | None:
        return getattr(self.base, "bias", None)

    def reset_lora(self, init: Init = "kaiming") -> None:
        """``A`` as peft draws it (kaiming uniform with a = sqrt(5), or normal std 1/r); ``B = 0``."""
        if init == "gaussian":
            nn.init.normal_(self.lora_A.weight, std=1.0 / self.r)
        else:
            nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)

    def delta_weight(self) -> Tensor:
        """``scaling * B A``, shaped like the base weight ``(out, in)``."""
        return (self.lora_B.weight @ self.lora_A.weight) * self.scaling  # (out, r) @ (r, in)

    def forward(self, x: Tensor) -> Tensor:
        y = base_forward(self.base, x)  # (..., out)
        if self.merged:
            return y
        update = self.lora_B(self.lora_A(self.dropout(x.to(self.lora_A.weight.dtype))))  # (..., out)
        return y + (update * self.scaling).to(y.dtype)

    def _writable_weight(self) -> nn.Parameter:
        weight = getattr(self.base, "weight", None)
        if not isinstance(weight, nn.Parameter) or not weight.dtype.is_floating_point:
            raise LoraError(
                f"cannot merge into a {type(self.base).__name__}: its weight is not a float parameter "
                "(a quantized base keeps its adapter unmerged; merge_lora(model) folds it into a float copy)"
            )
        return weight

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the update into the base weight; the branch is skipped until :meth:`unmerge`."""
        if self.merged:
            raise LoraError("this LoRA layer is already merged; unmerge() it first")
        weight = self._writable_weight()
        self._unmerged = weight.detach().clone()
        weight.add_(self.delta_weight().to(weight.dtype))
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Put back the exact base weight that :meth:`merge` found."""
        if not self.merged or self._unmerged is None:
            raise LoraError("this LoRA layer is not merged; nothing to unmerge")
        self._writable_weight().copy_(self._unmerged)
        self._unmerged = None
        self.merged = False

    @torch.no_grad()
    def folded(self) -> nn.Module:
        """The base layer with the update folded in, for good (what :func:`merge_lora` puts back).

        A quantized base comes back as a float ``nn.Linear`` of its dequantized weight plus the
        update: the update was trained against exactly those weights, and rounding the sum to 4 bits
        again would lose most of it."""
        if is_quantized_layer(self.base):
            return dequantized(self.base, self.delta_weight())
        if not self.merged:
            weight = self._writable_weight()
            weight.add_(self.delta_weight().to(weight.dtype))
        self._unmerged = None
        return self.base

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha:g}, scaling={self.scaling:g}, merged={self.merged}"


# ---------------------------------------------------------------------------------------------
# choosing layers


def name_matches(name: str, patterns: str | Sequence[str]) -> bool:
    """peft's rule: a string is a regex over the whole name; a list entry is the name or its ending."""
    if isinstance(patterns, str):
        return re.fullmatch(patterns, name) is not None
    return any(name == p or name.endswith("." + p) for p in patterns)


def linear_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every module LoRA could wrap, by name (the choices an error lists)."""
    return {name: m for name, m in model.named_modules() if name and is_linear(m)}


def _describe_choices(names: Sequence[str]) -> str:
    short = sorted({n.rsplit(".", 1)[-1] for n in names})
    return f"layer names: {', '.join(short)}; e.g. {', '.join(list(names)[:4])}"


def find_targets(model: nn.Module, config: LoraConfig) -> list[str]:
    """The names of the layers ``config.target`` chooses; none is an error listing the choices."""
    layers = linear_layers(model)
    saved = config.modules_to_save
    if config.target == ALL_LINEAR:
        chosen = [n for n in layers if not name_matches(n, OUTPUT_LAYERS) and not name_matches(n, saved)]
    else:
        chosen = [n for n in layers if name_matches(n, config.target)]
    if not chosen:
        wanted = config.target if isinstance(config.target, str) else config.target[0]
        endings = {n.rsplit(".", 1)[-1] for n in layers}
        if isinstance(config.target, str) and config.target in endings:  # a regex that is a layer's last name
            hint = (f" (a string is a regular expression over the whole name, as in peft: write ({wanted!r},) "
                    f"or '.*\\.{wanted}')")  # fmt: skip
        else:
            hint = did_you_mean(wanted, endings)
        raise LoraError(
            f"LoRA target {config.target!r} matches no linear layer of this {type(model).__name__}{hint}; "
            f"{_describe_choices(list(layers))}"
        )
    return chosen


def _find_saved(model: nn.Module, patterns: Sequence[str]) -> list[str]:
    modules = [n for n, _ in model.named_modules() if n]
    found: list[str] = []
    for pattern in patterns:
        hits = [n for n in modules if name_matches(n, (pattern,))]
        if not hits:
            tops = [n for n, _ in model.named_children()]
            raise LoraError(
                f"modules_to_save entry {pattern!r} names no module of this {type(model).__name__}"
                f"{did_you_mean(pattern, tops)}; its top-level modules: {', '.join(tops)}"
            )
        found += [n for n in hits if not any(n.startswith(h + ".") for h in hits)]
    return found


# ---------------------------------------------------------------------------------------------
# models


def lora_layers(model: nn.Module) -> Iterator[tuple[str, LoraLinear]]:
    """``(name, layer)`` for every LoRA layer of a model."""
    for name, module in model.named_modules():
        if isinstance(module, LoraLinear):
            yield name, module


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def inject_lora(model: nn.Module, config: LoraConfig, *, verbose: bool = False) -> nn.Module:
    """Wrap the target layers in :class:`LoraLinear` (in place) and freeze all but adapters and saved modules.

    Returns the model. ``verbose`` prints the trainable-parameter line, as peft's
    ``print_trainable_parameters`` does (:func:`trainable_parameters` returns it).
    """
    existing = [n for n, _ in lora_layers(model)]
    if existing:
        raise LoraError(
            f"this model already carries LoRA adapters ({len(existing)} layers, e.g. {existing[0]}); "
            "injecting twice would stack them: merge_lora(model) first, or start from a fresh model"
        )
    targets = find_targets(model, config)
    saved = _find_saved(model, config.modules_to_save)
    clash = [t for t in targets if any(t == s or t.startswith(s + ".") for s in saved)]
    if clash:
        raise LoraError(f"{clash[0]} is both a LoRA target and in modules_to_save; pick one")
    if config.quantize is not None:
        _quantize_for_qlora(model, config.quantize, saved)
    for name in targets:
        base = model.get_submodule(name)
        try:
            layer = LoraLinear(base, config.r, config.alpha, config.dropout, config.use_rslora, config.init)
        except LoraError as err:
            raise LoraError(f"{name}: {err}") from None
        _replace(model, name, layer)
    model.requires_grad_(False)
    for _, layer in lora_layers(model):
        layer.lora_A.requires_grad_(True)
        layer.lora_B.requires_grad_(True)
    for name in saved:
        model.get_submodule(name).requires_grad_(True)
    model.lora_config = config
    model.lora_saved_modules = tuple(saved)
    if verbose:
        print(trainable_parameters(model))
    return model


def _quantize_for_qlora(model: nn.Module, fmt: str, saved: Sequence[str]) -> None:
    try:
        quantize_base(model, fmt, saved)
    except ValueError as err:
        raise LoraError(
            f"QLoRA (quantize={fmt!r}) needs a float base: {err}. On a base quantized already, plain LoRA "
            "(quantize=None) is QLoRA"
        ) from None


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base layer and put the plain layers back (peft's ``merge_and_unload``).

    The result is an ordinary model (its state dict has the base's names again), as fast as the
    base; the saved modules keep their trained weights. A QLoRA model (``quantize`` set) comes back
    all float: its adapted layers folded into their dequantized weights, the others dequantized.
    """
    layers = list(lora_layers(model))
    if not layers:
        raise LoraError("this model has no LoRA layers to merge")
    if getattr(getattr(model, "lora_config", None), "quantize", None) is None:
        quantized = [n for n, layer in layers if is_quantized_layer(layer.base)]
        if quantized:  # the user's own quantized model: folding would silently make it float
            raise LoraError(
                f"{quantized[0]} has a quantized base that merging would turn back into float32; keep the "
                "adapter unmerged on a quantized model, or train with LoraConfig(quantize=...) (QLoRA), "
                "whose merge is meant to give a float model"
            )
    for name, layer in layers:
        _replace(model, name, layer.folded())
    dequantize_rest(model)
    for attr in ("lora_config", "lora_saved_modules"):
        model.__dict__.pop(attr, None)
    return model


def set_merged(model: nn.Module, merged: bool) -> None:
    """Merge (or unmerge) every LoRA layer in place, keeping the adapters (fast inference, then back)."""
    for _, layer in lora_layers(model):
        if layer.merged != merged:
            layer.merge() if merged else layer.unmerge()


def lora_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The adapter's tensors under our names: ``<layer>.lora_A.weight``, ``<layer>.lora_B.weight``,
    and every parameter of the saved modules (``classifier.weight``, ...)."""
    out: dict[str, Tensor] = {}
    for name, layer in lora_layers(model):
        out[f"{name}.lora_A.weight"] = layer.lora_A.weight.detach()
        out[f"{name}.lora_B.weight"] = layer.lora_B.weight.detach()
    for name in getattr(model, "lora_saved_modules", ()):
        for key, tensor in model.get_submodule(name).state_dict().items():
            out[f"{name}.{key}"] = tensor.detach()
    return out


@dataclass(frozen=True)
class TrainableCount:
    """Trainable and total parameters (tied tensors counted once); prints like peft's line."""

    trainable: int
    total: int

    @property
    def percent(self) -> float:
        return 100.0 * self.trainable / max(self.total, 1)

    def __str__(self) -> str:
        return f"trainable params: {self.trainable:,} || all params: {self.total:,} || trainable%: {self.percent:.4f}"


def trainable_parameters(model: nn.Module) -> TrainableCount:
    """How many parameters train: the number LoRA is about."""
    seen: set[int] = set()
    trainable = total = 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return TrainableCount(trainable, total)


# ---------------------------------------------------------------------------------------------
# the command line's spelling

SPEC_KEYS = {"r": "r", "alpha": "alpha", "dropout": "dropout", "target": "target", "rslora": "use_rslora",
             "save": "modules_to_save", "init": "init", "quant": "quantize"}  # fmt: skip


def _spec_value(key: str, text: str, flag: str) -> object:
    field = SPEC_KEYS[key]
    try:
        if field == "r":
            return int(text)
        if field in ("alpha", "dropout"):
            return float(text)
    except ValueError:
        kind = "an integer" if field == "r" else "a number"
        raise LoraError(f"{flag} {key}={text!r}: expected {kind}") from None
    if field == "use_rslora":
        if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise LoraError(f"{flag} rslora={text!r}: expected true or false")
        return text.lower() in ("true", "1", "yes")
    if field in ("target", "modules_to_save"):
        names = tuple(t for t in text.split("|") if t)
        return ALL_LINEAR if names == (ALL_LINEAR,) else names
    return text


def parse_lora_spec(spec: str, *, qlora: bool = False) -> LoraConfig:
    """``"r=8,alpha=16,target=q_proj|v_proj,dropout=0.05"`` -> :class:`LoraConfig`.

    Keys: ``r``, ``alpha``, ``dropout``, ``target`` (layer names joined by ``|``, or
    ``all-linear``), ``rslora`` (true/false), ``save`` (modules_to_save, joined by ``|``), ``init``,
    ``quant`` (QLoRA's base format, nf4 or fp4). Keys left out keep :class:`LoraConfig`'s defaults;
    ``qlora=True`` (the ``--qlora`` flag) reads the same grammar with ``quant`` defaulting to nf4.
    """
    flag = "--qlora" if qlora else "--lora"
    values: dict[str, object] = {"quantize": "nf4"} if qlora else {}
    given: set[str] = set()
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        key, eq, text = item.partition("=")
        key = key.strip()
        if not eq or not text.strip():
            raise LoraError(f"{flag}: {item!r} is not KEY=VALUE (e.g. r=8,alpha=16,target=q_proj|v_proj)")
        if key not in SPEC_KEYS:
            raise LoraError(
                f"{flag}: unknown key {key!r}{did_you_mean(key, SPEC_KEYS)}; known keys: {', '.join(SPEC_KEYS)}"
            )
        if key in given:
            raise LoraError(f"{flag}: {key} is given twice")
        given.add(key)
        values[SPEC_KEYS[key]] = _spec_value(key, text.strip(), flag)
    return LoraConfig(**values)  # type: ignore[arg-type]
