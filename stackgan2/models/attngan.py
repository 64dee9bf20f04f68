"""AttnGAN's generator: the StackGAN++ tree whose refine stages attend to the words of the caption.

Follows the official taoxugit/AttnGAN ``code/model.py`` (G_NET, NEXT_STAGE_G) and
``code/GlobalAttention.py`` (GlobalAttentionGeneral), built from this project's blocks: the same
conditioning augmentation, init stage, residual blocks, up-blocks and to-image convolutions as
StackGAN++. What differs:

- every refine stage keeps the width ``ngf`` (StackGAN++ halves it per stage);
- a refine stage sees only the hidden map and the *word context*: each pixel's softmax-weighted sum
  of the projected word features. The sentence code is not an input of the refine stages (official
  NEXT_STAGE_G receives it and overwrites it with the attention context).

At the ``attngan-birds`` preset: 7,084,592 parameters (official G_NET, asserted in tests).
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
    ResBlock,
    ToImage,
    WordAttention,
    check_generator_inputs,
    glu_block,
    stage_discriminators,
)


class AttentionRefineStage(nn.Module):
    """[hidden ; word context] -> residual blocks (2C) -> up-block to C (official NEXT_STAGE_G)."""

    def __init__(self, channels: int, word_dim: int, r_num: int, official_mask_order: bool = False) -> None:
        super().__init__()
        self.attention = WordAttention(channels, word_dim, official_mask_order)
        self.residual = nn.Sequential(*[ResBlock(channels * 2) for _ in range(r_num)])
        self.upsample = glu_block(channels * 2, channels, upsample=True)

    def forward(self, hidden: Tensor, words: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
        context, maps = self.attention(hidden, words, mask)
        return self.upsample(self.residual(torch.cat([hidden, context], dim=1))), maps


class AttnGANGenerator(nn.Module):
    """CA + init stage (as StackGAN++) and ``stage_num - 1`` attention refine stages, all ``ngf`` wide."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.ca = ConditioningAugmentation(cfg.text_dim, cfg.c_dim)
        num_upsamples = int(math.log2(cfg.base_size // 4))
        self.init_stage = InitStage(cfg.z_dim + cfg.c_dim, cfg.ngf * 2**num_upsamples, num_upsamples)
        self.refine_stages = nn.ModuleList(
            AttentionRefineStage(cfg.ngf, cfg.text_dim, cfg.r_num, cfg.attention_official_mask)
            for _ in range(1, cfg.stage_num)
        )
        self.to_images = nn.ModuleList(ToImage(cfg.ngf) for _ in range(cfg.stage_num))

    def split_condition(self, enabled: bool) -> AttnGANGenerator:
        """No broadcast condition to split in attention stages (kept so both families build alike)."""
        return self

    def forward(self, z: Tensor, sentence_embedding: Tensor, eps: Tensor | None = None, words: Tensor | None = None,
                mask: Tensor | None = None, return_attention: bool = False) -> GeneratorOutput:
        """Images of every branch, mu, logvar (and with ``return_attention`` the (B, T, H, W) maps of
        each refine stage). ``words`` (B, text_dim, T) are the text encoder's word features, ``mask``
        (B, T) is True at words that get no attention (padding, unknown words)."""
        if words is None and self.refine_stages:
            raise ValueError("the AttnGAN generator needs the caption's word features (words=...)")
        check_generator_inputs(self.cfg, z, sentence_embedding, words)
        c_code, mu, logvar = self.ca(sentence_embedding, eps)
        hidden = self.init_stage(torch.cat([c_code, z], dim=1))
        images, maps = [self.to_images[0](hidden)], []
        for refine, to_image in zip(self.refine_stages, self.to_images[1:], strict=True):
            hidden, attention = refine(hidden, words, mask)
            images.append(to_image(hidden))
            maps.append(attention)
        if return_attention:
            return images, mu, logvar, maps
        return images, mu, logvar


def build_discriminators(cfg: ModelConfig) -> nn.ModuleList:
    """AttnGAN's D_GET_LOGITS concatenates [code ; sentence embedding]; every D has both heads."""
    return stage_discriminators(cfg, condition_first=False)
