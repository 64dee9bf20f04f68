"""Training: the Trainer, checkpoints, the run directory contract and multi-process support."""

from stackgan2.training.checkpoint import (
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    verify_checkpoints,
)
from stackgan2.training.distributed import DistContext, init_distributed, shutdown_distributed
from stackgan2.training.run import prepare_config, run_training
from stackgan2.training.rundir import RunDir, latest_run
from stackgan2.training.trainer import Trainer, TrainResult

__all__ = [
    "DistContext",
    "RunDir",
    "TrainResult",
    "Trainer",
    "init_distributed",
    "latest_checkpoint",
    "latest_run",
    "list_checkpoints",
    "load_checkpoint",
    "prepare_config",
    "run_training",
    "shutdown_distributed",
    "verify_checkpoints",
]
