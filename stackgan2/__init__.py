"""stackgan2: StackGAN++ text-to-image synthesis (Zhang et al., TPAMI 2018, arXiv 1710.10916).

Heavy modules (torch) are imported lazily so that ``stackgan2 --help`` starts fast.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
