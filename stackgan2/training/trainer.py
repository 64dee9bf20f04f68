"""The one training loop, for every family (``model.arch``): StackGAN++ (official hanzhanggit/StackGAN-v2
``trainer.py`` step order), AttnGAN (taoxugit/AttnGAN) and StackGAN v1 (hanzhanggit/StackGAN-Pytorch:
Stage I, or Stage II on a frozen Stage-I G, left out of the optimiser).

Per iteration (``_train_step``): one generator forward; for every trained branch a discriminator update
with the family's D loss plus the terms' D losses (``training.objectives``); the terms' own updates (the
feature D); one generator update through the freshly updated, frozen discriminators with the family's
adversarial loss plus every active term times its weight; then the G_ema update (``training.schedules``). The
loop reports through ``progress_fn``; ``train.lr_decay_every`` halves both rates every N epochs (v1).

Exact resume: all randomness of an iteration comes from (a) the dataset, which derives every item's
randomness from (seed, epoch, index), (b) the epoch's permutation, derived from (seed, epoch), and
(c) the trainer's own noise generator, whose state is checkpointed. Resuming at (epoch, batch) thus
replays the same stream, bit for bit on the CPU.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import logging
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from stackgan2.config import ExperimentConfig
from stackgan2.device import resolve_device
from stackgan2.errors import CheckpointError, StackGAN2Error, TrainingError, TrainingInterrupted
from stackgan2.models import FAMILIES, build_discriminators, build_generator, init_weights
from stackgan2.progress import ProgressFn, report
from stackgan2.text.features import CaptionFeatures, FrozenDAMSM
from stackgan2.training.checkpoint import (
    Checkpoint,
    host_rng_state,
    latest_checkpoint,
    load_optimizer,
    optimizer_tensors,
    restore_host_rng,
    save_checkpoint,
)
from stackgan2.training.distributed import (
    DistContext,
    average_gradients,
    broadcast_module,
    gather_tensors,
)
from stackgan2.training.loop import EpochBatches, StopSignals, collate, ignore_stop_signals, steps_per_epoch
from stackgan2.training.objectives import OBJECTIVES, Step, build_terms
from stackgan2.training.rundir import RunDir
from stackgan2.training.schedules import apply_optimizer_settings, learning_rate, update_ema
from stackgan2.training.tensorboard import TensorBoardLog, tensorboard_log
from stackgan2.training.weights import (
    InitialWeights,
    check_architecture,
    checkpoint_section,
    freeze_stages,
    match_param_layout,
    start_from,
    start_stage2,
)

log = logging.getLogger("stackgan2.training")

# Architecture-defining fields: a resumed run must keep them.
FIXED_ON_RESUME = ("model", "data.dataset", "data.data_dir", "data.toy_train_size", "data.toy_seed", "data.toy_framing",
                   "text", "train.embeddings")


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
        self.branches = m.trained_branches  # discriminator k judges generator branch branches[k]
        self.G = build_generator(m).split_condition(t.split_condition_conv).to(self.device)
        self.discriminators = build_discriminators(m).to(self.device)
        scheme = FAMILIES[m.arch].init
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
        # Only what requires a gradient: v1 Stage II's frozen Stage-I G (official) and --g-frozen-stages' stages stay out.
        freeze_stages(self.G, t.g_frozen_stages)
        self.G_params = [p for p in self.G.parameters() if p.requires_grad]
        self.opt_G = torch.optim.Adam(self.G_params, lr=t.lr_g, betas=(t.beta1, t.beta2), **optim)
        use_scaler = self.amp_dtype == torch.float16
        # The family's losses and the levers' terms (the feature D brings its own module and optimiser; FastGAN's
        # decoders are trained with their D, by its optimiser, as parameters of D's update).
        self.objective = OBJECTIVES[m.arch](t)
        self.terms = build_terms(cfg, self.device, optim, torch.amp.GradScaler("cuda", enabled=use_scaler),
                                 self.discriminators)
        self.D_params = [[*D.parameters(), *(p for term in self.terms for p in term.discriminator_parameters(D))]
                         for D in self.discriminators]
        self.opts_D = [torch.optim.Adam(params, lr=t.lr_d, betas=(t.beta1, t.beta2), **optim) for params in self.D_params]
        self.term_modules = {name: mod for term in self.terms for name, mod in term.modules().items()}
        for module in self.term_modules.values():
            broadcast_module(module, self.ctx)
        self.G_forward, self.D_forwards = self.G, list(self.discriminators)
        self._compile_pending = t.compile
        if t.compile:
            self.G_forward = torch.compile(self.G)
            self.D_forwards = [torch.compile(D) for D in self.discriminators]
        self.scalers = [torch.amp.GradScaler("cuda", enabled=use_scaler) for _ in range(len(self.opts_D) + 1)]
        self.noise = torch.Generator(device=self.device).manual_seed(t.seed * 7919 + self.ctx.rank)
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self._stop = StopSignals()
        self.board: TensorBoardLog | None = None  # train.tensorboard, open while fit runs
        self.per_epoch = 1
        self.damsm: FrozenDAMSM | None = None
        self.one_class = False  # the dataset has one class: each image is its own class for the DAMSM loss

    @property
    def needs_caption_features(self) -> bool:
        """Whether every step needs the DAMSM features of its captions (``attach_text_encoder``)."""
        return self.cfg.model.attends_to_words or any(term.needs_captions for term in self.terms)

    def _generator_inputs(self, text: CaptionFeatures | None) -> dict[str, Tensor]:
        """The extra inputs of a generator that attends to words (AttnGAN, ``g_word_attention``): the
        caption's word features and attention mask."""
        return {"words": text.words, "mask": text.mask} if self.cfg.model.attends_to_words and text is not None else {}

    def attach_text_encoder(self, encoder: Any) -> None:
        """The pretrained ``PromptEncoder`` whose frozen encoders give word features and the DAMSM loss."""
        damsm = FrozenDAMSM(encoder, self.device)
        for term in self.terms:
            if term.needs_image_encoder and not damsm.has_image_encoder:
                raise CheckpointError(f"{term.field} > 0 needs a text encoder saved with its DAMSM image encoder "
                                      "(as `stackgan2 pretrain-text` writes it)")
        self.damsm = damsm
        for term in self.terms:  # before any checkpoint is loaded: a term may copy the encoders (the trained DAMSM)
            term.attach(damsm)

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
        """One iteration of the configured family and terms; returns every loss term (detached tensors).

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
        return {"modules": {prefix: module.state_dict() for prefix, module in self._modules_by_prefix()},
                "optimizers": {name: opt.state_dict() for name, opt in self._optimizers().items()},
                "noise": self.noise.get_state()}

    def _restore_state(self, state: dict[str, Any]) -> None:
        for prefix, module in self._modules_by_prefix():
            module.load_state_dict(state["modules"][prefix])
        for name, opt in self._optimizers().items():
            opt.load_state_dict(state["optimizers"][name])
            match_param_layout(opt)
        self.noise.set_state(state["noise"])

    def _train_step(self, real: list[Tensor], wrong: list[Tensor], embedding: Tensor,
                    text: CaptionFeatures | None) -> dict[str, Tensor]:
        """G forward; per discriminator: the family's D loss plus the terms' D losses, update; the terms'
        own updates (feature D); G: the family's adversarial loss plus the weighted terms, update; EMA."""
        if self.needs_caption_features and (text is None or self.damsm is None):
            raise TrainingError("train.damsm_coef > 0, a feature or word D, or a generator that attends to words: the step "
                                "needs the captions' DAMSM features and the attached text encoder "
                                "(Trainer.attach_text_encoder)")
        step = self._generate(real, wrong, embedding, text)
        stats: dict[str, Tensor] = {}
        for i, (D, D_forward, opt, scaler, params) in enumerate(
                zip(self.discriminators, self.D_forwards, self.opts_D, self.scalers, self.D_params, strict=False)):
            opt.zero_grad(set_to_none=True)
            with self._autocast():
                loss, terms = self.objective.discriminator_loss(D, D_forward, real[i], wrong[i] if wrong else None,
                                                                step.fakes[i], step.condition)
                for extra, extra_terms in filter(None, (t.discriminator_loss(D, D_forward, real[i], step.condition)
                                                        for t in self.terms)):
                    loss = loss + extra
                    terms.update(extra_terms)
            self._update(loss, opt, scaler, params, f"D{i} ({D.resolution} px)", terms)
            stats.update({**{f"D{i}/{k}": v for k, v in terms.items()}, f"D{i}/total": loss.detach()})
        for term in self.terms:
            stats.update(term.discriminator_update(step, self._update))
        stats.update(self._generator_update(step, embedding))
        update_ema(self.G_ema, self.G, self.cfg.train, self.step)
        return stats

    def _generate(self, real: list[Tensor], wrong: list[Tensor], embedding: Tensor,
                  text: CaptionFeatures | None) -> Step:
        """One G forward over the batch (and, with mode seeking, half a batch of twins with new noise)."""
        batch = embedding.shape[0]
        pairs = sum(term.extra_rows(batch) for term in self.terms)
        z = torch.randn(batch + pairs, self.cfg.model.z_dim, device=self.device, generator=self.noise)
        eps = torch.randn(batch + pairs, self.cfg.model.eps_dim, device=self.device, generator=self.noise)
        with self._autocast():
            condition_in = torch.cat([embedding, embedding[:pairs]]) if pairs else embedding
            words = {k: torch.cat([v, v[:pairs]]) for k, v in self._generator_inputs(text).items()}
            fakes, mu, logvar = self.G_forward(z, condition_in, eps, **words)
        fakes = [fakes[b] for b in self.branches]
        twins = [f[batch:] for f in fakes] if pairs else []
        if pairs:
            fakes, mu, logvar = [f[:batch] for f in fakes], mu[:batch], logvar[:batch]
        return Step(real, wrong, fakes, mu, logvar, self.objective.condition(mu, embedding), text, self.damsm,
                    self._autocast, z, twins)

    def _generator_update(self, step: Step, embedding: Tensor) -> dict[str, Tensor]:
        """G's adversarial loss through every (frozen) discriminator plus each term times its weight."""
        self.opt_G.zero_grad(set_to_none=True)
        frozen = [self.discriminators, *self.term_modules.values()]
        for module in frozen:
            module.requires_grad_(False)
        stats: dict[str, Tensor] = {}
        try:
            with self._autocast():
                total = step.mu.new_zeros(())
                for i, (D, D_forward) in enumerate(zip(self.discriminators, self.D_forwards, strict=True)):
                    loss, terms = self.objective.generator_loss(D, D_forward, step.fakes[i], step.mu, embedding)
                    total = total + loss
                    stats.update({f"G{i}/{k}": v for k, v in terms.items()})
            stats["G/adversarial"], named = total.detach(), {"adversarial": total}
            for term, (loss, terms) in ((t, r) for t in self.terms if (r := t.generator_loss(step)) is not None):
                total = total + term.coef * loss
                named.update(terms)
                stats.update(terms)
            self._update(total, self.opt_G, self.scalers[-1], self.G_params, "G", named)
            stats["G/total"] = total.detach()
        finally:
            for module in frozen:
                module.requires_grad_(True)
        return stats

    # ------------------------------------------------------------------------------ checkpoints
    def state_tensors(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """Everything needed to resume, as tensors plus JSON-able metadata."""
        tensors: dict[str, Tensor] = {}
        for prefix, module in self._modules_by_prefix():
            tensors.update({f"{prefix}.{k}": v for k, v in module.state_dict().items()})
        optimizer_state, groups = optimizer_tensors(self._optimizers())
        rng, rng_meta = host_rng_state(self.device)
        tensors.update({**optimizer_state, **rng})
        gather_device = self.device if self.device.type == "cuda" else torch.device("cpu")
        for rank, state in enumerate(gather_tensors(self.noise.get_state().to(gather_device), self.ctx)):
            tensors[f"rng.noise.{rank}"] = state.cpu()
        meta = {"epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch, "world_size": self.ctx.world_size,
                "config": self.cfg.model_dump(mode="json"), "param_groups": groups, **rng_meta}
        return tensors, meta

    def save(self) -> Path | None:
        tensors, meta = self.state_tensors()  # collective under torchrun: every rank takes part
        if not self.ctx.is_main:
            return None
        return save_checkpoint(self.run.checkpoints, self.step, tensors, meta, self.cfg.train.keep_checkpoints)

    def load_state(self, checkpoint: Checkpoint) -> None:
        """Restore everything from a checkpoint; raises CheckpointError if it does not fit this model."""
        self.load_weights(checkpoint)
        tensors, meta = checkpoint.tensors, checkpoint.meta
        restore_host_rng(tensors, meta, self.device)
        noise = tensors.get(f"rng.noise.{self.ctx.rank}")
        if noise is not None and meta.get("world_size", 1) == self.ctx.world_size:
            self.noise.set_state(noise)
        self.step, self.epoch, self.batch_in_epoch = checkpoint.step, int(meta["epoch"]), int(meta["batch_in_epoch"])

    def check_compatible(self, checkpoint: Checkpoint) -> None:
        """CheckpointError unless ``checkpoint`` was trained with this model architecture."""
        self._check_architecture(checkpoint.meta.get("config", {}).get("model"), f"checkpoint {checkpoint.path}")

    def _check_architecture(self, stored: Any, what: str) -> None:
        check_architecture(stored, self.cfg.model.model_dump(mode="json"), what)

    def start_from(self, weights: InitialWeights) -> None:
        """``train.init_from``: G, G_ema and (when they fit) the discriminators of another model (``weights.start_from``)."""
        start_from(weights, self.cfg, {"G": self.G, "G_ema": self.G_ema, "D": self.discriminators})

    def start_stage2(self, weights: InitialWeights) -> None:
        """StackGAN v1 Stage II on the frozen Stage-I generator of ``weights`` (``weights.start_stage2``)."""
        start_stage2(weights, self.cfg, (self.G, self.G_ema))

    def load_weights(self, checkpoint: Checkpoint) -> None:
        """Restore G, G_ema, the discriminators and the optimisers (not RNG or position)."""
        tensors, meta = checkpoint.tensors, checkpoint.meta
        self.check_compatible(checkpoint)
        try:
            for prefix, module in self._modules_by_prefix():
                module.load_state_dict(checkpoint_section(tensors, prefix))
            for name, opt in self._optimizers().items():
                load_optimizer(opt, name, tensors, meta["param_groups"][name])
                match_param_layout(opt)
                apply_optimizer_settings(self.cfg.train, name, opt, self.epoch)
        except (RuntimeError, KeyError, ValueError) as exc:
            raise CheckpointError(f"checkpoint {checkpoint.path} does not fit this model: {str(exc).splitlines()[0]}") from None

    def _modules_by_prefix(self) -> list[tuple[str, torch.nn.Module]]:
        """The trained modules under their checkpoint prefixes (the feature D only when it is on)."""
        modules: list[tuple[str, torch.nn.Module]] = [("G", self.G), ("G_ema", self.G_ema), ("D", self.discriminators)]
        return modules + list(self.term_modules.items())

    def _term_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {name: opt for term in self.terms for name, opt in term.optimizers().items()}

    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"opt_G": self.opt_G, **{f"opt_D{i}": o for i, o in enumerate(self.opts_D)}, **self._term_optimizers()}

    # --------------------------------------------------------------------------------- the loop
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
                         "worker_init_fn": ignore_stop_signals if self.cfg.data.workers else None,
                         "collate_fn": collate}
        self.G.train()
        self.discriminators.train()
        # train.tensorboard: rank 0 also writes each stats record and sample grid as TensorBoard events
        # (_log, save_samples); the writer is closed however the loop ends.
        events = tensorboard_log(self.run.root, self.step, enabled=t.tensorboard and self.ctx.is_main)
        try:
            with self._stop, events as self.board:
                while self.step < total_steps:
                    dataset.set_epoch(self.epoch)
                    for name, opt in self._optimizers().items():
                        for group in opt.param_groups:
                            group["lr"] = learning_rate(t, name, self.epoch)
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
                        if self._stop.received is not None:
                            if self.step % t.checkpoint_every and self.step != total_steps:
                                last_checkpoint = self.save() or last_checkpoint
                            name = signal.Signals(self._stop.received).name
                            raise TrainingInterrupted(f"{name} received: saved a checkpoint at step {self.step}; "
                                                      "run the same command with --resume to continue", self._stop.received)
                        if self.step >= total_steps:
                            break
                        fetch = time.perf_counter()
        finally:
            self.board = None  # closed with the events: nothing writes to it after fit
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
        if self.board is not None:
            self.board.add_stats(record)
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
        if self.board is not None:
            self.board.add_sample_grid(path, self.step)
        return path


