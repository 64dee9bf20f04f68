"""The loop's plumbing: each epoch's batches of dataset indices, their collation, and stop signals
(recorded by the main process, ignored by loader workers)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from typing import Any

import torch

from stackgan2.training.distributed import DistContext


class EpochBatches:
    """Batches of dataset indices for one epoch: a permutation from (seed, epoch), sharded by rank,
    ``drop_last`` as the official loader, starting at ``start`` (for resume)."""

    def __init__(self, size: int, batch_size: int, seed: int, epoch: int, ctx: DistContext, start: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        order = torch.randperm(size, generator=generator).tolist()
        per_rank = size // ctx.world_size
        order = order[ctx.rank * per_rank : (ctx.rank + 1) * per_rank]
        self.batches = [order[i : i + batch_size] for i in range(0, per_rank - batch_size + 1, batch_size)][start:]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def ignore_stop_signals(_worker_id: int) -> None:
    """DataLoader workers leave SIGINT/SIGTERM to the main process.

    Ctrl-C in a terminal, ``pkill -f`` and schedulers that signal a whole process group (SLURM
    preemption) reach the workers too. A worker killed by them makes PyTorch raise "DataLoader
    worker ... killed by signal" in the main process, in the middle of the step or of the stop
    checkpoint. Ignoring them here lets the main process finish its step, save and shut the workers
    down itself; a main process that dies without doing so still takes its workers with it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """The default collation of items, leaving out fields the dataset did not fill (StackGAN v1 makes
    its wrong pairs inside the batch, so its items carry no ``wrong_images``)."""
    return torch.utils.data.default_collate([{k: v for k, v in item.items() if v is not None} for item in items])


def steps_per_epoch(dataset_size: int, batch_size: int, world_size: int = 1) -> int:
    return (dataset_size // world_size) // batch_size


class StopSignals:
    """While active (in the main thread), SIGINT/SIGTERM are only recorded in ``received``: the loop
    finishes its step, saves a checkpoint and stops (``Trainer.fit``). The previous handlers come back
    on exit."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._record) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def _record(self, signum: int, _frame: object) -> None:
        self.received = signum
