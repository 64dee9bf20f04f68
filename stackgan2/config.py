"""Configuration: frozen pydantic models, shipped TOML presets and the one resolver.

Precedence, resolved in ``resolve_config`` only: field defaults < preset < ``--config file.toml`` <
command-line overrides. Every model forbids unknown keys, so a typo in a config file is an error,
not a silently ignored setting.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import tomllib
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from stackgan2.errors import ConfigError

PRESETS = ("tiny", "toy", "birds", "flowers", "v1-toy", "v1-birds", "v1-coco", "attngan-toy", "attngan-birds", "attngan-coco")
DATASETS = ("toy-birds", "cub", "flowers", "coco", "folder")
ToyFraming = Literal["scene", "bird"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())


class ModelConfig(_Frozen):
    """Generator / discriminator architecture (official birds_3stages values are the defaults)."""

    arch: Literal["stackgan2", "attngan", "stackgan1"] = Field(
        "stackgan2", description="model family: StackGAN++ (tree), AttnGAN (the tree with word attention + DAMSM "
        "loss) or StackGAN v1 (Stage-I, then Stage-II)"
    )
    v1_stage: int = Field(
        1, ge=1, le=2, description="StackGAN v1 only: 1 = the Stage-I GAN, 2 = the Stage-II GAN on a frozen Stage-I G"
    )
    stage_num: int = Field(3, ge=1, le=4, description="number of branches: 64/128/256/512 px for base 64")
    base_size: int = Field(64, ge=8, le=256, description="resolution of branch 0 (a power of two)")
    ngf: int = Field(64, ge=1, description="generator width; the first stage starts at 16*ngf channels")
    ndf: int = Field(64, ge=1, description="discriminator width")
    z_dim: int = Field(100, ge=1, description="noise dimension")
    c_dim: int = Field(128, ge=1, description="conditioning-augmentation code dimension")
    text_dim: int = Field(256, ge=1, description="sentence-embedding dimension (1024 for char-CNN-RNN)")
    r_num: int = Field(2, ge=0, description="residual blocks per refine stage")
    attention_official_mask: bool = Field(
        False, description="attngan: reproduce the official mask misalignment (GlobalAttention.py applies "
        "mask.repeat(HW, 1), so at batch > 1 pixels use other captions' padding masks); the released "
        "AttnGAN models were trained with it",
    )
    # Levers beyond the official architecture (issue 18; off = official). See docs/quality.md.
    d_projection: bool = Field(
        False, description="add the projection term <W mu, mean-pooled image code> to each D's conditional logit "
        "(Miyato & Koyama, ICLR 2018; pfnet-research/sngan_projection dis_models/snresnet.py)",
    )
    d_norm: Literal["batch", "spectral"] = Field(
        "batch", description="D normalisation: official batch norm, or spectral norm on every D conv/linear and no "
        "batch norm (Miyato et al. 2018; as DM-GAN code/model.py and XMC-GAN do for text GANs)",
    )
    g_text_fusion: bool = Field(
        False, description="DF-GAN deep text fusion: a text-predicted per-channel scale and shift after every G "
        "up-block, initialised as the identity (Tao et al. CVPR 2022, tobran/DF-GAN code/models/GAN.py Affine)",
    )
    g_word_attention: bool = Field(
        False, description="word attention in the generator: each pixel of the last two init-stage blocks and of every "
        "refine stage attends over the caption's words (AttnGAN GlobalAttentionGeneral) and its word context "
        "predicts a per-pixel scale and shift, starting as the identity (spatial DF-GAN affine, as SSA-GAN, "
        "Liao et al. CVPR 2022); needs train.embeddings damsm",
    )
    ca_noise: float = Field(
        1.0, ge=0, le=1, description="scale of the conditioning-augmentation noise: c = mu + ca_noise * sigma * eps, "
        "in training and sampling alike (1 = official StackGAN; 0 = c is the CA mean, as in text GANs without CA "
        "such as DF-GAN). The noise can drown a secondary attribute: benchmarks/condition_probe.py",
    )

    @field_validator("base_size")
    @classmethod
    def _power_of_two(cls, value: int) -> int:
        if value & (value - 1):
            raise ValueError("must be a power of two >= 8 (8, 16, 32, 64, 128, 256)")
        return value

    @model_validator(mode="after")
    def _channels_divide(self) -> ModelConfig:
        for name, flag in (("g_text_fusion", "--g-text-fusion"), ("g_word_attention", "--g-word-attention")):
            if getattr(self, name) and self.arch != "stackgan2":
                raise ValueError(f"model.{name} ({flag}) is built into the StackGAN++ generator only, not arch "
                                 f"{self.arch}")
        if self.arch == "stackgan1":
            if self.stage_num != 1:
                raise ValueError(
                    f"model.stage_num is the StackGAN++ tree depth and must be 1 for arch stackgan1 (got "
                    f"{self.stage_num}); StackGAN v1 picks its stage with model.v1_stage (--v1-stage 1|2)"
                )
            # Stage I ends at ngf/2 channels, Stage II at ngf/4 (official STAGE1_G / STAGE2_G).
            if self.ngf % 4:
                raise ValueError(f"ngf={self.ngf} must be divisible by 4 for arch stackgan1")
            return self
        if self.v1_stage != 1:
            raise ValueError(f"model.v1_stage ({self.v1_stage}) applies to arch stackgan1 only, not {self.arch}")
        if self.arch == "attngan":  # AttnGAN keeps ngf channels in every stage
            return self
        # Each refine stage halves the generator width: ngf, ngf/2, ngf/4, ngf/8 (official schedule).
        divisor = 2 ** (self.stage_num - 1)
        if self.ngf % divisor:
            raise ValueError(f"ngf={self.ngf} must be divisible by {divisor} for stage_num={self.stage_num}")
        return self

    @property
    def resolutions(self) -> list[int]:
        """Resolution of every generator branch. StackGAN v1: Stage I's image, and in Stage II also
        the 4x larger Stage-II image (64 and 256 px at base 64)."""
        if self.arch == "stackgan1":
            return [self.base_size * 4**i for i in range(self.v1_stage)]
        return [self.base_size * 2**i for i in range(self.stage_num)]

    @property
    def attends_to_words(self) -> bool:
        """Whether the generator takes the caption's word features (AttnGAN, or StackGAN++ with
        ``g_word_attention``)."""
        return self.arch == "attngan" or self.g_word_attention

    @property
    def condition_dim(self) -> int:
        """What the discriminators are conditioned on: the CA mean (StackGAN++, c_dim) or the sentence
        embedding itself (AttnGAN D_GET_LOGITS, text_dim)."""
        return self.text_dim if self.arch == "attngan" else self.c_dim

    @property
    def trained_branches(self) -> list[int]:
        """Branches with a discriminator: all of StackGAN++'s; StackGAN v1 trains only its last
        (Stage II keeps the Stage-I G frozen)."""
        if self.arch == "stackgan1":
            return [self.v1_stage - 1]
        return list(range(self.stage_num))

    @property
    def eps_dim(self) -> int:
        """Columns of the conditioning-augmentation noise a forward pass takes: c_dim per CA network
        (StackGAN v1 Stage II has two, Stage I's and its own)."""
        return self.c_dim * (self.v1_stage if self.arch == "stackgan1" else 1)


class DataConfig(_Frozen):
    """Which dataset and how it is prepared."""

    dataset: Literal["toy-birds", "cub", "flowers", "coco", "folder"] = "toy-birds"
    data_dir: Path | None = Field(None, description="root of cub/flowers/coco/folder data (toy-birds: unused)")
    cache_dir: Path | None = Field(None, description="render/decode cache; default $XDG_CACHE_HOME/stackgan2")
    toy_train_size: int = Field(8855, ge=1, description="toy-birds train images (CUB: 8,855)")
    toy_test_size: int = Field(2933, ge=1, description="toy-birds test images (CUB: 2,933)")
    toy_render_size: int = Field(304, ge=8, le=1024, description="toy-birds cache resolution (256 * 76/64)")
    toy_seed: int = Field(0, description="toy-birds generator seed (same seed -> byte-identical images)")
    toy_framing: ToyFraming = Field(
        "scene", description="toy-birds framing: scene (a small bird in a big scene, the pictures of renderer v1) or "
        "bird (the bird framed as StackGAN crops CUB: its box centred and the square of half-side 0.75 * max(w, h) "
        "filling the picture, zoom at most 3x; official StackGAN-v2 datasets.py get_imgs, r = int(max(w, h) * "
        "0.75); StackGAN section 5.1: cropped bird boxes have 'greater-than-0.75 object-image size ratios')",
    )
    captions_per_image: int = Field(10, ge=1, description="captions kept per image (CUB: 10)")
    workers: int = Field(2, ge=0, description="DataLoader worker processes")


class TextConfig(_Frozen):
    """Our own text encoder and its DAMSM pretraining (AttnGAN, Xu et al. CVPR 2018)."""

    dim: int = Field(256, ge=2, description="sentence/word feature size D (even: two LSTM directions)")
    word_dim: int = Field(300, ge=1, description="word-embedding size (AttnGAN: 300)")
    max_words: int = Field(18, ge=1, description="caption length cap (AttnGAN CUB: 18 words)")
    min_count: int = Field(1, ge=1, description="minimum count for a word to enter the vocabulary")
    dropout: float = Field(0.5, ge=0.0, lt=1.0, description="dropout on word embeddings (AttnGAN: 0.5)")
    image_size: int = Field(64, ge=16, description="image resolution seen by the DAMSM image encoder")
    image_width: int = Field(32, ge=4, description="width of the small CNN image encoder")
    epochs: int = Field(30, ge=1, description="DAMSM pretraining epochs")
    batch_size: int = Field(48, ge=2, description="DAMSM batch size (AttnGAN: 48)")
    lr: float = Field(2e-3, gt=0, description="DAMSM learning rate (AttnGAN: 0.002)")
    gamma1: float = Field(4.0, gt=0, description="word-region attention sharpness (AttnGAN CUB: 4)")
    gamma2: float = Field(5.0, gt=0, description="word-level aggregation (AttnGAN CUB: 5)")
    gamma3: float = Field(10.0, gt=0, description="sentence/image softmax scale (AttnGAN CUB: 10)")


# Levers of our own that the quality study measured as no gain, removed after commit 025f5e8 (it has
# them), each with the value that meant "off". Configs stored before (run directories, checkpoints, exported
# models) still carry them: TrainConfig drops them when off, so those files keep loading and resuming, and
# refuses them when on, since this version can neither train nor resume such a run as it was meant.
_REMOVED_TRAIN_FIELDS: dict[str, Any] = {"hard_wrong": 0.0, "damsm_augment": False, "damsm_swap_negatives": 0}


class TrainConfig(_Frozen):
    """GAN training (official birds_3stages values are the defaults)."""

    epochs: int = Field(600, ge=1)
    batch_size: int = Field(24, ge=1)
    max_steps: int | None = Field(None, ge=1, description="stop after this many iterations (overrides epochs)")
    lr_g: float = Field(2e-4, gt=0)
    lr_d: float = Field(2e-4, gt=0)
    lr_decay_every: int = Field(
        0, ge=0, description="halve both learning rates every N epochs (StackGAN v1 PT coco: 20); 0 = constant"
    )
    beta1: float = Field(0.5, ge=0, lt=1)
    beta2: float = Field(0.999, ge=0, lt=1)
    uncond_coef: float = Field(1.0, ge=0)
    kl_coef: float = Field(2.0, ge=0)
    color_coef: float = Field(0.0, ge=0)
    gan_loss: Literal["bce", "hinge"] = Field(
        "bce", description="adversarial loss: official BCE, or hinge (D: relu(1 - real) + relu(1 + fake); G: -fake) "
        "as DF-GAN / BigGAN / XMC-GAN",
    )
    ma_gp_coef: float = Field(
        0.0, ge=0, description="matching-aware zero-centred gradient penalty k * mean(||grad D(x, mu)||^p) on real "
        "matching pairs, w.r.t. image and text (DF-GAN: k = 2, p = 6); 0 = off; needs model.d_norm = spectral",
    )
    ma_gp_power: float = Field(6.0, gt=0, description="the MA-GP power p (DF-GAN: 6)")
    d_recon_coef: float = Field(
        0.0, ge=0, description="weight of FastGAN's self-supervised discriminator loss on every D (Liu et al. ICLR "
        "2021): on real images, small decoders rebuild the image from D's 8x8 features and a quadrant of it from "
        "its 16x16 features, L1 in place of FastGAN's LPIPS; 0 = off",
    )
    damsm_coef: float = Field(
        0.0, ge=0, description="DAMSM generator loss weight (lambda) on the last branch, with the frozen "
        "pretrained DAMSM encoders; 0 = off (AttnGAN bird_attn2.yml: 5, coco_attn2.yml: 50)",
    )
    feature_d_coef: float = Field(
        0.0, ge=0, description="weight of the generator term of an extra conditional discriminator on the frozen "
        "DAMSM image encoder's region features of the last branch (a trainable head with a projection onto the "
        "DAMSM sentence embedding), trained with the matching-aware real / wrong / fake loss like the stage Ds "
        "(frozen pretrained features in D: Projected GAN, Sauer et al. NeurIPS 2021; GALIP, Tao et al. CVPR "
        "2023); needs a text encoder with its DAMSM image encoder; 0 = off",
    )
    d_word_coef: float = Field(
        0.0, ge=0, description="weight of the generator term of ControlGAN's word-level discriminator (Li et al. "
        "NeurIPS 2019, mrlibw/ControlGAN word_level_correlation): each word against the DAMSM image regions it "
        "attends to, through a trained projection and logit, on the last branch; trained by its own optimiser on "
        "real images with their captions (1) and with the batch's captions shifted by one (0); needs a text "
        "encoder with its DAMSM image encoder and batch_size >= 2; 0 = off",
    )
    damsm_branches: Literal["last", "all"] = Field(
        "last", description="which branches the DAMSM loss scores: last (AttnGAN: fake_imgs[-1] only) or all "
        "(the mean over the branches, so that growing the tree keeps the small branches' colours; ours)",
    )
    damsm_fake_negatives: bool = Field(
        False, description="score the DAMSM generator loss with a trainable copy of the DAMSM image encoder "
        "(from the pretrained weights; the frozen original stays for the feature D and evaluation), trained "
        "after the discriminators on the real images' DAMSM loss with the batch's fakes as extra negatives: each "
        "caption must rank its real image above every fake, its own fake included (contrastive image-text losses "
        "in D: XMC-GAN, Zhang et al. CVPR 2021); needs train.damsm_coef > 0",
    )
    damsm_copy_lr: float | None = Field(
        None, gt=0, description="learning rate of the damsm_fake_negatives encoder copy (its Adam, opt_A); None: lr_d",
    )
    ms_coef: float = Field(
        0.0, ge=0, description="mode-seeking loss weight (MSGAN, Mao et al. CVPR 2019; its StackGAN++ birds cfg: "
        "1.0): half a batch more images from the same captions with new noise, loss 1 / (mean|G(c,z1) - "
        "G(c,z2)| / mean|z1 - z2| + 1e-5) on the last branch; 0 = off",
    )
    ema_decay: float = Field(0.999, ge=0, lt=1)
    ema_warmup: bool = Field(
        True,
        description="average over a short horizon early on: decay min(ema_decay, (1+t)/(10+t)) at step t; "
        "the official constant decay from step 8,990 on at 0.999",
    )
    ema_to_g_every: int = Field(0, ge=0, description="official quirk: copy G_ema into G every N steps (0 = off)")
    seed: int = 0
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    amp: Literal["off", "bf16", "fp16"] = "off"
    embeddings: Literal["damsm", "char-cnn-rnn"] = "damsm"
    text_encoder: Path | None = Field(None, description="pretrained text encoder dir; None = pretrain as phase 0")
    init_from: Path | None = Field(
        None, description="start a new run from this model's weights (pipeline dir, run dir or checkpoint file)"
    )
    init_terms: bool = Field(
        False, description="with init_from: also start the loss terms' trained modules (feature D, learning DAMSM "
        "encoder, word D) from the source's checkpoint where it has them; off: they start fresh",
    )
    g_frozen_stages: int = Field(
        0, ge=0, description="growing the tree: the generator's first N stages (the CA net, the 64 px trunk and its "
        "image head; then refine stage k and its head) keep the --init-from weights (its averaged G_ema) and are left "
        "out of G's optimiser, so the new branches learn to refine them; 0: every stage trains (official)",
    )
    stage1: Path | None = Field(
        None, description="StackGAN v1 Stage II: the Stage-I run (run dir or checkpoint) whose G is frozen inside"
    )
    log_every: int = Field(10, ge=1, description="iterations between stats.jsonl records")
    sample_every: int = Field(1, ge=1, description="epochs between sample grids")
    tensorboard: bool = Field(
        False, description="also write the stats.jsonl scalars and the sample grids as TensorBoard events to "
        "RUN/tensorboard/ (needs the tensorboard extra)",
    )
    checkpoint_every: int = Field(2000, ge=1, description="iterations between checkpoints (official: 2000)")
    keep_checkpoints: int = Field(3, ge=1)
    on_nan: Literal["stop", "skip"] = Field(
        "stop", description="non-finite loss/gradient: stop, or skip = drop the step and restore the last checkpoint"
    )
    # None = on CUDA only. On CPU (2-core AMD EPYC, AVX2, torch 2.14) NHWC measured 13 % slower at the
    # toy preset and 11 % slower at birds than NCHW (benchmarks/train_step.py, same run).
    channels_last: bool | None = Field(None, description="NHWC memory format for convolutions; None = CUDA only")
    fused_optimizer: bool = Field(True, description="foreach/fused Adam and foreach EMA instead of per-tensor loops")
    compile: bool = Field(False, description="torch.compile G and Ds (falls back to eager if compilation fails)")
    # Off by default: on the 2-core Xeon CPU it measured slower (birds 23.9 vs 21.7 s/iter, +250 MB peak
    # RSS; toy batch 8 no difference). Not yet measured on CUDA, where fewer, larger kernels may pay off.
    stacked_d_passes: bool = Field(
        False, description="D step: real, wrong and fake images in one stacked pass with per-group batch norm (same maths)"
    )
    split_condition_conv: bool = Field(
        True, description="refine stages convolve the broadcast text code on a 3x3 map (same maths, fewer FLOPs)"
    )

    @model_validator(mode="before")
    @classmethod
    def _drop_removed_fields(cls, data: Any) -> Any:
        """Removed fields (``_REMOVED_TRAIN_FIELDS``) at their off value are dropped; one left on is an error."""
        if not isinstance(data, dict) or not _REMOVED_TRAIN_FIELDS.keys() & data.keys():
            return data
        for name, off in _REMOVED_TRAIN_FIELDS.items():
            if name in data and data[name] != off:
                # Raised inside the train section, so the message reads "train: hard_wrong was removed ...".
                raise ValueError(f"{name} was removed after commit 025f5e8 (the quality study measured no gain), but "
                                 f"this config has it on ({data[name]!r}): remove the key to train without it, or "
                                 f"use commit 025f5e8 to go on with it")
        return {key: value for key, value in data.items() if key not in _REMOVED_TRAIN_FIELDS}


class ExperimentConfig(_Frozen):
    """Everything a run needs; stored in config.json and inside every checkpoint."""

    preset: str = "toy"
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    text: TextConfig = TextConfig()
    train: TrainConfig = TrainConfig()

    @model_validator(mode="after")
    def _text_dims_agree(self) -> ExperimentConfig:
        if self.train.embeddings == "damsm" and self.model.text_dim != self.text.dim:
            raise ValueError(
                f"model.text_dim ({self.model.text_dim}) must equal text.dim ({self.text.dim}) "
                "when the generator is conditioned on our own text encoder"
            )
        if self.train.gan_loss != "bce" and self.model.arch != "stackgan2":
            raise ValueError(f"train.gan_loss {self.train.gan_loss} (--gan-loss) is built into the StackGAN++ losses "
                             f"only; arch {self.model.arch} uses its official BCE losses")
        if self.train.ma_gp_coef > 0 and self.model.d_norm == "batch":
            # Batch norm couples the samples, so a per-sample input gradient is not defined (levers: avoid).
            raise ValueError("train.ma_gp_coef > 0 needs a discriminator without batch norm (model.d_norm = spectral)")
        if self.train.feature_d_coef > 0 and self.model.arch != "stackgan2":
            raise ValueError(f"train.feature_d_coef (--feature-d-coef) is built into the StackGAN++ step only, not "
                             f"arch {self.model.arch}")
        if self.train.feature_d_coef > 0 and self.train.embeddings != "damsm":
            raise ValueError("train.feature_d_coef (--feature-d-coef) needs the DAMSM encoders of our own text "
                             "encoder (train.embeddings = damsm)")
        if self.train.init_terms and self.train.init_from is None:
            raise ValueError("train.init_terms (--init-terms) loads the loss terms' modules of the --init-from "
                             "model: it needs train.init_from (--init-from)")
        if self.train.g_frozen_stages and (self.train.init_from is None or self.model.arch != "stackgan2"
                                            or self.train.g_frozen_stages >= self.model.stage_num):
            raise ValueError("train.g_frozen_stages (--g-frozen-stages) keeps the first stages of a StackGAN++ "
                             "generator started with --init-from: it needs arch stackgan2, train.init_from and "
                             f"fewer frozen stages than model.stage_num ({self.model.stage_num})")
        if self.train.damsm_copy_lr is not None and not self.train.damsm_fake_negatives:
            raise ValueError("train.damsm_copy_lr (--damsm-copy-lr) is the rate of the encoder copy that "
                             "train.damsm_fake_negatives (--damsm-fake-negatives) trains: turn that on")
        if self.train.damsm_fake_negatives and self.train.damsm_coef <= 0:
            raise ValueError("train.damsm_fake_negatives (--damsm-fake-negatives) trains the encoder that scores the "
                             "DAMSM generator loss: it needs train.damsm_coef > 0 (--damsm-coef)")
        if self.train.d_word_coef > 0 and self.train.embeddings != "damsm":
            raise ValueError("train.d_word_coef (--d-word-coef) scores the words of our own text encoder with its "
                             "DAMSM image encoder (train.embeddings = damsm)")
        if self.train.d_word_coef > 0 and self.train.batch_size < 2:
            raise ValueError("train.d_word_coef (--d-word-coef) pairs each image with the next item's caption as "
                             "its mismatched caption: it needs batch_size >= 2")
        if self.train.ms_coef > 0 and self.model.arch != "stackgan2":
            raise ValueError(f"train.ms_coef (--ms-coef) is built into the StackGAN++ step only, not arch "
                             f"{self.model.arch}")
        if self.train.ms_coef > 0 and self.train.batch_size < 2:
            raise ValueError("train.ms_coef (--ms-coef) pairs images of the same caption: it needs batch_size >= 2")
        if self.model.ca_noise != 1 and self.model.arch != "stackgan2":
            raise ValueError(f"model.ca_noise (--ca-noise) is built into the StackGAN++ generator only, not arch "
                             f"{self.model.arch}")
        if self.text.dim % 2:
            raise ValueError(f"text.dim must be even (two LSTM directions), got {self.text.dim}")
        if self.model.arch == "attngan" and self.train.batch_size < 2:
            raise ValueError("model.arch attngan needs train.batch_size >= 2 (its mismatched pairs are image k "
                             "with sentence k + 1 of the same batch)")
        if self.model.arch == "attngan" and self.train.embeddings != "damsm":
            raise ValueError("model.arch attngan attends to the words of our own text encoder: train.embeddings "
                             f"must be damsm, got {self.train.embeddings}")
        if self.model.g_word_attention and self.train.embeddings != "damsm":
            raise ValueError("model.g_word_attention (--g-word-attention) attends to the words of our own text "
                             f"encoder: train.embeddings must be damsm, got {self.train.embeddings}")
        if self.train.stage1 is not None and (self.model.arch != "stackgan1" or self.model.v1_stage != 2):
            raise ValueError("train.stage1 (--stage1) is the Stage-I run of a StackGAN v1 Stage-II run "
                             "(arch stackgan1, --v1-stage 2)")
        return self

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    @classmethod
    def from_json(cls, text: str) -> ExperimentConfig:
        try:
            return cls.model_validate(json.loads(text))
        except (ValueError, ValidationError) as exc:
            raise ConfigError(f"invalid stored config: {_describe(exc)}") from None


def load_preset(name: str) -> dict[str, Any]:
    """The raw TOML dict of a shipped preset."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; valid presets: {', '.join(PRESETS)}")
    text = resources.files("stackgan2.presets").joinpath(f"{name}.toml").read_text()
    return tomllib.loads(text)


def _read_config_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _nest(dotted: dict[str, Any]) -> dict[str, Any]:
    """{"model.stage_num": 3} -> {"model": {"stage_num": 3}}; None values mean 'not given'."""
    nested: dict[str, Any] = {}
    for key, value in dotted.items():
        if value is None:
            continue
        section, _, field = key.partition(".")
        if not field:
            nested[section] = value
        else:
            nested.setdefault(section, {})[field] = value
    return nested


def _describe(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        parts = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "config"
            message = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                message = "unknown key"
            got = err.get("input")
            suffix = "" if err["type"] == "extra_forbidden" or isinstance(got, dict) else f" (got {got!r})"
            parts.append(f"{where}: {message}{suffix}")
        return "; ".join(parts)
    return str(exc)


def _layered(raw: dict[str, Any], config_file: Path | None, overrides: dict[str, Any] | None) -> ExperimentConfig:
    """``raw`` < config file < overrides, validated in one place."""
    if config_file is not None:
        raw = _merge(raw, _read_config_file(Path(config_file)))
    raw = _merge(raw, _nest(overrides or {}))
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


def apply_overrides(
    base: ExperimentConfig, config_file: Path | None = None, overrides: dict[str, Any] | None = None
) -> ExperimentConfig:
    """``base`` (e.g. a resumed run's stored config) < config file < overrides."""
    return _layered(base.model_dump(mode="json"), config_file, overrides)


def changed_fields(old: ExperimentConfig, new: ExperimentConfig, fields: tuple[str, ...]) -> list[str]:
    """Dotted names among ``fields`` (sections or section.field) whose values differ."""
    changed = []
    old_raw, new_raw = old.model_dump(mode="json"), new.model_dump(mode="json")
    for name in fields:
        section, _, field = name.partition(".")
        a, b = old_raw[section], new_raw[section]
        if field:
            a, b = a[field], b[field]
        if a != b:
            if isinstance(a, dict):
                changed += [f"{section}.{k}" for k in a if a[k] != b[k]]
            else:
                changed.append(name)
    return changed


def resolve_config(
    preset: str = "toy",
    config_file: Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> ExperimentConfig:
    """defaults < preset < config file < overrides (dotted keys such as ``"model.stage_num"``).

    A StackGAN v1 preset's ``[stage2.*]`` tables (Stage II's official batch size, epochs, ...) apply
    on top of the preset when the result is a Stage-II config (``model.v1_stage = 2``).
    """
    raw = _merge({"preset": preset}, load_preset(preset))
    stage2 = raw.pop("stage2", None)
    cfg = _layered(raw, config_file, overrides)
    if stage2 and cfg.model.v1_stage == 2:
        cfg = _layered(_merge(raw, stage2), config_file, overrides)
    return cfg
