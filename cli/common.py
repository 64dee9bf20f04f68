"""Shared CLI plumbing: the error boundary, consoles, rich progress and logging setup."""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from typer.core import TyperGroup

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
    err_console.print(f"[bold red]error:[/] {escape(message)}", markup=True, highlight=False, soft_wrap=True)
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


@contextlib.contextmanager
def _usage_errors_as_one_line() -> Iterator[None]:
    try:
        yield
    except typer.TyperException as exc:  # click's own errors: a bad option value, a missing argument
        if type(exc).__name__ == "NoArgsIsHelpError":  # `stackgan2` alone prints the help
            raise
        ctx = getattr(exc, "ctx", None)
        hint = f" (see {ctx.command_path} --help)" if ctx is not None else ""
        raise fail(_one_line(exc.format_message()) + hint, exc.exit_code) from None


class OneLineErrorGroup(TyperGroup):
    """The root command group: option parsing errors become the same one red line as library errors.

    Click's parse errors are raised while making the group's context (root options, unknown command)
    or while invoking it (every subcommand's options), so both are wrapped.
    """

    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        with _usage_errors_as_one_line():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx: Any) -> Any:
        with _usage_errors_as_one_line():
            return super().invoke(ctx)


class _WarningHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        colour = "yellow" if record.levelno >= logging.WARNING else "dim"
        prefix = "warning: " if record.levelno >= logging.WARNING else ""
        err_console.print(
            f"[{colour}]{escape(prefix + record.getMessage())}[/]", markup=True, highlight=False, soft_wrap=True
        )


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
        # Redirected to a file or a pipe, a live bar only draws at the very end: print a plain line
        # every LOG_EVERY_S seconds instead, so `nohup stackgan2 train ... > log` shows progress.
        self.plain = not err_console.is_terminal and not state.quiet
        self.last_line: dict[str, float] = {}
        self.logged: set[str] = set()

    LOG_EVERY_S = 30.0

    def __enter__(self) -> RichProgress:
        self.progress.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is not None:  # a failed command ends with its one error line, not a half-done bar
            self.progress.live.transient = True
        self.progress.stop()

    def __call__(self, event: Any) -> None:
        info = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in event.info.items())
        if event.task not in self.tasks:
            self.tasks[event.task] = self.progress.add_task(event.task, total=event.total, info=info)
        self.progress.update(
            self.tasks[event.task], completed=event.completed, total=event.total, info=info if self.show_info else ""
        )
        if self.plain:
            self._plain_line(event, info)

    def _plain_line(self, event: Any, info: str) -> None:
        # Quiet for the first LOG_EVERY_S seconds of a task: short commands (and ones that fail
        # early with their one error line) print nothing extra; long ones log every LOG_EVERY_S.
        now = time.monotonic()
        last = self.last_line.setdefault(event.task, now)
        done = event.total is not None and event.completed >= event.total
        if now - last >= self.LOG_EVERY_S or (done and event.task in self.logged):
            self.last_line[event.task] = now
            self.logged.add(event.task)
            total = "?" if event.total is None else event.total
            err_console.print(f"{escape(event.task)}: {event.completed}/{total} {escape(info)}".rstrip(), highlight=False)
