"""Importing officially released weights (``stackgan2 import``) into stackgan2 pipeline directories.

A family (``family.OfficialFamily``) is a name table from the official ``state_dict()`` onto this
project's modules plus a diagnosis of wrong files; ``importer`` does the rest (safe reading,
checks, the pipeline directory). Available: StackGAN++ (``stackgan_v2``), AttnGAN with its DAMSM text
encoder and vocabulary (``attngan``) and StackGAN v1 (``stackgan_v1``).
"""

from __future__ import annotations

from stackgan2.official.family import OfficialFamily
from stackgan2.official.importer import FAMILIES, get_family, import_official, read_official_weights

__all__ = ["FAMILIES", "OfficialFamily", "get_family", "import_official", "read_official_weights"]
