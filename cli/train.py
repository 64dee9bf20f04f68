"""``stackgan2 train``: build the config from flags and call the library's training run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from stackgan2.cli.common import RichProgress, console, handle_errors, state
from stackgan2.cli.options import (
    Arch,
    BaseSize,
    CacheDir,
    ConfigFile,
    DataDir,
    Dataset,
    Device,
    Ndf,
    Ngf,
    Preset,
    Seed,
    StageNum,
    ToyFraming,
    ZDim,
    model_overrides,
)

Opt = typer.Option


@handle_errors
def train(
    stage_num: StageNum = None,
    arch: Arch = None,
    v1_stage: Annotated[int | None, Opt("--v1-stage", help="StackGAN v1 presets (v1-*): 1 trains the Stage-I GAN, 2 the Stage-II GAN on a frozen Stage-I G (needs --stage1).")] = None,
    stage1: Annotated[Path | None, Opt("--stage1", help="StackGAN v1 --v1-stage 2: the Stage-I run directory (or its checkpoint / exported model).")] = None,
    epochs: Annotated[int | None, Opt(help="Training epochs (official birds: 600).")] = None,
    batch_size: Annotated[int | None, Opt("--batch-size", help="Images per step per process (official: 24).")] = None,
    max_steps: Annotated[int | None, Opt("--max-steps", help="Stop after this many iterations.")] = None,
    preset: Preset = "toy",
    config: ConfigFile = None,
    dataset: Dataset = None,
    data_dir: DataDir = None,
    cache_dir: CacheDir = None,
    toy_framing: ToyFraming = None,
    name: Annotated[str | None, Opt("--name", help="Run name: files go to runs/NAME.")] = None,
    run_dir: Annotated[Path | None, Opt("--run-dir", help="Run directory (overrides --name).")] = None,
    lr_g: Annotated[float | None, Opt("--lr-g", help="Generator learning rate (official: 2e-4).")] = None,
    lr_d: Annotated[float | None, Opt("--lr-d", help="Discriminator learning rate (official: 2e-4).")] = None,
    lr_decay_every: Annotated[int | None, Opt("--lr-decay-every", help="Halve both learning rates every N epochs (official v1 coco: 20; 0 = constant).")] = None,
    z_dim: ZDim = None,
    base_size: BaseSize = None,
    ngf: Ngf = None,
    ndf: Ndf = None,
    uncond_coef: Annotated[float | None, Opt("--uncond-coef", help="Unconditional loss weight (official: 1.0).")] = None,
    color_coef: Annotated[float | None, Opt("--color-coef", help="Colour-consistency weight (official birds: 0, unconditional: 50).")] = None,
    kl_coef: Annotated[float | None, Opt("--kl-coef", help="KL weight (official: 2.0).")] = None,
    beta1: Annotated[float | None, Opt("--beta1", help="Adam beta1 of G and D (official: 0.5; DF-GAN TTUR: 0.0).")] = None,
    beta2: Annotated[float | None, Opt("--beta2", help="Adam beta2 of G and D (official: 0.999; DF-GAN TTUR: 0.9).")] = None,
    d_projection: Annotated[bool | None, Opt("--d-projection/--no-d-projection", help="Projection term "
        "<W mu, pooled image code> in each D's conditional logit (Miyato & Koyama 2018). Default off.")] = None,
    d_norm: Annotated[str | None, Opt("--d-norm", help="D normalisation: batch (official) or spectral "
        "(spectral norm, no batch norm; Miyato et al. 2018).")] = None,
    g_text_fusion: Annotated[bool | None, Opt("--g-text-fusion/--no-g-text-fusion", help="DF-GAN deep text fusion: "
        "text-predicted per-channel scale/shift after every G up-block, starting as identity (Tao et al. 2022). Default off.")] = None,
    g_word_attention: Annotated[bool | None, Opt("--g-word-attention/--no-g-word-attention", help="Word attention in "
        "G: each pixel of the last two 64 px-stage blocks and of every refine stage attends over the caption's words "
        "and its word context predicts a per-pixel scale/shift, starting as identity (AttnGAN attention, SSA-GAN-style "
        "spatial affine). Default off.")] = None,
    gan_loss: Annotated[str | None, Opt("--gan-loss", help="Adversarial loss: bce (official) or hinge (DF-GAN, BigGAN).")] = None,
    ma_gp: Annotated[float | None, Opt("--ma-gp", help="Matching-aware gradient penalty weight k on real matching pairs "
        "(DF-GAN: 2; 0 = off, official); needs --d-norm spectral.")] = None,
    ma_gp_power: Annotated[float | None, Opt("--ma-gp-power", help="MA-GP power p (DF-GAN: 6).")] = None,
    d_recon_coef: Annotated[float | None, Opt("--d-recon-coef", help="FastGAN's self-supervised D: weight of the L1 "
        "loss of small decoders rebuilding real images from each D's features (0 = off, official).")] = None,
    stacked_d_passes: Annotated[bool | None, Opt("--stacked-d-passes/--no-stacked-d-passes", help="D step: real, wrong "
        "and fake images in one stacked pass (same maths; cheaper with --d-norm spectral).")] = None,
    damsm_coef: Annotated[float | None, Opt("--damsm-coef", help="DAMSM generator loss weight on the last branch, "
                          "frozen pretrained DAMSM encoders (AttnGAN: 5 birds, 50 COCO; 0 = off).")] = None,
    feature_d_coef: Annotated[float | None, Opt("--feature-d-coef", help="Weight of an extra conditional D on the "
        "frozen DAMSM image features (Projected GAN / GALIP style; 0 = off, official).")] = None,
    d_word_coef: Annotated[float | None, Opt("--d-word-coef", help="Weight of ControlGAN's word-level D: each word "
        "against the frozen DAMSM image regions it attends to, trained on real images with their own and with "
        "mismatched captions (0 = off, official).")] = None,
    damsm_branches: Annotated[str | None, Opt("--damsm-branches", help="Branches the DAMSM loss scores: last "
        "(AttnGAN) or all (their mean; keeps the small branches' colours when the tree grows).")] = None,
    damsm_fake_negatives: Annotated[bool | None, Opt("--damsm-fake-negatives/--no-damsm-fake-negatives", help="Score "
        "the DAMSM loss with a copy of the DAMSM image encoder trained alongside D, on real images with the fakes as "
        "extra negatives (XMC-GAN-style contrastive D); needs --damsm-coef. Default off.")] = None,
    damsm_copy_lr: Annotated[float | None, Opt("--damsm-copy-lr", help="Learning rate of --damsm-fake-negatives' "
        "encoder copy. Default: --lr-d.")] = None,
    ms_coef: Annotated[float | None, Opt("--ms-coef", help="Mode-seeking loss weight (MSGAN, Mao et al. 2019: 1.0): "
        "pushes images of one caption with different noise apart (0 = off, official).")] = None,
    ca_noise: Annotated[float | None, Opt("--ca-noise", help="Scale of the conditioning-augmentation noise in "
        "training and sampling (1 = official; 0 = G sees the CA mean).")] = None,
    seed: Seed = None,
    device: Device = None,
    amp: Annotated[str | None, Opt("--amp", help="Mixed precision on CUDA: off, bf16 or fp16.")] = None,
    workers: Annotated[int | None, Opt("--workers", help="DataLoader worker processes.")] = None,
    sample_every: Annotated[int | None, Opt("--sample-every", help="Epochs between sample grids.")] = None,
    tensorboard: Annotated[bool | None, Opt("--tensorboard/--no-tensorboard", help="Also write the stats and sample "
        "grids as TensorBoard events to RUN/tensorboard/ (pip install \"stackgan2[tensorboard]\"). Default off.")] = None,
    checkpoint_every: Annotated[int | None, Opt("--checkpoint-every", help="Iterations between checkpoints.")] = None,
    keep_checkpoints: Annotated[int | None, Opt("--keep-checkpoints", help="How many recent checkpoints to keep.")] = None,
    text_encoder: Annotated[Path | None, Opt("--text-encoder", help="Pretrained text encoder dir (skip phase 0).")] = None,
    init_from: Annotated[Path | None, Opt("--init-from", help="Start a new run from a model's weights (pipeline dir, run dir or checkpoint; its text encoder too).")] = None,
    init_terms: Annotated[bool | None, Opt("--init-terms/--no-init-terms", help="With --init-from a run dir or "
        "checkpoint: also start the loss terms' trained modules (feature D, --damsm-fake-negatives' encoder, word D) "
        "from it. Default off (they start fresh).")] = None,
    g_frozen_stages: Annotated[int | None, Opt("--g-frozen-stages", help="With --init-from, growing the tree: keep the "
        "generator's first N stages (64 px trunk first) at the source's averaged weights and train only the others. "
        "Default 0 (all train).")] = None,
    embeddings: Annotated[str | None, Opt("--embeddings", help="damsm (own encoder) or char-cnn-rnn (original pickles).")] = None,
    on_nan: Annotated[str | None, Opt("--on-nan", help="Non-finite loss: stop, or skip (drop the step, restore the last checkpoint).")] = None,
    channels_last: Annotated[bool | None, Opt("--channels-last/--no-channels-last", help="NHWC convolutions (default: on CUDA only).")] = None,
    compile: Annotated[bool | None, Opt("--compile/--no-compile", help="torch.compile G and Ds (eager fallback).")] = None,
    resume: Annotated[bool, Opt("--resume", help="Continue the run from its latest valid checkpoint.")] = False,
    dry_run: Annotated[bool, Opt("--dry-run", help="Print the resolved config and exit.")] = False,
) -> None:
    """Train StackGAN++, AttnGAN (--preset attngan-*), or StackGAN v1 one stage at a time (phase 0 pretrains
    the text encoder when none is given).

    StackGAN v1: `train --preset v1-coco --v1-stage 1 --name s1`, then
    `train --preset v1-coco --v1-stage 2 --stage1 runs/s1 --name s2`.
    """
    from stackgan2.config import resolve_config
    from stackgan2.training import init_distributed, prepare_config, run_training, shutdown_distributed

    overrides = {
        **model_overrides(stage_num, base_size, ngf, ndf, z_dim),
        "model.arch": arch,
        "model.v1_stage": v1_stage,
        "train.stage1": stage1,
        "train.lr_decay_every": lr_decay_every,
        "data.dataset": dataset,
        "data.data_dir": data_dir,
        "data.cache_dir": cache_dir,
        "data.toy_framing": toy_framing,
        "data.workers": workers,
        "train.epochs": epochs,
        "train.batch_size": batch_size,
        "train.max_steps": max_steps,
        "train.lr_g": lr_g,
        "train.lr_d": lr_d,
        "train.uncond_coef": uncond_coef,
        "train.color_coef": color_coef,
        "train.kl_coef": kl_coef,
        "train.beta1": beta1,
        "train.beta2": beta2,
        "model.d_projection": d_projection,
        "model.d_norm": d_norm,
        "model.g_text_fusion": g_text_fusion,
        "model.g_word_attention": g_word_attention,
        "model.ca_noise": ca_noise,
        "train.gan_loss": gan_loss,
        "train.ma_gp_coef": ma_gp,
        "train.ma_gp_power": ma_gp_power,
        "train.d_recon_coef": d_recon_coef,
        "train.stacked_d_passes": stacked_d_passes,
        "train.damsm_coef": damsm_coef,
        "train.damsm_branches": damsm_branches,
        "train.damsm_fake_negatives": damsm_fake_negatives,
        "train.damsm_copy_lr": damsm_copy_lr,
        "train.feature_d_coef": feature_d_coef,
        "train.d_word_coef": d_word_coef,
        "train.ms_coef": ms_coef,
        "train.seed": seed,
        "train.device": device,
        "train.amp": amp,
        "train.sample_every": sample_every,
        "train.tensorboard": tensorboard,
        "train.checkpoint_every": checkpoint_every,
        "train.keep_checkpoints": keep_checkpoints,
        "train.text_encoder": text_encoder,
        "train.init_from": init_from,
        "train.init_terms": init_terms,
        "train.g_frozen_stages": g_frozen_stages,
        "train.embeddings": embeddings,
        "train.on_nan": on_nan,
        "train.channels_last": channels_last,
        "train.compile": compile,
    }
    fresh = resolve_config(preset, config, overrides)
    if run_dir is None:
        m = fresh.model
        default = f"{fresh.data.dataset}-v1-stage{m.v1_stage}" if m.arch == "stackgan1" else f"{fresh.data.dataset}-{m.stage_num}stages"
        run_dir = Path("runs") / (name or default)
    cfg, resuming = prepare_config(run_dir, preset, config, overrides, resume)
    if dry_run:
        console.print_json(cfg.to_json())
        console.print(f"run directory: {run_dir}" + (" (resuming)" if resuming else ""))
        return
    if cfg.train.tensorboard:
        from stackgan2.training.tensorboard import require_tensorboard

        require_tensorboard()  # now, not after phase 0 and the data have taken their minutes
    ctx = init_distributed("cuda" if cfg.train.device in ("cuda", "auto") and _cuda() else "cpu")
    try:
        show = ctx.is_main and not state.quiet
        console.print(f"training into [bold]{run_dir}[/]" + (" (resuming)" if resuming else "")) if show else None
        with RichProgress() if show else _Silent() as progress:
            result = run_training(cfg, run_dir, ctx=ctx, progress_fn=progress if show else None)
        ctx.barrier()  # every rank is done before the process group goes away (gloo aborted a rank at exit)
    finally:
        shutdown_distributed(ctx)
    if ctx.is_main:
        table = Table(title=f"finished: {result.steps} steps, {result.epochs_done} epochs in {result.seconds:.1f} s")
        table.add_column("term")
        table.add_column("last value", justify="right")
        for key, value in result.last_stats.items():
            table.add_row(key, f"{value:.4f}")
        console.print(table)
        if result.seconds > 0:
            share = 100 * result.data_seconds / result.seconds
            console.print(f"data loading: {result.data_seconds:.1f} s waiting for batches ({share:.1f} % of the time)")
        console.print(f"checkpoint: {result.last_checkpoint}")
        console.print(f"samples:    {Path(run_dir) / 'samples'}")


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


class _Silent:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def register(app: typer.Typer) -> None:
    app.command("train")(train)
