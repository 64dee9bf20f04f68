"""StackGAN++ generator tree and per-scale discriminators, and the blocks every family shares.

Architecture, layer order and parameter counts follow the official hanzhanggit/StackGAN-v2
``code/model.py`` (G_NET, D_NET64/128/256/512); the names are this project's (see STYLE.md). At the
``birds`` preset: Generator 21,239,696 parameters, discriminators 5,723,906 / 18,834,178 /
71,269,122 (64 / 128 / 256 px), asserted in tests.

The blocks take an ``activation``: StackGAN++ gates with GLU (a conv to twice the channels), StackGAN
v1 (``stackgan2.stackgan1``) uses ReLU on the same layers. ``build_generator`` and
``build_discriminators`` pick the family from ``model.arch``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stackgan2.config import ModelConfig

Activation = Literal["glu", "relu"]


def conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=False)


class GLU(nn.Module):
    """Gated linear unit over channels: first half * sigmoid(second half)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.glu(x, dim=1)


def activation_layer(activation: Activation) -> nn.Module:
    return GLU() if activation == "glu" else nn.ReLU(inplace=True)


def conv_block(in_channels: int, out_channels: int, upsample: bool, activation: Activation = "glu") -> nn.Sequential:
    """[nearest x2] -> conv3x3 -> BN -> activation, ``out_channels`` wide.

    GLU (StackGAN++ upBlock / Block3x3_relu) convolves to 2*out and gates half of it away; ReLU
    (StackGAN v1 upBlock) convolves to out.
    """
    width = out_channels * 2 if activation == "glu" else out_channels
    layers: list[nn.Module] = [nn.Upsample(scale_factor=2, mode="nearest")] if upsample else []
    layers += [conv3x3(in_channels, width), nn.BatchNorm2d(width), activation_layer(activation)]
    return nn.Sequential(*layers)


def glu_block(in_channels: int, out_channels: int, upsample: bool) -> nn.Sequential:
    """The StackGAN++ ``conv_block``: [nearest x2] -> conv3x3 to 2*out -> BN -> GLU."""
    return conv_block(in_channels, out_channels, upsample, "glu")


class ResBlock(nn.Module):
    """conv3x3-BN-act-conv3x3-BN plus identity.

    GLU (StackGAN++): no activation after the add. ReLU (StackGAN v1): ReLU after the add.
    """

    def __init__(self, channels: int, activation: Activation = "glu") -> None:
        super().__init__()
        self.block = nn.Sequential(
            *conv_block(channels, channels, False, activation),
            conv3x3(channels, channels),
            nn.BatchNorm2d(channels),
        )
        self.out_activation = nn.ReLU(inplace=True) if activation == "relu" else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.out_activation(x + self.block(x))


class ConditioningAugmentation(nn.Module):
    """Sentence embedding -> (c, mu, logvar); c = mu + exp(logvar / 2) * eps (official CA_NET).

    GLU: fc to 4*c_dim, gated (StackGAN++). ReLU: fc to 2*c_dim, then ReLU over both halves, so
    mu >= 0 and logvar >= 0 (StackGAN v1 PyTorch ``CA_NET``, kept as official).
    """

    def __init__(self, text_dim: int, c_dim: int, activation: Activation = "glu", noise: float = 1.0) -> None:
        super().__init__()
        self.c_dim = c_dim
        self.noise = noise  # model.ca_noise: 1 = official
        self.fc = nn.Linear(text_dim, c_dim * (4 if activation == "glu" else 2), bias=True)
        self.activation = activation_layer(activation)

    def forward(self, sentence_embedding: Tensor, eps: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        x = self.activation(self.fc(sentence_embedding))
        mu, logvar = x[:, : self.c_dim], x[:, self.c_dim :]
        std = torch.exp(0.5 * logvar)
        eps = torch.randn_like(std) if eps is None else eps
        return mu + std * (eps if self.noise == 1 else self.noise * eps), mu, logvar


class TextAffine(nn.Module):
    """DF-GAN's text-conditioned per-channel affine: ``gamma(c) * x + beta(c)``.

    gamma and beta are each ``Linear(c_dim, C) -> ReLU -> Linear(C, C)``; the second Linear starts at
    weight 0 and bias 1 (gamma) / 0 (beta), so the block starts as the identity (tobran/DF-GAN
    ``code/models/GAN.py`` ``Affine._initialize``). Here it follows each G up-block's GLU, keeping the
    official batch norm (levers.md, "Porting to StackGAN++"), and is driven by the CA code c.
    """

    def __init__(self, c_dim: int, channels: int) -> None:
        super().__init__()
        self.gamma = nn.Sequential(nn.Linear(c_dim, channels), nn.ReLU(inplace=True), nn.Linear(channels, channels))
        self.beta = nn.Sequential(nn.Linear(c_dim, channels), nn.ReLU(inplace=True), nn.Linear(channels, channels))
        self.reset_identity()

    @torch.no_grad()
    def reset_identity(self) -> None:
        for head, bias in ((self.gamma, 1.0), (self.beta, 0.0)):
            head[-1].weight.zero_()
            head[-1].bias.fill_(bias)

    def forward(self, x: Tensor, c_code: Tensor) -> Tensor:
        return self.gamma(c_code)[:, :, None, None] * x + self.beta(c_code)[:, :, None, None]


class WordAttention(nn.Module):
    """Each pixel attends over the words of its caption (official GlobalAttentionGeneral).

    Word features (B, D, T) are projected into the image-feature space by a 1x1 convolution without
    bias; logits are plain dot products of pixel and projected word; the softmax runs over the words
    of each pixel, with masked words (padding, unknown words) at -inf. Returns the context
    (B, C, H, W) and the attention maps (B, T, H, W).

    ``official_mask_order``: reproduce the official mask misalignment. There the (B*HW, T) logits
    are ordered batch-major but the mask is ``mask.repeat(HW, 1)``, whose row r belongs to caption
    r % B, so at batch > 1 most pixels use another caption's padding mask (attention leaks onto
    padding or skips real words). The released AttnGAN models were trained that way.
    """

    def __init__(self, channels: int, word_dim: int, official_mask_order: bool = False) -> None:
        super().__init__()
        self.project = nn.Conv2d(word_dim, channels, kernel_size=1, bias=False)
        self.official_mask_order = official_mask_order

    def forward(self, hidden: Tensor, words: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        batch, channels, height, width = hidden.shape
        length = words.shape[2]
        assert words.shape[0] == batch, f"words: expected a batch of {batch}, got {tuple(words.shape)}"
        source = self.project(words.unsqueeze(3)).squeeze(3)                # (B, C, T)
        logits = torch.bmm(hidden.reshape(batch, channels, -1).transpose(1, 2), source)  # (B, HW, T)
        if mask is not None:
            assert mask.shape == (batch, length), f"mask: expected ({batch}, {length}), got {tuple(mask.shape)}"
            # A caption with no word to attend to (only unknown words) gets a zero context, not NaN.
            empty = mask.all(dim=1)
            mask = mask & ~empty[:, None]
            if self.official_mask_order:
                pixel_mask = mask.repeat(height * width, 1).view(batch, height * width, length)
            else:
                pixel_mask = mask[:, None, :].expand(-1, height * width, -1)
            logits = logits.masked_fill(pixel_mask, float("-inf"))
        attention = torch.softmax(logits, dim=2)                             # over the words of each pixel
        if mask is not None:
            attention = attention * (~empty).to(attention.dtype)[:, None, None]
        context = torch.bmm(source, attention.transpose(1, 2))               # (B, C, HW)
        maps = attention.transpose(1, 2).reshape(batch, length, height, width)
        return context.view(batch, channels, height, width), maps


class WordAffine(nn.Module):
    """A per-pixel text affine driven by word attention: ``gamma(ctx) * x + beta(ctx)``.

    Each pixel of ``x`` attends over the caption's words (``WordAttention``, AttnGAN's
    GlobalAttentionGeneral); its word context ``ctx`` predicts a scale and shift for that pixel
    through 1x1 convolutions, the spatial form of DF-GAN's per-channel ``TextAffine`` (a
    SPADE-style modulation, Park et al. CVPR 2019, with AttnGAN's word context as the layout, as in
    SSA-GAN, Liao et al. CVPR 2022). The convolutions start at weight 0 and bias 1 / 0, so the block
    starts as the identity. Returns the modulated map and the (B, T, H, W) attention maps.
    """

    def __init__(self, channels: int, word_dim: int) -> None:
        super().__init__()
        self.attention = WordAttention(channels, word_dim)
        self.gamma = nn.Conv2d(channels, channels, kernel_size=1)
        self.beta = nn.Conv2d(channels, channels, kernel_size=1)
        self.reset_identity()

    @torch.no_grad()
    def reset_identity(self) -> None:
        for head, bias in ((self.gamma, 1.0), (self.beta, 0.0)):
            head.weight.zero_()
            head.bias.fill_(bias)

    def forward(self, x: Tensor, words: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
        context, maps = self.attention(x, words, mask)
        return self.gamma(context) * x + self.beta(context), maps


class InitStage(nn.Module):
    """code -> Linear -> BN1d -> activation -> 4x4 x channels, then up-blocks halving the width.

    Official INIT_STAGE_G: GLU, 4 up-blocks, 4x4 x 16*ngf -> 64x64 x ngf. StackGAN v1 STAGE1_G: the
    same with ReLU, 4x4 x 8*GF_DIM -> 64x64 x GF_DIM/2. With ``c_dim`` (deep text fusion) a
    ``TextAffine`` follows every up-block; with ``word_dim`` (word attention) a ``WordAffine`` follows
    each of the last ``WORD_BLOCKS`` up-blocks (32 and 64 px at base 64).
    """

    WORD_BLOCKS = 2

    def __init__(
        self, in_dim: int, channels: int, num_upsamples: int = 4, activation: Activation = "glu",
        c_dim: int | None = None, word_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.channels = channels
        width = channels * 4 * 4 * (2 if activation == "glu" else 1)
        self.fc = nn.Sequential(nn.Linear(in_dim, width, bias=False), nn.BatchNorm1d(width), activation_layer(activation))
        self.upsample = nn.Sequential(
            *[conv_block(channels // 2**i, channels // 2 ** (i + 1), True, activation) for i in range(num_upsamples)]
        )
        self.fusion = (
            nn.ModuleList(TextAffine(c_dim, channels // 2 ** (i + 1)) for i in range(num_upsamples)) if c_dim else None
        )
        first_word_block = max(0, num_upsamples - self.WORD_BLOCKS)
        self.word_fusion = (
            nn.ModuleDict({str(i): WordAffine(channels // 2 ** (i + 1), word_dim)
                           for i in range(first_word_block, num_upsamples)}) if word_dim else None
        )

    def forward(
        self, code: Tensor, c_code: Tensor | None = None, words: Tensor | None = None, mask: Tensor | None = None,
        attention: list[Tensor] | None = None,
    ) -> Tensor:
        """The base-resolution hidden map. With word fusion, ``words`` (B, D, T) and ``mask`` (B, T) feed
        it and each block's attention maps are appended to ``attention`` when a list is given."""
        hidden = self.fc(code).view(-1, self.channels, 4, 4)
        if self.fusion is None and self.word_fusion is None:
            return self.upsample(hidden)
        for i, block in enumerate(self.upsample):
            hidden = block(hidden)
            if self.fusion is not None:
                hidden = self.fusion[i](hidden, c_code)
            if self.word_fusion is not None and str(i) in self.word_fusion:
                hidden, maps = self.word_fusion[str(i)](hidden, words, mask)
                if attention is not None:
                    attention.append(maps)
        return hidden


def _stretch(small: Tensor, dim: int, size: int) -> Tensor:
    """Length 3 -> ``size`` along ``dim``: the first slice, ``size - 2`` copies of the middle, the last."""
    first, middle, last = small.split(1, dim)
    shape = list(middle.shape)
    shape[dim] = size - 2
    return torch.cat([first, middle.expand(shape), last], dim)


def broadcast_conv3x3(code: Tensor, weight: Tensor, height: int, width: int) -> Tensor:
    """``conv3x3(code broadcast to height x width, weight, padding=1)``, computed on a 3x3 map.

    A spatially constant input gives a spatially constant output except where the zero padding
    removes taps: only the first and last rows and columns differ. So the conv runs on a 3x3 map
    (corner, edge and inner values) whose middle row and column are then stretched: the same
    numbers for a fraction of the FLOPs (StackGAN++'s refine stages broadcast the 128-d text code
    to 64x64 and 128x128 px before their joint conv).
    """
    assert height >= 2 and width >= 2, f"broadcast_conv3x3 needs a map of at least 2x2, got {height}x{width}"
    small = F.conv2d(code[:, :, None, None].expand(-1, -1, 3, 3), weight, padding=1)
    return _stretch(_stretch(small, 2, height), 3, width)


class RefineStage(nn.Module):
    """[c broadcast ; hidden] -> joint conv -> residual blocks -> up-block(s) (official NEXT_STAGE_G).

    With ``split_condition`` (the default) the joint conv's weight is applied in two parts, the
    hidden channels as a normal conv and the broadcast condition through ``broadcast_conv3x3``:
    the same maths and parameters as the conv over the concatenation, which ``split_condition =
    False`` computes literally (the plain benchmark path).

    StackGAN v1's Stage-II G (hr_joint, residual, upsample1-4) is this stage with ReLU,
    ``condition_first=False`` (it concatenates [hidden ; c]) and 4 up-blocks, each halving the width.
    """

    def __init__(
        self,
        channels: int,
        c_dim: int,
        r_num: int,
        activation: Activation = "glu",
        condition_first: bool = True,
        num_upsamples: int = 1,
        text_fusion: bool = False,
        word_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.c_dim, self.condition_first = c_dim, condition_first
        self.split_condition = True
        self.joint = conv_block(channels + c_dim, channels, False, activation)
        self.residual = nn.Sequential(*[ResBlock(channels, activation) for _ in range(r_num)])
        ups = [conv_block(channels // 2**i, channels // 2 ** (i + 1), True, activation) for i in range(num_upsamples)]
        # One up-block keeps the official NEXT_STAGE_G state-dict keys (upsample.1 is its conv).
        self.upsample = ups[0] if num_upsamples == 1 else nn.Sequential(*ups)
        self.fusion = TextAffine(c_dim, channels // 2**num_upsamples) if text_fusion else None
        self.word_fusion = WordAffine(channels // 2**num_upsamples, word_dim) if word_dim else None

    def forward(
        self, hidden: Tensor, c_code: Tensor, words: Tensor | None = None, mask: Tensor | None = None,
        attention: list[Tensor] | None = None,
    ) -> Tensor:
        height, width = hidden.shape[-2:]
        if self.split_condition:
            conv, rest = self.joint[0], self.joint[1:]
            split = self.c_dim if self.condition_first else conv.weight.shape[1] - self.c_dim
            first, second = conv.weight[:, :split], conv.weight[:, split:]
            weight_c, weight_h = (first, second) if self.condition_first else (second, first)
            joined = F.conv2d(hidden, weight_h, padding=1) + broadcast_conv3x3(c_code, weight_c, height, width)
            out = rest(joined)
        else:
            condition = c_code[:, :, None, None].expand(-1, -1, height, width)
            parts = [condition, hidden] if self.condition_first else [hidden, condition]
            out = self.joint(torch.cat(parts, dim=1))
        out = self.upsample(self.residual(out))
        if self.fusion is not None:
            out = self.fusion(out, c_code)
        if self.word_fusion is not None:
            out, maps = self.word_fusion(out, words, mask)
            if attention is not None:
                attention.append(maps)
        return out


class ToImage(nn.Module):
    """conv3x3 (no bias) -> tanh: one branch's RGB image in [-1, 1] (official GET_IMAGE_G)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = conv3x3(channels, 3)

    def forward(self, hidden: Tensor) -> Tensor:
        return torch.tanh(self.conv(hidden))


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

    def forward(
        self,
        z: Tensor,
        sentence_embedding: Tensor,
        eps: Tensor | None = None,
        words: Tensor | None = None,
        mask: Tensor | None = None,
        return_attention: bool = False,
    ) -> tuple[list[Tensor], Tensor, Tensor] | tuple[list[Tensor], Tensor, Tensor, list[Tensor]]:
        """Images of every branch, mu, logvar. With ``g_word_attention`` it needs ``words`` (B, text_dim, T)
        and ``mask`` (B, T), True at words to ignore, and ``return_attention`` adds the (B, T, H, W)
        attention maps of every word-fusion block, lowest resolution first."""
        batch = z.shape[0]
        assert z.shape == (batch, self.cfg.z_dim), f"z: expected (B, {self.cfg.z_dim}), got {tuple(z.shape)}"
        assert sentence_embedding.shape == (batch, self.cfg.text_dim), (
            f"sentence_embedding: expected ({batch}, {self.cfg.text_dim}), got {tuple(sentence_embedding.shape)}"
        )
        if self.cfg.g_word_attention:
            if words is None:
                raise ValueError("this generator attends to words (model.g_word_attention): pass words=...")
            assert words.shape[:2] == (batch, self.cfg.text_dim), (
                f"words: expected ({batch}, {self.cfg.text_dim}, T), got {tuple(words.shape)}"
            )
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


def down_block(in_channels: int, out_channels: int, batch_norm: bool = True, leaky: bool = True) -> nn.Sequential:
    """conv4x4 stride 2 [-> BN] -> LeakyReLU(0.2) (official downBlock); ReLU with ``leaky=False``
    (StackGAN v1's Stage-II image encoder)."""
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, 4, 2, 1, bias=False)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_channels))
    layers.append(nn.LeakyReLU(0.2, inplace=True) if leaky else nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def _conv3x3_leaky(in_channels: int, out_channels: int, batch_norm: bool = True) -> nn.Sequential:
    """conv3x3 [-> BN] -> LeakyReLU(0.2) (official Block3x3_leakRelu)."""
    norm = [nn.BatchNorm2d(out_channels)] if batch_norm else []
    return nn.Sequential(conv3x3(in_channels, out_channels), *norm, nn.LeakyReLU(0.2, inplace=True))


class StageDiscriminator(nn.Module):
    """Discriminator for one branch; depth follows from log2(resolution / 4).

    The first four stride-2 blocks (no BN after the first) reach size/16 x 8*ndf (official
    encode_image_by_16times); each further halving adds a down-block doubling the channels, and as
    many 3x3 blocks bring the code back to 8*ndf at 4x4 (official D_NET128/256/512). Resolutions
    below 64 use only the first log2(resolution / 4) blocks. ``forward`` returns the conditional and
    unconditional logits (no sigmoid: losses use BCE-with-logits).

    StackGAN v1's STAGE1_D (64 px) and STAGE2_D (256 px) are the same encoder and heads, with
    ``condition_first=False`` (v1 concatenates [code ; condition]) and, for STAGE1_D,
    ``unconditional=False`` (no unconditional head; ``uncond_head`` then returns None).

    Levers (off = official): ``projection`` adds ``<W mu, mean-pooled code>`` to the conditional logit
    (Miyato & Koyama 2018: ``out = l7(h) + sum(l_y(y) * h)`` in sngan_projection's snresnet.py, with a
    Linear on the text code in place of the class embedding, as XMC-GAN does); ``norm="spectral"``
    drops every batch norm and puts spectral norm on every conv and linear layer.
    """

    def __init__(
        self, resolution: int, ndf: int, c_dim: int, unconditional: bool = True, condition_first: bool = True,
        projection: bool = False, norm: Literal["batch", "spectral"] = "batch",
    ) -> None:
        super().__init__()
        if resolution < 8 or resolution & (resolution - 1):
            raise ValueError(f"resolution must be a power of two >= 8, got {resolution}")
        self.resolution, self.c_dim, self.condition_first = resolution, c_dim, condition_first
        bn = norm == "batch"
        downs = int(math.log2(resolution // 4))
        head = min(downs, 4)
        widths = [ndf * 2**i for i in range(head)]
        blocks = [down_block(3, widths[0], batch_norm=False)]
        blocks += [down_block(widths[i - 1], widths[i], bn) for i in range(1, head)]
        extra = downs - head
        blocks += [down_block(widths[-1] * 2**i, widths[-1] * 2 ** (i + 1), bn) for i in range(extra)]
        blocks += [_conv3x3_leaky(widths[-1] * 2 ** (i + 1), widths[-1] * 2**i, bn) for i in reversed(range(extra))]
        self.encoder = nn.Sequential(*blocks)
        code_channels = widths[-1]
        self.uncond_logits = nn.Conv2d(code_channels, 1, kernel_size=4, stride=4) if unconditional else None
        self.joint = _conv3x3_leaky(code_channels + c_dim, code_channels, bn)
        self.cond_logits = nn.Conv2d(code_channels, 1, kernel_size=4, stride=4)
        self.projection = nn.Linear(c_dim, code_channels, bias=False) if projection else None
        if norm == "spectral":
            for layer in [m for m in self.modules() if isinstance(m, nn.Conv2d | nn.Linear)]:
                nn.utils.parametrizations.spectral_norm(layer)

    def forward(self, images: Tensor, condition: Tensor, groups: int = 1) -> tuple[Tensor, Tensor | None]:
        """Conditional and unconditional logits, (B,) each.

        ``groups > 1``: the batch is that many equal batches stacked (the D step's real, wrong and
        fake images). Convolutions run on the whole stack; batch norm normalises each group with its
        own statistics and updates its running statistics group after group, so the result equals
        one forward pass per group, in order (what the official code does), with larger convolutions.
        """
        code = self.encode(images, groups)
        return self.cond_head(code, condition, groups), self.uncond_head(code)

    def encode(self, images: Tensor, groups: int = 1) -> Tensor:
        """Images (B, 3, resolution, resolution) -> the 4x4 code (B, 8*ndf, 4, 4)."""
        batch = images.shape[0]
        assert images.shape[1:] == (3, self.resolution, self.resolution), (
            f"images: expected (B, 3, {self.resolution}, {self.resolution}), got {tuple(images.shape)}"
        )
        assert batch % groups == 0, f"a batch of {batch} does not split into {groups} equal groups"
        return _grouped(self.encoder, images, groups)

    def cond_head(self, code: Tensor, condition: Tensor, groups: int = 1) -> Tensor:
        """Conditional logits (B,): does the image code match the condition?"""
        assert condition.shape == (code.shape[0], self.c_dim), f"condition: expected ({code.shape[0]}, {self.c_dim})"
        tiled = condition[:, :, None, None].expand(-1, -1, 4, 4)
        joint = _grouped(self.joint, torch.cat([tiled, code] if self.condition_first else [code, tiled], dim=1), groups)
        logits = self.cond_logits(joint).view(-1)
        if self.projection is not None:
            logits = logits + (self.projection(condition) * code.mean(dim=(2, 3))).sum(dim=1)
        return logits

    def uncond_head(self, code: Tensor) -> Tensor | None:
        """Unconditional logits (B,), or None for a discriminator without that head."""
        return self.uncond_logits(code).view(-1) if self.uncond_logits is not None else None


def _grouped(module: nn.Module, x: Tensor, groups: int) -> Tensor:
    """``module(x)``, except that every BatchNorm inside runs once per group of the batch (see
    ``StageDiscriminator.forward``)."""
    if groups == 1:
        return module(x)
    if isinstance(module, nn.Sequential):
        for layer in module:
            x = _grouped(layer, x, groups)
        return x
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return torch.cat([module(part) for part in x.chunk(groups)])
    return module(x)


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


def build_generator(cfg: ModelConfig) -> nn.Module:
    """The generator of ``cfg.arch``. Every family's ``forward(z, sentence_embedding, eps)`` returns
    (branch images, mu, logvar), with eps of ``cfg.eps_dim`` columns; AttnGAN's also takes the word
    features and their mask (``words=``, ``mask=``)."""
    if cfg.arch == "stackgan1":
        from stackgan2.stackgan1 import build_stackgan1_generator

        return build_stackgan1_generator(cfg)
    if cfg.arch == "attngan":
        from stackgan2.attention import AttnGANGenerator  # it builds on this module's blocks

        return AttnGANGenerator(cfg)
    return Generator(cfg)


def build_discriminators(cfg: ModelConfig) -> nn.ModuleList:
    """One StageDiscriminator per trained generator branch (``cfg.trained_branches``), conditioned on
    ``cfg.condition_dim`` features."""
    v1 = cfg.arch == "stackgan1"
    # StackGAN v1: only Stage II's discriminator has the unconditional head (official STAGE2_D). v1 and
    # AttnGAN (D_GET_LOGITS) concatenate [code ; condition], StackGAN++ [condition ; code].
    return nn.ModuleList(
        StageDiscriminator(cfg.resolutions[i], cfg.ndf, cfg.condition_dim, unconditional=not v1 or cfg.v1_stage == 2,
                           condition_first=cfg.arch == "stackgan2", projection=cfg.d_projection, norm=cfg.d_norm)
        for i in cfg.trained_branches
    )


@torch.no_grad()
def init_weights(module: nn.Module, scheme: Literal["orthogonal", "normal"] = "orthogonal") -> None:
    """Official weights_init. StackGAN++ (``orthogonal``): orthogonal conv/linear weights, linear bias 0,
    BN weight N(1, 0.02), bias 0. StackGAN v1 (``normal``, PT ``miscc/utils.py``): conv and linear
    weights N(0, 0.02), conv biases left at PyTorch's default, linear bias 0, BN as above.

    A spectrally normalised layer gets its stored (unnormalised) weight initialised; ``TextAffine``
    blocks are then reset to the identity."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            if scheme == "orthogonal":
                nn.init.orthogonal_(_raw_weight(m), 1.0)
            else:
                _raw_weight(m).normal_(0.0, 0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                m.bias.zero_()
        elif isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            m.weight.normal_(1.0, 0.02)
            m.bias.zero_()


    for m in module.modules():
        if isinstance(m, TextAffine):
            m.reset_identity()


def _raw_weight(layer: nn.Module) -> Tensor:
    """The weight tensor a layer stores: under spectral norm the parametrization's original."""
    if nn.utils.parametrize.is_parametrized(layer, "weight"):
        return layer.parametrizations.weight.original
    return layer.weight


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
