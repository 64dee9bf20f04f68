"""``stackgan2 eval`` and ``stackgan2 train-classifier``: thin commands over ``stackgan2.metrics``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from stackgan2.cli.common import RichProgress, console, handle_errors, state
from stackgan2.cli.options import CacheDir, ConfigFile, DataDir, Dataset, Preset, Seed, ToyFraming

Opt = typer.Option
DeviceOpt = Annotated[str, Opt("--device", help="auto, cpu, cuda or mps.")]
BatchSize = Annotated[int, Opt("--batch-size", min=1, help="Images per batch.")]


def _progress() -> Any:
    from contextlib import nullcontext

    return nullcontext() if state.quiet else RichProgress()


@handle_errors
def evaluate(
    model: Annotated[
        Path | None,
        Opt("--model", "-m", help="Pipeline directory, run directory or checkpoint file (default: the shipped toy-birds model)."),
    ] = None,
    dataset: Dataset = None,
    data_dir: DataDir = None,
    cache_dir: CacheDir = None,
    toy_framing: ToyFraming = None,
    num_samples: Annotated[
        int, Opt("--num-samples", min=1, help="Generated images, from the test captions (StackGAN++: 30,000).")
    ] = 30000,
    metrics: Annotated[
        str | None, Opt("--metrics", help="Comma-separated: fid,is,r-precision,attributes,diversity "
                               "(default: all the given networks allow).")
    ] = None,
    classifier: Annotated[
        Path | None, Opt("--classifier", help="Classifier directory from stackgan2 train-classifier (IS, offline FID, attributes; "
            "default for toy-birds: the shipped one).")
    ] = None,
    inception_weights: Annotated[
        Path | None, Opt("--inception-weights", help="torchvision Inception-v3 ImageNet weights file (FID pool3 features).")
    ] = None,
    text_encoder: Annotated[
        Path | None, Opt("--text-encoder", help="DAMSM encoder directory for R-precision (default: the model's run's text_encoder/).")
    ] = None,
    batch_size: BatchSize = 50,
    device: DeviceOpt = "auto",
    seed: Annotated[int, Opt("--seed", min=0, help="Noise seed: sample i uses seed + i.")] = 0,
    branch: Annotated[
        int | None, Opt("--branch", help="Generator branch to judge: 0 = 64 px, 1 = 128 px, ... (default: the final one).")
    ] = None,
    diversity_seeds: Annotated[
        int, Opt("--diversity-seeds", min=2, help="Diversity: images (noise seeds) per prompt, compared pairwise.")
    ] = 4,
    out: Annotated[Path, Opt("--out", "-o", help="Where to write the JSON report.")] = Path("metrics.json"),
) -> None:
    """Generate images for the test captions and compute FID, Inception Score, R-precision, attribute accuracy and
    diversity per prompt."""
    from stackgan2.io import atomic_write_text
    from stackgan2.metrics.evaluate import evaluate_model, parse_metrics
    from stackgan2.pipeline import default_model

    wanted = parse_metrics(metrics) if metrics is not None else None
    with _progress() as progress:
        result = evaluate_model(
            model if model is not None else default_model(),
            data_overrides={"data.dataset": dataset, "data.data_dir": data_dir, "data.cache_dir": cache_dir,
                            "data.toy_framing": toy_framing},
            metrics=wanted,
            num_samples=num_samples,
            classifier=classifier,
            inception_weights=inception_weights,
            text_encoder=text_encoder,
            batch_size=batch_size,
            device=device,
            seed=seed,
            branch=branch,
            diversity_seeds=diversity_seeds,
            progress_fn=progress,
        )
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    console.print(_metrics_table(result))
    for name, used in result["feature_extractors"].items():
        console.print(f"{name}: {used}", highlight=False)
    console.print(f"report: {out}")


def _metrics_table(result: dict[str, Any]) -> Table:
    values = result["metrics"]
    table = Table(title=f"{result['num_samples']} samples, {result['dataset']['name']} test split "
                        f"({result['dataset']['images']} real images)")
    table.add_column("metric")
    table.add_column("generated", justify="right")
    table.add_column("real test images", justify="right")
    if "fid" in values:
        table.add_row("FID", f"{values['fid']:.2f}", "0 (reference)")
    if "inception_score" in values:
        real = values.get("inception_score_real")
        table.add_row(
            f"Inception Score ({values['inception_score']['splits']} splits)",
            f"{values['inception_score']['mean']:.3f} ± {values['inception_score']['std']:.3f}",
            f"{real['mean']:.3f} ± {real['std']:.3f}" if real else "-",
        )
    if "r_precision" in values:
        rp = values["r_precision"]
        table.add_row(f"R-precision (1 of {rp['candidates']})", f"{100 * rp['mean']:.2f} ± {100 * rp['std']:.2f}%",
                      f"{rp['folds']} folds; chance {100 * rp['chance']:.0f}%")
    if "attribute_accuracy" in values:
        acc = values["attribute_accuracy"]
        table.add_row(f"attribute accuracy ({' + '.join(acc['attributes'])})",
                      f"{100 * acc['generated']:.1f}%", f"{100 * acc['real']:.1f}%")
        for name, pair in acc["per_attribute"].items():
            table.add_row(f"  {name}", f"{100 * pair['generated']:.1f}%", f"{100 * pair['real']:.1f}%")
            if pair.get("generated_where_named") is not None and pair["prompts_naming_it"] < 1:
                table.add_row(f"    where the prompt names it ({100 * pair['prompts_naming_it']:.0f}% of prompts)",
                              f"{100 * pair['generated_where_named']:.1f}%", "")
    if "diversity" in values:
        ratio = values["diversity_ratio"]
        table.add_row(f"diversity ({values['diversity_groups']['seeds_per_prompt']} seeds per prompt)",
                      f"{values['diversity']:.3f}", f"{values['diversity_real']:.3f}")
        table.add_row("  ratio to real (0: z ignored)", "-" if ratio is None else f"{ratio:.2f}", "1")
    return table


@handle_errors
def train_classifier(
    preset: Preset = "toy",
    config: ConfigFile = None,
    dataset: Dataset = None,
    data_dir: DataDir = None,
    cache_dir: CacheDir = None,
    toy_framing: ToyFraming = None,
    arch: Annotated[str, Opt("--arch", help="small-cnn (from scratch, CPU minutes) or mobilenet_v2 (fine-tuned for IS).")] = "small-cnn",
    init_weights: Annotated[
        Path | None, Opt("--init-weights", help="torchvision MobileNetV2 ImageNet weights file to fine-tune from.")
    ] = None,
    epochs: Annotated[int, Opt("--epochs", min=1, help="Training epochs.")] = 10,
    batch_size: BatchSize = 64,
    lr: Annotated[float, Opt("--lr", min=0.0, help="Adam learning rate (a pretrained backbone uses lr/10).")] = 2e-3,
    image_size: Annotated[
        int | None, Opt("--image-size", min=16, help="Input resolution (default: 64 for small-cnn, 224 for mobilenet_v2).")
    ] = None,
    width: Annotated[int, Opt("--width", min=1, help="small-cnn width (channels of the first layer).")] = 16,
    workers: Annotated[int | None, Opt("--workers", min=0, help="DataLoader worker processes.")] = None,
    device: DeviceOpt = "auto",
    seed: Seed = None,
    out: Annotated[Path | None, Opt("--out", "-o", help="Output directory (default: runs/classifier-<dataset>).")] = None,
) -> None:
    """Train the dataset classifier used by eval (IS, offline FID features, toy-birds attribute accuracy)."""
    from stackgan2.config import resolve_config
    from stackgan2.metrics.classifier import train_classifier as train

    cfg = resolve_config(
        preset,
        config,
        {"data.dataset": dataset, "data.data_dir": data_dir, "data.cache_dir": cache_dir, "data.toy_framing": toy_framing,
         "data.workers": workers},
    )
    out = out if out is not None else Path("runs") / f"classifier-{cfg.data.dataset}"
    with _progress() as progress:
        metrics = train(
            cfg.data, out, arch=arch, init_weights=init_weights, epochs=epochs, batch_size=batch_size, lr=lr,
            image_size=image_size, width=width, device=device, seed=seed if seed is not None else cfg.train.seed,
            progress_fn=progress,
        )
    table = Table(title=f"test accuracy ({metrics['test_images']} images: {metrics['test_split']})")
    table.add_column("head")
    table.add_column("accuracy", justify="right")
    for name, value in metrics["test_accuracy"].items():
        table.add_row(name, f"{100 * value:.1f}%")
    console.print(table)
    console.print(f"trained on {metrics['fit_images']} images in {metrics['seconds']:.0f} s; saved to {out}")


def register(app: typer.Typer) -> None:
    app.command("eval")(evaluate)
    app.command("train-classifier")(train_classifier)
