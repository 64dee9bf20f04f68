"""``stackgan2 sample``, ``export``, ``interpolate`` and ``plot-losses``: thin commands over the pipeline and plotting."""

from __future__ import annotations

import atexit
import gc
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from stackgan2.cli.common import console, err_console, handle_errors

if TYPE_CHECKING:
    from stackgan2.pipeline import PipelineOutput, Text2ImagePipeline

Opt = typer.Option
# stackgan2.pipeline's MAX_IMAGES_PER_PROMPT and MAX_INTERPOLATION_STEPS, repeated so that --help needs no torch
MAX_IMAGES, MAX_STEPS = 256, 64

Model = Annotated[
    Path | None,
    Opt("--model", "-m", help="Pipeline directory, run directory or checkpoint file (default: the shipped toy-birds model)."),
]
SeedOpt = Annotated[int | None, Opt("--seed", min=0, help="Noise seed; the same seed gives the same images (default: random).")]
DeviceOpt = Annotated[str, Opt("--device", help="auto, cpu, cuda or mps.")]
Truncation = Annotated[float | None, Opt("--truncation", help="Clamp |z| to this value (truncated noise).")]
AllStages = Annotated[bool, Opt("--all-stages", help="Write every branch (e.g. 64/128/256 px) side by side.")]


def _load(model: Path | None, device: str) -> Text2ImagePipeline:
    # Importing torch and building the model create hundreds of thousands of long-lived objects and no
    # garbage; the cyclic collector walks them over and over while they appear (~0.15 s of a cold `sample`
    # on the 2-core CPU measured) and again when the interpreter exits (~0.25 s). So it pauses while they
    # are made and, at exit, they are frozen out of the final collections (pausing alone only postpones
    # the walk to the next collection). An in-process caller is affected only at its own exit.
    enabled = gc.isenabled()
    gc.disable()
    try:
        from stackgan2.device import resolve_device
        from stackgan2.pipeline import Text2ImagePipeline, default_model

        pipe = Text2ImagePipeline.from_pretrained(model if model is not None else default_model(), resolve_device(device))
    finally:
        if enabled:
            gc.enable()
    atexit.unregister(gc.freeze)  # registered once however often an in-process caller loads
    atexit.register(gc.freeze)
    return pipe


def _warn_unknown(prompts: list[str], output: PipelineOutput) -> None:
    for prompt, unknown in zip(prompts, output.unknown, strict=True):
        if unknown:
            message = f"warning: unknown words: {', '.join(unknown)} (in {prompt!r}; they are ignored)"
            err_console.print(f"[yellow]{escape(message)}[/]", markup=True, highlight=False, soft_wrap=True)


def _read_prompts(prompts: list[str] | None, prompts_file: Path | None) -> list[str]:
    from stackgan2.errors import UsageError

    collected = list(prompts or [])
    if prompts_file is not None:
        try:
            lines = prompts_file.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError:
            raise UsageError(f"prompts file {prompts_file} is not UTF-8 text") from None
        from_file = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
        if not from_file:
            raise UsageError(f"prompts file {prompts_file} holds no prompt (one per line; '#' lines are comments)")
        collected += from_file
    if not collected:
        raise UsageError('no prompt given; pass one such as "a small red bird" or --prompts-file captions.txt')
    return collected


@handle_errors
def sample(
    prompts: Annotated[list[str] | None, typer.Argument(help="Sentences describing the images.", show_default=False)] = None,
    prompts_file: Annotated[
        Path | None, Opt("--prompts-file", exists=True, dir_okay=False, help="Text file with one prompt per line.")
    ] = None,
    model: Model = None,
    num_images: Annotated[int, Opt("--num-images", "-n", min=1, max=MAX_IMAGES, help="Images per prompt.")] = 1,
    seed: SeedOpt = None,
    out: Annotated[Path, Opt("--out", "-o", help="Output directory.")] = Path("samples"),
    all_stages: AllStages = False,
    grid: Annotated[bool, Opt("--grid", help="Write one captioned contact sheet instead of one file per image.")] = False,
    truncation: Truncation = None,
    attention: Annotated[bool, Opt("--attention", help="AttnGAN models: also write, per refine stage, the image "
                                   "and one attention overlay per word of the prompt.")] = False,
    device: DeviceOpt = "auto",
    embeddings: Annotated[
        Path | None,
        Opt("--embeddings", exists=True, dir_okay=False,
            help="Instead of prompts: a char-CNN-RNN embeddings pickle (official StackGAN layout, e.g. "
                 "birds/test/char-CNN-RNN-embeddings.pickle) for models without text encoder."),
    ] = None,
    index: Annotated[str, Opt("--index", help="With --embeddings: images to use, e.g. 3, 0..7 (inclusive) or 0,5,9.")] = "0",
    caption: Annotated[int, Opt("--caption", min=0, help="With --embeddings: which of each image's captions.")] = 0,
) -> None:
    """Turn sentences (or precomputed sentence embeddings) into images; prints the paths of the PNGs it writes."""
    from stackgan2.errors import UsageError
    from stackgan2.io import check_output_dir

    if embeddings is not None:
        if prompts or prompts_file is not None:
            raise UsageError("give prompts or --embeddings, not both")
        from stackgan2.data.cub import char_cnn_rnn_prompts

        vectors, texts = char_cnn_rnn_prompts(embeddings, index, caption)
        conditioning = {"embeddings": vectors, "labels": texts}
    else:
        texts = _read_prompts(prompts, prompts_file)
        conditioning = {"prompts": texts}
    check_output_dir(out)
    pipe = _load(model, device)
    if attention and not pipe.has_attention_strips:
        raise UsageError(f"--attention needs an AttnGAN model (model.arch attngan); {model or 'the shipped model'} "
                         f"is {pipe.config.model.arch}")
    if attention and grid:
        raise UsageError("--attention writes one strip per image and stage; it cannot be combined with --grid")
    output = pipe(**conditioning, num_images_per_prompt=num_images, seed=seed, truncation=truncation)
    _warn_unknown(texts, output)
    for path in output.save(out, all_stages=all_stages, grid=grid, attention=attention):
        console.print(str(path), highlight=False, soft_wrap=True)
    err_console.print(f"[dim]seed {output.seed}[/]", markup=True, highlight=False)


@handle_errors
def export(
    run_dir: Annotated[Path, typer.Argument(help="Run directory, checkpoint file or pipeline directory.", show_default=False)],
    out_dir: Annotated[Path, typer.Argument(help="Pipeline directory to write.", show_default=False)],
    fp16: Annotated[bool, Opt("--fp16", help="Store the weights in float16 (half the size).")] = False,
) -> None:
    """Write a shippable pipeline directory: G_ema + text encoder + config, nothing for training."""
    from stackgan2.pipeline import Text2ImagePipeline

    directory = Text2ImagePipeline.from_pretrained(run_dir).save_pretrained(out_dir, fp16=fp16)
    size = sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())
    console.print(f"{directory} ({size / 2**20:.1f} MiB{', float16' if fp16 else ''})", highlight=False, soft_wrap=True)


@handle_errors
def interpolate(
    start: Annotated[str, typer.Argument(help="First sentence.", show_default=False)],
    end: Annotated[str, typer.Argument(help="Last sentence.", show_default=False)],
    steps: Annotated[int, Opt("--steps", min=2, max=MAX_STEPS, help="Images in the strip, both ends included.")] = 8,
    interpolate_noise: Annotated[
        bool, Opt("--interpolate-noise", help="Also move the noise (slerp from seed S to seed S+1).")
    ] = False,
    model: Model = None,
    seed: SeedOpt = None,
    out: Annotated[
        Path | None, Opt("--out", "-o", help="PNG file, or a directory for the default name (default: samples/).")
    ] = None,
    all_stages: AllStages = False,
    truncation: Truncation = None,
    device: DeviceOpt = "auto",
) -> None:
    """Write one captioned strip that moves from one sentence to another through the embedding space."""
    import numpy as np

    from stackgan2.errors import UsageError
    from stackgan2.imaging import save_png
    from stackgan2.io import check_output_dir
    from stackgan2.pipeline import slugify

    out = out if out is not None else Path("samples")
    to_file = out.suffix.lower() == ".png"
    if to_file and out.is_dir():
        raise UsageError(f"output path {out} is a directory; pass a .png file name or a directory without .png")
    check_output_dir(out.parent if to_file else out)
    pipe = _load(model, device)
    output = pipe.interpolate(start, end, steps, seed, interpolate_noise, truncation)
    _warn_unknown([start, end], output)
    if not to_file:
        out = out / f"interpolate_{slugify(start, 32)}_to_{slugify(end, 32)}_seed{output.seed}_{steps}steps.png"
    save_png(np.asarray(output.sheet(columns=steps, all_stages=all_stages)), out)
    console.print(str(out), highlight=False, soft_wrap=True)
    err_console.print(f"[dim]seed {output.seed}[/]", markup=True, highlight=False)


@handle_errors
def plot_losses(
    run_dir: Annotated[
        Path | None, typer.Argument(help="Run directory or stats.jsonl (default: the newest run under ./runs).", show_default=False)
    ] = None,
    out: Annotated[Path | None, Opt("--out", "-o", help="PNG to write (default: RUN_DIR/losses.png).")] = None,
    smooth: Annotated[int, Opt("--smooth", min=1, help="Moving-average window in logged records.")] = 25,
    log_y: Annotated[bool, Opt("--log-y", help="Logarithmic loss axis.")] = False,
) -> None:
    """Plot D/G losses per stage, KL and colour consistency over epochs, and print a summary."""
    from stackgan2.errors import DataError
    from stackgan2.io import check_output_dir
    from stackgan2.plotting import plot_losses as draw
    from stackgan2.plotting import read_stats, summarize

    if run_dir is None:
        from stackgan2.training.rundir import latest_run

        run_dir = latest_run(Path("runs"))
    if not run_dir.exists():
        raise DataError(f"run directory not found: {run_dir}")
    stats = run_dir if run_dir.is_file() else run_dir / "stats.jsonl"
    records = read_stats(stats)
    out = out if out is not None else stats.parent / "losses.png"
    check_output_dir(out.parent)
    name = stats.parent.name if stats.name == "stats.jsonl" else stats.stem  # run dir, or e.g. toy-birds-stats
    draw(records, out, window=smooth, log_y=log_y, title=name)
    summary = summarize(records)
    table = Table(title=f"{name}: {summary.records} records, step {summary.steps}, epoch {summary.epochs:.2f}")
    for column in ("term", "last", "best (min)", "at epoch"):
        table.add_column(column, justify="left" if column == "term" else "right")
    for term in summary.terms:
        table.add_row(term.name, f"{term.last:.4g}", f"{term.best:.4g}", f"{term.best_epoch:.2f}")
    console.print(table)
    console.print(str(out), highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("sample")(sample)
    app.command("export")(export)
    app.command("interpolate")(interpolate)
    app.command("plot-losses")(plot_losses)
