"""What an official model family must tell the importer: a name table and a diagnosis of wrong files."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from stackgan2.config import ModelConfig


@dataclass(frozen=True)
class OfficialFamily:
    """One family of officially released weights, plugged into ``stackgan2.official.importer``.

    ``generator_prefixes(model)`` maps every official module prefix of the generator (as its
    ``state_dict()`` names them, without ``module.``) to this project's prefix for ``model``'s
    architecture; tensor names below a prefix are the same on both sides. ``diagnose(names)`` says,
    for a file whose names do not fit, what it seems to be instead (or None); ``detect(names)`` gives
    config overrides for the file (which StackGAN v1 stage its names show; the attention mask the
    released AttnGAN models were trained with), below the user's. ``text_side``: the family brings its
    own text encoder and vocabulary (AttnGAN's DAMSM), which the import needs.
    """

    name: str                                                # the --from value, e.g. "stackgan-v2"
    title: str                                               # for messages: "StackGAN++ (hanzhanggit/StackGAN-v2)"
    arch: str                                                # model.arch of the presets it fits
    default_preset: str                                      # the preset of the released model
    generator_prefixes: Callable[[ModelConfig], dict[str, str]]
    diagnose: Callable[[set[str]], str | None]
    documentation: str                                       # where the official files are described
    detect: Callable[[set[str]], dict[str, Any]] = lambda names: {}
    text_side: bool = False
