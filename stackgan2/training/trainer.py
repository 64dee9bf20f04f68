"""The one training loop, for StackGAN++ (official hanzhanggit/StackGAN-v2 ``trainer.py`` step order)
and StackGAN v1 (hanzhanggit/StackGAN-Pytorch ``trainer.py``: Stage I, or Stage II on a frozen Stage-I G).

Per iteration: one generator forward; for every stage i a discriminator update from three separate
forward passes (real, wrong, detached fake), conditioned on the detached CA mean (``stacked_d_passes``
stacks them into one pass whose batch norm still treats each third as its own batch); then one generator
update through all freshly updated discriminators (conditioned on the undetached mean; the
discriminators' parameters need no gradient there) plus KL and colour consistency; then the G_ema
update. Losses come from ``stackgan2.losses``; the loop reports through ``progress_fn``. With
``train.damsm_coef > 0`` the G loss adds AttnGAN's DAMSM term on the last branch, scored by the frozen
pretrained DAMSM encoders (``attach_text_encoder``), which also turn each batch's captions into word
features. With ``train.feature_d_coef > 0`` a further discriminator (``FeatureCritic``, a trainable head
on the frozen DAMSM image encoder's region features) is updated after the stage discriminators on the
last branch's real, wrong and fake images, and its generator term joins the G loss.

StackGAN v1 runs the same iteration with its own D passes and loss weights (``stackgan2.stackgan1``:
wrong pairs from the real batch shifted by one, D's condition detached in the G step too) on its one
trained branch; the frozen Stage-I G of Stage II is left out of the optimiser (and gets no gradient).
``train.lr_decay_every`` halves both learning rates every N epochs (official v1 schedule).

``model.arch = "attngan"`` runs AttnGAN's step (taoxugit/AttnGAN ``trainer.py``, ``miscc/losses.py``) in
the same loop: G attends to the word features; every discriminator is conditioned on the sentence
embedding (not the CA mean) and scores real, fake and mismatched pairs (real image k with sentence
k + 1, from the real images' code) with the same passes and weights as StackGAN v1 Stage II
((real + uncond real) / 2 + (fake + wrong + uncond fake) / 3, official ``discriminator_loss``); the G
loss is the adversarial sum over branches plus KL and the DAMSM term.

Exact resume: all randomness of an iteration comes from (a) the dataset, which derives every item's
randomness from (seed, epoch, index), (b) the epoch's permutation, derived from (seed, epoch), and
(c) the trainer's own noise generator and, with ``train.damsm_swap_negatives`` or ``train.damsm_augment``,
its CPU generator of colour swaps and random views, whose states are checkpointed. Resuming at (epoch, batch) thus
replays the same stream, bit for bit on the CPU.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import logging
import random
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from stackgan2 import stackgan1
from stackgan2.config import ExperimentConfig, ModelConfig, TrainConfig
from stackgan2.device import resolve_device
from stackgan2.errors import CheckpointError, StackGAN2Error, TrainingError, TrainingInterrupted
from stackgan2.losses import (
    color_consistency_loss,
    damsm_loss,
    discriminator_loss,
    generator_adversarial_loss,
    kl_loss,
    matching_aware_gradient_penalty,
)
from stackgan2.networks import FeatureCritic, build_discriminators, build_generator, init_weights
from stackgan2.progress import ProgressFn, report
from stackgan2.text.features import CaptionFeatures, FrozenDAMSM
from stackgan2.text.negatives import ColourWords, SwapNegatives, swap_colour_words
from stackgan2.training.checkpoint import Checkpoint, latest_checkpoint, save_checkpoint
from stackgan2.training.distributed import (
    DistContext,
    average_gradients,
    broadcast_module,
    gather_tensors,
)
from stackgan2.training.rundir import RunDir

log = logging.getLogger("stackgan2.training")

# Architecture-defining fields: a resumed run must keep them.
FIXED_ON_RESUME = ("model", "data.dataset", "data.data_dir", "data.toy_train_size", "data.toy_seed", "text", "train.embeddings")


class NonFiniteLoss(TrainingError):
    """A loss or gradient became NaN/inf; handled by ``train.on_nan``."""


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    epochs_done: int
    last_checkpoint: Path | None
    last_stats: dict[str, float]
    seconds: float
    data_seconds: float = 0.0  # of ``seconds``, spent waiting for batches (loader + copy to the device)


class EpochBatches:
    """Batches of dataset indices for one epoch: a permutation from (seed, epoch), sharded by rank,
    ``drop_last`` as the official loader, starting at ``start`` (for resume)."""

    def __init__(self, size: int, batch_size: int, seed: int, epoch: int, ctx: DistContext, start: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        order = torch.randperm(size, generator=generator).tolist()
        per_rank = size // ctx.world_size
        order = order[ctx.rank * per_rank : (ctx.rank + 1) * per_rank]
        self.batches = [order[i : i + batch_size] for i in range(0, per_rank - batch_size + 1, batch_size)][start:]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


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


def _ignore_stop_signals(_worker_id: int) -> None:
    """DataLoader workers leave SIGINT/SIGTERM to the main process.

    Ctrl-C in a terminal, ``pkill -f`` and schedulers that signal a whole process group (SLURM
    preemption) reach the workers too. A worker killed by them makes PyTorch raise "DataLoader
    worker ... killed by signal" in the main process, in the middle of the step or of the stop
    checkpoint. Ignoring them here lets the main process finish its step, save and shut the workers
    down itself; a main process that dies without doing so still takes its workers with it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """The default collation of items, leaving out fields the dataset did not fill (StackGAN v1 makes
    its wrong pairs inside the batch, so its items carry no ``wrong_images``)."""
    return torch.utils.data.default_collate([{k: v for k, v in item.items() if v is not None} for item in items])


def steps_per_epoch(dataset_size: int, batch_size: int, world_size: int = 1) -> int:
    return (dataset_size // world_size) // batch_size


class Trainer:
    """Owns G, G_ema, the discriminators, their optimisers and the loop."""

    def __init__(
        self,
        cfg: ExperimentConfig,
        run_dir: Path,
        *,
        ctx: DistContext | None = None,
        progress_fn: ProgressFn | None = None,
    ) -> None:
        self.cfg = cfg
        self.run = RunDir(Path(run_dir))
        self.ctx = ctx or DistContext()
        self.progress_fn = progress_fn
        self.device = resolve_device(cfg.train.device, self.ctx.local_rank)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self.amp_dtype = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[cfg.train.amp]
        if self.amp_dtype is not None and self.device.type != "cuda":
            log.warning("mixed precision (--amp %s) is only used on CUDA; training in float32", cfg.train.amp)
            self.amp_dtype = None

        torch.manual_seed(cfg.train.seed)
        m, t = cfg.model, cfg.train
        self.v1 = m.arch == "stackgan1"
        self.branches = m.trained_branches  # discriminator k judges generator branch branches[k]
        self.G = build_generator(m).split_condition(t.split_condition_conv).to(self.device)
        self.discriminators = build_discriminators(m).to(self.device)
        scheme = "normal" if self.v1 else "orthogonal"
        init_weights(self.G, scheme)
        init_weights(self.discriminators, scheme)
        broadcast_module(self.G, self.ctx)
        broadcast_module(self.discriminators, self.ctx)
        nhwc = t.channels_last if t.channels_last is not None else self.device.type == "cuda"
        self.memory_format = torch.channels_last if nhwc else torch.contiguous_format
        self.G.to(memory_format=self.memory_format)
        self.discriminators.to(memory_format=self.memory_format)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        # Plain path: the per-tensor for-loop Adam; fast path: one fused kernel (CPU and CUDA alike).
        optim = {"fused": True} if t.fused_optimizer else {"foreach": False}
        # Only what requires a gradient: StackGAN v1 Stage II's frozen Stage-I G stays out (official).
        self.G_params = [p for p in self.G.parameters() if p.requires_grad]
        self.opt_G = torch.optim.Adam(self.G_params, lr=t.lr_g, betas=(t.beta1, t.beta2), **optim)
        self.opts_D = [
            torch.optim.Adam(D.parameters(), lr=t.lr_d, betas=(t.beta1, t.beta2), **optim) for D in self.discriminators
        ]
        # train.feature_d_coef: a discriminator head on the frozen DAMSM image features (the encoder
        # is attached later, with the text encoder); it trains at D's rate.
        self.critic: FeatureCritic | None = None
        if t.feature_d_coef > 0:
            self.critic = FeatureCritic(cfg.text.dim, cfg.text.dim).to(self.device)
            broadcast_module(self.critic, self.ctx)
            self.opt_critic = torch.optim.Adam(self.critic.parameters(), lr=t.lr_d, betas=(t.beta1, t.beta2), **optim)
        self.G_forward, self.D_forwards = self.G, list(self.discriminators)
        self._compile_pending = t.compile
        if t.compile:
            self.G_forward = torch.compile(self.G)
            self.D_forwards = [torch.compile(D) for D in self.discriminators]
        use_scaler = self.amp_dtype == torch.float16
        self.scalers = [torch.amp.GradScaler("cuda", enabled=use_scaler) for _ in range(len(self.opts_D) + 1)]
        self.critic_scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
        self.noise = torch.Generator(device=self.device).manual_seed(t.seed * 7919 + self.ctx.rank)
        # Its own stream (swapped colour words, augmented views), so that the noise (z, eps) of a run
        # does not depend on the DAMSM options.
        self.swap_rng = (torch.Generator().manual_seed(t.seed * 7919 + 104_729 + self.ctx.rank)
                         if t.damsm_swap_negatives or t.damsm_augment else None)
        self.colours: ColourWords | None = None
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self._stop_signal: int | None = None
        self.per_epoch = 1
        self.damsm: FrozenDAMSM | None = None
        self.one_class = False  # the dataset has one class: each image is its own class for the DAMSM loss

    @property
    def needs_caption_features(self) -> bool:
        """Whether every step needs the DAMSM features of its captions (``attach_text_encoder``)."""
        return self.cfg.train.damsm_coef > 0 or self.cfg.train.feature_d_coef > 0 or self.cfg.model.attends_to_words

    @property
    def attngan(self) -> bool:
        return self.cfg.model.arch == "attngan"

    def _generator_inputs(self, text: CaptionFeatures | None) -> dict[str, Tensor]:
        """The extra inputs of a generator that attends to words (AttnGAN, ``g_word_attention``): the
        caption's word features and attention mask."""
        return {"words": text.words, "mask": text.mask} if self.cfg.model.attends_to_words and text is not None else {}

    def attach_text_encoder(self, encoder: Any) -> None:
        """The pretrained ``PromptEncoder`` whose frozen encoders give word features and the DAMSM loss."""
        damsm = FrozenDAMSM(encoder, self.device)
        if self.cfg.train.damsm_coef > 0 and not damsm.has_image_encoder:
            raise CheckpointError("train.damsm_coef > 0 needs a text encoder saved with its DAMSM image encoder "
                                  "(as `stackgan2 pretrain-text` writes it)")
        if self.critic is not None and not damsm.has_image_encoder:
            raise CheckpointError("train.feature_d_coef > 0 needs a text encoder saved with its DAMSM image encoder "
                                  "(as `stackgan2 pretrain-text` writes it)")
        self.damsm = damsm
        self.colours = ColourWords.of(encoder.vocab)

    # ----------------------------------------------------------------------------------- the step
    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _update(self, loss: Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, params: list,
                what: str, terms: dict[str, Tensor]) -> None:
        """Backward, average across processes, check, step. Nothing is stepped when the loss or a
        gradient is non-finite. The check runs after the all-reduce, so every process agrees."""
        scaler.scale(loss).backward()
        average_gradients(params, self.ctx)
        if not scaler.is_enabled():  # with fp16 the scaler itself skips steps with inf gradients
            grads = [p.grad for p in params if p.grad is not None]
            grads_finite = bool(torch.stack(torch._foreach_norm(grads)).isfinite().all()) if grads else True
            if not torch.isfinite(loss) or not grads_finite:
                bad = [name for name, value in terms.items() if not torch.isfinite(value)]
                problem = f"loss term {', '.join(bad)}" if bad else "loss" if not torch.isfinite(loss) else "gradient"
                raise NonFiniteLoss(f"non-finite {what} {problem} at step {self.step + 1}")
        scaler.step(optimizer)
        scaler.update()

    def train_step(self, real: list[Tensor], wrong: list[Tensor], embedding: Tensor,
                   text: CaptionFeatures | None = None) -> dict[str, Tensor]:
        """One official StackGAN-v2 iteration; returns every loss term (detached tensors).

        ``text``: the DAMSM features of the batch's captions, needed when ``needs_caption_features``.

        With ``train.compile`` the first call compiles; if compilation fails, the state from before
        the call is restored and training continues in eager mode (with a warning).
        """
        if not self._compile_pending:
            return self._train_step(real, wrong, embedding, text)
        self._compile_pending = False
        snapshot = copy.deepcopy(self._resumable_state())
        try:
            return self._train_step(real, wrong, embedding, text)
        except StackGAN2Error:
            raise
        except Exception as exc:  # torch._dynamo / inductor failures have many types
            log.warning("torch.compile failed (%s); continuing without --compile", str(exc).splitlines()[0][:200])
            self._restore_state(snapshot)
            self.G_forward, self.D_forwards = self.G, list(self.discriminators)
            return self._train_step(real, wrong, embedding, text)

    def _resumable_state(self) -> dict[str, Any]:
        return {
            "G": self.G.state_dict(),
            "G_ema": self.G_ema.state_dict(),
            "D": self.discriminators.state_dict(),
            "opt_G": self.opt_G.state_dict(),
            "opts_D": [o.state_dict() for o in self.opts_D],
            **({"F": self.critic.state_dict(), "opt_F": self.opt_critic.state_dict()} if self.critic is not None else {}),
            "noise": self.noise.get_state(),
            **({"swap_rng": self.swap_rng.get_state()} if self.swap_rng is not None else {}),
        }

    def _restore_state(self, state: dict[str, Any]) -> None:
        self.G.load_state_dict(state["G"])
        self.G_ema.load_state_dict(state["G_ema"])
        self.discriminators.load_state_dict(state["D"])
        for opt, opt_state in zip([self.opt_G, *self.opts_D], [state["opt_G"], *state["opts_D"]], strict=True):
            opt.load_state_dict(opt_state)
            _match_param_layout(opt)
        if self.critic is not None:
            self.critic.load_state_dict(state["F"])
            self.opt_critic.load_state_dict(state["opt_F"])
            _match_param_layout(self.opt_critic)
        self.noise.set_state(state["noise"])
        if self.swap_rng is not None:
            self.swap_rng.set_state(state["swap_rng"])

    def _train_step(self, real: list[Tensor], wrong: list[Tensor], embedding: Tensor,
                    text: CaptionFeatures | None) -> dict[str, Tensor]:
        t = self.cfg.train
        if self.needs_caption_features and (text is None or self.damsm is None):
            raise TrainingError("train.damsm_coef > 0, a feature D or a generator that attends to words: the step "
                                "needs the captions' DAMSM "
                                "features and the attached text encoder (Trainer.attach_text_encoder)")
        batch = embedding.shape[0]
        # Mode seeking: `pairs` more images of the first captions with new noise, in the same G pass.
        pairs = batch // 2 if t.ms_coef > 0 else 0
        z = torch.randn(batch + pairs, self.cfg.model.z_dim, device=self.device, generator=self.noise)
        eps = torch.randn(batch + pairs, self.cfg.model.eps_dim, device=self.device, generator=self.noise)
        with self._autocast():
            condition_in = torch.cat([embedding, embedding[:pairs]]) if pairs else embedding
            words = {k: torch.cat([v, v[:pairs]]) for k, v in self._generator_inputs(text).items()}
            fakes, mu, logvar = self.G_forward(z, condition_in, eps, **words)
        fakes = [fakes[b] for b in self.branches]
        if pairs:
            twins = [f[batch:] for f in fakes]
            fakes, mu, logvar = [f[:batch] for f in fakes], mu[:batch], logvar[:batch]
        stats: dict[str, Tensor] = {}

        condition = embedding if self.attngan else mu.detach()
        for i, (D, opt, scaler) in enumerate(zip(self.D_forwards, self.opts_D, self.scalers, strict=False)):
            opt.zero_grad(set_to_none=True)
            with self._autocast():
                if self.v1 or self.attngan:  # AttnGAN's discriminator_loss: the passes and weights of v1 Stage II
                    loss, terms = stackgan1.discriminator_loss(self.discriminators[i], real[i], fakes[i], condition)
                elif t.stacked_d_passes:
                    stacked = D(torch.cat([real[i], wrong[i], fakes[i].detach()]), condition.repeat(3, 1), groups=3)
                    real_out, wrong_out, fake_out = zip(*(logits.chunk(3) for logits in stacked), strict=True)
                else:
                    real_out = D(real[i], condition)
                    wrong_out = D(wrong[i], condition)
                    fake_out = D(fakes[i].detach(), condition)
                if not (self.v1 or self.attngan):
                    loss, terms = discriminator_loss(real_out, wrong_out, fake_out, t.uncond_coef, t.gan_loss)
                if t.ma_gp_coef > 0:
                    # A separate real pass (levers.md section 4: through the stacked batch it doubles D's cost).
                    images = real[i].detach().requires_grad_(True)
                    code = condition.detach().requires_grad_(True)
                    gp = matching_aware_gradient_penalty(D(images, code)[0], images, code, t.ma_gp_coef, t.ma_gp_power)
                    loss = loss + gp
                    terms["ma_gp"] = gp.detach()
            D_params = list(self.discriminators[i].parameters())
            self._update(loss, opt, scaler, D_params, f"D{i} ({self.discriminators[i].resolution} px)", terms)
            stats.update({f"D{i}/{k}": v for k, v in terms.items()})
            stats[f"D{i}/total"] = loss.detach()
        if self.critic is not None:
            stats.update(self._critic_step(real[-1], wrong[-1], fakes[-1].detach(), text))

        self.opt_G.zero_grad(set_to_none=True)
        self.discriminators.requires_grad_(False)
        if self.critic is not None:
            self.critic.requires_grad_(False)
        try:
            with self._autocast():
                adversarial = mu.new_zeros(())
                for i, D in enumerate(self.D_forwards):
                    if self.v1:
                        loss, terms = stackgan1.generator_loss(self.discriminators[i], fakes[i], mu)
                    else:  # AttnGAN's D judges the fake with the sentence embedding, StackGAN++'s with mu
                        loss, terms = generator_adversarial_loss(D(fakes[i], embedding if self.attngan else mu),
                                                                 t.uncond_coef, t.gan_loss)
                    adversarial = adversarial + loss
                    stats.update({f"G{i}/{k}": v for k, v in terms.items()})
                kl = kl_loss(mu.float(), logvar.float())
                color = color_consistency_loss([f.float() for f in fakes]) if t.color_coef > 0 else kl.new_zeros(())
                total = adversarial + t.kl_coef * kl + t.color_coef * color
            stats.update({"G/adversarial": adversarial.detach(), "KL": kl.detach(), "color": color.detach()})
            terms = {"adversarial": adversarial, "KL": kl, "color": color}
            if pairs:
                # MSGAN (Mao et al. 2019) StackGAN++ trainer: on the last branch, eps 1e-5.
                spread = (twins[-1] - fakes[-1][:pairs]).abs().mean().float() / (z[batch:] - z[:pairs]).abs().mean()
                seeking = 1.0 / (spread + 1e-5)
                total = total + t.ms_coef * seeking
                terms["mode_seeking"] = seeking
                stats["mode_seeking"] = seeking.detach()
            if self.critic is not None:
                with self._autocast():
                    regions = self.damsm.images(fakes[-1].float())[0]
                    feature_d, _ = generator_adversarial_loss(self.critic(regions, text.sentence), t.uncond_coef,
                                                              t.gan_loss)
                total = total + t.feature_d_coef * feature_d
                terms["feature_d"] = feature_d
                stats["G/feature_d"] = feature_d.detach()
            if t.damsm_coef > 0:
                damsm, damsm_terms = self._damsm_loss(fakes if t.damsm_branches == "all" else fakes[-1:], text)
                total = total + t.damsm_coef * damsm
                terms.update({f"DAMSM/{k}": v for k, v in damsm_terms.items()})
                stats.update({f"DAMSM/{k}": v for k, v in damsm_terms.items()})
            self._update(total, self.opt_G, self.scalers[-1], self.G_params, "G", terms)
            stats["G/total"] = total.detach()
        finally:
            self.discriminators.requires_grad_(True)
            if self.critic is not None:
                self.critic.requires_grad_(True)
        self._update_ema()
        return stats

    def _critic_step(self, real: Tensor, wrong: Tensor, fake: Tensor, text: CaptionFeatures) -> dict[str, Tensor]:
        """One update of the feature discriminator (``train.feature_d_coef``) on the last branch's real,
        wrong and (detached) fake images, each with the caption's DAMSM sentence embedding."""
        assert self.critic is not None and self.damsm is not None
        t = self.cfg.train
        self.opt_critic.zero_grad(set_to_none=True)
        with torch.no_grad():  # the encoder is frozen: only the head learns
            regions = [self.damsm.images(images.float())[0] for images in (real, wrong, fake)]
        with self._autocast():
            outs = [self.critic(r, text.sentence) for r in regions]
            loss, terms = discriminator_loss(*outs, t.uncond_coef, t.gan_loss)
        self._update(loss, self.opt_critic, self.critic_scaler, list(self.critic.parameters()), "feature D", terms)
        return {**{f"F/{k}": v for k, v in terms.items()}, "F/total": loss.detach()}

    def _damsm_loss(self, branches: list[Tensor], text: CaptionFeatures) -> tuple[Tensor, dict[str, Tensor]]:
        """The DAMSM generator term (unweighted) in float32, the mean over the given branches' images
        (official ``generator_loss`` scores only ``fake_imgs[-1]``: ``train.damsm_branches = "last"``)."""
        gammas = (self.cfg.text.gamma1, self.cfg.text.gamma2, self.cfg.text.gamma3)
        negatives = self._swap_negatives(text) if self.cfg.train.damsm_swap_negatives else None
        results = []
        for images in branches:
            images = images.float()
            if self.cfg.train.damsm_augment:
                images = self._random_views(images)
            regions, image_global = self.damsm.images(images)
            results.append(damsm_loss(regions, image_global, text.words, text.sentence, text.lengths,
                                      text.class_ids, gammas, negatives))
        if len(results) == 1:
            return results[0]
        terms = {k: torch.stack([r[1][k] for r in results]).mean() for k in results[0][1]}
        return torch.stack([r[0] for r in results]).mean(), terms

    def _random_views(self, images: Tensor) -> Tensor:
        """A random view of each image (``train.damsm_augment``): zoom in 0.8-1, shift within the frame,
        flip half of them; bilinear and differentiable, borders reflected."""
        u = torch.rand(images.shape[0], 4, generator=self.swap_rng).to(images)
        scale = 1 - 0.2 * u[:, 0]
        room = 1 - scale  # normalised coordinates: the view stays inside the frame
        flip = torch.where(u[:, 3] < 0.5, -1.0, 1.0).to(images)
        zero = torch.zeros_like(scale)
        theta = torch.stack([torch.stack([scale * flip, zero, (2 * u[:, 1] - 1) * room], 1),
                             torch.stack([zero, scale, (2 * u[:, 2] - 1) * room], 1)], 1)
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

    def _swap_negatives(self, text: CaptionFeatures) -> SwapNegatives:
        """The DAMSM features of K colour-swapped copies of every caption (``train.damsm_swap_negatives``)."""
        if text.ids is None:
            raise TrainingError("train.damsm_swap_negatives needs the captions' token ids (FrozenDAMSM.captions)")
        k = self.cfg.train.damsm_swap_negatives
        swapped, valid = swap_colour_words(text.ids, text.lengths, self.colours, k, self.swap_rng)
        (B, T), device = text.ids.shape, self.device
        lengths = text.lengths.repeat_interleave(k)
        features = self.damsm.ids(swapped.view(B * k, T).to(device), lengths.to(device),
                                  text.class_ids.repeat_interleave(k))
        return SwapNegatives(features.words.view(B, k, *features.words.shape[1:]), features.sentence.view(B, k, -1),
                             lengths.view(B, k).to(device), valid.to(device))

    @torch.no_grad()
    def _update_ema(self) -> None:
        ema_params, params = list(self.G_ema.parameters()), list(self.G.parameters())
        weight = 1.0 - ema_decay(self.cfg.train, self.step)
        if self.cfg.train.fused_optimizer:
            torch._foreach_lerp_(ema_params, params, weight)
        else:
            for p_ema, p in zip(ema_params, params, strict=True):
                p_ema.lerp_(p, weight)
        for ema_buffer, buffer in zip(self.G_ema.buffers(), self.G.buffers(), strict=True):
            ema_buffer.copy_(buffer)
        every = self.cfg.train.ema_to_g_every
        if every and (self.step + 1) % every == 0:
            # Official quirk: save_model() loads the averaged weights into the live netG at every snapshot.
            for p, p_ema in zip(params, ema_params, strict=True):
                p.copy_(p_ema)

    # ------------------------------------------------------------------------------ checkpoints
    def state_tensors(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """Everything needed to resume, as tensors plus JSON-able metadata."""
        tensors: dict[str, Tensor] = {}
        for prefix, module in self._modules_by_prefix():
            tensors.update({f"{prefix}.{k}": v for k, v in module.state_dict().items()})
        optimizers = self._optimizers()
        groups = {}
        for name, opt in optimizers.items():
            state = opt.state_dict()
            for index, entry in state["state"].items():
                tensors.update({f"{name}.{index}.{k}": torch.as_tensor(v) for k, v in entry.items()})
            groups[name] = state["param_groups"]
        tensors["rng.torch"] = torch.get_rng_state()
        if torch.cuda.is_available() and self.device.type == "cuda":
            tensors["rng.cuda"] = torch.cuda.get_rng_state(self.device)
        noise_state = self.noise.get_state()
        for rank, state in enumerate(gather_tensors(noise_state.to(self._gather_device()), self.ctx)):
            tensors[f"rng.noise.{rank}"] = state.cpu()
        if self.swap_rng is not None:  # only with the DAMSM options that draw from it: others keep their keys
            for rank, state in enumerate(gather_tensors(self.swap_rng.get_state().to(self._gather_device()), self.ctx)):
                tensors[f"rng.swap.{rank}"] = state.cpu()
        np_state = np.random.get_state()
        tensors["rng.numpy"] = torch.from_numpy(np_state[1].astype(np.int64))
        py_version, py_state, py_gauss = random.getstate()
        meta = {
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "world_size": self.ctx.world_size,
            "config": self.cfg.model_dump(mode="json"),
            "param_groups": groups,
            "rng_numpy": [np_state[0], int(np_state[2]), int(np_state[3]), float(np_state[4])],
            "rng_python": [py_version, list(py_state), py_gauss],
        }
        return tensors, meta

    def _gather_device(self) -> torch.device:
        return self.device if self.device.type == "cuda" else torch.device("cpu")

    def save(self) -> Path | None:
        tensors, meta = self.state_tensors()  # collective under torchrun: every rank takes part
        if not self.ctx.is_main:
            return None
        return save_checkpoint(self.run.checkpoints, self.step, tensors, meta, self.cfg.train.keep_checkpoints)

    def load_state(self, checkpoint: Checkpoint) -> None:
        """Restore everything from a checkpoint; raises CheckpointError if it does not fit this model."""
        self.load_weights(checkpoint)
        tensors, meta = checkpoint.tensors, checkpoint.meta
        torch.set_rng_state(tensors["rng.torch"])
        if "rng.cuda" in tensors and self.device.type == "cuda":
            torch.cuda.set_rng_state(tensors["rng.cuda"], self.device)
        noise = tensors.get(f"rng.noise.{self.ctx.rank}")
        swap = tensors.get(f"rng.swap.{self.ctx.rank}")
        if noise is not None and meta.get("world_size", 1) == self.ctx.world_size:
            self.noise.set_state(noise)
            if swap is not None and self.swap_rng is not None:
                self.swap_rng.set_state(swap)
        name, pos, has_gauss, cached = meta["rng_numpy"]
        np.random.set_state((name, tensors["rng.numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))
        version, state_list, gauss = meta["rng_python"]
        random.setstate((version, tuple(state_list), gauss))
        self.step, self.epoch, self.batch_in_epoch = checkpoint.step, int(meta["epoch"]), int(meta["batch_in_epoch"])

    def check_compatible(self, checkpoint: Checkpoint) -> None:
        """CheckpointError unless ``checkpoint`` was trained with this model architecture."""
        self._check_architecture(checkpoint.meta.get("config", {}).get("model"), f"checkpoint {checkpoint.path}")

    def _check_architecture(self, stored: Any, what: str, current: dict[str, Any] | None = None) -> None:
        current = current if current is not None else self.cfg.model.model_dump(mode="json")
        if isinstance(stored, dict):
            # A checkpoint written before a model field existed stores no value for it: the field's
            # default (the architecture it was trained with) fills it in before comparing.
            with contextlib.suppress(ValueError):
                stored = ModelConfig.model_validate(stored).model_dump(mode="json")
        if stored != current:
            raise CheckpointError(f"{what} was trained with a different architecture ({_diff(stored, current)})")

    def start_from(self, weights: InitialWeights) -> None:
        """Load G, G_ema and (when the source has them) the discriminators of another model; the
        optimisers, step and random streams start fresh (``train.init_from``: fine-tuning). A different
        discriminator width (``model.ndf``) is allowed: the discriminators then start fresh. More
        branches (``model.stage_num``) than the source are allowed too (growing the tree): the source's
        branches are loaded and the new refine stages, image heads and discriminators start fresh."""
        stored, ndf, stages = weights.config.model.model_dump(mode="json"), self.cfg.model.ndf, self.cfg.model.stage_num
        grown = stored["stage_num"] < stages and self.cfg.model.arch == "stackgan2"  # v1 has its own Stage II
        normalised = {**stored, "ndf": ndf, "stage_num": stages if grown else stored["stage_num"]}
        self._check_architecture(normalised, f"--init-from {weights.source}")  # ndf shapes only D
        states = dict(weights.states)
        if stored["ndf"] != ndf and states.pop("D", None) is not None:
            log.info("--init-from %s: its discriminators have ndf %s, this run %s; they start fresh",
                     weights.source, stored["ndf"], ndf)
        if grown:
            log.info("--init-from %s: growing the tree from %d to %d branches; the new ones start fresh",
                     weights.source, stored["stage_num"], stages)
        modules = {"G": self.G, "G_ema": self.G_ema, "D": self.discriminators}
        try:
            for name, state in states.items():
                missing, unexpected = modules[name].load_state_dict(state, strict=not grown)
                new = [k for k in missing if _branch_of(name, k) < stored["stage_num"]]
                if unexpected or new:
                    raise RuntimeError(f"unexpected keys {unexpected[:3]}, missing keys {new[:3]}")
        except RuntimeError as exc:
            raise CheckpointError(f"--init-from {weights.source} does not fit this model: {str(exc).splitlines()[0]}") from None

    def start_stage2(self, weights: InitialWeights) -> None:
        """StackGAN v1 Stage II: load the Stage-I generator of ``weights`` (its G_ema, which the v1
        presets keep equal to G) into the frozen Stage-I G inside G and G_ema. A run of another
        family, stage, preset, architecture or text embedding is refused with one line."""
        source, stored, m = weights.source, weights.config, self.cfg.model
        if stored.model.arch != "stackgan1" or stored.model.v1_stage != 1:
            raise CheckpointError(f"--stage1 {source} is not a StackGAN v1 Stage-I model (arch {stored.model.arch}, "
                                  f"v1_stage {stored.model.v1_stage})")
        if stored.preset != self.cfg.preset:
            raise CheckpointError(f"--stage1 {source} was trained with preset {stored.preset}, this run uses {self.cfg.preset}")
        # The discriminator width and Stage II's residual blocks do not shape the Stage-I generator.
        ignored = {"v1_stage": 1, "ndf": m.ndf, "r_num": m.r_num}
        current = {**m.model_dump(mode="json"), **ignored}
        self._check_architecture({**stored.model.model_dump(mode="json"), **ignored}, f"--stage1 {source}", current)
        if stored.train.embeddings != self.cfg.train.embeddings:
            raise CheckpointError(f"--stage1 {source} was trained on {stored.train.embeddings} embeddings, "
                                  f"this run uses {self.cfg.train.embeddings}")
        for G in (self.G, self.G_ema):
            G.stage1.load_state_dict(weights.states["G_ema"])

    def load_weights(self, checkpoint: Checkpoint) -> None:
        """Restore G, G_ema, the discriminators and the optimisers (not RNG or position)."""
        tensors, meta = checkpoint.tensors, checkpoint.meta
        self.check_compatible(checkpoint)
        try:
            for prefix, module in self._modules_by_prefix():
                module.load_state_dict(_section(tensors, prefix))
            for name, opt in self._optimizers().items():
                state: dict[int, dict[str, Tensor]] = {}
                for key, value in tensors.items():
                    if key.startswith(name + "."):
                        _, index, field = key.split(".")
                        state.setdefault(int(index), {})[field] = value
                opt.load_state_dict({"state": state, "param_groups": meta["param_groups"][name]})
                _match_param_layout(opt)
                self._apply_optimizer_settings(name, opt)
        except (RuntimeError, KeyError, ValueError) as exc:
            raise CheckpointError(f"checkpoint {checkpoint.path} does not fit this model: {str(exc).splitlines()[0]}") from None

    def _modules_by_prefix(self) -> list[tuple[str, torch.nn.Module]]:
        """The trained modules under their checkpoint prefixes (the feature D only when it is on)."""
        modules: list[tuple[str, torch.nn.Module]] = [("G", self.G), ("G_ema", self.G_ema), ("D", self.discriminators)]
        return modules + ([("F", self.critic)] if self.critic is not None else [])

    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        critic = {"opt_F": self.opt_critic} if self.critic is not None else {}
        return {"opt_G": self.opt_G, **{f"opt_D{i}": o for i, o in enumerate(self.opts_D)}, **critic}

    def _lr(self, name: str) -> float:
        """The config's rate for optimiser ``name`` at the current epoch: halved at every epoch that is a
        positive multiple of ``lr_decay_every`` (official v1 ``trainer.py``: ``epoch % LR_DECAY_EPOCH == 0``)."""
        t = self.cfg.train
        base = t.lr_g if name == "opt_G" else t.lr_d
        return base * 0.5 ** (self.epoch // t.lr_decay_every) if t.lr_decay_every else base

    def _apply_optimizer_settings(self, name: str, optimizer: torch.optim.Optimizer) -> None:
        """The config's learning rate (at this epoch of its schedule) and betas win over the checkpoint's
        param_groups, so that ``--resume --lr-g 5e-5`` changes the rate (exact resume is unaffected when
        they are equal)."""
        t = self.cfg.train
        lr, betas = self._lr(name), (t.beta1, t.beta2)
        for group in optimizer.param_groups:
            if group["lr"] != lr:
                log.info("%s: learning rate %g -> %g (from the config)", name, group["lr"], lr)
            if tuple(group["betas"]) != betas:
                log.info("%s: Adam betas %s -> %s (from the config)", name, tuple(group["betas"]), betas)
            group["lr"], group["betas"] = lr, betas

    # --------------------------------------------------------------------------------- the loop
    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        """SIGINT/SIGTERM finish the current step, save a checkpoint and stop (see ``fit``)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, _frame: object) -> None:
            self._stop_signal = signum

        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)

    def _to_device(self, batch: dict[str, Any]) -> tuple[list[Tensor], list[Tensor], Tensor, CaptionFeatures | None]:
        def move(t: Tensor) -> Tensor:
            return t.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)

        embedding = batch["embedding"].to(self.device, non_blocking=True).float()
        text = None
        if self.needs_caption_features and self.damsm is not None:
            # Without classes (a folder, COCO) AttnGAN uses one class per image, so every other image
            # in the batch is a negative; one shared class would mask them all.
            text = self.damsm.captions(batch["caption"], batch["index" if self.one_class else "class_id"])
        wrong = [move(x) for x in batch["wrong_images"]] if "wrong_images" in batch else []  # v1, AttnGAN: none
        return [move(x) for x in batch["images"]], wrong, embedding, text

    def epoch_length(self, dataset_size: int) -> int:
        """Iterations per epoch; StackGAN2Error if one batch needs more images than there are."""
        t = self.cfg.train
        per_epoch = steps_per_epoch(dataset_size, t.batch_size, self.ctx.world_size)
        if per_epoch == 0:
            raise StackGAN2Error(
                f"batch size {t.batch_size} is larger than the {dataset_size} training images"
                + (f" per process ({self.ctx.world_size} processes)" if self.ctx.enabled else "")
            )
        return per_epoch

    def fit(
        self,
        dataset,
        sample_embeddings: Tensor | None = None,
        sample_captions: list[str] | None = None,
        resume_from: Checkpoint | None = None,
    ) -> TrainResult:
        """Train until ``train.epochs`` (or ``train.max_steps``), continuing from ``resume_from`` if given
        (``run_training`` passes the run's latest valid checkpoint)."""
        t = self.cfg.train
        per_epoch = self.per_epoch = self.epoch_length(len(dataset))
        self.one_class = getattr(dataset, "num_classes", 2) < 2
        total_steps = min(t.max_steps or per_epoch * t.epochs, per_epoch * t.epochs)
        if resume_from is not None:
            self.load_state(resume_from)
            log.info("resuming from %s (step %d, epoch %d)", resume_from.path.name, self.step, self.epoch)
        if self.ctx.is_main:
            self.run.create()
            self.run.truncate_stats(self.step)
        last_checkpoint = resume_from.path if resume_from else None
        last_stats: dict[str, float] = {}
        # The models, data and imports are built: move those objects out of the garbage collector's
        # reach, so that a full collection during training (a ~0.3 s pause on one slow core, seen
        # landing inside the first checkpoint write) only walks what the loop itself allocates.
        gc.freeze()
        started = time.perf_counter()
        skipped_in_a_row, data_total = 0, 0.0
        loader_kwargs = {"num_workers": self.cfg.data.workers, "pin_memory": self.device.type == "cuda",
                         "worker_init_fn": _ignore_stop_signals if self.cfg.data.workers else None,
                         "collate_fn": _collate}
        self.G.train()
        self.discriminators.train()
        with self._signals():
            while self.step < total_steps:
                dataset.set_epoch(self.epoch)
                for name, opt in self._optimizers().items():
                    for group in opt.param_groups:
                        group["lr"] = self._lr(name)
                batches = EpochBatches(len(dataset), t.batch_size, t.seed, self.epoch, self.ctx, self.batch_in_epoch)
                loader = torch.utils.data.DataLoader(dataset, batch_sampler=batches, **loader_kwargs)
                tick = fetch = time.perf_counter()
                for batch in loader:
                    real, wrong, embedding, text = self._to_device(batch)
                    data_seconds = time.perf_counter() - fetch  # waiting for the loader + the copy to the device
                    data_total += data_seconds
                    try:
                        stats = self.train_step(real, wrong, embedding, text)
                        skipped_in_a_row = 0
                    except NonFiniteLoss as exc:
                        skipped_in_a_row += 1
                        stats = self._skip_step(exc, skipped_in_a_row)
                    self.step += 1
                    self.batch_in_epoch += 1
                    if self.batch_in_epoch == per_epoch:
                        self.epoch, self.batch_in_epoch = self.epoch + 1, 0
                    now = time.perf_counter()
                    seconds, tick = now - tick, now
                    if self.step % t.log_every == 0 or self.step == total_steps or "skipped" in stats:
                        last_stats = self._log(stats, seconds, data_seconds, embedding.shape[0] * self.ctx.world_size)
                    report(self.progress_fn, "train", self.step, total_steps, epoch=self.epoch,
                           D=sum(v for k, v in last_stats.items() if k.endswith("/total") and k.startswith("D")),
                           G=last_stats.get("G/total", float("nan")))
                    if self.step % t.checkpoint_every == 0 or self.step == total_steps:
                        last_checkpoint = self.save() or last_checkpoint
                    if self.batch_in_epoch == 0 and self.epoch % t.sample_every == 0 and sample_embeddings is not None:
                        self.save_samples(sample_embeddings, sample_captions or [], self.epoch)
                    if self._stop_signal is not None:
                        if self.step % t.checkpoint_every and self.step != total_steps:
                            last_checkpoint = self.save() or last_checkpoint
                        name = signal.Signals(self._stop_signal).name
                        raise TrainingInterrupted(f"{name} received: saved a checkpoint at step {self.step}; "
                                                  "run the same command with --resume to continue", self._stop_signal)
                    if self.step >= total_steps:
                        break
                    fetch = time.perf_counter()
        return TrainResult(self.run.root, self.step, self.epoch, last_checkpoint, last_stats,
                           time.perf_counter() - started, data_total)

    def _skip_step(self, exc: NonFiniteLoss, in_a_row: int, limit: int = 10) -> dict[str, Tensor]:
        """``on_nan=stop``: end training. ``skip``: drop this step and restore the last checkpoint's
        weights and optimiser state; the data position and noise stream move on."""
        stop = f"{exc}; training stopped, the last checkpoint is intact (try a lower learning rate or --on-nan skip)"
        if self.cfg.train.on_nan == "stop":
            raise TrainingError(stop) from None
        if in_a_row > limit:
            raise TrainingError(f"{exc}; {limit} steps in a row were non-finite, giving up") from None
        checkpoint = latest_checkpoint(self.run.checkpoints)
        if checkpoint is None:
            raise TrainingError(f"{exc}; no checkpoint to restore yet, training stopped") from None
        self.load_weights(checkpoint)
        log.warning("%s: step skipped, weights restored from %s", exc, checkpoint.path.name)
        return {"skipped": torch.tensor(1.0), "restored_from_step": torch.tensor(float(checkpoint.step))}

    def _log(self, stats: dict[str, Tensor], seconds: float, data_seconds: float, images: int) -> dict[str, float]:
        values = {k: float(v) for k, v in stats.items()}
        record = {
            "step": self.step,
            "epoch": round(self.epoch + self.batch_in_epoch / self.per_epoch, 4),
            **values,
            "lr_g": self.opt_G.param_groups[0]["lr"],
            "lr_d": self.opts_D[0].param_groups[0]["lr"],
            "sec_per_step": seconds,
            "data_sec": data_seconds,
            "images_per_s": images / seconds if seconds > 0 else 0.0,
            "time": time.time(),
        }
        if self.ctx.is_main:
            self.run.append_stats(record)
        return values

    @torch.no_grad()
    def save_samples(self, embeddings: Tensor, captions: list[str], epoch: int) -> Path | None:
        """``samples/epoch-XXXX.png``: one row per fixed caption, every branch (upscaled) side by side."""
        if not self.ctx.is_main:
            return None
        from stackgan2.imaging import branch_strip_grid

        generator = torch.Generator(device=self.device).manual_seed(self.cfg.train.seed + 12345)
        count = embeddings.shape[0]
        z = torch.randn(count, self.cfg.model.z_dim, device=self.device, generator=generator)
        eps = torch.zeros(count, self.cfg.model.eps_dim, device=self.device)
        text = None
        if self.cfg.model.attends_to_words:
            text = self.damsm.captions(captions, torch.zeros(count, dtype=torch.long))
        images, _, _ = self.G_ema(z, embeddings.to(self.device).float(), eps, **self._generator_inputs(text))
        path = self.run.sample_grid(epoch)
        branch_strip_grid([im.float().cpu() for im in images], path)
        return path


@dataclass(frozen=True)
class InitialWeights:
    """Weights to start a run from (see ``load_initial_weights``)."""

    source: Path
    config: ExperimentConfig
    states: dict[str, dict[str, Tensor]]   # "G", "G_ema" and, from training checkpoints, "D"
    text_encoder: Path | None              # the text encoder the weights were trained with (imported: none)


def load_initial_weights(source: Path, flag: str = "--init-from") -> InitialWeights:
    """A pipeline directory (its G_ema starts both G and G_ema; the discriminators start fresh), a run
    directory (its newest valid checkpoint) or a checkpoint file (G, G_ema and the discriminators).
    ``flag`` names the option in error messages."""
    from stackgan2.pipeline import TEXT_ENCODER_DIR, Text2ImagePipeline, _validate_config

    source = Path(source)
    if source.is_file() or (source / "checkpoints").is_dir():
        from stackgan2.training.checkpoint import load_checkpoint

        checkpoint = load_checkpoint(source) if source.is_file() else latest_checkpoint(source / "checkpoints")
        if checkpoint is None:
            raise CheckpointError(f"{flag} {source}: the run has no valid checkpoint")
        config = _validate_config(checkpoint.meta.get("config"), checkpoint.path)  # CheckpointError if invalid
        states = {prefix: _section(checkpoint.tensors, prefix) for prefix in ("G", "G_ema", "D")}
        run_root = source.parent.parent if source.is_file() else source
        return InitialWeights(source, config, states, run_root / TEXT_ENCODER_DIR)
    pipe = Text2ImagePipeline.from_pretrained(source)  # CheckpointError for anything that is not a model
    state = pipe.generator.state_dict()
    text_dir = source / TEXT_ENCODER_DIR if pipe.text_encoder is not None else None
    return InitialWeights(source, pipe.config, {"G": state, "G_ema": state}, text_dir)


def _branch_of(module: str, key: str) -> int:
    """The branch a state-dict key belongs to (0 = base resolution): refine stage i feeds branch i + 1."""
    parts = key.split(".")
    if module == "D":
        return int(parts[0])
    if parts[0] == "refine_stages":
        return int(parts[1]) + 1
    if parts[0] == "to_images":
        return int(parts[1])
    return 0


def _section(tensors: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """The state dict stored under ``prefix.`` in a checkpoint ("G", "G_ema", "D")."""
    return {k[len(prefix) + 1 :]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def _match_param_layout(optimizer: torch.optim.Optimizer) -> None:
    """Give loaded moment buffers their parameter's strides (channels_last): the fused kernels
    walk parameters and moments as flat memory, so the layouts must agree."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            for key, value in optimizer.state.get(p, {}).items():
                if isinstance(value, Tensor) and value.shape == p.shape:
                    optimizer.state[p][key] = torch.empty_like(p).copy_(value)


def _diff(stored: Any, current: dict[str, Any]) -> str:
    if not isinstance(stored, dict):
        return "no model config stored"
    changed = [f"{k}: {stored.get(k)} vs {v}" for k, v in current.items() if stored.get(k) != v]
    return "; ".join(changed) or "unknown difference"


def copy_text_encoder(source: Path, run: RunDir) -> None:
    """Put the text encoder the run uses into the run directory, so the run dir is self-contained."""
    if Path(source).resolve() == run.text_encoder.resolve():
        return
    tmp = run.root / ".text_encoder.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp)
    shutil.rmtree(run.text_encoder, ignore_errors=True)
    tmp.rename(run.text_encoder)
