"""StackGAN++: the generator tree, its per-scale discriminators and the feature critic.

Architecture, layer order and parameter counts follow the official hanzhanggit/StackGAN-v2
``code/model.py`` (G_NET, D_NET64/128/256/512). At the ``birds`` preset: Generator 21,239,696
parameters, discriminators 5,723,906 / 18,834,178 / 71,269,122 (64 / 128 / 256 px), asserted in tests.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from stackgan2.config import ModelConfig
from stackgan2.models.blocks import (
    ConditioningAugmentation,
    GeneratorOutput,
    InitStage,
    RefineStage,
    ToImage,
    check_generator_inputs,
    conv3x3,
    stage_discriminators,
)


class Generator(nn.Module):
    """The generator tree: one InitStage, ``stage_num - 1`` RefineStages, one ToImage per branch.

    Widths follow the official schedule: InitStage 16*ngf -> ngf at the base resolution, then each
    refine stage halves the width (ngf -> ngf/2 -> ngf/4 -> ngf/8). The optional fourth stage (512 px)
    uses one residual block, as the official G_NET does "mainly limited by GPU memory".
    For another ``base_size`` the InitStage has log2(base_size / 4) up-blocks and starts at
    ngf * base_size / 4 channels, so it still ends at ngf (16*ngf and 4 up-blocks at 64 px).
    With ``g_word_attention`` the stages also take the caption's word features (``WordAffine``).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.ca = ConditioningAugmentation(cfg.text_dim, cfg.c_dim, noise=cfg.ca_noise)
        num_upsamples = int(math.log2(cfg.base_size // 4))
        fusion_dim = cfg.c_dim if cfg.g_text_fusion else None
        word_dim = cfg.text_dim if cfg.g_word_attention else None
        self.init_stage = InitStage(cfg.z_dim + cfg.c_dim, cfg.ngf * 2**num_upsamples, num_upsamples, c_dim=fusion_dim,
                                    word_dim=word_dim)
        widths = [cfg.ngf // 2**i for i in range(cfg.stage_num)]
        self.refine_stages = nn.ModuleList(
            RefineStage(widths[i - 1], cfg.c_dim, cfg.r_num if i < 3 else min(cfg.r_num, 1),
                        text_fusion=cfg.g_text_fusion, word_dim=word_dim)
            for i in range(1, cfg.stage_num)
        )
        self.to_images = nn.ModuleList(ToImage(width) for width in widths)

    def split_condition(self, enabled: bool) -> Generator:
        """Choose how the refine stages apply their joint conv (see ``RefineStage``); same parameters either way."""
        for stage in self.refine_stages:
            stage.split_condition = enabled
        return self

    def forward(self, z: Tensor, sentence_embedding: Tensor, eps: Tensor | None = None, words: Tensor | None = None,
                mask: Tensor | None = None, return_attention: bool = False) -> GeneratorOutput:
        """Images of every branch, mu, logvar. With ``g_word_attention`` it needs ``words`` (B, text_dim, T)
        and ``mask`` (B, T), True at words to ignore, and ``return_attention`` adds the (B, T, H, W)
        attention maps of every word-fusion block, lowest resolution first."""
        if self.cfg.g_word_attention and words is None:
            raise ValueError("this generator attends to words (model.g_word_attention): pass words=...")
        check_generator_inputs(self.cfg, z, sentence_embedding, words if self.cfg.g_word_attention else None)
        maps: list[Tensor] = []
        c_code, mu, logvar = self.ca(sentence_embedding, eps)
        hidden = self.init_stage(torch.cat([c_code, z], dim=1), c_code, words, mask, maps)
        images = [self.to_images[0](hidden)]
        for refine, to_image in zip(self.refine_stages, self.to_images[1:], strict=True):
            hidden = refine(hidden, c_code, words, mask, maps)
            images.append(to_image(hidden))
        if return_attention:
            return images, mu, logvar, maps
        return images, mu, logvar


class FeatureCritic(nn.Module):
    """A conditional discriminator on frozen image features (``train.feature_d_coef``).

    Input: the region features (B, F, h, w) of the pretrained DAMSM image encoder and the DAMSM
    sentence embedding (B, T) of the caption. A trainable head (two 3x3 convs with LeakyReLU, no
    batch norm, average-pooled) gives an unconditional logit and a conditional one, the latter with a
    projection term ``<W s, h>`` (Miyato & Koyama 2018). A discriminator on frozen pretrained
    features follows Projected GAN (Sauer et al. NeurIPS 2021) and GALIP (Tao et al. CVPR 2023, a
    frozen CLIP in D): it starts from features that already tell colours apart, and, unlike a frozen
    loss, its head keeps learning, so the generator cannot satisfy it with patterns the features read
    and a real bird does not have.
    """

    def __init__(self, feature_dim: int, text_dim: int, width: int = 64) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv3x3(feature_dim, width), nn.LeakyReLU(0.2, inplace=True),
            conv3x3(width, width), nn.LeakyReLU(0.2, inplace=True),
        )
        self.uncond_logits = nn.Linear(width, 1)
        self.cond_logits = nn.Linear(width, 1)
        self.projection = nn.Linear(text_dim, width, bias=False)

    def forward(self, regions: Tensor, sentence: Tensor) -> tuple[Tensor, Tensor]:
        """Conditional and unconditional logits, (B,) each."""
        code = self.body(regions).mean(dim=(2, 3))
        cond = self.cond_logits(code).squeeze(1) + (self.projection(sentence) * code).sum(dim=1)
        return cond, self.uncond_logits(code).squeeze(1)


def build_discriminators(cfg: ModelConfig) -> nn.ModuleList:
    """StackGAN++ concatenates [condition ; code] in the conditional head (official D_GET_LOGITS)."""
    return stage_discriminators(cfg, condition_first=True)
