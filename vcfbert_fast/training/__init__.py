"""Training a V18 model, one job per module.

- :mod:`.config`: :class:`TrainConfig` (every knob, validated), ``mask_schedules``, ``lr_factor``;
- :mod:`.distributed`: joining torchrun's process group, agreement and sums across ranks;
- :mod:`.batches`: the DataLoader (resume skips seen batches) and the host -> device copy;
- :mod:`.step`: the module one step runs (reference embeddings + ``forward_logits``, for DDP);
- :mod:`.trainer`: :class:`Trainer`, the loop in named steps, validation, checkpoints, resume.

The ``vcfbert-fast train`` subcommand (flags -> config -> trainer) is :mod:`vcfbert_fast.train`.
"""

from __future__ import annotations

from .config import TrainConfig, lr_factor, mask_schedules
from .trainer import Trainer

__all__ = ["TrainConfig", "Trainer", "lr_factor", "mask_schedules"]
