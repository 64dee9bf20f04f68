"""Importing officially released weights (``stackgan2 import``) into stackgan2 pipeline directories.

A family (``family.OfficialFamily``) is a name table from the official ``state_dict()`` onto this
project's modules plus a diagnosis of wrong files; ``importer`` does the rest (safe reading,
checks, the pipeline directory). Available: StackGAN++ (``stackgan_v2``).
"""

from __future__ import annotations

from stackgan2.official.family import OfficialFamily
from stackgan2.official.importer import FAMILIES, PLANNED, get_family, import_official, read_official_weights

__all__ = ["FAMILIES", "PLANNED", "OfficialFamily", "get_family", "import_official", "read_official_weights"]
