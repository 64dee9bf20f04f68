"""``stackgan2 pretrain-text``: DAMSM pretraining of the text encoder (phase 0 of ``train``, run on its own)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stackgan2.cli.common import RichProgress, console, handle_errors
from stackgan2.cli.options import CacheDir, ConfigFile, DataDir, Dataset, Device, Preset, Seed, ToyFraming

Opt = typer.Option


@handle_errors
def pretrain_text(
    preset: Preset = "toy",
    config: ConfigFile = None,
    dataset: Dataset = None,
    data_dir: DataDir = None,
    cache_dir: CacheDir = None,
    toy_framing: ToyFraming = None,
    embeddings: Annotated[
        str | None, Opt("--embeddings", help="damsm, or char-cnn-rnn to also fit the regression head (cub/flowers).")
    ] = None,
    epochs: Annotated[int | None, Opt("--epochs", help="Pretraining epochs (text.epochs).")] = None,
    batch_size: Annotated[int | None, Opt("--batch-size", help="Batch size (text.batch_size; AttnGAN: 48).")] = None,
    device: Device = None,
    out: Annotated[Path, Opt("--out", help="Output directory for the encoder.")] = Path("runs/text-encoder"),
    seed: Seed = None,
    image_backbone: Annotated[
        str, Opt("--image-backbone", help="Image encoder: cnn (small, from scratch), inception_v3 or mobilenet_v2.")
    ] = "cnn",
    backbone_weights: Annotated[
        Path | None, Opt("--backbone-weights", help="Local torchvision ImageNet weights for --image-backbone.")
    ] = None,
) -> None:
    """Pretrain the text and image encoders with AttnGAN's DAMSM losses and report test R-precision."""
    from stackgan2.config import resolve_config
    from stackgan2.text import pretrain_text_encoder

    cfg = resolve_config(
        preset,
        config,
        {
            "data.dataset": dataset,
            "data.data_dir": data_dir,
            "data.cache_dir": cache_dir,
            "data.toy_framing": toy_framing,
            "train.embeddings": embeddings,
            "text.epochs": epochs,
            "text.batch_size": batch_size,
            "train.device": device,
            "train.seed": seed,
        },
    )
    with RichProgress() as progress:
        metrics = pretrain_text_encoder(
            cfg,
            out,
            device=cfg.train.device,
            progress_fn=progress,
            image_backbone=image_backbone,
            backbone_weights=backbone_weights,
        )
    console.print(
        f"test R-precision: [bold]{100 * metrics['r_precision']:.1f}%[/] (chance "
        f"{100 * metrics['r_precision_chance']:.1f}%, 1 true caption among {metrics['r_precision_candidates']})"
    )
    if "char_cnn_rnn_cosine" in metrics:
        console.print(f"char-CNN-RNN regression, test cosine similarity: [bold]{metrics['char_cnn_rnn_cosine']:.3f}[/]")
    console.print(
        f"vocabulary {metrics['vocab_size']} words, final loss {metrics['loss_history'][-1]:.3f}, "
        f"{metrics['seconds']:.0f} s; saved to {out}"
    )


def register(app: typer.Typer) -> None:
    app.command("pretrain-text")(pretrain_text)
