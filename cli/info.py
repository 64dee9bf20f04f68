"""``stackgan2 info``: the resolved config and a per-module parameter/shape table."""

from __future__ import annotations

import typer
from rich.table import Table

from stackgan2.cli.common import console, handle_errors
from stackgan2.cli.options import BaseSize, ConfigFile, Ndf, Ngf, Preset, StageNum, ZDim, model_overrides


@handle_errors
def info(
    preset: Preset = "toy",
    config: ConfigFile = None,
    stage_num: StageNum = None,
    base_size: BaseSize = None,
    ngf: Ngf = None,
    ndf: Ndf = None,
    z_dim: ZDim = None,
) -> None:
    """Print the resolved config, parameter counts and output shapes of every branch and discriminator."""
    from stackgan2.config import resolve_config
    from stackgan2.summary import model_summary

    cfg = resolve_config(preset, config, model_overrides(stage_num, base_size, ngf, ndf, z_dim))
    console.print_json(cfg.to_json())
    rows, totals = model_summary(cfg.model)
    m = cfg.model
    family = f"StackGAN v1, Stage I then Stage II; this config trains Stage {'I' * m.v1_stage}" if m.arch == "stackgan1" \
        else f"StackGAN++, {m.stage_num} stages"
    table = Table(title=f"{family} ({cfg.preset} preset)")
    for column in ("module", "parameters", "output shape"):
        table.add_column(column, justify="right" if column == "parameters" else "left")
    for name, params, shape in rows:
        table.add_row(name, f"{params:,}", shape)
    console.print(table)
    for name, params in totals.items():
        console.print(f"{name}: {params:,} parameters")


def register(app: typer.Typer) -> None:
    app.command("info")(info)
