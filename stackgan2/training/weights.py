"""Weights from elsewhere: ``--init-from`` (fine-tuning, growing the tree), StackGAN v1's ``--stage1``,
the architecture check of checkpoints, and the run's copy of its text encoder."""

from __future__ import annotations

import contextlib
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from stackgan2.config import ExperimentConfig, ModelConfig
from stackgan2.errors import CheckpointError
from stackgan2.training.checkpoint import latest_checkpoint
from stackgan2.training.rundir import RunDir

log = logging.getLogger("stackgan2.training")


@dataclass(frozen=True)
class InitialWeights:
    """Weights to start a run from (see ``load_initial_weights``)."""

    source: Path
    config: ExperimentConfig
    states: dict[str, dict[str, Tensor]]   # "G", "G_ema" and, from training checkpoints, "D" and the terms' modules
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
        # G, G_ema, D and the loss terms' modules ("F", "A", "W"); not the optimisers or random streams.
        prefixes = {key.split(".", 1)[0] for key in checkpoint.tensors}
        states = {prefix: checkpoint_section(checkpoint.tensors, prefix) for prefix in sorted(prefixes)
                  if not prefix.startswith(("opt_", "rng"))}
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


def freeze_stages(generator: nn.Module, stages: int) -> None:
    """``train.g_frozen_stages``: the parameters of the generator's first ``stages`` branches (the CA net and the
    trunk belong to the first) stop requiring a gradient, so G's optimiser leaves them out."""
    for name, param in generator.named_parameters():
        if _branch_of("G", name) < stages:
            param.requires_grad_(False)


def checkpoint_section(tensors: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """The state dict stored under ``prefix.`` in a checkpoint ("G", "G_ema", "D")."""
    return {k[len(prefix) + 1 :]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def match_param_layout(optimizer: torch.optim.Optimizer) -> None:
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


def check_architecture(stored: Any, current: dict[str, Any], what: str) -> None:
    """CheckpointError unless the stored model config ``stored`` equals ``current`` (both JSON dicts)."""
    if isinstance(stored, dict):
        # A checkpoint written before a model field existed stores no value for it: the field's
        # default (the architecture it was trained with) fills it in before comparing.
        with contextlib.suppress(ValueError):
            stored = ModelConfig.model_validate(stored).model_dump(mode="json")
    if stored != current:
        raise CheckpointError(f"{what} was trained with a different architecture ({_diff(stored, current)})")


# Model fields that shape only the discriminators: when they differ, the source's discriminators start fresh.
_D_FIELDS = ("ndf", "d_projection", "d_norm")
# Generator layers that start as the identity (``TextAffine``, ``WordAffine``): the field that adds them ->
# their state-dict name. A generator without them loads into one with them and draws the same images.
_IDENTITY_LAYERS = {"g_text_fusion": "fusion", "g_word_attention": "word_fusion"}


def start_from(weights: InitialWeights, cfg: ExperimentConfig, modules: dict[str, nn.Module]) -> None:
    """Load G, G_ema and (when the source has them) the discriminators of another model; the
    optimisers, step and random streams start fresh (``train.init_from``: fine-tuning). The model
    configs must match except where no loaded weight depends on the difference:

    - ``ca_noise`` (no weights) may differ;
    - the discriminators' fields (``ndf``, ``d_projection``, ``d_norm``) may differ: the source's
      discriminators then start fresh;
    - more branches (``stage_num``) than the source (growing the tree): the source's branches are loaded,
      the new refine stages, image heads and discriminators start fresh; fewer branches: the source's first
      ones are loaded and the rest is left out (a grown model's trunk starts a 64 px run);
    - ``g_text_fusion`` / ``g_word_attention`` turned on: their layers keep the identity the run's
      ``init_weights`` gave them, so G draws the source's images at step 0. Turning them off is refused
      (their trained weights would be dropped).

    ``modules``: "G", "G_ema" and "D" of the run being started, freshly initialised."""
    source = weights.source
    stored, current = weights.config.model.model_dump(mode="json"), cfg.model.model_dump(mode="json")
    states = {name: state for name, state in weights.states.items() if name in ("G", "G_ema", "D")}
    grown = stored["stage_num"] < current["stage_num"] and cfg.model.arch == "stackgan2"  # v1 has a Stage II
    cut = stored["stage_num"] > current["stage_num"] and cfg.model.arch == "stackgan2"
    added = [field for field in _IDENTITY_LAYERS if current[field] and not stored[field]]
    d_changed = {field: current[field] for field in _D_FIELDS if stored[field] != current[field]}
    free = ["ca_noise", *d_changed, *added, *(["stage_num"] if grown or cut else [])]
    check_architecture({**stored, **{f: current[f] for f in free}}, current, f"--init-from {source}")
    if d_changed and states.pop("D", None) is not None:
        log.info("--init-from %s: its discriminators differ (%s); they start fresh",
                 source, _diff(stored, d_changed))
    if grown:
        log.info("--init-from %s: growing the tree from %d to %d branches; the new ones start fresh",
                 source, stored["stage_num"], current["stage_num"])
    if cut:
        log.info("--init-from %s: keeping %d of its %d branches; the others are left out",
                 source, current["stage_num"], stored["stage_num"])
        states = {name: {key: value for key, value in state.items() if _branch_of(name, key) < current["stage_num"]}
                  for name, state in states.items()}
    if added:
        log.info("--init-from %s: it has no %s layers; they start as the identity (G draws its images "
                 "at step 0)", source, " / ".join(added))
    identity = {_IDENTITY_LAYERS[field] for field in added}

    def starts_fresh(name: str, key: str) -> bool:
        return (grown and _branch_of(name, key) >= stored["stage_num"]) or (
            name != "D" and not identity.isdisjoint(key.split(".")))

    try:
        for name, state in states.items():
            missing, unexpected = modules[name].load_state_dict(state, strict=False)
            new = [k for k in missing if not starts_fresh(name, k)]
            if unexpected or new:
                raise RuntimeError(f"unexpected keys {unexpected[:3]}, missing keys {new[:3]}")
    except RuntimeError as exc:
        reason = str(exc).splitlines()[0]
        raise CheckpointError(f"--init-from {source} does not fit this model: {reason}") from None
    if cfg.train.g_frozen_stages:  # the frozen stages keep the averaged weights, which the source's samples show
        averaged = dict(modules["G_ema"].named_parameters())
        with torch.no_grad():
            for name, param in modules["G"].named_parameters():
                if _branch_of("G", name) < cfg.train.g_frozen_stages:
                    param.copy_(averaged[name])
        log.info("--g-frozen-stages %d: G's first %d stage(s) keep the averaged weights of %s",
                 cfg.train.g_frozen_stages, cfg.train.g_frozen_stages, source)


def start_terms_from(weights: InitialWeights, modules: dict[str, nn.Module]) -> None:
    """``train.init_terms``: the loss terms' trained modules (``modules``: checkpoint prefix -> module, e.g. the
    feature D "F", the learning DAMSM encoder "A", the word D "W") from the source's checkpoint. A module the
    source has no weights for, or whose shapes differ (another text encoder), starts fresh, with a log line; the
    terms' optimisers start fresh like G's and D's."""
    for name, module in modules.items():
        state = weights.states.get(name)
        if state is None:
            log.info("--init-terms: %s has no %s module; it starts fresh", weights.source, name)
            continue
        own = module.state_dict()
        misfit = sorted(set(own) ^ set(state)) or [k for k in own if own[k].shape != state[k].shape]
        if misfit:  # checked first: a failed load_state_dict leaves the module half loaded
            log.info("--init-terms: %s's %s module does not fit (%s); it starts fresh", weights.source, name, misfit[0])
            continue
        module.load_state_dict(state)
        log.info("--init-terms: %s starts from %s", name, weights.source)


def start_stage2(weights: InitialWeights, cfg: ExperimentConfig, generators: tuple[nn.Module, ...]) -> None:
    """StackGAN v1 Stage II: load the Stage-I generator of ``weights`` (its G_ema, which the v1
    presets keep equal to G) into the frozen Stage-I G inside G and G_ema. A run of another
    family, stage, preset, architecture or text embedding is refused with one line. ``generators``: G and G_ema."""
    source, stored, m = weights.source, weights.config, cfg.model
    if stored.model.arch != "stackgan1" or stored.model.v1_stage != 1:
        raise CheckpointError(f"--stage1 {source} is not a StackGAN v1 Stage-I model (arch {stored.model.arch}, "
                              f"v1_stage {stored.model.v1_stage})")
    if stored.preset != cfg.preset:
        raise CheckpointError(f"--stage1 {source} was trained with preset {stored.preset}, this run uses {cfg.preset}")
    # The discriminator width and Stage II's residual blocks do not shape the Stage-I generator.
    ignored = {"v1_stage": 1, "ndf": m.ndf, "r_num": m.r_num}
    current = {**m.model_dump(mode="json"), **ignored}
    check_architecture({**stored.model.model_dump(mode="json"), **ignored}, current, f"--stage1 {source}")
    if stored.train.embeddings != cfg.train.embeddings:
        raise CheckpointError(f"--stage1 {source} was trained on {stored.train.embeddings} embeddings, "
                              f"this run uses {cfg.train.embeddings}")
    for G in generators:
        G.stage1.load_state_dict(weights.states["G_ema"])
