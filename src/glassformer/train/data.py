"""Where batches come from, in a way that can be resumed exactly.

The trainer accepts three kinds of data and turns each into a stream of micro-batches whose only
state is a counter, the number of micro-batches this process has drawn (saved in checkpoints):

1. **A map-style data set** (``__len__`` + ``__getitem__``, e.g. a ``torch.utils.data.Dataset`` or a
   list of dicts); the preferred kind. Each epoch is a permutation drawn from a ``torch.Generator``
   seeded with ``seed + epoch``, so micro-batch number ``m`` is a pure function of
   ``(seed, m)``: resuming needs nothing but ``m``. Under DDP every process walks the same
   permutation and takes its own slice of each global batch (like ``DistributedSampler``, without
   padding). An epoch holds ``len(dataset) // (batch_size * grad_accum_steps * world_size)``
   optimizer steps; the remainder is skipped, so every step sees a full batch. Samples are
   merged with ``collate_fn`` (default: ``torch.utils.data.default_collate``) and loaded by a
   ``DataLoader`` with ``num_workers`` workers.
2. **A callable** ``get_batch(split, step, generator) -> dict``: ``split`` is ``"train"`` or
   ``"eval"``, ``step`` the micro-batch number ``m`` (or the eval batch number), and
   ``generator`` a CPU ``torch.Generator`` seeded from ``(seed, split, rank, step)``. Drawing random
   windows from a token array with that generator (as nanoGPT's ``get_batch`` does) is then
   exactly reproducible, and each process draws different windows.
3. **Any other iterable** (a ``DataLoader``, a generator factory): iterated again for each epoch
   after calling ``set_epoch(epoch)`` on it or its sampler when they have one; on resume the
   first ``m`` batches of the epoch are skipped. Exact only if the iterable yields the same
   sequence whenever it is iterated for the same epoch: a ``DataLoader`` with a
   ``DistributedSampler`` or a ``RandomSampler(generator=...)`` does, one with ``shuffle=True`` and
   no generator does not (it shuffles from the global RNG). Under DDP it must shard by itself
   (e.g. a ``DistributedSampler``).

Evaluation always reads the same batches (the first ``eval_batches``), so numbers from different
steps compare.

Families plug their data into ``glassformer train`` through their ``Family`` record's ``data``
(``glassformer.registry``); this module knows no family.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, default_collate

from glassformer.train.config import TrainConfig

_SPLIT_IDS = {"train": 0, "eval": 1}


def batch_generator(seed: int, split: str, rank: int, step: int) -> torch.Generator:
    """A CPU generator whose seed mixes all four numbers (SeedSequence avoids nearby-seed overlap)."""
    mixed = np.random.SeedSequence([seed % 2**32, _SPLIT_IDS[split], rank, step]).generate_state(2, np.uint32)
    g = torch.Generator()
    g.manual_seed((int(mixed[0]) << 31) ^ int(mixed[1]))
    return g


def _is_map_style(data: Any) -> bool:
    if isinstance(data, (DataLoader, IterableDataset)):
        return False
    return hasattr(data, "__getitem__") and hasattr(data, "__len__") and not isinstance(data, Mapping)


class _IndexStream:
    """The index lists of ``ShuffledBatches`` from micro-batch ``start`` on (a DataLoader batch_sampler)."""

    def __init__(self, owner: ShuffledBatches, start: int) -> None:
        self.owner, self.start = owner, start

    def __iter__(self) -> Iterator[list[int]]:
        m = self.start
        while True:
            yield self.owner.indices(m)
            m += 1


class ShuffledBatches:
    """Micro-batches of a map-style data set; micro-batch ``m`` is a pure function of ``(seed, m)``."""

    def __init__(
        self,
        dataset: Any,
        *,
        batch_size: int,
        grad_accum_steps: int,
        rank: int,
        world_size: int,
        seed: int,
        collate_fn: Callable[[list[Any]], Any] | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        self.dataset = dataset
        self.batch_size, self.accum = batch_size, grad_accum_steps
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.collate_fn = collate_fn or default_collate
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.global_batch = batch_size * grad_accum_steps * world_size
        self.steps_per_epoch = len(dataset) // self.global_batch
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"the training set has {len(dataset)} samples, fewer than one optimizer step needs "
                f"(batch_size {batch_size} x grad_accum_steps {grad_accum_steps} x {world_size} processes "
                f"= {self.global_batch}); lower batch_size or grad_accum_steps"
            )
        self._perm_epoch = -1
        self._perm = torch.empty(0, dtype=torch.long)
        self.position = 0
        self._iter: Iterator[Any] | None = None

    def permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._perm_epoch:
            g = torch.Generator()
            g.manual_seed(self.seed + epoch)
            self._perm, self._perm_epoch = torch.randperm(len(self.dataset), generator=g), epoch
        return self._perm

    def indices(self, m: int) -> list[int]:
        """Dataset indices of this process's micro-batch ``m``."""
        step, micro = divmod(m, self.accum)
        epoch, step_in_epoch = divmod(step, self.steps_per_epoch)
        start = (step_in_epoch * self.accum + micro) * self.batch_size * self.world_size + self.rank * self.batch_size
        return self.permutation(epoch)[start : start + self.batch_size].tolist()

    def __next__(self) -> Any:
        if self._iter is None:
            if self.num_workers == 0:
                self._iter = (self.collate_fn([self.dataset[i] for i in idx]) for idx in _IndexStream(self, self.position))
            else:
                # a private generator: the DataLoader must not draw from the global RNG, which a
                # resumed run restores at a different moment than the original run drew from it
                g = torch.Generator()
                g.manual_seed(self.seed)
                loader = DataLoader(
                    self.dataset, batch_sampler=_IndexStream(self, self.position), num_workers=self.num_workers,
                    collate_fn=self.collate_fn, pin_memory=self.pin_memory, generator=g,
                )
                self._iter = iter(loader)
        batch = next(self._iter)
        self.position += 1
        return batch

    def epoch_of(self, m: int) -> float:
        return m / (self.accum * self.steps_per_epoch)

    def state_dict(self) -> dict[str, int]:
        return {"position": self.position}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        self.position, self._iter = int(state["position"]), None


class CallableBatches:
    """Micro-batches from ``get_batch(split, step, generator)``."""

    def __init__(self, fn: Callable[[str, int, torch.Generator], Any], *, split: str, rank: int, seed: int) -> None:
        self.fn, self.split, self.rank, self.seed = fn, split, rank, seed
        self.position = 0

    def __next__(self) -> Any:
        batch = self.fn(self.split, self.position, batch_generator(self.seed, self.split, self.rank, self.position))
        self.position += 1
        return batch

    def epoch_of(self, m: int) -> float | None:
        return None

    def state_dict(self) -> dict[str, int]:
        return {"position": self.position}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        self.position = int(state["position"])


class IterableBatches:
    """Micro-batches from an iterable, re-iterated per epoch; resumed by skipping ahead."""

    def __init__(self, iterable: Any) -> None:
        self.iterable = iterable
        self.position = 0  # micro-batches drawn in total
        self.epoch = 0
        self.in_epoch = 0  # micro-batches drawn in this epoch
        self._iter: Iterator[Any] | None = None

    def _start_epoch(self, skip: int) -> None:
        for owner in (self.iterable, getattr(self.iterable, "sampler", None),
                      getattr(getattr(self.iterable, "batch_sampler", None), "sampler", None)):
            if owner is not None and hasattr(owner, "set_epoch"):
                owner.set_epoch(self.epoch)
                break
        # A DataLoader draws a worker seed from the global RNG when iterated; a resumed run would
        # draw it at another moment than the original run, so the draw must not touch the training RNG.
        with torch.random.fork_rng(devices=[]):
            self._iter = iter(self.iterable)
            for i in range(skip):
                try:
                    next(self._iter)
                except StopIteration:
                    raise ValueError(
                        f"cannot resume: epoch {self.epoch} of the training data ended after {i} batches, but "
                        f"the checkpoint had drawn {skip}; the data changed since the checkpoint was written"
                    ) from None

    def __next__(self) -> Any:
        if self._iter is None:
            self._start_epoch(self.in_epoch)
        assert self._iter is not None
        try:
            batch = next(self._iter)
        except StopIteration:
            if self.in_epoch == 0:
                raise ValueError("the training data yielded no batches") from None
            self.epoch, self.in_epoch = self.epoch + 1, 0
            self._start_epoch(0)
            batch = next(self._iter)
        self.position += 1
        self.in_epoch += 1
        return batch

    def epoch_of(self, m: int) -> float | None:
        return float(self.epoch)

    def state_dict(self) -> dict[str, int]:
        return {"position": self.position, "epoch": self.epoch, "in_epoch": self.in_epoch}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        self.position, self.epoch, self.in_epoch = int(state["position"]), int(state["epoch"]), int(state["in_epoch"])
        self._iter = None


def train_stream(data: Any, config: TrainConfig, rank: int, world_size: int, *,
                 collate_fn: Callable[[list[Any]], Any] | None, pin_memory: bool) -> Any:
    """The micro-batch stream of the training data, positioned at micro-batch 0."""
    if _is_map_style(data):
        return ShuffledBatches(
            data, batch_size=config.batch_size, grad_accum_steps=config.grad_accum_steps, rank=rank,
            world_size=world_size, seed=config.seed, collate_fn=collate_fn, num_workers=config.num_workers,
            pin_memory=pin_memory,
        )
    if callable(data) and not hasattr(data, "__iter__"):
        return CallableBatches(data, split="train", rank=rank, seed=config.seed)
    if hasattr(data, "__iter__"):
        return IterableBatches(data)
    raise TypeError(
        f"training data of type {type(data).__name__} is not usable: pass a map-style data set "
        "(__len__ + __getitem__), a callable get_batch(split, step, generator), or an iterable of batches"
    )


def eval_batches(data: Any, config: TrainConfig, rank: int, world_size: int, *,
                 collate_fn: Callable[[list[Any]], Any] | None) -> Iterator[Any]:
    """The evaluation batches of this process: the same ones at every evaluation."""
    limit = config.eval_batches
    if _is_map_style(data):
        collate = collate_fn or default_collate
        per_round = config.batch_size * world_size
        available = len(data) // per_round
        if available == 0:
            raise ValueError(
                f"the eval set has {len(data)} samples, fewer than one batch on every process "
                f"(batch_size {config.batch_size} x {world_size} processes)"
            )
        count = min(limit, available) if limit else available
        for j in range(count):
            start = (j * world_size + rank) * config.batch_size
            yield collate([data[i] for i in range(start, start + config.batch_size)])
    elif callable(data) and not hasattr(data, "__iter__"):
        if not limit:
            raise ValueError("eval_batches=0 (the whole set) needs a finite eval set, not a get_batch callable")
        for j in range(limit):
            yield data("eval", j, batch_generator(config.seed, "eval", rank, j))
    elif hasattr(data, "__iter__"):
        for j, batch in enumerate(data):
            if limit and j >= limit:
                break
            yield batch
    else:
        raise TypeError(f"eval data of type {type(data).__name__} is not usable (see glassformer.train.data)")


def count_batch(batch: Any) -> tuple[int, str]:
    """How much a batch holds, for throughput: tokens when it has ``input_ids``, else samples."""
    if isinstance(batch, Mapping):
        ids = batch.get("input_ids")
        if isinstance(ids, torch.Tensor):
            return ids.numel(), "tok"
        for value in batch.values():
            if isinstance(value, torch.Tensor) and value.dim() > 0:
                return value.shape[0], "samples"
    return 0, "samples"
