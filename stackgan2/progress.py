"""The callback protocol long-running library code reports through.

The library never draws progress bars itself; the CLI passes a ``ProgressFn`` that renders
``ProgressEvent``s with rich (see ``stackgan2.cli.common``). ``None`` means "report nothing".
User-facing warnings go through ``logging.getLogger("stackgan2...")`` instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ProgressEvent:
    """One update of a long task: ``completed`` out of ``total`` units of ``task``."""

    task: str                                   # e.g. "render toy-birds", "train"
    completed: int                              # units done so far
    total: int | None                           # None when unknown
    info: dict[str, float | int | str] = field(default_factory=dict)  # latest losses, epoch, ...


ProgressFn = Callable[[ProgressEvent], None]


def report(progress_fn: ProgressFn | None, task: str, completed: int, total: int | None, **info) -> None:
    """Send one event if anyone listens."""
    if progress_fn is not None:
        progress_fn(ProgressEvent(task, completed, total, info))
