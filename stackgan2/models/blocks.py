"""The layers every model family is built from.

StackGAN++ (``models.stackgan2``), AttnGAN (``models.attngan``) and StackGAN v1 (``models.stackgan1``)
compose these; each family module holds only what is its own. Layer order and state-dict names follow
the official hanzhanggit/StackGAN-v2 ``code/model.py`` (names are this project's, see STYLE.md).

The blocks take an ``activation``: StackGAN++ and AttnGAN gate with GLU (a conv to twice the
channels), StackGAN v1 uses ReLU on the same layers. ``StageDiscriminator`` lives here too: all three
families judge each branch with it (v1 and AttnGAN concatenate [code ; condition], v1 Stage I has no
unconditional head), so it is a shared block rather than StackGAN++'s own, and so are the FastGAN decoders
that rebuild real images from its features (``FeatureDecoders``, the ``train.d_recon_coef`` lever), and the
trained part of ControlGAN's word-level discriminator (``WordCritic``, the ``train.d_word_coef`` lever).
"""

from __future__ import annotations

import itertools
import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stackgan2.config import ModelConfig

Activation = Literal["glu", "relu"]
# Every family's generator returns (branch images, mu, logvar), plus attention maps when asked for them.
GeneratorOutput = tuple[list[Tensor], Tensor, Tensor] | tuple[list[Tensor], Tensor, Tensor, list[Tensor]]


def check_generator_inputs(cfg: ModelConfig, z: Tensor, sentence_embedding: Tensor, words: Tensor | None = None) -> None:
    """The shapes every family's generator takes: z (B, z_dim), the sentence embedding (B, text_dim) and,
    when given, the word features (B, text_dim, T)."""
    batch = z.shape[0]
    assert z.shape == (batch, cfg.z_dim), f"z: expected (B, {cfg.z_dim}), got {tuple(z.shape)}"
    assert sentence_embedding.shape == (batch, cfg.text_dim), (
        f"sentence_embedding: expected ({batch}, {cfg.text_dim}), got {tuple(sentence_embedding.shape)}"
    )
    if words is not None:
        assert words.shape[:2] == (batch, cfg.text_dim), (
            f"words: expected ({batch}, {cfg.text_dim}, T), got {tuple(words.shape)}"
        )


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
        # {size: channels} of the down-blocks' maps (``features``), for FastGAN's decoders (train.d_recon_coef)
        self.feature_channels = {resolution >> (i + 1): block[0].out_channels for i, block in enumerate(blocks[:downs])}
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
        self._check_images(images)
        assert batch % groups == 0, f"a batch of {batch} does not split into {groups} equal groups"
        return _grouped(self.encoder, images, groups)

    def features(self, images: Tensor, smallest: int = 4) -> dict[int, Tensor]:
        """{size: map} of the down-blocks from resolution / 2 to ``smallest`` px (the blocks after it do not
        run; channels in ``feature_channels``): what FastGAN's self-supervised decoders read (``FeatureDecoders``)."""
        self._check_images(images)
        maps, x = {}, images
        for block in self.encoder:
            if x.shape[-1] == smallest:
                break
            x = block(x)
            maps[x.shape[-1]] = x
        return maps

    def _check_images(self, images: Tensor) -> None:
        assert images.shape[1:] == (3, self.resolution, self.resolution), (
            f"images: expected (B, 3, {self.resolution}, {self.resolution}), got {tuple(images.shape)}"
        )

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


def stage_discriminators(cfg: ModelConfig, *, condition_first: bool, unconditional: bool = True) -> nn.ModuleList:
    """One ``StageDiscriminator`` per trained generator branch (``cfg.trained_branches``), conditioned on
    ``cfg.condition_dim`` features, with the config's D levers (projection, normalisation)."""
    return nn.ModuleList(
        StageDiscriminator(cfg.resolutions[i], cfg.ndf, cfg.condition_dim, unconditional=unconditional,
                           condition_first=condition_first, projection=cfg.d_projection, norm=cfg.d_norm)
        for i in cfg.trained_branches
    )


def quadrant(x: Tensor, which: Tensor) -> Tensor:
    """Quadrant ``which[b]`` of every ``x[b]``, (B, C, H/2, W/2): 0 top left, 1 top right, 2 bottom left,
    3 bottom right (FastGAN ``train.py`` ``crop_image_by_part``, there one part for the whole batch)."""
    batch, channels, height, width = x.shape
    halves = x.reshape(batch, channels, 2, height // 2, 2, width // 2)
    return halves[torch.arange(batch, device=x.device), :, which // 2, :, which % 2]


class SimpleDecoder(nn.Sequential):
    """A feature map -> an RGB image in [-1, 1] of ``out_size`` px: FastGAN's ``SimpleDecoder`` (odegeasslbc/
    FastGAN-pytorch ``models.py``), up-blocks (nearest x2, conv3x3 to twice the width, BN, GLU: ``glu_block``)
    halving the width from ``width``, then conv3x3 to RGB and tanh (``ToImage``). FastGAN pools its input to 8x8
    (``nn.AdaptiveAvgPool2d(8)``), decodes to 128 px with widths 128, 64, 64, 32 and spectrally normalises every
    conv; here the map keeps its size, the image is smaller and nothing is spectrally normalised (the decoder
    is not judged by anyone)."""

    def __init__(self, in_channels: int, in_size: int, out_size: int, width: int) -> None:
        ups = int(math.log2(out_size // in_size))
        assert ups >= 1 and in_size << ups == out_size, f"cannot decode {in_size} px to {out_size} px by doubling"
        widths = [in_channels] + [max(width >> i, 1) for i in range(ups)]
        super().__init__(*(glu_block(a, b, upsample=True) for a, b in itertools.pairwise(widths)), ToImage(widths[-1]))


class FeatureDecoders(nn.Module):
    """FastGAN's self-supervised decoders of one ``StageDiscriminator`` (``train.d_recon_coef``; Liu et al.
    ICLR 2021, the ``Discriminator``'s ``decoder_big`` and ``decoder_part``): ``whole`` rebuilds the image from
    D's 8x8 map (the 4x4 code of an 8 px D), ``part`` one quadrant of it from that quadrant of D's 16x16 map
    (D has one from 32 px on), each at its target's size up to ``max_size`` px (FastGAN: 128).

    Image b of a batch rebuilds quadrant (b + batches) % 4, so every batch trains all four; the ``batches``
    buffer counts the batches seen (like batch norm's ``num_batches_tracked``), so the rotation is part of
    the checkpoint and an exact resume continues it (FastGAN draws one part per batch, ``random.randint(0, 3)``).
    """

    def __init__(self, D: StageDiscriminator, width: int, max_size: int = 64) -> None:
        super().__init__()
        self.whole_size = min(8, D.resolution // 2)
        channels, part_size = D.feature_channels, 2 * self.whole_size
        self.whole = SimpleDecoder(channels[self.whole_size], self.whole_size, min(D.resolution, max_size), width)
        self.part = (SimpleDecoder(channels[part_size], self.whole_size, min(D.resolution // 2, max_size), width)
                     if part_size in channels else None)
        self.register_buffer("batches", torch.zeros((), dtype=torch.long))

    def forward(self, maps: dict[int, Tensor], images: Tensor) -> list[tuple[Tensor, Tensor]]:
        """(reconstruction, target) pairs from D's ``features`` of the real ``images``: the whole images and,
        with a part decoder, each one's quadrant; the targets are averaged down to the decoder's size (FastGAN
        resizes with ``F.interpolate``'s default, nearest: aliased samples, which an L1 loss would chase)."""
        pairs = [(self.whole(maps[self.whole_size]), images)]
        if self.part is not None:
            which = (torch.arange(images.shape[0], device=images.device) + self.batches) % 4
            pairs.append((self.part(quadrant(maps[2 * self.whole_size], which)), quadrant(images, which)))
        if self.training:
            self.batches += 1
        return [(rec, F.interpolate(target, size=rec.shape[-2:], mode="area")) for rec, target in pairs]


class WordCritic(nn.Module):
    """The trained part of ControlGAN's word-level discriminator (``train.d_word_coef``; Li et al. NeurIPS 2019,
    "Controllable Text-to-Image Generation"): a map of frozen image region features into the word space, and an
    affine map of the word-region relevance R of an (image, caption) pair to the logit of "they match".

    ControlGAN's ``word_level_correlation`` (mrlibw/ControlGAN ``code/miscc/losses.py``) scores the frozen DAMSM
    image encoder's region features, already in the word space, against the caption's words with AttnGAN's
    attention and takes sigmoid(R) as that probability; nothing in it is trained. Here ``project`` (a 1x1
    convolution without bias, starting as the identity) lets the discriminator learn which directions of the
    features tell one word from another, and ``scale * R + bias`` (starting at 1 and 0) where to put the
    threshold: with sigmoid(R) alone a mismatched caption would need sum over its words of exp(gamma2 * cos) < 1,
    every word's cosine far below zero. At initialisation the head computes ControlGAN's score exactly. R itself
    is ``stackgan2.text.damsm.matched_word_region_scores``: pure maths, composed with this module by the term.
    """

    def __init__(self, feature_dim: int, word_dim: int) -> None:
        super().__init__()
        self.project = nn.Conv2d(feature_dim, word_dim, kernel_size=1, bias=False)
        self.scale = nn.Parameter(torch.ones(()))
        self.bias = nn.Parameter(torch.zeros(()))
        with torch.no_grad():
            self.project.weight.copy_(torch.eye(word_dim, feature_dim)[:, :, None, None])

    def forward(self, regions: Tensor) -> Tensor:
        """Region features (B, feature_dim, h, w) -> (B, word_dim, h, w)."""
        return self.project(regions)

    def logits(self, relevance: Tensor) -> Tensor:
        """The match logits (B,) of word-region relevances (B,)."""
        return self.scale * relevance + self.bias
