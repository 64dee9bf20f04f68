"""Deprecated import path, kept for one release: AttnGAN's generator lives in ``stackgan2.models.attngan``.

Nothing inside the package imports this module.
"""

import warnings

from stackgan2.models.attngan import AttentionRefineStage, AttnGANGenerator  # noqa: F401
from stackgan2.models.blocks import WordAttention  # noqa: F401

warnings.warn("stackgan2.attention is deprecated and will be removed; import from stackgan2.models.attngan", DeprecationWarning,
              stacklevel=2)
