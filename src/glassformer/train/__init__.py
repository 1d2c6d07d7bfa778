"""glassformer.train: one training engine for every family.

The whole API::

    from glassformer.train import Trainer, TrainConfig

    config = TrainConfig(out_dir="out/mine", max_steps=2000, batch_size=32, lr=1e-3, warmup_steps=100)
    summary = Trainer(model, config, train_data, eval_data=None, model_config=None).fit(resume=False)
    print(summary.to_text())

- ``model(**batch)`` returns an object with ``.loss`` (a scalar tensor) and optionally ``.metrics``
  (a dict of scalar tensors), such as ``glassformer.models.base.ModelOutput``. Nothing else is
  assumed about the task.
- ``train_data`` / ``eval_data``: a map-style data set (``__len__`` + ``__getitem__``, preferred), a
  callable ``get_batch(split, step, generator) -> dict``, or an iterable of dict batches. See
  ``glassformer.train.data`` for how each is made exactly resumable.
- ``TrainConfig`` (``config.py``) holds every setting; it loads from YAML and takes ``key=value``
  overrides. ``fit(resume=True)`` continues from the newest complete checkpoint in ``out_dir``.
- The same script under ``torchrun --nproc_per_node=N`` trains with DistributedDataParallel.
- ``fit`` returns a ``TrainSummary`` and writes ``out_dir/`` = ``checkpoints/step-*/``, ``best/``,
  ``log.jsonl``, ``curves.png`` and ``summary.json``. A non-finite loss raises
  ``NonFiniteLossError``; a resume that does not fit raises ``CheckpointError``.

For ``glassformer train PRESET``, a family declares its data builders in its ``Family`` record
(``data={"gpt": "glassformer.data.prepare:causal_lm_data"}``): functions
``(train_config, model_config, request) -> (train_data, eval_data)``, ``request`` being a
``glassformer.registry.DataRequest`` (the preset and the ``data.KEY=VALUE`` options).

Modules: ``config`` (TrainConfig), ``optim`` (AdamW parameter groups), ``schedules``
(learning-rate formulas), ``data`` (batch streams), ``checkpoint`` (atomic, safe
checkpoints), ``averaging`` (the mean of a run's last checkpoints), ``distributed``
(torchrun/DDP), ``ema``, ``report`` (progress, logs, plot, summary), ``trainer`` (the loop),
``cli`` (the ``train`` verb). The long form is docs/training.md.
"""

from glassformer.train.averaging import average_checkpoints, average_last_checkpoints
from glassformer.train.checkpoint import CheckpointError, latest_checkpoint
from glassformer.train.config import TrainConfig
from glassformer.train.ema import EMA
from glassformer.train.optim import build_optimizer, param_groups
from glassformer.train.report import TrainSummary
from glassformer.train.schedules import make_schedule
from glassformer.train.trainer import NonFiniteLossError, Trainer, fit, seed_everything

__all__ = [
    "EMA",
    "CheckpointError",
    "NonFiniteLossError",
    "TrainConfig",
    "TrainSummary",
    "Trainer",
    "average_checkpoints",
    "average_last_checkpoints",
    "build_optimizer",
    "fit",
    "latest_checkpoint",
    "make_schedule",
    "param_groups",
    "seed_everything",
]
