"""Schedules of the loop: the learning rates (and the config's say over a resumed optimiser) and the
generator's exponential moving average (``G_ema``)."""

from __future__ import annotations

import logging

import torch
from torch import nn

from stackgan2.config import TrainConfig

log = logging.getLogger("stackgan2.training")


def ema_decay(t: TrainConfig, step: int) -> float:
    """G_ema decay for the update after ``step`` finished iterations.

    With ``ema_warmup`` the average starts with a short horizon, min(decay, (1+t)/(10+t)) (the
    num_updates form of TensorFlow's ExponentialMovingAverage), so the samples of a short run show
    what G has learnt rather than 0.999^t of the random initialisation (after 320 steps a constant
    0.999 still keeps 73 % of it). From step (10 * decay - 1) / (1 - decay) on (8,990 at 0.999) it is
    the official constant decay."""
    if not t.ema_warmup:
        return t.ema_decay
    return min(t.ema_decay, (1 + step) / (10 + step))


@torch.no_grad()
def update_ema(G_ema: nn.Module, G: nn.Module, t: TrainConfig, step: int) -> None:
    """G_ema <- lerp(G_ema, G, 1 - ema_decay) over parameters; buffers (batch-norm statistics) are copied.
    With ``ema_to_g_every`` the averaged weights are also loaded into G every N steps (official quirk:
    ``save_model()`` does so at every snapshot)."""
    ema_params, params = list(G_ema.parameters()), list(G.parameters())
    weight = 1.0 - ema_decay(t, step)
    if t.fused_optimizer:
        torch._foreach_lerp_(ema_params, params, weight)
    else:
        for p_ema, p in zip(ema_params, params, strict=True):
            p_ema.lerp_(p, weight)
    for ema_buffer, buffer in zip(G_ema.buffers(), G.buffers(), strict=True):
        ema_buffer.copy_(buffer)
    if t.ema_to_g_every and (step + 1) % t.ema_to_g_every == 0:
        for p, p_ema in zip(params, ema_params, strict=True):
            p.copy_(p_ema)


def learning_rate(t: TrainConfig, name: str, epoch: int) -> float:
    """The config's rate for optimiser ``name`` ("opt_G", "opt_A" of the learning DAMSM encoder, or a
    discriminator's) at ``epoch``: halved at every epoch that is a positive multiple of ``lr_decay_every``
    (official v1 ``trainer.py``: ``epoch % LR_DECAY_EPOCH == 0``)."""
    base = {"opt_G": t.lr_g, "opt_A": t.damsm_copy_lr or t.lr_d}.get(name, t.lr_d)
    return base * 0.5 ** (epoch // t.lr_decay_every) if t.lr_decay_every else base


def apply_optimizer_settings(t: TrainConfig, name: str, optimizer: torch.optim.Optimizer, epoch: int) -> None:
    """The config's learning rate (at this epoch of its schedule) and betas win over a checkpoint's
    param_groups, so that ``--resume --lr-g 5e-5`` changes the rate (exact resume is unaffected when
    they are equal)."""
    lr, betas = learning_rate(t, name, epoch), (t.beta1, t.beta2)
    for group in optimizer.param_groups:
        if group["lr"] != lr:
            log.info("%s: learning rate %g -> %g (from the config)", name, group["lr"], lr)
        if tuple(group["betas"]) != betas:
            log.info("%s: Adam betas %s -> %s (from the config)", name, tuple(group["betas"]), betas)
        group["lr"], group["betas"] = lr, betas
