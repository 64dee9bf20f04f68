"""Typer option types shared by several commands, and the flag -> config-key mapping."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

Preset = Annotated[
    str, typer.Option("--preset", help="Shipped preset: tiny, toy, birds, flowers (StackGAN++), v1-toy, v1-birds, v1-coco "
                      "(StackGAN v1), attngan-toy, attngan-birds, attngan-coco (AttnGAN).")
]
ConfigFile = Annotated[
    Path | None, typer.Option("--config", help="TOML file overriding the preset (sections: model, data, text, train).")
]
StageNum = Annotated[int | None, typer.Option("--stage-num", help="Number of branches, 1..4 (3 = 64/128/256 px).")]
BaseSize = Annotated[int | None, typer.Option("--base-size", help="Resolution of the first branch (power of two >= 8).")]
Ngf = Annotated[int | None, typer.Option("--ngf", help="Generator width (official: 64).")]
Ndf = Annotated[int | None, typer.Option("--ndf", help="Discriminator width (official: 64).")]
Arch = Annotated[str | None, typer.Option(
    "--arch", help="Model family: stackgan2 (StackGAN++) or attngan (word attention + DAMSM loss).")]
ZDim = Annotated[int | None, typer.Option("--z-dim", help="Noise dimension (official: 100).")]
Dataset = Annotated[str | None, typer.Option("--dataset", help="toy-birds, cub, flowers, coco or folder.")]
DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Dataset root (cub, flowers, coco, folder).")]
CacheDir = Annotated[Path | None, typer.Option("--cache-dir", help="Cache for rendered/decoded images.")]
ToyFraming = Annotated[str | None, typer.Option(
    "--toy-framing", help="toy-birds: scene (a small bird in a big scene; default) or bird (the bird framed as "
    "StackGAN crops CUB birds: 1.5 x its box).")]
Device = Annotated[str | None, typer.Option("--device", help="auto, cpu, cuda or mps.")]
Seed = Annotated[int | None, typer.Option("--seed", help="Random seed.")]


def model_overrides(
    stage_num: int | None = None,
    base_size: int | None = None,
    ngf: int | None = None,
    ndf: int | None = None,
    z_dim: int | None = None,
) -> dict[str, Any]:
    return {
        "model.stage_num": stage_num,
        "model.base_size": base_size,
        "model.ngf": ngf,
        "model.ndf": ndf,
        "model.z_dim": z_dim,
    }
