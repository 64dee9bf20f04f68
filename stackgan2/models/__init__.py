"""The networks of every model family, chosen by ``model.arch``.

``blocks`` holds the layers the families share; ``stackgan2`` (StackGAN++, the default), ``attngan`` and
``stackgan1`` each hold only their own layers and import only ``blocks``. ``FAMILIES`` maps an arch name
to its builders: adding a family is a module with a ``build_generator`` and a ``build_discriminators``,
an entry here, an objective in ``stackgan2.training.objectives`` and a preset.

Every family's generator returns the same thing: ``forward(z, sentence_embedding, eps)`` gives (branch
images, mu, logvar) with eps of ``cfg.eps_dim`` columns; a generator that attends to words
(``cfg.attends_to_words``) also takes ``words=`` and ``mask=``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from stackgan2.config import ModelConfig
from stackgan2.models import attngan, stackgan1, stackgan2
from stackgan2.models.blocks import TextAffine, WordAffine


@dataclass(frozen=True)
class Family:
    """A model family's builders and its official weight initialisation (see ``init_weights``)."""

    build_generator: Callable[[ModelConfig], nn.Module]
    build_discriminators: Callable[[ModelConfig], nn.ModuleList]
    init: Literal["orthogonal", "normal"] = "orthogonal"


FAMILIES: dict[str, Family] = {
    "stackgan2": Family(stackgan2.Generator, stackgan2.build_discriminators),
    "attngan": Family(attngan.AttnGANGenerator, attngan.build_discriminators),
    "stackgan1": Family(stackgan1.build_generator, stackgan1.build_discriminators, init="normal"),
}


def build_generator(cfg: ModelConfig) -> nn.Module:
    """The generator of ``cfg.arch``."""
    return FAMILIES[cfg.arch].build_generator(cfg)


def build_discriminators(cfg: ModelConfig) -> nn.ModuleList:
    """One ``StageDiscriminator`` per trained generator branch (``cfg.trained_branches``), as ``cfg.arch`` builds them."""
    return FAMILIES[cfg.arch].build_discriminators(cfg)


@torch.no_grad()
def init_weights(module: nn.Module, scheme: Literal["orthogonal", "normal"] = "orthogonal") -> None:
    """Official weights_init. StackGAN++ (``orthogonal``): orthogonal conv/linear weights, linear bias 0,
    BN weight N(1, 0.02), bias 0. StackGAN v1 (``normal``, PT ``miscc/utils.py``): conv and linear
    weights N(0, 0.02), conv biases left at PyTorch's default, linear bias 0, BN as above.

    A spectrally normalised layer gets its stored (unnormalised) weight initialised; the text-driven
    affine blocks (``TextAffine``, ``WordAffine``) are then reset to the identity they start from."""
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
        if isinstance(m, TextAffine | WordAffine):
            m.reset_identity()


def _raw_weight(layer: nn.Module) -> Tensor:
    """The weight tensor a layer stores: under spectral norm the parametrization's original."""
    if nn.utils.parametrize.is_parametrized(layer, "weight"):
        return layer.parametrizations.weight.original
    return layer.weight


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
