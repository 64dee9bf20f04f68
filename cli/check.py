"""``stackgan2 check RUN_DIR``: verify every checkpoint of a run and print a table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from stackgan2.cli.common import console, handle_errors


@handle_errors
def check(run_dir: Annotated[Path, typer.Argument(help="Run directory (or its checkpoints/ folder).")]) -> None:
    """Verify the SHA-256 and readability of every checkpoint; exit 1 if any is bad."""
    from stackgan2.errors import CheckpointError
    from stackgan2.training import verify_checkpoints

    folder = run_dir / "checkpoints" if (run_dir / "checkpoints").is_dir() else run_dir
    if not folder.is_dir():
        raise CheckpointError(f"{run_dir} is not a run directory or checkpoint folder")
    results = verify_checkpoints(folder)
    if not results:
        raise CheckpointError(f"no checkpoints in {folder}")
    table = Table(title=f"checkpoints in {folder}")
    table.add_column("file")
    table.add_column("status")
    for path, problem in results:
        table.add_row(path.name, "[green]ok[/]" if problem is None else f"[red]{problem}[/]")
    console.print(table)
    bad = sum(problem is not None for _, problem in results)
    if bad:
        raise CheckpointError(f"{bad} of {len(results)} checkpoints failed verification")


def register(app: typer.Typer) -> None:
    app.command("check")(check)
