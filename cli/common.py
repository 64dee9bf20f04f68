"""Shared CLI plumbing: the error boundary, consoles, rich progress and logging setup."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from stackgan2.errors import StackGAN2Error

console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


class _State:
    debug = False
    quiet = False


state = _State()


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print one red error line on stderr and return the Exit to raise."""
    err_console.print(f"[bold red]error:[/] {message}", markup=True, highlight=False, soft_wrap=True)
    return typer.Exit(code)


def handle_errors(fn: F) -> F:
    """The one error boundary: known user errors become one red line and exit 1 (2 for usage errors)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        setup_logging()
        try:
            return fn(*args, **kwargs)
        except StackGAN2Error as exc:
            if state.debug:
                raise
            raise fail(_one_line(str(exc)), exc.exit_code) from None
        except KeyboardInterrupt:
            raise fail("interrupted", 130) from None
        except OSError as exc:
            if state.debug:
                raise
            raise fail(_one_line(f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")), 1) from None

    return wrapper  # type: ignore[return-value]


def _one_line(message: str) -> str:
    return " ".join(message.split())


class _WarningHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        colour = "yellow" if record.levelno >= logging.WARNING else "dim"
        prefix = "warning: " if record.levelno >= logging.WARNING else ""
        err_console.print(f"[{colour}]{prefix}{record.getMessage()}[/]", markup=True, highlight=False)


def setup_logging() -> None:
    """Library warnings (``logging.getLogger("stackgan2")``) go to stderr in yellow."""
    logger = logging.getLogger("stackgan2")
    if not any(isinstance(h, _WarningHandler | RichHandler) for h in logger.handlers):
        logger.addHandler(_WarningHandler())
    logger.setLevel(logging.WARNING if state.quiet else logging.INFO)
    logger.propagate = False


class RichProgress:
    """A ``ProgressFn`` that draws one rich bar per task name; use as a context manager."""

    def __init__(self, show_info: bool = True) -> None:
        self.show_info = show_info
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=err_console,
            transient=False,
            disable=state.quiet,
        )
        self.tasks: dict[str, Any] = {}

    def __enter__(self) -> RichProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def __call__(self, event: Any) -> None:
        info = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in event.info.items())
        if event.task not in self.tasks:
            self.tasks[event.task] = self.progress.add_task(event.task, total=event.total, info=info)
        self.progress.update(
            self.tasks[event.task], completed=event.completed, total=event.total, info=info if self.show_info else ""
        )
