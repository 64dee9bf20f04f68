"""The DAMSM text and image encoders (AttnGAN, Xu et al., CVPR 2018, section 3.3).

``TextEncoder`` is AttnGAN's ``RNN_ENCODER``: word embeddings, dropout, one bidirectional LSTM layer
whose outputs are the word features and whose two final hidden states form the sentence embedding.
``ImageEncoder`` maps an image to a grid of region features (the counterpart of AttnGAN's Inception
``Mixed_6e`` 17 x 17 grid) and one global feature (AttnGAN: pooled ``Mixed_7c``), both in the same
D-dimensional space as the text. By default it is a small CNN trained from scratch, which is what
makes pretraining possible offline on a CPU; a frozen torchvision Inception-v3 or MobileNetV2 can be
used instead when the user has its ImageNet weights on disk (only the two projections are trained
then, as in AttnGAN).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from stackgan2.errors import CheckpointError

Backbone = Literal["cnn", "inception_v3", "mobilenet_v2", "attngan_inception_v3"]
BACKBONES: tuple[str, ...] = ("cnn", "inception_v3", "mobilenet_v2")  # what pretraining offers
# The official AttnGAN CNN_ENCODER, imported (stackgan2 import --image-encoder): Inception-v3 resized to
# 299 px as its PyTorch 0.3 nn.Upsample(mode='bilinear') did, i.e. align_corners=True (torch docs:
# "the default behavior for these modes up to version 0.3.1"); its region projection has no bias
# (imported as zeros).
IMPORTED_BACKBONES: tuple[str, ...] = ("attngan_inception_v3",)
ALL_BACKBONES: tuple[str, ...] = (*BACKBONES, *IMPORTED_BACKBONES)

# torchvision's ImageNet weights for MobileNetV2 expect these per-channel statistics; the Inception-v3
# weights (ported from TensorFlow) expect pixels in [-1, 1], which is what our images already are.
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class TextEncoder(nn.Module):
    """Bidirectional LSTM over word embeddings -> word features (B, D, T) and sentence embedding (B, D)."""

    def __init__(self, vocab_size: int, word_dim: int = 300, dim: int = 256, dropout: float = 0.5) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"dim must be even (two LSTM directions), got {dim}")
        self.dim = dim
        self.embedding = nn.Embedding(vocab_size, word_dim)
        self.dropout = nn.Dropout(dropout)
        self.lstm = nn.LSTM(word_dim, dim // 2, batch_first=True, bidirectional=True)
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)  # AttnGAN RNN_ENCODER.init_weights

    @property
    def vocab_size(self) -> int:
        return self.embedding.num_embeddings

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, T = ids.shape
        assert lengths.shape == (B,), f"lengths must be ({B},), got {tuple(lengths.shape)}"
        embedded = self.dropout(self.embedding(ids))
        packed = pack_padded_sequence(embedded, lengths.cpu(), batch_first=True, enforce_sorted=False)
        output, (hidden, _) = self.lstm(packed)
        output, _ = pad_packed_sequence(output, batch_first=True, total_length=T)
        words = output.transpose(1, 2)                          # padded positions are zeros
        sentence = torch.cat([hidden[0], hidden[1]], dim=1)     # last forward and first backward state
        assert words.shape == (B, self.dim, T) and sentence.shape == (B, self.dim)
        return words, sentence


class RegressionHead(nn.Module):
    """Sentence embedding (B, D) -> char-CNN-RNN embedding (B, out_features): an affine map.

    The features are standardised first (BatchNorm without its own affine parameters, a fixed affine
    map in eval mode): DAMSM only constrains their direction, and their spread across captions is
    small (about 0.02 per dimension), so a plain linear layer would need weights in the tens, which
    Adam reaches only after thousands of steps.
    """

    def __init__(self, dim: int, out_features: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(dim, affine=False)
        self.linear = nn.Linear(dim, out_features)

    @property
    def out_features(self) -> int:
        return self.linear.out_features

    def forward(self, sentence: torch.Tensor) -> torch.Tensor:
        return self.linear(self.norm(sentence))


def _down(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(out_ch), nn.LeakyReLU(0.2)
    )


def _small_cnn(width: int) -> tuple[nn.Module, int, nn.Module, int]:
    """Regions at 1/8 of the input with 4*width channels; global branch one halving further, 8*width."""
    regions = nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1), nn.LeakyReLU(0.2),
        _down(width, width), _down(width, 2 * width), _down(2 * width, 4 * width),
        nn.Conv2d(4 * width, 4 * width, 3, padding=1, bias=False), nn.BatchNorm2d(4 * width), nn.LeakyReLU(0.2),
    )
    return regions, 4 * width, _down(4 * width, 8 * width), 8 * width


def _torchvision_backbone(name: str) -> nn.Module:
    """An untrained torchvision network (ImageNet head included, so its state dicts load strictly)."""
    from torchvision import models

    if name.endswith("inception_v3"):
        return models.inception_v3(weights=None, aux_logits=True, init_weights=False)
    return models.mobilenet_v2(weights=None)


# torchvision Inception-v3 children: ImageEncoder.region_net.{i} and .global_net.{i} in this order.
INCEPTION_REGION_LAYERS = (
    "Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
    "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e",
)
INCEPTION_GLOBAL_LAYERS = ("Mixed_7a", "Mixed_7b", "Mixed_7c")


def _split_backbone(name: str, net: nn.Module) -> tuple[nn.Module, int, nn.Module, int]:
    if name.endswith("inception_v3"):
        # AttnGAN CNN_ENCODER: regions from Mixed_6e (768 x 17 x 17), global from Mixed_7c (2048).
        children = dict(net.named_children())
        return (nn.Sequential(*(children[n] for n in INCEPTION_REGION_LAYERS)), 768,
                nn.Sequential(*(children[n] for n in INCEPTION_GLOBAL_LAYERS)), 2048)
    # MobileNetV2: regions after the last stride-16 block (96 x 14 x 14), global from the 1280-ch head.
    return net.features[:14], 96, net.features[14:], 1280


def load_backbone_weights(path: Path) -> dict[str, torch.Tensor]:
    """A torchvision state dict from ``.safetensors`` or ``.pth``/``.pt`` (``weights_only`` loading: no code runs)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"backbone weights not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any parse failure of a user-supplied file is a user error
        raise CheckpointError(f"cannot read backbone weights {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} is not a plain state dict of tensors (a torchvision weights file)")
    return state


class ImageEncoder(nn.Module):
    """Image (B, 3, S, S) in [-1, 1] -> region features (B, D, h, w) and a global feature (B, D)."""

    def __init__(
        self,
        dim: int = 256,                         # shared image-text feature size D
        width: int = 32,                        # small CNN: channels of its first layer
        backbone: Backbone = "cnn",             # or a frozen torchvision network
        backbone_weights: Path | None = None,   # ImageNet weights for a torchvision backbone
    ) -> None:
        super().__init__()
        if backbone not in ALL_BACKBONES:
            raise ValueError(f"unknown image backbone {backbone!r}; valid: {', '.join(ALL_BACKBONES)}")
        self.dim = dim
        self.backbone = backbone
        if backbone == "cnn":
            self.region_net, region_ch, self.global_net, global_ch = _small_cnn(width)
        else:
            net = _torchvision_backbone(backbone)
            if backbone_weights is not None:
                try:
                    net.load_state_dict(load_backbone_weights(backbone_weights))
                except RuntimeError as exc:
                    raise CheckpointError(
                        f"{backbone_weights} does not hold torchvision {backbone} weights: {str(exc).splitlines()[0]}"
                    ) from None
            self.region_net, region_ch, self.global_net, global_ch = _split_backbone(backbone, net)
            for p in [*self.region_net.parameters(), *self.global_net.parameters()]:
                p.requires_grad_(False)
        self.region_proj = nn.Conv2d(region_ch, dim, 1)
        self.global_proj = nn.Linear(global_ch, dim)
        if backbone != "cnn":
            for layer in (self.region_proj, self.global_proj):  # AttnGAN CNN_ENCODER.init_trainable_weights
                nn.init.uniform_(layer.weight, -0.1, 0.1)
        self.train()

    @property
    def frozen_backbone(self) -> bool:
        return self.backbone != "cnn"

    def train(self, mode: bool = True) -> ImageEncoder:
        super().train(mode)
        if self.frozen_backbone:  # a frozen ImageNet network keeps its BatchNorm statistics
            self.region_net.eval()
            self.global_net.eval()
        return self

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        if self.backbone == "cnn":
            return images
        size = 299 if self.backbone.endswith("inception_v3") else 224
        official = self.backbone == "attngan_inception_v3"
        x = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=official)
        if self.backbone == "mobilenet_v2":
            mean = x.new_tensor(_IMAGENET_MEAN).view(1, 3, 1, 1)
            std = x.new_tensor(_IMAGENET_STD).view(1, 3, 1, 1)
            x = ((x + 1) / 2 - mean) / std
        return x

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        assert images.ndim == 4 and images.shape[1] == 3, f"images must be (B, 3, S, S), got {tuple(images.shape)}"
        B = images.shape[0]
        features = self.region_net(self._prepare(images))
        regions = self.region_proj(features)
        pooled = self.global_net(features).mean(dim=(2, 3))
        global_feature = self.global_proj(pooled)
        assert regions.shape[:2] == (B, self.dim) and global_feature.shape == (B, self.dim)
        return regions, global_feature
