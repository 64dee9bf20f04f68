"""``stackgan2 data preview`` and ``stackgan2 data info``: look at a dataset before training on it."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from stackgan2.cli.common import RichProgress, console, handle_errors
from stackgan2.cli.options import CacheDir, ConfigFile, DataDir, Dataset, Preset, ToyFraming

if TYPE_CHECKING:
    from stackgan2.config import ExperimentConfig
    from stackgan2.progress import ProgressEvent, ProgressFn

Opt = typer.Option


def _config(preset: str, config: Path | None, dataset: str | None, data_dir: Path | None,
            cache_dir: Path | None, toy_framing: str | None) -> ExperimentConfig:
    from stackgan2.config import resolve_config

    return resolve_config(preset, config, {"data.dataset": dataset, "data.data_dir": data_dir, "data.cache_dir": cache_dir,
                                           "data.toy_framing": toy_framing})


@contextlib.contextmanager
def _progress() -> Iterator[ProgressFn]:
    """Progress bars that appear with the first event, not before.

    A cached dataset then loads silently, and an error stays the one line the error boundary prints.
    """
    with contextlib.ExitStack() as stack:
        bars: list[RichProgress] = []

        def show(event: ProgressEvent) -> None:
            if not bars:
                bars.append(stack.enter_context(RichProgress()))
            bars[0](event)

        yield show


@handle_errors
def preview(
    dataset: Dataset = None,
    data_dir: DataDir = None,
    out: Annotated[Path, Opt("--out", help="PNG file to write.")] = Path("data-preview.png"),
    split: Annotated[str, Opt("--split", help="train or test.")] = "train",
    count: Annotated[int, Opt("--count", min=1, help="How many images.")] = 16,
    columns: Annotated[int, Opt("--columns", min=1, help="Images per row.")] = 4,
    size: Annotated[int, Opt("--size", min=16, help="Side of each image in the grid (px).")] = 128,
    preset: Preset = "toy",
    config: ConfigFile = None,
    cache_dir: CacheDir = None,
    toy_framing: ToyFraming = None,
) -> None:
    """Write a grid of dataset images, each with its first caption underneath."""
    from stackgan2.data import build_dataset
    from stackgan2.data.preview import preview_grid
    from stackgan2.errors import UsageError
    from stackgan2.io import atomic_save, check_output_dir

    if split not in ("train", "test"):
        raise UsageError(f"--split must be train or test, got {split!r}")
    check_output_dir(out.parent)
    cfg = _config(preset, config, dataset, data_dir, cache_dir, toy_framing)
    with _progress() as progress:
        data = build_dataset(cfg.data, split, cfg.model.resolutions, augment=False, progress_fn=progress)
    grid = preview_grid(data, count=count, columns=columns, size=size)
    atomic_save(out, lambda tmp: grid.save(tmp, format="PNG"))
    console.print(f"wrote {out} ({min(count, len(data))} of {len(data):,} {data.name} {split} images)")


@handle_errors
def info(
    dataset: Dataset = None,
    data_dir: DataDir = None,
    as_json: Annotated[bool, Opt("--json", help="Print the statistics as JSON.")] = False,
    preset: Preset = "toy",
    config: ConfigFile = None,
    cache_dir: CacheDir = None,
    toy_framing: ToyFraming = None,
) -> None:
    """Print image counts per split, classes, vocabulary size and caption length statistics."""
    from stackgan2.data import build_dataset
    from stackgan2.data.preview import dataset_stats

    cfg = _config(preset, config, dataset, data_dir, cache_dir, toy_framing)
    with _progress() as progress:
        splits = {
            split: build_dataset(cfg.data, split, cfg.model.resolutions, augment=False, progress_fn=progress)
            for split in ("train", "test")
        }
    stats = dataset_stats(splits)
    if as_json:
        console.print_json(json.dumps(stats))
        return
    table = Table(title=f"{stats['dataset']}: {stats['num_classes']} classes")
    for column in ("split", "images", "captions", "captions/image", "classes"):
        table.add_column(column, justify="left" if column == "split" else "right")
    for split, row in stats["splits"].items():
        low, high = row["captions_per_image"]
        per_image = str(low) if low == high else f"{low}-{high}"
        table.add_row(split, f"{row['images']:,}", f"{row['captions']:,}", per_image, str(row["classes"]))
    console.print(table)
    words = stats["caption_words"]
    console.print(f"vocabulary: {stats['vocabulary_size']:,} words")
    console.print(
        f"caption length (words): min {words['min']}, mean {words['mean']}, median {words['median']}, max {words['max']}"
    )
    if stats["char_cnn_rnn"]:
        console.print(f"char-CNN-RNN embeddings: {' x '.join(map(str, stats['char_cnn_rnn']))} per image")
    for name, values in stats.get("attributes", {}).items():
        console.print(f"{name}: {', '.join(values)}")


def register(app: typer.Typer) -> None:
    data_app = typer.Typer(help="Look at a dataset: preview grids and statistics.", no_args_is_help=True)
    data_app.command("preview")(preview)
    data_app.command("info")(info)
    app.add_typer(data_app, name="data")
