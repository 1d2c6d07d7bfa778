"""Running the same script on one process or under ``torchrun --nproc_per_node=N``.

``torchrun`` starts N copies of the script and tells each its place through environment
variables (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``). When those say
``WORLD_SIZE > 1``, :func:`setup` joins the process group (``nccl`` between GPUs, ``gloo`` on CPU)
and the trainer wraps the model in ``DistributedDataParallel``: every process computes gradients
on its own slice of the batch, DDP averages them during backward, and every process applies the
same update, so all hold the same weights. Only rank 0 writes checkpoints, logs and plots.

Models too large for one device need their weights sharded, not replicated: that is FSDP
(``torch.distributed.fsdp.fully_shard``), see ``docs/training.md``. It is not wired in here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits. ``owns_group`` says whether :func:`setup` created the group."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    owns_group: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device_request: str) -> tuple[DistInfo, torch.device]:
    """Join the process group when launched by torchrun, and pick this process's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_request, local_rank if world_size > 1 else None)
    if world_size <= 1:
        return DistInfo(), device
    if device.type == "cuda":
        torch.cuda.set_device(device)
    owns = False
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, device_id=device if device.type == "cuda" else None)
        owns = True
    if dist.get_world_size() != world_size or dist.get_rank() != rank:
        raise RuntimeError(
            f"process group (rank {dist.get_rank()} of {dist.get_world_size()}) disagrees with the environment "
            f"(RANK={rank}, WORLD_SIZE={world_size})"
        )
    return DistInfo(rank, local_rank, world_size, owns), device


def resolve_device(request: str, local_rank: int | None = None) -> torch.device:
    """``auto`` -> this process's GPU if there is one, else the CPU."""
    if request == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank or 0)
        return torch.device("cpu")
    device = torch.device(request)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={request!r}: CUDA is not available on this machine; use device=cpu")
        if device.index is None:
            device = torch.device("cuda", local_rank or 0)
    return device


def teardown(info: DistInfo) -> None:
    if info.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum ``tensor`` over processes in place (a no-op on one process)."""
    if info.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """Every process's ``obj``, in rank order (used for per-rank RNG states)."""
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out
