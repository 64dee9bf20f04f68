"""StackGAN v1 (Zhang et al., ICCV 2017): the Stage-I and Stage-II generators and their discriminators.

Faithful to the official PyTorch code (hanzhanggit/StackGAN-Pytorch ``code/model.py``,
``code/miscc/utils.py``), built from this project's shared blocks (``stackgan2.models.blocks``); only the
Stage-II image encoder is this family's own (its losses: ``stackgan2.training.objectives``). At the ``v1-coco`` preset:
Stage-I G 20,020,832 parameters, Stage-I D 12,407,425, Stage-II G 37,130,480 trainable (57,151,312
with the frozen Stage-I G inside), Stage-II D 159,889,538, asserted in tests. The discriminators are
``StageDiscriminator``s.

Official quirks kept (each has a test):
- the CA net applies ReLU to both halves of its output, so mu >= 0 and logvar >= 0;
- Stage I's generator input is [z ; c] (StackGAN++: [c ; z]); D concatenates [code ; condition];
- Stage II runs the frozen Stage-I G (in the generator's train/eval mode: its batch norm keeps using
  batch statistics and updating its running averages during Stage-II training) and detaches its image;
- D is conditioned on the detached CA mean in both the D and the G step;
- the "wrong" pairs are the real batch shifted by one (image i with the condition of sample i+1);
- Stage-II D loss (real + uncond_real) / 2 + (fake + wrong + uncond_fake) / 3.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from stackgan2.config import ModelConfig
from stackgan2.models.blocks import (
    ConditioningAugmentation,
    InitStage,
    RefineStage,
    ToImage,
    check_generator_inputs,
    conv3x3,
    down_block,
    stage_discriminators,
)


class StageOneGenerator(nn.Module):
    """Official STAGE1_G: CA (ReLU) -> [z ; c] -> fc-BN-ReLU -> 4x4 x 8*ngf -> up-blocks (ReLU) -> ToImage.

    ``ngf`` is the official GF_DIM: the image is drawn from ngf/2 channels at ``base_size`` px (4
    up-blocks at 64 px; at another base size the start width scales so that it still ends at ngf/2).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.ca = ConditioningAugmentation(cfg.text_dim, cfg.c_dim, "relu")
        num_upsamples = int(math.log2(cfg.base_size // 4))
        self.init_stage = InitStage(cfg.z_dim + cfg.c_dim, cfg.ngf // 2 * 2**num_upsamples, num_upsamples, "relu")
        self.to_image = ToImage(cfg.ngf // 2)

    def split_condition(self, enabled: bool) -> StageOneGenerator:
        """Stage I has no refine stage, so there is nothing to choose (see ``StageTwoGenerator``)."""
        return self

    def forward(self, z: Tensor, sentence_embedding: Tensor, eps: Tensor | None = None) -> tuple[list[Tensor], Tensor, Tensor]:
        check_generator_inputs(self.cfg, z, sentence_embedding)
        c_code, mu, logvar = self.ca(sentence_embedding, eps)
        return [self.to_image(self.init_stage(torch.cat([z, c_code], dim=1)))], mu, logvar


class StageTwoGenerator(nn.Module):
    """Official STAGE2_G: the frozen Stage-I G draws the low-resolution image, which is encoded to
    (base/4) x (base/4) x 4*ngf, joined with Stage II's own CA code, refined by ``r_num`` residual blocks
    and drawn at 4 x base px by 4 up-blocks (ngf/4 channels).

    ``eps`` (B, 2*c_dim): the first c_dim columns feed Stage I's CA, the rest Stage II's (the
    official code draws both afresh). Returns ([stage-I image, stage-II image], mu, logvar) with mu
    and logvar of the Stage-II CA.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        ngf = cfg.ngf
        self.stage1 = StageOneGenerator(cfg.model_copy(update={"v1_stage": 1}))
        self.stage1.requires_grad_(False)  # official: frozen, and left out of the G optimiser
        self.ca = ConditioningAugmentation(cfg.text_dim, cfg.c_dim, "relu")
        self.image_encoder = nn.Sequential(
            conv3x3(3, ngf),
            nn.ReLU(inplace=True),
            *down_block(ngf, ngf * 2, leaky=False),
            *down_block(ngf * 2, ngf * 4, leaky=False),
        )
        self.refine = RefineStage(ngf * 4, cfg.c_dim, cfg.r_num, "relu", condition_first=False, num_upsamples=4)
        self.to_image = ToImage(ngf // 4)

    def split_condition(self, enabled: bool) -> StageTwoGenerator:
        """How the refine stage applies its joint conv (see ``RefineStage``); same parameters either way."""
        self.refine.split_condition = enabled
        return self

    def forward(self, z: Tensor, sentence_embedding: Tensor, eps: Tensor | None = None) -> tuple[list[Tensor], Tensor, Tensor]:
        check_generator_inputs(self.cfg, z, sentence_embedding)
        eps_1, eps_2 = eps.chunk(2, dim=1) if eps is not None else (None, None)
        (low,), _, _ = self.stage1(z, sentence_embedding, eps_1)
        low = low.detach()
        c_code, mu, logvar = self.ca(sentence_embedding, eps_2)
        hidden = self.refine(self.image_encoder(low), c_code)
        return [low, self.to_image(hidden)], mu, logvar


def build_generator(cfg: ModelConfig) -> StageOneGenerator | StageTwoGenerator:
    return StageTwoGenerator(cfg) if cfg.v1_stage == 2 else StageOneGenerator(cfg)


def build_discriminators(cfg: ModelConfig) -> nn.ModuleList:
    """v1 concatenates [code ; condition]; only Stage II's discriminator has the unconditional head
    (official STAGE1_D / STAGE2_D)."""
    return stage_discriminators(cfg, condition_first=False, unconditional=cfg.v1_stage == 2)
