"""Training: the Trainer, checkpoints, the run directory contract and multi-process support.

Names are imported lazily so that light users (``plot-losses`` needs only ``RunDir``) do not pay
for importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "latest_checkpoint": "checkpoint",
    "list_checkpoints": "checkpoint",
    "load_checkpoint": "checkpoint",
    "verify_checkpoints": "checkpoint",
    "DistContext": "distributed",
    "init_distributed": "distributed",
    "shutdown_distributed": "distributed",
    "RunDir": "rundir",
    "latest_run": "rundir",
    "prepare_config": "run",
    "run_training": "run",
    "Trainer": "trainer",
    "TrainResult": "trainer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'stackgan2.training' has no attribute {name!r}")
    return getattr(importlib.import_module(f"stackgan2.training.{_EXPORTS[name]}"), name)
