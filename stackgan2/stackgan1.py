"""Deprecated import path, kept for one release: StackGAN v1's generators live in
``stackgan2.models.stackgan1``, its losses in ``stackgan2.training.objectives``.

Nothing inside the package imports this module.
"""

import warnings

from stackgan2.models.stackgan1 import StageOneGenerator, StageTwoGenerator  # noqa: F401
from stackgan2.models.stackgan1 import build_generator as build_stackgan1_generator  # noqa: F401
from stackgan2.training.objectives import shifted_pairs_discriminator_loss as discriminator_loss  # noqa: F401
from stackgan2.training.objectives import stackgan1_generator_loss as generator_loss  # noqa: F401

warnings.warn("stackgan2.stackgan1 is deprecated and will be removed; import from stackgan2.models.stackgan1 (losses: stackgan2.training.objectives)", DeprecationWarning,
              stacklevel=2)
