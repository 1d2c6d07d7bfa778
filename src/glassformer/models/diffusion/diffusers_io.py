"""diffusers' ``UNet2DModel`` folders in and out: the key map and the config translation only.

A diffusers UNet folder holds ``config.json`` (``"_class_name": "UNet2DModel"``) and
``diffusion_pytorch_model.safetensors``; the noise schedule lives apart, in a scheduler's
``scheduler_config.json``. :func:`save_diffusers` writes all three into one folder, so both
``UNet2DModel.from_pretrained(folder)`` and ``DDPMScheduler.from_pretrained(folder)`` open it;
:func:`from_diffusers` reads the schedule from there (or from a pipeline's ``../scheduler/``)
when present, else takes diffusers' defaults.

What translates: block types ``DownBlock2D`` / ``AttnDownBlock2D`` (and the mirrored up blocks),
the ``UNetMidBlock2D``, positional time embeddings, conv resampling, default (additive) time
conditioning and class conditioning through ``num_class_embeds``. Our class table has one row
more than the classes, the null class of classifier-free guidance, so a diffusers model with
``num_class_embeds=K`` reads as ``K - 1`` classes whose last row is "no class", and ours exports
with ``num_class_embeds = n_classes + 1``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from torch import Tensor

from glassformer.models.diffusion.config import DiffusionConfig
from glassformer.models.diffusion.unet import DiffusionUNet
from glassformer.utils.weights import load_into, read_safetensors, write_json, write_safetensors

UNET_WEIGHTS = "diffusion_pytorch_model.safetensors"
SCHEDULER_CONFIG = "scheduler_config.json"
SCHEDULE_FIELDS = ("num_train_timesteps", "beta_schedule", "beta_start", "beta_end", "prediction_type",
                   "clip_sample", "clip_sample_range")  # fmt: skip

# our key -> theirs, applied in order (each pattern sees the previous ones' output)
RULES: tuple[tuple[str, str], ...] = (
    (r"^time_mlp\.0\.", "time_embedding.linear_1."),
    (r"^time_mlp\.2\.", "time_embedding.linear_2."),
    (r"^class_emb\.", "class_embedding."),
    (r"^norm_out\.", "conv_norm_out."),
    (r"^down\.(\d+)\.", r"down_blocks.\1."),
    (r"^up\.(\d+)\.", r"up_blocks.\1."),
    (r"^mid\.res\.", "mid_block.resnets."),
    (r"^mid_attn\.", "mid_block.attentions.0."),
    (r"\.res\.(\d+)\.", r".resnets.\1."),
    (r"\.attn\.(\d+)\.", r".attentions.\1."),
    (r"^(down_blocks\.\d+)\.resample\.", r"\1.downsamplers.0.conv."),
    (r"^(up_blocks\.\d+)\.resample\.conv\.", r"\1.upsamplers.0.conv."),
    (r"\.time_proj\.", ".time_emb_proj."),
    (r"\.skip\.", ".conv_shortcut."),
    (r"\.norm\.(weight|bias)$", r".group_norm.\1"),
    (r"\.attn\.q_proj\.", ".to_q."),
    (r"\.attn\.k_proj\.", ".to_k."),
    (r"\.attn\.v_proj\.", ".to_v."),
    (r"\.attn\.o_proj\.", ".to_out.0."),
)

# diffusers settings we implement only at one value: name -> the value we need
FIXED: dict[str, Any] = {
    "center_input_sample": False, "time_embedding_type": "positional", "mid_block_type": "UNetMidBlock2D",
    "mid_block_scale_factor": 1, "downsample_padding": 1, "downsample_type": "conv", "upsample_type": "conv",
    "act_fn": "silu", "resnet_time_scale_shift": "default", "class_embed_type": None,
}  # fmt: skip


def diffusers_key(ours: str) -> str:
    """The diffusers ``UNet2DModel`` name of one of our state-dict keys."""
    for pattern, replacement in RULES:
        ours = re.sub(pattern, replacement, ours)
    return ours


def _unsupported(field: str, value: Any, why: str) -> ValueError:
    return ValueError(f"diffusers UNet2DModel {field}={value!r} has no glassformer equivalent: {why}")


def _attention_pattern(down: list[str], up: list[str]) -> tuple[bool, ...]:
    kinds = {"DownBlock2D": False, "AttnDownBlock2D": True}
    for block in down:
        if block not in kinds:
            raise _unsupported("down_block_types", block, "use DownBlock2D or AttnDownBlock2D")
    attention = tuple(kinds[b] for b in down)
    mirrored = ["AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)]
    if list(up) != mirrored:
        raise _unsupported("up_block_types", list(up), f"the up path must mirror the down path: {mirrored}")
    return attention


def config_from_diffusers(data: dict[str, Any], schedule: dict[str, Any] | None = None) -> DiffusionConfig:
    """Our config for a ``UNet2DModel`` config dict (and a scheduler config dict, when there is one)."""
    for name, need in FIXED.items():
        if data.get(name, need) != need:
            raise _unsupported(name, data[name], f"glassformer implements only {need!r}")
    if data.get("in_channels", 3) != data.get("out_channels", 3):
        raise _unsupported("out_channels", data.get("out_channels"), "a denoiser outputs as many channels as it reads")
    size = data.get("sample_size")
    if isinstance(size, (list, tuple)):
        if len(set(size)) != 1:
            raise _unsupported("sample_size", size, "only square images")
        size = size[0]
    groups = data.get("norm_num_groups", 32)
    if data.get("attn_norm_num_groups") not in (None, groups):
        raise _unsupported("attn_norm_num_groups", data["attn_norm_num_groups"], f"attention norms use norm_num_groups={groups}")
    if data.get("attention_head_dim", 8) is None:
        raise _unsupported("attention_head_dim", None, "give the head width explicitly")
    embeds = data.get("num_class_embeds")
    fields: dict[str, Any] = dict(
        image_size=size or 32, in_channels=data.get("in_channels", 3),
        channels=tuple(data.get("block_out_channels", (224, 448, 672, 896))),
        attention=_attention_pattern(list(data.get("down_block_types", ())), list(data.get("up_block_types", ()))),
        layers_per_block=data.get("layers_per_block", 2), mid_attention=data.get("add_attention", True),
        head_dim=data.get("attention_head_dim", 8), norm_groups=groups, norm_eps=data.get("norm_eps", 1e-5),
        time_embed_dim=data.get("time_embedding_dim"), flip_sin_to_cos=data.get("flip_sin_to_cos", True),
        freq_shift=data.get("freq_shift", 0), dropout=data.get("dropout", 0.0),
        n_classes=embeds - 1 if embeds else 0,
    )  # fmt: skip
    fields.update({k: v for k, v in (schedule or {}).items() if k in SCHEDULE_FIELDS})
    return DiffusionConfig(**fields)


def config_to_diffusers(config: DiffusionConfig) -> dict[str, Any]:
    """The ``UNet2DModel`` config dict of one of ours."""
    architecture(config)
    return {
        "_class_name": "UNet2DModel", "sample_size": config.image_size, "in_channels": config.in_channels,
        "out_channels": config.in_channels, "block_out_channels": list(config.channels),
        "down_block_types": ["AttnDownBlock2D" if a else "DownBlock2D" for a in config.attention],
        "up_block_types": ["AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(config.attention)],
        "layers_per_block": config.layers_per_block, "add_attention": config.mid_attention,
        "attention_head_dim": config.head_dim, "norm_num_groups": config.norm_groups, "norm_eps": config.norm_eps,
        "time_embedding_dim": config.time_embed_dim, "flip_sin_to_cos": config.flip_sin_to_cos,
        "freq_shift": config.freq_shift, "dropout": config.dropout,
        "num_class_embeds": config.n_classes + 1 if config.n_classes else None, **FIXED,
    }  # fmt: skip


def scheduler_config(config: DiffusionConfig) -> dict[str, Any]:
    """A ``DDPMScheduler`` config with our schedule (``DDIMScheduler`` reads the same fields)."""
    return {"_class_name": "DDPMScheduler", "variance_type": "fixed_small",
            **{name: getattr(config, name) for name in SCHEDULE_FIELDS}}  # fmt: skip


def architecture(config: DiffusionConfig) -> str:
    """A config of ours with the plain stem is a ``UNet2DModel`` (the Format's ``exports``)."""
    if config.patch_size != 1:
        raise ValueError(
            f"patch_size={config.patch_size}: diffusers' UNet2DModel has no space-to-depth stem; its inner "
            "network is unpatched(config) on pixel_unshuffle'd images (export only a patch_size=1 model)"
        )
    return "UNet2DModel"


def unpatched(config: DiffusionConfig) -> DiffusionConfig:
    """The network inside a ``patch_size > 1`` model, as a plain UNet on the folded images.

    ``ours(x) == pixel_shuffle(inner(pixel_unshuffle(x, p)), p)`` with the same weights, so the inner
    config exports to diffusers and the state dict maps key for key."""
    p = config.patch_size
    return config.replace(patch_size=1, in_channels=config.in_channels * p * p, image_size=config.image_size // p)


def state_to_diffusers(model: DiffusionUNet) -> dict[str, Tensor]:
    """Our weights under diffusers' names (for a patched model: its :func:`unpatched` network's)."""
    return {diffusers_key(k): v for k, v in model.state_dict().items()}


def _read_schedule(folder: Path) -> dict[str, Any] | None:
    for path in (folder / SCHEDULER_CONFIG, folder.parent / "scheduler" / SCHEDULER_CONFIG):
        if path.is_file():
            return json.loads(path.read_text(encoding="utf-8"))
    return None


def from_diffusers(folder: str | os.PathLike[str], **overrides: Any) -> DiffusionUNet:
    """Open a diffusers ``UNet2DModel`` folder (``overrides``: our config fields, e.g. ``class_names``)."""
    folder = Path(folder)
    path = folder / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; {folder} is not a diffusers UNet2DModel folder")
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("_class_name") != "UNet2DModel":
        raise ValueError(f"{path} describes a {data.get('_class_name')!r}, not a UNet2DModel")
    config = config_from_diffusers(data, _read_schedule(folder))
    model = DiffusionUNet(config.replace(**overrides) if overrides else config)
    names = {diffusers_key(k): k for k in model.state_dict()}
    weights = folder / UNET_WEIGHTS
    if not weights.is_file():
        raise FileNotFoundError(f"{weights}: missing (glassformer reads the safetensors weights, not .bin)")
    state = read_safetensors(weights)
    load_into(model, {names.get(k, k): v for k, v in state.items()}, source=str(weights))
    return model


def save_diffusers(model: DiffusionUNet, folder: str | os.PathLike[str], tokenizer: Any = None) -> Path:
    """Write the UNet (``config.json``, weights) and its ``scheduler_config.json`` into ``folder``.

    ``tokenizer`` is in the signature every ``Format.save`` shares; a UNet has none, so it is unused."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(config_to_diffusers(model.config), folder / "config.json")
    write_json(scheduler_config(model.config), folder / SCHEDULER_CONFIG)
    write_safetensors(state_to_diffusers(model), folder / UNET_WEIGHTS)
    return folder
