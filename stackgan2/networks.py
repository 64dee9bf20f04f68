"""Deprecated import path, kept for one release: the networks live in ``stackgan2.models``.

``stackgan2.models.blocks`` (the shared layers), ``stackgan2.models.stackgan2`` (the StackGAN++ tree and
the feature critic) and ``stackgan2.models`` (the builders). Nothing inside the package imports this module.
"""

import warnings

from stackgan2.models import build_discriminators, build_generator, count_parameters, init_weights  # noqa: F401
from stackgan2.models.blocks import (  # noqa: F401
    GLU,
    Activation,
    ConditioningAugmentation,
    InitStage,
    RefineStage,
    ResBlock,
    StageDiscriminator,
    TextAffine,
    ToImage,
    WordAffine,
    WordAttention,
    activation_layer,
    broadcast_conv3x3,
    conv3x3,
    conv_block,
    down_block,
    glu_block,
)
from stackgan2.models.stackgan2 import FeatureCritic, Generator  # noqa: F401

warnings.warn("stackgan2.networks is deprecated and will be removed; import from stackgan2.models", DeprecationWarning,
              stacklevel=2)
