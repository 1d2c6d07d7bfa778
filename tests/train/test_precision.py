"""Precision: CPU bf16 detection, how each request resolves per device, and bf16 autocast training on a CPU.

The tiny model trains in bf16 even on a CPU that emulates it (slow per FLOP, but tiny), so these
tests run everywhere; the detection is fed /proc/cpuinfo text instead of reading this machine's.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from glassformer import registry
from glassformer.train import TrainConfig, Trainer
from glassformer.train import trainer as trainer_module
from glassformer.train.checkpoint import latest_checkpoint, load_weights
from glassformer.train.trainer import resolve_precision
from glassformer.utils.machine import Bf16Support, cpu_bf16

from .tiny import build, make_dataset

AVX2_EPYC = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu sse2 avx avx2 fma\n"
SAPPHIRE_RAPIDS = "model name\t: Intel Xeon\nflags\t\t: avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8\n"
COOPER_LAKE = "flags\t\t: avx2 avx512f avx512_bf16\n"
NATIVE = Bf16Support(True, "test: native")
EMULATED = Bf16Support(False, "test: emulated")


# --- detection -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("cpuinfo", "native", "names"), [
    (SAPPHIRE_RAPIDS, True, "amx_bf16"),
    (COOPER_LAKE, True, "avx512_bf16"),
    (AVX2_EPYC, False, "emulated"),
    ("", False, "no CPU flags"),
    ("Features\t: fp asimd sve\n", False, "emulated"),
])  # fmt: skip
def test_cpu_bf16_reads_the_flags(cpuinfo: str, native: bool, names: str) -> None:
    support = cpu_bf16(cpuinfo, onednn=True, override="")
    assert support.native is native
    assert names in support.reason


def test_cpu_bf16_needs_onednn_and_obeys_the_override() -> None:
    without = cpu_bf16(SAPPHIRE_RAPIDS, onednn=False, override="")
    assert not without.native and "oneDNN" in without.reason
    assert cpu_bf16(AVX2_EPYC, onednn=True, override="1").native
    assert not cpu_bf16(SAPPHIRE_RAPIDS, onednn=True, override="0").native
    with pytest.raises(ValueError, match="set it to 1"):
        cpu_bf16(AVX2_EPYC, override="yes")


def test_cpu_bf16_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GLASSFORMER_CPU_BF16", "1")
    assert cpu_bf16(AVX2_EPYC).native
    monkeypatch.setenv("GLASSFORMER_CPU_BF16", "0")
    assert not cpu_bf16(SAPPHIRE_RAPIDS).native


# --- resolution: every request on every kind of device --------------------------------------------
def resolve(requested: str, device: str, cpu: Bf16Support | None = None) -> tuple[str, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = resolve_precision(requested, torch.device(device), cpu)
    return got, [str(w.message) for w in caught]


@pytest.mark.parametrize(("requested", "cpu", "expected", "warning"), [
    ("auto", NATIVE, "bf16", None),
    ("auto", EMULATED, "fp32", None),
    ("fp32", NATIVE, "fp32", None),
    ("fp32", EMULATED, "fp32", None),
    ("bf16", NATIVE, "bf16", None),
    ("bf16", EMULATED, "bf16", "(test: emulated): bf16 matmuls are emulated"),
    ("fp16", NATIVE, "fp32", "training in fp32 instead"),
    ("fp16", EMULATED, "fp32", "training in fp32 instead"),
])  # fmt: skip
def test_cpu_resolution(requested: str, cpu: Bf16Support, expected: str, warning: str | None) -> None:
    """``warning``: a part of the one warning expected, None for none."""
    got, messages = resolve(requested, "cpu", cpu)
    assert got == expected
    assert len(messages) == (warning is not None)
    if warning is not None:
        assert warning in messages[0]


@pytest.mark.parametrize(("requested", "gpu_bf16", "expected"), [
    ("auto", True, "bf16"), ("auto", False, "fp32"), ("fp32", True, "fp32"),
    ("bf16", True, "bf16"), ("fp16", True, "fp16"), ("fp16", False, "fp16"),
])  # fmt: skip
def test_cuda_resolution_ignores_the_cpu(monkeypatch: pytest.MonkeyPatch, requested: str, gpu_bf16: bool,
                                         expected: str) -> None:
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: gpu_bf16)
    got, messages = resolve(requested, "cuda", EMULATED)
    assert (got, messages) == (expected, [])


@pytest.mark.parametrize(("requested", "warns"), [("auto", False), ("fp32", False), ("bf16", True), ("fp16", True)])
def test_other_devices_train_in_fp32(requested: str, warns: bool) -> None:
    got, messages = resolve(requested, "mps", NATIVE)
    assert got == "fp32" and bool(messages) is warns


def test_the_trainer_asks_the_detection_only_on_a_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[int] = []
    monkeypatch.setattr(trainer_module, "cpu_bf16", lambda: asked.append(1) or NATIVE)
    assert resolve("auto", "cpu") == ("bf16", []) and asked == [1]
    assert resolve("fp32", "cpu") == ("fp32", []) and asked == [1]


# --- training on the CPU -------------------------------------------------------------------------
def config(tmp_path: Path, name: str, **kw) -> TrainConfig:
    base = dict(out_dir=str(tmp_path / name), max_steps=3, batch_size=4, lr=3e-3, save_interval=10, log_interval=1,
                eval_interval=0, progress=False, plot=False, device="cpu")
    base.update(kw)
    return TrainConfig(**base)


def record_dtypes(model: nn.Module) -> tuple[set[torch.dtype], list[torch.dtype]]:
    """Output dtypes of every Linear, and the dtype of each loss the model returns."""
    linear: set[torch.dtype] = set()
    losses: list[torch.dtype] = []
    for module in model.modules():
        if isinstance(module, nn.Linear):
            module.register_forward_hook(lambda m, args, out: linear.add(out.dtype))
    model.register_forward_hook(lambda m, args, out: losses.append(out.loss.dtype))
    return linear, losses


def train(tmp_path: Path, name: str, cpu: Bf16Support, monkeypatch: pytest.MonkeyPatch, **kw):
    monkeypatch.setattr(trainer_module, "cpu_bf16", lambda: cpu)
    model = build(dropout=0.0)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    linear, losses = record_dtypes(model)
    summary = Trainer(model, config(tmp_path, name, **kw), make_dataset(32)).fit()
    changed = any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    return model, summary, linear, losses, changed


@pytest.mark.parametrize("requested", ["bf16", "auto"])
def test_bf16_autocast_on_a_cpu_runs_matmuls_in_bf16_and_keeps_fp32_weights(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, requested: str) -> None:
    model, summary, linear, losses, changed = train(tmp_path, requested, NATIVE, monkeypatch, precision=requested)
    assert summary.precision == "bf16" and "(bf16)" in summary.to_text()
    assert linear == {torch.bfloat16}
    assert set(losses) == {torch.float32} and len(losses) == 3
    assert summary.final_loss is not None and math.isfinite(summary.final_loss) and changed
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    saved = build(dropout=0.0, seed=7)
    load_weights(saved, latest_checkpoint(tmp_path / requested / "checkpoints"))
    assert {v.dtype for v in saved.state_dict().values()} == {torch.float32}
    for k, v in model.state_dict().items():
        assert torch.equal(saved.state_dict()[k], v), k


@pytest.mark.parametrize(("requested", "cpu"), [("fp32", NATIVE), ("auto", EMULATED)])
def test_fp32_runs_without_autocast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, requested: str,
                                    cpu: Bf16Support) -> None:
    _, summary, linear, losses, changed = train(tmp_path, requested, cpu, monkeypatch, precision=requested)
    assert summary.precision == "fp32" and linear == {torch.float32} and set(losses) == {torch.float32}
    assert math.isfinite(summary.final_loss) and changed


def test_explicit_bf16_on_an_emulating_cpu_warns_and_still_trains_in_bf16(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.warns(UserWarning, match="precision=fp32"):
        _, summary, linear, _, _ = train(tmp_path, "slow", EMULATED, monkeypatch, precision="bf16", max_steps=1)
    assert summary.precision == "bf16" and linear == {torch.bfloat16}


def test_bf16_resume_is_bitwise(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The checkpoint holds fp32 weights and the autocast run replays exactly after a resume."""
    monkeypatch.setattr(trainer_module, "cpu_bf16", lambda: NATIVE)
    data = make_dataset(32)
    whole = build()
    Trainer(whole, config(tmp_path, "whole", max_steps=4, decay_steps=4, precision="bf16"), data).fit()
    Trainer(build(), config(tmp_path, "split", max_steps=2, decay_steps=4, precision="bf16"), data).fit()
    second = build(seed=99)
    Trainer(second, config(tmp_path, "split", max_steps=4, decay_steps=4, precision="bf16"), data).fit(resume=True)
    for k, v in whole.state_dict().items():
        assert torch.equal(v, second.state_dict()[k]), f"{k} differs after a bf16 resume"


def test_a_rope_model_runs_under_cpu_bf16_autocast() -> None:
    """RoPE tables are fp32 while autocast makes q and k bf16; the rotation must keep bf16 (v's dtype)."""
    torch.manual_seed(0)
    model = registry.build("shakespeare-char-rope")
    ids = torch.randint(0, 65, (2, 17))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(input_ids=ids[:, :-1], targets=ids[:, 1:])
    assert out.loss.dtype == torch.float32 and math.isfinite(out.loss.item())
