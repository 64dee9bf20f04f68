"""``stackgan2 train`` as a library call: run directory, data, text phase 0, then the Trainer."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stackgan2.config import ExperimentConfig, apply_overrides, changed_fields, resolve_config
from stackgan2.errors import CheckpointError, DataError, UsageError
from stackgan2.progress import ProgressFn
from stackgan2.training.checkpoint import latest_checkpoint, list_checkpoints
from stackgan2.training.distributed import DistContext
from stackgan2.training.rundir import RunDir
from stackgan2.training.trainer import FIXED_ON_RESUME, Trainer, TrainResult
from stackgan2.training.weights import copy_text_encoder, load_initial_weights, start_terms_from

log = logging.getLogger("stackgan2.training")
# train.* levers that own trained weights
TRAINED_LEVERS = ("feature_d_coef", "d_recon_coef", "damsm_fake_negatives", "d_word_coef")
SAMPLE_CAPTIONS = 8


def prepare_config(
    run_dir: Path,
    preset: str,
    config_file: Path | None,
    overrides: dict[str, Any],
    resume: bool,
) -> tuple[ExperimentConfig, bool]:
    """The config to train with and whether this continues an existing run.

    A run directory that already has checkpoints is continued (``--resume`` or re-running the same
    ``--name``): its stored config is the base, and only the options given now override it; options
    that change the architecture or data are refused. ``train.max_steps`` is not carried over.
    """
    run = RunDir(Path(run_dir))
    has_checkpoint = bool(list_checkpoints(run.checkpoints))
    if resume and not has_checkpoint:
        raise UsageError(f"--resume: no checkpoint to resume from in {run.checkpoints}")
    if not has_checkpoint:
        return resolve_config(preset, config_file, overrides), False
    stored = run.read_config()
    # --max-steps limits one invocation; a resumed run trains to its epochs unless given again.
    stored = stored.model_copy(update={"train": stored.train.model_copy(update={"max_steps": None})})
    cfg = apply_overrides(stored, config_file, overrides)
    changed = changed_fields(stored, cfg, FIXED_ON_RESUME)
    if changed:
        raise UsageError(
            f"run {run.root} was trained with other settings for {', '.join(changed)}; "
            "use a new --name to train a different model"
        )
    # Levers with weights of their own (the feature D, the word D, FastGAN's decoders, which D's optimisers
    # step) are checkpointed only when on: switching one on or off cannot continue the run's state.
    for field in TRAINED_LEVERS:
        before, now = getattr(stored.train, field) > 0, getattr(cfg.train, field) > 0
        if before != now:
            flag = "--" + field.replace("_", "-")
            raise UsageError(f"run {run.root} was trained {'with' if before else 'without'} {flag}; resume it "
                             f"{'with' if before else 'without'} it, or start a new run from it with --init-from")
    return cfg, True


def prepare_embeddings(cfg: ExperimentConfig, run: RunDir, dataset, device: torch.device, ctx: DistContext,
                       progress_fn: ProgressFn | None) -> np.ndarray:
    """Phase 0: make sure the run has a text encoder, then attach caption embeddings (N, C, D) to the dataset."""
    from stackgan2.text import PromptEncoder, encode_dataset_captions, pretrain_text_encoder

    if ctx.is_main:
        if cfg.train.text_encoder is not None:
            copy_text_encoder(Path(cfg.train.text_encoder), run)
        elif not run.text_encoder.is_dir():
            log.info("phase 0: pretraining the text encoder (DAMSM) into %s", run.text_encoder)
            pretrain_text_encoder(cfg, run.text_encoder, device=str(device), progress_fn=progress_fn)
    ctx.barrier()
    if cfg.train.embeddings == "char-cnn-rnn":
        if dataset.char_cnn_rnn is None:
            raise DataError(f"--embeddings char-cnn-rnn needs char-CNN-RNN-embeddings.pickle; dataset {cfg.data.dataset} has none")
        if dataset.char_cnn_rnn.shape[-1] != cfg.model.text_dim:
            raise UsageError(f"char-CNN-RNN embeddings are {dataset.char_cnn_rnn.shape[-1]}-d but model.text_dim is {cfg.model.text_dim}")
        dataset.set_embeddings(dataset.char_cnn_rnn)
        return dataset.char_cnn_rnn
    encoder = PromptEncoder.load(run.text_encoder, device=device)
    if encoder.dim != cfg.model.text_dim:
        raise CheckpointError(
            f"text encoder in {run.text_encoder} gives {encoder.dim}-d embeddings but model.text_dim is {cfg.model.text_dim}"
        )
    embeddings = encode_dataset_captions(encoder, dataset, device=str(device))
    dataset.set_embeddings(embeddings)
    return embeddings


def run_training(
    cfg: ExperimentConfig,
    run_dir: Path,
    *,
    ctx: DistContext | None = None,
    progress_fn: ProgressFn | None = None,
) -> TrainResult:
    """Build the data, write config.json, run phase 0 if needed, then train (resuming if possible).

    The data, the batch size, the text encoder directory and the checkpoint to resume from are checked
    before anything is written, so a run that cannot start leaves its run directory as it was (or absent).
    """
    from stackgan2.data import build_dataset

    ctx = ctx or DistContext()
    run = RunDir(Path(run_dir))
    resumed = latest_checkpoint(run.checkpoints)
    m, t = cfg.model, cfg.train
    if m.arch == "stackgan1" and m.v1_stage == 2 and resumed is None and t.init_from is None and t.stage1 is None:
        raise UsageError("StackGAN v1 Stage II trains on a frozen Stage-I generator: pass --stage1 RUN_DIR "
                         "(the Stage-I run directory, one of its checkpoints or its exported model)")
    initial, stage1 = None, None
    if resumed is None:
        initial = load_initial_weights(t.init_from) if t.init_from is not None else None
        stage1 = load_initial_weights(t.stage1, "--stage1") if t.stage1 is not None else None
        source = initial or stage1
        if source is not None and t.text_encoder is None:  # condition on the embeddings the weights were trained with
            cfg = cfg.model_copy(update={"train": t.model_copy(update={"text_encoder": source.text_encoder})})
    elif t.init_from is not None or t.stage1 is not None:
        log.info("resuming %s: its checkpoint is used, not --init-from / --stage1", run.root)
    trainer = Trainer(cfg, run.root, ctx=ctx, progress_fn=progress_fn)
    if initial is not None:
        trainer.start_from(initial)
    if stage1 is not None:
        trainer.start_stage2(stage1)
    # Images only at the trained branches' sizes; StackGAN v1 makes its wrong pairs inside the batch.
    sizes = [m.resolutions[i] for i in m.trained_branches]
    data_args = {"augment": True, "seed": t.seed, "wrong_images": m.arch == "stackgan2"}  # v1, AttnGAN: from the batch
    if ctx.is_main:
        dataset = build_dataset(cfg.data, "train", sizes, progress_fn=progress_fn, **data_args)
    ctx.barrier()  # the toy-birds cache is rendered once, by rank 0
    if not ctx.is_main:
        dataset = build_dataset(cfg.data, "train", sizes, **data_args)
    trainer.epoch_length(len(dataset))
    if cfg.train.text_encoder is not None and not Path(cfg.train.text_encoder).is_dir():
        raise CheckpointError(f"--text-encoder {cfg.train.text_encoder} is not a directory")
    if resumed is not None:
        trainer.check_compatible(resumed)
    if ctx.is_main:
        run.create()
        run.remove_stale_temp_files()
        run.write_config(cfg)
    embeddings = prepare_embeddings(cfg, run, dataset, trainer.device, ctx, progress_fn)
    if trainer.needs_caption_features:
        from stackgan2.text import PromptEncoder

        trainer.attach_text_encoder(PromptEncoder.load(run.text_encoder))
    if initial is not None and cfg.train.init_terms:  # after attach_text_encoder, which builds the learning copy
        start_terms_from(initial, trainer.term_modules)
    count = min(SAMPLE_CAPTIONS, len(dataset))
    sample_embeddings = torch.stack([torch.as_tensor(embeddings[i, 0]) for i in range(count)])
    sample_captions = [dataset.captions[i][0] for i in range(count)]
    if ctx.is_main:
        run.samples.mkdir(parents=True, exist_ok=True)
        (run.samples / "captions.txt").write_text("".join(f"{c}\n" for c in sample_captions), encoding="utf-8")
    return trainer.fit(dataset, sample_embeddings, sample_captions, resumed)
