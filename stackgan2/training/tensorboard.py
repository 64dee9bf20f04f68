"""TensorBoard view of a training run (``train.tensorboard``, ``stackgan2 train --tensorboard``).

``RUN/tensorboard/`` receives, from rank 0, every numeric field of each ``stats.jsonl`` record as a scalar
under the same name at the same step, and each sample grid the trainer saves as an image. ``stats.jsonl``
stays the run's contract (``plot-losses`` and ``eval`` read it); the events are a copy for the TensorBoard
UI. The record's ``time`` becomes the events' wall time rather than a scalar: a Unix time is no curve to
plot, and as a float32 scalar it would be rounded to minutes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from stackgan2.errors import UsageError

SUBDIR = "tensorboard"
SAMPLES_TAG = "samples"
_NOT_SCALARS = ("step", "time")


def require_tensorboard() -> type:
    """torch's ``SummaryWriter``; a UsageError naming the extra to install when tensorboard is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        raise UsageError(f'train.tensorboard (--tensorboard) needs the tensorboard package ({exc}): '
                         'pip install "stackgan2[tensorboard]"') from None
    return SummaryWriter


class TensorBoardLog:
    """The event files of one training process, continuing a run after ``step`` (0 for a new run)."""

    def __init__(self, run_root: Path, step: int) -> None:
        writer = require_tensorboard()
        # A killed process may have written events after the checkpoint this one resumes from; those steps
        # are trained again. purge_step writes a SessionLog.START at the first step redone, and TensorBoard's
        # readers drop the older events from that step on (as truncate_stats does for stats.jsonl).
        self.writer = writer(str(Path(run_root) / SUBDIR), purge_step=step + 1)

    def add_stats(self, record: Mapping[str, Any]) -> None:
        """One stats.jsonl record: its numeric fields but ``step`` and ``time`` as scalars at its step."""
        step, walltime = record["step"], record.get("time")
        for key, value in record.items():
            if key not in _NOT_SCALARS and isinstance(value, int | float):
                self.writer.add_scalar(key, value, step, walltime=walltime)
        # On disk with every record, like stats.jsonl: a SIGKILL must not lose steps a checkpoint covers.
        self.writer.flush()

    def add_sample_grid(self, path: Path, step: int) -> None:
        """The sample grid PNG the trainer just wrote, read back so that both show the same pixels."""
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"))
        self.writer.add_image(SAMPLES_TAG, pixels, step, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


@contextlib.contextmanager
def tensorboard_log(run_root: Path, step: int, enabled: bool) -> Iterator[TensorBoardLog | None]:
    """A ``TensorBoardLog`` for the length of a training loop (None when ``enabled`` is false), closed
    however the loop ends: finished, interrupted by a signal or stopped by an error."""
    if not enabled:
        yield None
        return
    board = TensorBoardLog(run_root, step)
    try:
        yield board
    finally:
        board.close()
