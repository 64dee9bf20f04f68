"""The ``stackgan2`` command: a thin Typer app over the library.

Command modules register themselves; none of them imports torch at import time, so ``--help`` is fast.
"""

from __future__ import annotations

import importlib
from typing import Annotated

import typer

from stackgan2 import __version__
from stackgan2.cli.common import OneLineErrorGroup, state

app = typer.Typer(
    name="stackgan2",
    cls=OneLineErrorGroup,
    help="StackGAN++ text-to-image synthesis: train, sample, evaluate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

# Each module defines register(app) and owns its commands.
COMMAND_MODULES = ["info", "train", "text", "check", "sample", "evaluate", "data", "serve", "import_cmd"]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"stackgan2 {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks for errors.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars; warnings and results only.")] = False,
) -> None:
    state.debug = debug
    state.quiet = quiet


for _name in COMMAND_MODULES:
    importlib.import_module(f"stackgan2.cli.{_name}").register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
