"""``import_official``: an officially released ``torch.save``d generator -> a stackgan2 pipeline directory.

AttnGAN also brings its DAMSM text encoder (``RNN_ENCODER``) and the vocabulary of its
``captions.pickle``, which become the pipeline's text encoder; the DAMSM image encoder, when given,
is kept in a full DAMSM directory ``damsm/`` beside it (for ``eval --metrics r-precision``).

The file is read with ``torch.load(weights_only=True)``, which only rebuilds tensors and plain
containers: a pickle that asks for anything else (``os.system`` ...) is refused before anything in
it runs. Names may carry the ``module.`` prefix of ``nn.DataParallel`` (the released files do).
Every official tensor must map onto the project's generator with the same shape and every generator
tensor must come from the file; the first problem is reported naming the official tensor. The
released files predate PyTorch 0.4.1, so BatchNorm's ``num_batches_tracked`` counters (unused when
sampling) may be absent and are then set to 0. The pipeline directory is written atomically (a temp
directory renamed into place), so a failed import leaves ``out`` as it was; every file is read and
checked before anything is written.
"""

from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from stackgan2.config import ExperimentConfig, resolve_config
from stackgan2.errors import CheckpointError, UsageError
from stackgan2.io import check_output_dir, sha256_file
from stackgan2.models import build_generator
from stackgan2.official.attngan import (
    ATTNGAN,
    IMAGE_ENCODER_PREFIXES,
    IMAGE_ENCODER_ZERO_FILLED,
    TEXT_ENCODER_PREFIXES,
    diagnose_encoder,
    read_vocabulary,
)
from stackgan2.official.family import OfficialFamily
from stackgan2.official.stackgan_v1 import STACKGAN_V1
from stackgan2.official.stackgan_v2 import STACKGAN_V2
from stackgan2.pipeline import Text2ImagePipeline, _build_generator
from stackgan2.text import ImageEncoder, PromptEncoder, TextEncoder

FAMILIES: dict[str, OfficialFamily] = {family.name: family for family in (STACKGAN_V2, ATTNGAN, STACKGAN_V1)}
DATA_PARALLEL_PREFIX = "module."
DAMSM_DIR = "damsm"  # in an imported AttnGAN pipeline: the full DAMSM (text + image encoder), for R-precision
OPTIONAL_BUFFER = "num_batches_tracked"
WRONG_ARCHITECTURE = "wrong --from, --preset or --config?"


def get_family(name: str) -> OfficialFamily:
    if name in FAMILIES:
        return FAMILIES[name]
    raise UsageError(f"unknown model family {name!r}; valid: {', '.join(FAMILIES)}")


def read_official_weights(path: Path, holds: str = "a generator") -> dict[str, Tensor]:
    """The ``name -> tensor`` dict saved in ``path`` (float tensors as float32, ``module.`` stripped), read safely."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    try:
        with warnings.catch_warnings():  # torch warns about unusual pickle protocols before refusing them
            warnings.simplefilter("ignore")
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        asked = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = f"asks for {asked.group(1)}" if asked else "uses pickle instructions a tensor file never needs"
        raise CheckpointError(
            f"refusing to load {path}: its pickle {what}; only tensors and plain containers are accepted and "
            "nothing in the file was run (a truncated or corrupt file can also cause this)"
        ) from None
    except (RuntimeError, EOFError, ValueError, KeyError, IndexError, TypeError, AttributeError, OSError) as exc:
        first = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise CheckpointError(f"{path} is not a readable PyTorch weights file (truncated or corrupt?): {first}") from None
    if not isinstance(loaded, dict) or not loaded:
        raise CheckpointError(f"{path} holds a {type(loaded).__name__}, not a state dict (name -> tensor) of {holds}")
    state: dict[str, Tensor] = {}
    for name, tensor in loaded.items():
        if not isinstance(name, str) or not isinstance(tensor, Tensor):
            raise CheckpointError(f"{path} is not a plain state dict: entry {name!r} holds a {type(tensor).__name__}")
        short = name.removeprefix(DATA_PARALLEL_PREFIX)
        if short in state:
            raise CheckpointError(f"{path} holds {short} twice (with and without the {DATA_PARALLEL_PREFIX} prefix)")
        state[short] = tensor.float() if tensor.is_floating_point() else tensor
    return state


def map_to_project(
    official: dict[str, Tensor], family: OfficialFamily, config: ExperimentConfig, source: Path
) -> dict[str, Tensor]:
    """Rename ``official`` onto this project's ``Generator(config.model)``, checking names and shapes."""
    with torch.device("meta"):
        expected = build_generator(config.model).state_dict()
    what = f"an official {family.title} generator at preset {config.preset!r}"
    return rename_checked(official, family.generator_prefixes(config.model), expected, what, source,
                          family.diagnose(set(official)))


def rename_checked(
    official: dict[str, Tensor],
    prefixes: dict[str, str],
    expected: dict[str, Tensor],
    what: str,
    source: Path,
    diagnosis: str | None,
    zero_filled: tuple[str, ...] = (),
) -> dict[str, Tensor]:
    """``official`` renamed by module ``prefixes`` (official -> ours) into the state dict ``expected``
    describes (names, shapes, dtypes; on any device); the first missing, extra or mis-shaped tensor is
    a ``CheckpointError`` naming it in official terms. Our tensors in ``zero_filled`` (an official layer
    without bias) and BatchNorm counters may be absent and are then zeros."""

    def ours(name: str) -> str | None:
        match = max((p for p in prefixes if name.startswith(p)), key=len, default=None)
        return None if match is None else prefixes[match] + name[len(match) :]

    def theirs(name: str) -> str:
        match = max((p for p in prefixes.values() if name.startswith(p)), key=len, default=None)
        return name if match is None else next(o for o, p in prefixes.items() if p == match) + name[len(match) :]

    def fail(problem: str, names: list[str]) -> CheckpointError:
        more = f" (and {len(names) - 1} more)" if len(names) > 1 else ""
        hint = f"; {diagnosis}" if diagnosis else f"; {WRONG_ARCHITECTURE}"
        return CheckpointError(f"{source}: {problem} {names[0]}{more}{hint}")

    mapped = {name: ours(name) for name in official}
    unexpected = [name for name, target in mapped.items() if target not in expected]
    if unexpected:
        raise fail("tensor not part of " + what + ":", unexpected)
    state = {target: official[name] for name, target in mapped.items() if target is not None}
    missing = [theirs(n) for n in expected if n not in state and not n.endswith(OPTIONAL_BUFFER) and n not in zero_filled]
    if missing:
        raise fail(f"missing tensor of {what}:", missing)
    for name, target in mapped.items():
        want, got = expected[target], official[name]
        if got.shape != want.shape:
            raise CheckpointError(
                f"{source}: tensor {name} has shape {tuple(got.shape)} but {what} needs {tuple(want.shape)}; "
                f"{diagnosis or WRONG_ARCHITECTURE}"
            )
        if got.is_floating_point() != want.is_floating_point():
            raise CheckpointError(f"{source}: tensor {name} holds {got.dtype} values; {what} needs {want.dtype}")
    for name in expected:
        if name.endswith(OPTIONAL_BUFFER) and name not in state:
            state[name] = torch.zeros((), dtype=torch.long)
        elif name in zero_filled and name not in state:
            state[name] = torch.zeros(expected[name].shape)
    return state


def _file_record(path: Path) -> dict[str, str]:
    return {"file": path.name, "sha256": sha256_file(path)}


def import_text_side(
    config: ExperimentConfig, text_encoder: Path, vocab: Path
) -> tuple[PromptEncoder, dict[str, Any]]:
    """AttnGAN's DAMSM text encoder ``text_encoder`` with the vocabulary of ``vocab`` (captions.pickle),
    as a ``PromptEncoder`` at ``config.text``, and the record of both files for the pipeline's source."""
    text_encoder, vocab = Path(text_encoder), Path(vocab)
    vocabulary = read_vocabulary(vocab)
    official = read_official_weights(text_encoder, "the DAMSM text encoder (RNN_ENCODER)")
    rows = official.get("encoder.weight")
    if rows is not None and rows.ndim == 2 and rows.shape[0] != len(vocabulary):
        raise CheckpointError(
            f"{text_encoder}: tensor encoder.weight has {rows.shape[0]:,} word embeddings but {vocab} holds "
            f"{len(vocabulary):,} words; use the captions.pickle the encoder was trained with "
            "(birds: 5,450 words, COCO: 27,297)"
        )
    text = config.text
    encoder = TextEncoder(len(vocabulary), text.word_dim, text.dim, text.dropout)
    what = (f"an official AttnGAN RNN_ENCODER at preset {config.preset!r} ({len(vocabulary):,} words, "
            f"{text.word_dim}-d embeddings, {text.dim}-d features)")
    state = rename_checked(official, TEXT_ENCODER_PREFIXES, encoder.state_dict(), what, text_encoder,
                           diagnose_encoder(set(official), "text_encoder"))
    encoder.load_state_dict(state)
    record = {"text_encoder": _file_record(text_encoder), "vocab": {**_file_record(vocab), "words": len(vocabulary)}}
    return PromptEncoder(vocabulary, encoder, text), record


def import_image_encoder(config: ExperimentConfig, image_encoder: Path) -> ImageEncoder:
    """AttnGAN's DAMSM image encoder (CNN_ENCODER: Inception-v3 + two projections) as an ``ImageEncoder``."""
    image_encoder = Path(image_encoder)
    official = read_official_weights(image_encoder, "the DAMSM image encoder (CNN_ENCODER)")
    with torch.device("meta"):  # no wasted initialisation of 22 M parameters
        encoder = ImageEncoder(config.text.dim, backbone="attngan_inception_v3")
    what = f"an official AttnGAN CNN_ENCODER ({config.text.dim}-d features)"
    state = rename_checked(official, IMAGE_ENCODER_PREFIXES, encoder.state_dict(), what, image_encoder,
                           diagnose_encoder(set(official), "image_encoder"), IMAGE_ENCODER_ZERO_FILLED)
    encoder.load_state_dict(state, strict=True, assign=True)
    return encoder.float().eval()


def import_official(
    weights: Path,
    family: str,
    out: Path,
    preset: str | None = None,
    config_file: Path | None = None,
    overrides: dict[str, Any] | None = None,
    text_encoder: Path | None = None,
    vocab: Path | None = None,
    image_encoder: Path | None = None,
) -> Text2ImagePipeline:
    """Convert the official generator file ``weights`` of ``family`` into the pipeline directory ``out``.

    The architecture comes from ``preset`` (default: the family's released model) < ``config_file`` <
    what the family sets for the file (``OfficialFamily.detect``: the StackGAN v1 stage, AttnGAN's
    official attention mask) < ``overrides``. AttnGAN needs ``text_encoder`` (its DAMSM
    ``text_encoder*.pth``) and ``vocab`` (its ``captions.pickle``); its ``image_encoder*.pth``, when
    given, is written with them as the full DAMSM directory ``out/damsm`` (what ``eval --metrics
    r-precision`` finds by default). Returns the pipeline, which records its ``source``.
    """
    chosen = get_family(family)
    if chosen.text_side and (text_encoder is None or vocab is None):
        raise UsageError(f"--from {chosen.name} needs --text-encoder (the DAMSM text_encoder*.pth) and --vocab "
                         "(the captions.pickle it was trained with) besides the generator")
    if not chosen.text_side and (text_encoder is not None or vocab is not None or image_encoder is not None):
        raise UsageError(f"--text-encoder, --vocab and --image-encoder are for --from attngan; a {chosen.title} "
                         "model is conditioned on char-CNN-RNN embeddings")
    check_output_dir(out)
    weights = Path(weights)
    official = read_official_weights(weights)
    detected = chosen.detect(set(official))
    config = resolve_config(preset or chosen.default_preset, config_file, {**detected, **(overrides or {})})
    if config.model.arch != chosen.arch:
        raise UsageError(
            f"preset {config.preset!r} builds a {config.model.arch} model; --from {chosen.name} needs a {chosen.arch} "
            f"preset such as {chosen.default_preset!r}"
        )
    state = map_to_project(official, chosen, config, weights)
    generator = _build_generator(config, state, weights)
    prompt_encoder, text_record, damsm = None, {}, None
    if chosen.text_side:
        assert text_encoder is not None and vocab is not None
        prompt_encoder, text_record = import_text_side(config, text_encoder, vocab)
    if prompt_encoder is not None and image_encoder is not None:
        # The image encoder sees the final branch's images as they are (the evaluation resizes to
        # text.image_size first), then resizes them to 299 px itself, as CNN_ENCODER does.
        text = prompt_encoder.config.model_copy(update={"image_size": config.model.resolutions[-1]})
        damsm = PromptEncoder(prompt_encoder.vocab, prompt_encoder.text_encoder, text,
                              image_encoder=import_image_encoder(config, image_encoder))
        text_record["image_encoder"] = _file_record(Path(image_encoder))
    source = {
        "family": chosen.name,
        **_file_record(weights),
        "preset": config.preset,
        "tensors": len(state),
        "documentation": chosen.documentation,
        **text_record,
    }
    pipe = Text2ImagePipeline(generator, prompt_encoder, config, source=source)
    pipe.save_pretrained(out, extra=(lambda tmp: damsm.save(tmp / DAMSM_DIR)) if damsm is not None else None)
    return pipe
