"""``Text2ImagePipeline``: sentences -> images with a trained StackGAN++ (text encoder + G_ema + config).

A pipeline directory, written by ``save_pretrained`` (``stackgan2 export``), holds::

    config.json             {"format": "stackgan2-pipeline", "version": 1, "dtype": "float32" | "float16",
                             "sha256": {relative file: hash}, "config": <ExperimentConfig>}
    generator.safetensors   the G_ema state dict
    text_encoder/           ``PromptEncoder.save`` (the text side; the DAMSM image encoder only for a model
                            trained with the DAMSM loss, so fine-tuning can go on with it); absent
                            for a model conditioned on precomputed embeddings it cannot compute itself
                            (an imported char-CNN-RNN model: ``pipe(embeddings=...)``, see stackgan2.official)

An imported model's config.json also holds ``"source"``: the official file it came from (name,
sha256, family, preset).

``from_pretrained`` also reads a training run directory (its newest checkpoint that verifies) or one
checkpoint file (its text encoder is then ``<run>/text_encoder``, two levels up). Files are checked
against the hashes in config.json or in the checkpoint sidecar, and nothing is ever unpickled.

Noise: image ``k`` of every prompt comes from a CPU ``torch.Generator`` seeded ``seed + k`` (z first,
then the conditioning-augmentation eps, as the official sampler draws a fresh CA sample). So the same
seed gives the same noise on every device and batch size, all prompts share their noise (easy to
compare), and image ``k`` of seed ``s`` is image 0 of seed ``s + k``.

Batch independence: CPU kernels (MKL's GEMM, oneDNN's convolutions) choose how to add up by the row
count of a forward, so a row's floats depend on how many rows share its forward; on the shipped model
more than half of the images differ by one level in a few pixels between forwards of 4 and of 6 to 16
rows (padding short forwards to 4 rows, as this module once did, only made a lone image match batches
of 4 or 5). On the CPU every generator forward therefore computes exactly one row, so an image is the
same bytes whether it was made alone, as image ``k`` of a batch, or beside other requests in
``stackgan2 serve``, for a given number of intra-op threads (1 and 2 threads round differently). That
costs nothing there: 16 one-row forwards took less time than one 16-row forward on the CPUs measured.
Other devices compute ``batch_size`` rows per forward (their speed is in batching) and promise no byte
identity across batch sizes. The rows of an AttnGAN model with the official attention mask see each
other's masks by design, so they always share their forward (``rows_interact``).
"""

from __future__ import annotations

import copy
import json
import math
import re
import secrets
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from itertools import chain, count
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from pydantic import ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from stackgan2.config import ExperimentConfig
from stackgan2.errors import CheckpointError, PromptError, UsageError
from stackgan2.imaging import branch_strip, save_png, to_pil, wrap_text
from stackgan2.io import atomic_directory, check_output_dir, read_format_json, sha256_file
from stackgan2.models import build_generator
from stackgan2.text import EncodedPrompts, PromptEncoder

if TYPE_CHECKING:
    from stackgan2.training.checkpoint import Checkpoint

PIPELINE_FORMAT = "stackgan2-pipeline"
PIPELINE_VERSION = 1
CONFIG_FILE = "config.json"
GENERATOR_FILE = "generator.safetensors"
TEXT_ENCODER_DIR = "text_encoder"
MAX_IMAGES_PER_PROMPT = 256
MAX_INTERPOLATION_STEPS = 64
MAX_SEED = 2**63 - 1 - MAX_IMAGES_PER_PROMPT
_EXPECTED = (
    "expected a pipeline directory (stackgan2 export), a run directory (runs/<name>) "
    "or a checkpoint file (runs/<name>/checkpoints/step-XXXXXXXX.safetensors)"
)

Device = torch.device | str | None


def _shipped(name: str) -> Path | None:
    """``stackgan2.assets/<name>`` if it is installed (holds a config.json), else None."""
    candidate = Path(str(resources.files("stackgan2.assets").joinpath(name)))
    return candidate if (candidate / CONFIG_FILE).is_file() else None


def shipped_model_dir() -> Path | None:
    """The pretrained toy-birds pipeline installed with the package (``stackgan2.assets/toy-birds``), if any."""
    return _shipped("toy-birds")


def shipped_classifier_dir() -> Path | None:
    """The toy-birds attribute classifier installed with the package (``stackgan2.assets/classifier-toy-birds``)."""
    return _shipped("classifier-toy-birds")


def default_model() -> Path:
    """The shipped model, or a ``CheckpointError`` telling the user to name one."""
    found = shipped_model_dir()
    if found is None:
        raise CheckpointError(
            "no pretrained model is shipped with this installation (stackgan2/assets/toy-birds is missing); "
            f"pass one with --model: {_EXPECTED}"
        )
    return found


def slugify(text: str, limit: int = 48) -> str:
    """A file-name-safe, lower-case, dash-separated version of ``text`` (``'prompt'`` if nothing is left)."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text).strip("-")
    return slug[:limit].rstrip("-") or "prompt"


def contact_sheet(images: Sequence[Image.Image], captions: Sequence[str], columns: int, padding: int = 6) -> Image.Image:
    """Images in a grid of ``columns`` columns on white, each with its caption (wrapped, <= 3 lines) below."""
    if len(images) != len(captions) or not images:
        raise ValueError(f"need one caption per image and at least one image, got {len(images)} / {len(captions)}")
    font = ImageFont.load_default()
    cell_w = max(96, max(image.width for image in images))
    cell_h = max(image.height for image in images)
    line_h = int(font.getbbox("Ag")[3]) + 2
    wrapped = [wrap_text(caption, font, cell_w, 3) for caption in captions]
    caption_h = line_h * max(len(lines) for lines in wrapped) + padding
    columns = max(1, min(columns, len(images)))
    rows = math.ceil(len(images) / columns)
    sheet = Image.new(
        "RGB", (padding + columns * (cell_w + padding), padding + rows * (cell_h + caption_h + padding)), "white"
    )
    draw = ImageDraw.Draw(sheet)
    for n, (image, lines) in enumerate(zip(images, wrapped, strict=True)):
        x = padding + (n % columns) * (cell_w + padding)
        y = padding + (n // columns) * (cell_h + caption_h + padding)
        sheet.paste(image, (x + (cell_w - image.width) // 2, y))
        for i, line in enumerate(lines):
            left = x + (cell_w - int(font.getlength(line))) // 2
            draw.text((left, y + cell_h + padding // 2 + i * line_h), line, fill="black", font=font)
    return sheet


def attention_overlays(image: Image.Image, maps: torch.Tensor) -> list[Image.Image]:
    """One copy of ``image`` per (H, W) map of ``maps`` (T, H, W): the map upscaled (bilinear) to the image,
    scaled to its maximum, brightens the attended pixels and dims the rest (an all-zero map, an
    unknown word, leaves the image dark)."""
    pixels = _as_tensor([image])[0]                                        # (3, S, S) in [-1, 1]
    size = (image.height, image.width)
    weights = torch.nn.functional.interpolate(maps[:, None].float(), size=size, mode="bilinear", align_corners=False)
    weights = weights / weights.amax(dim=(2, 3), keepdim=True).clamp_min(1e-12)
    shown = (pixels[None] + 1) * (0.15 + 0.85 * weights) - 1               # (T, 3, S, S)
    return to_pil(shown)


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between vectors ``a`` and ``b`` (D,) at positions ``t`` (T,) -> (T, D)."""
    cos = torch.dot(a, b) / (a.norm() * b.norm()).clamp_min(1e-12)
    omega = torch.arccos(cos.clamp(-1.0, 1.0))
    t = t[:, None]
    if omega.abs() < 1e-4:  # (anti)parallel: the sine formula is 0/0, straight lines are exact enough
        return torch.lerp(a, b, t)
    return (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)


def _as_tensor(images: Sequence[Image.Image]) -> torch.Tensor:
    """PIL images -> (N, 3, H, W) in [-1, 1] (the exact inverse of ``imaging.to_pil``)."""
    array = np.stack([np.asarray(image.convert("RGB")) for image in images])
    return torch.from_numpy(array).permute(0, 3, 1, 2).float() / 127.5 - 1


@dataclass(frozen=True)
class PipelineOutput:
    """Generated images, image ``n`` at every branch, with what the user should be told about the prompts."""

    branches: list[list[Image.Image]]   # branches[i][n]: image n at branch i (resolutions[i] px)
    captions: list[str]                 # what image n shows: its prompt (interpolations: the position)
    indices: list[int]                  # image n is number indices[n] of its prompt (noise seed: seed + index)
    seed: int                           # the base seed; pass it again to get the same images
    resolutions: list[int]
    unknown: list[list[str]]            # per input prompt, the words the text encoder does not know
    truncated: list[bool]               # per input prompt, whether words beyond text.max_words were dropped
    # AttnGAN models: attention[s][n] is image n's (T, H, W) word attention at refine stage s (float32, CPU;
    # one map per word of words[n], padding removed, unknown words all zero); None for StackGAN++.
    attention: list[list[torch.Tensor]] | None = None
    words: list[list[str]] | None = None   # the words of image n's prompt that the maps belong to

    @property
    def images(self) -> list[Image.Image]:
        """The final (highest-resolution) branch."""
        return self.branches[-1]

    def strips(self, padding: int = 2) -> list[Image.Image]:
        """Every branch of each image upscaled (nearest) to the final resolution, side by side."""
        return to_pil(branch_strip([_as_tensor(images) for images in self.branches], padding))

    def attention_strips(self) -> list[list[Image.Image]]:
        """AttnGAN models: for image n and refine stage s, a captioned strip of the stage's output image
        followed by one overlay per word of the prompt (the image dimmed where the word is not attended),
        as in the AttnGAN paper's figures."""
        if self.attention is None or self.words is None:
            raise UsageError("attention maps come from AttnGAN models (model.arch attngan); this model has none")
        strips = []
        for n, words in enumerate(self.words):
            row = []
            for stage, maps in enumerate(self.attention):
                image = self.branches[stage + 1][n]
                size = image.height
                label = f"{self.resolutions[stage]} -> {size} px"
                row.append(contact_sheet([image, *attention_overlays(image, maps[n])], [label, *words], 1 + len(words)))
            strips.append(row)
        return strips

    def sheet(self, columns: int, all_stages: bool = False) -> Image.Image:
        """A captioned contact sheet of the final images (or of the branch strips)."""
        return contact_sheet(self.strips() if all_stages else self.images, self.captions, columns)

    def save(self, out_dir: Path, all_stages: bool = False, grid: bool = False, attention: bool = False) -> list[Path]:
        """Write PNGs into ``out_dir`` (each atomically) and return their paths.

        One file per image, named ``<prompt-slug>_seed<seed>_<index>_<resolution>px.png`` (with
        ``all_stages`` the branch strip, ``..._64-128-256px.png``), or with ``grid`` one captioned
        contact sheet ``grid_seed<seed>_<count>images_<resolution>px.png``, one row per prompt when
        each prompt has 2 to 8 images. With ``attention`` (AttnGAN) each image also gets one strip per
        refine stage, ``..._attention<from>-<to>px.png`` (see ``attention_strips``).
        """
        out_dir = Path(out_dir)
        strips = self.attention_strips() if attention else None  # refused before anything is written
        check_output_dir(out_dir)
        pictures = self.strips() if all_stages else self.images
        res = "-".join(map(str, self.resolutions)) if all_stages else str(self.resolutions[-1])
        if grid:
            per_prompt = len(set(self.indices))
            columns = per_prompt if 1 < per_prompt <= 8 else min(8, len(pictures))
            path = out_dir / f"grid_seed{self.seed}_{len(pictures)}images_{res}px.png"
            save_png(np.asarray(contact_sheet(pictures, self.captions, columns)), path)
            return [path]
        slugs: dict[str, str] = {}
        for caption in dict.fromkeys(self.captions):  # distinct prompts whose slugs clash get -2, -3, ...
            base = slugify(caption)
            candidates = chain([base], (f"{base}-{i}" for i in count(2)))
            slugs[caption] = next(name for name in candidates if name not in slugs.values())
        paths: dict[Path, None] = {}
        for n, (picture, caption, index) in enumerate(zip(pictures, self.captions, self.indices, strict=True)):
            stem = f"{slugs[caption]}_seed{self.seed}_{index:03d}"
            path = out_dir / f"{stem}_{res}px.png"
            if path in paths:
                continue
            save_png(np.asarray(picture), path)
            paths[path] = None
            for stage, strip in enumerate(strips[n] if strips else []):
                low, high = self.resolutions[stage], self.resolutions[stage + 1]
                strip_path = out_dir / f"{stem}_attention{low}-{high}px.png"
                save_png(np.asarray(strip), strip_path)
                paths[strip_path] = None
        return list(paths)


class Text2ImagePipeline:
    """Text encoder (with its vocabulary) + ``G_ema`` + the ``ExperimentConfig`` they were trained with.

    ``pipe(["a small red bird"], seed=0).images`` -> PIL images of the final branch;
    ``pipe(embeddings=tensor)`` conditions on sentence embeddings directly (the only way for a model
    without text encoder, ``text_encoder=None``). ``source`` records where an imported model came from.
    """

    def __init__(
        self,
        generator: torch.nn.Module,
        text_encoder: PromptEncoder | None,
        config: ExperimentConfig,
        step: int | None = None,
        source: dict[str, Any] | None = None,
    ) -> None:
        if text_encoder is not None and text_encoder.dim != config.model.text_dim:
            raise ValueError(f"text encoder gives {text_encoder.dim}-d embeddings, model.text_dim is {config.model.text_dim}")
        self.generator = generator.eval().requires_grad_(False)
        self.text_encoder = text_encoder
        self.config = config
        self.step = step  # training iterations behind G_ema, when known (checkpoints; exports since they record it)
        self.source = source

    @property
    def device(self) -> torch.device:
        return next(self.generator.parameters()).device

    def to(self, device: torch.device | str) -> Text2ImagePipeline:
        self.generator.to(device)
        if self.text_encoder is not None:
            self.text_encoder.to(device)
        return self

    def encode(
        self, prompts: Sequence[str] | None = None, embeddings: torch.Tensor | np.ndarray | None = None
    ) -> EncodedPrompts:
        """Sentence embeddings on the pipeline's device: of ``prompts`` through the text encoder
        (``PromptError`` if there is none), or the given ``embeddings`` (N, text_dim), checked."""
        if embeddings is not None:
            given = _given_embeddings(embeddings, self.config.model.text_dim)
            return EncodedPrompts(given.embeddings.to(self.device), given.unknown, given.truncated)
        return self.require_text_encoder().encode(prompts, device=self.device)

    def require_text_encoder(self) -> PromptEncoder:
        """The text encoder; ``PromptError`` saying what to do instead for a model without one."""
        if self.text_encoder is None:
            origin = f" (imported from {self.source['file']})" if self.source and "file" in self.source else ""
            raise PromptError(
                f"this model{origin} has no text encoder: it was trained on precomputed "
                f"{self.config.model.text_dim}-d char-CNN-RNN embeddings, which cannot be computed from a sentence "
                "here; give embeddings instead (stackgan2 sample --model DIR --embeddings "
                "char-CNN-RNN-embeddings.pickle --index 0, or pipe(embeddings=...))"
            )
        return self.text_encoder

    # ------------------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, path: Path, device: Device = None) -> Text2ImagePipeline:
        """Load a pipeline directory, a run directory (newest valid checkpoint) or one checkpoint file."""
        path = Path(path)
        if not path.exists():
            raise CheckpointError(f"model not found: {path} ({_EXPECTED})")
        # stackgan2.training is imported only here: pipeline directories (the shipped model) do not need it
        if path.is_file():
            if path.suffix != ".safetensors":
                raise CheckpointError(f"{path} is not a model: {_EXPECTED}")
            from stackgan2.training.checkpoint import load_checkpoint

            pipe = cls._from_checkpoint(load_checkpoint(path), path.parent.parent / TEXT_ENCODER_DIR)
        elif (path / "checkpoints").is_dir():
            from stackgan2.training.checkpoint import latest_checkpoint

            checkpoint = latest_checkpoint(path / "checkpoints")
            if checkpoint is None:
                raise CheckpointError(f"run directory {path} has no valid checkpoint yet (see train.checkpoint_every)")
            pipe = cls._from_checkpoint(checkpoint, path / TEXT_ENCODER_DIR)
        elif (path / CONFIG_FILE).is_file():
            pipe = cls._from_pipeline_dir(path)
        else:
            raise CheckpointError(f"{path} is not a model: {_EXPECTED}")
        return pipe.to(device) if device is not None else pipe

    @classmethod
    def _from_checkpoint(cls, checkpoint: Checkpoint, text_dir: Path) -> Text2ImagePipeline:
        config = _validate_config(checkpoint.meta.get("config"), checkpoint.path)
        state = {k.removeprefix("G_ema."): v for k, v in checkpoint.tensors.items() if k.startswith("G_ema.")}
        if not state:
            raise CheckpointError(f"{checkpoint.path} holds no G_ema weights")
        generator = _build_generator(config, state, checkpoint.path)
        return cls(generator, _load_text_encoder(text_dir, config), config, checkpoint.step)

    @classmethod
    def _from_pipeline_dir(cls, directory: Path) -> Text2ImagePipeline:
        payload = _read_pipeline_config(directory / CONFIG_FILE)
        for name, digest in payload["sha256"].items():
            file = directory / name
            if not file.is_file():
                raise CheckpointError(f"pipeline directory {directory} is incomplete: {name} is missing")
            if sha256_file(file) != digest:
                raise CheckpointError(f"{file} does not match its hash in {CONFIG_FILE} (truncated, corrupt or tampered)")
        config = _validate_config(payload["config"], directory / CONFIG_FILE)
        try:
            state = load_file(str(directory / GENERATOR_FILE))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{directory / GENERATOR_FILE} is not a readable safetensors file: {exc}") from None
        generator = _build_generator(config, state, directory / GENERATOR_FILE)
        step = payload.get("step")
        step = step if isinstance(step, int) and not isinstance(step, bool) and step >= 0 else None
        # The hashed file list is the manifest: a model exported without text encoder lists none of its files.
        has_text = any(name.startswith(f"{TEXT_ENCODER_DIR}/") for name in payload["sha256"])
        text_encoder = _load_text_encoder(directory / TEXT_ENCODER_DIR, config) if has_text else None
        source = payload.get("source") if isinstance(payload.get("source"), dict) else None
        return cls(generator, text_encoder, config, step, source)

    def save_pretrained(
        self, directory: Path, fp16: bool = False, extra: Callable[[Path], None] | None = None
    ) -> Path:
        """Write a pipeline directory (G_ema + text encoder, optionally in float16), atomically replaced;
        ``extra(tmp)`` may add files, which are hashed with the rest (an import's DAMSM directory).

        Local paths in the config (data and cache folders, the text encoder source) are cleared: they
        mean nothing on another machine. Loading casts the weights back to float32.
        """
        directory = Path(directory)
        dtype = torch.float16 if fp16 else torch.float32
        config = self.config.model_copy(
            update={
                "data": self.config.data.model_copy(update={"data_dir": None, "cache_dir": None}),
                "train": self.config.train.model_copy(update={"text_encoder": None, "stage1": None}),
            }
        )

        def write(tmp: Path) -> None:
            state = {k: _cast(v, dtype) for k, v in self.generator.state_dict().items()}
            save_file(state, str(tmp / GENERATOR_FILE))
            if self.text_encoder is not None:
                # A model trained with the DAMSM loss keeps its DAMSM image encoder, so that
                # `train --init-from DIR` can go on with the same loss; sampling never uses it.
                keep_image = self.config.train.damsm_coef > 0
                _text_side(self.text_encoder, dtype, keep_image).save(tmp / TEXT_ENCODER_DIR)
            if extra is not None:
                extra(tmp)
            files = sorted(p for p in tmp.rglob("*") if p.is_file())
            payload = {
                "format": PIPELINE_FORMAT,
                "version": PIPELINE_VERSION,
                "dtype": str(dtype).removeprefix("torch."),
                "sha256": {p.relative_to(tmp).as_posix(): sha256_file(p) for p in files},
                "step": self.step,
                "config": config.model_dump(mode="json"),
                **({"source": self.source} if self.source is not None else {}),
            }
            (tmp / CONFIG_FILE).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")

        _write_directory(directory, write)
        return directory

    # ------------------------------------------------------------------------------ generation
    @torch.inference_mode()
    def __call__(
        self,
        prompts: str | Sequence[str] | None = None,
        num_images_per_prompt: int = 1,
        seed: int | None = None,
        truncation: float | None = None,
        device: Device = None,
        batch_size: int = 16,
        *,
        embeddings: torch.Tensor | np.ndarray | None = None,
        labels: Sequence[str] | None = None,
    ) -> PipelineOutput:
        """``num_images_per_prompt`` images of every prompt; ``truncation`` clamps |z| (truncated noise).

        ``seed=None`` draws a random seed (reported as ``output.seed``); ``device`` moves the pipeline
        there (it stays there). Unusable prompts raise ``PromptError``; unknown words are reported in
        ``output.unknown``. Images are generated ``batch_size`` at a time (on the CPU one at a time, see
        ``rows_per_forward``).

        Instead of prompts, ``embeddings`` (N, model.text_dim) conditions on sentence embeddings
        directly (e.g. char-CNN-RNN ones); ``labels`` (one per row, default ``"embedding i"``) then
        caption the images.
        """
        _check_range("num_images_per_prompt", num_images_per_prompt, 1, MAX_IMAGES_PER_PROMPT)
        seed = _resolve_seed(seed)
        if device is not None:
            self.to(device)
        if (prompts is None) == (embeddings is None):
            raise UsageError("give either prompts or embeddings (not both)")
        if embeddings is not None and self.attends_to_words:
            raise UsageError("this model attends to the words of a prompt (AttnGAN, --g-word-attention): give prompts, "
                             "not sentence embeddings")
        if embeddings is not None:
            encoded = self.encode(embeddings=embeddings)
            prompts = list(labels) if labels is not None else [f"embedding {i}" for i in range(len(encoded.unknown))]
            if len(prompts) != len(encoded.unknown):
                raise UsageError(f"{len(prompts)} labels for {len(encoded.unknown)} embeddings; give one label per row")
        else:
            prompts = [prompts] if isinstance(prompts, str) else list(prompts)
            encoded = self.encode(prompts)
        n = num_images_per_prompt
        seeds = list(range(seed, seed + n)) * len(prompts)
        rows = torch.arange(len(prompts)).repeat_interleave(n)
        words = self.word_inputs(encoded, rows.to(encoded.words.device)) if self.attends_to_words else None
        z, eps = self._noise(seeds)
        branches, attention = self._generate(
            encoded.embeddings[rows.to(encoded.embeddings.device)], _truncate(z, truncation), eps, batch_size, words
        )
        tokens = [self._prompt_words(p) for p in prompts for _ in range(n)] if attention is not None else None
        return PipelineOutput(
            branches,
            [p for p in prompts for _ in range(n)],
            list(range(n)) * len(prompts),
            seed,
            self.config.model.resolutions,
            encoded.unknown,
            encoded.truncated,
            _trim_maps(attention, tokens),
            tokens,
        )

    @property
    def has_attention_strips(self) -> bool:
        """Whether the generator returns one word-attention map per refine stage (AttnGAN), which
        ``PipelineOutput.attention_strips`` draws."""
        return self.config.model.arch == "attngan"

    @property
    def attends_to_words(self) -> bool:
        """Whether the generator takes word features (AttnGAN, StackGAN++ with ``g_word_attention``)."""
        return self.config.model.attends_to_words

    @property
    def rows_interact(self) -> bool:
        """Whether a row's pixels depend on the other rows of its forward: AttnGAN with the official
        attention mask (``model.attention_official_mask``, the imported released models), where a pixel
        of one caption uses another caption's padding mask."""
        return self.attends_to_words and self.config.model.attention_official_mask

    def rows_per_forward(self, batch_size: int) -> int:
        """How many rows one generator forward computes: one on the CPU (see "Batch independence" above),
        ``batch_size`` elsewhere and wherever rows interact."""
        return 1 if self.device.type == "cpu" and not self.rows_interact else batch_size

    def word_inputs(self, encoded: EncodedPrompts, rows: slice | torch.Tensor = slice(None)) -> dict[str, torch.Tensor]:
        """AttnGAN: the word features and mask of some encoded prompts, always padded to ``text.max_words``
        slots. Padding slots are masked, so they get exactly zero attention; a fixed length also makes the
        forward's arithmetic the same whatever prompts share it (``stackgan2 serve`` stacks requests of
        different lengths, and an image must not depend on its companions)."""
        return encoded.attention_inputs(rows, length=self.require_text_encoder().config.max_words)

    def _prompt_words(self, prompt: str) -> list[str]:
        """The words of ``prompt`` the text encoder reads (the first ``text.max_words`` tokens; with an
        imported AttnGAN vocabulary, its first known words)."""
        return list(self.text_encoder.vocab.encode(prompt, self.text_encoder.config.max_words).tokens)

    @torch.inference_mode()
    def interpolate(
        self,
        start: str,
        end: str,
        steps: int = 8,
        seed: int | None = None,
        interpolate_noise: bool = False,
        truncation: float | None = None,
        device: Device = None,
    ) -> PipelineOutput:
        """``steps`` images from ``start`` to ``end``, linearly interpolating the sentence embeddings.

        The noise of seed ``seed`` (z and the CA eps) is shared by every step, so only the text
        changes; ``interpolate_noise`` also moves z along the great circle (slerp) to seed ``seed + 1``'s
        z. The first image equals ``pipe([start], seed=seed)``; the last with ``interpolate_noise``
        uses z of ``seed + 1`` and eps of ``seed``.

        AttnGAN models also attend to the words, so the word features are interpolated too, slot by
        slot: word i of ``start`` blends into word i of ``end``. That is only defined when both prompts
        have the same number of words with unknown words at the same places (e.g. "a small red bird"
        -> "a large blue bird"); other pairs raise ``UsageError``.
        """
        _check_range("steps", steps, 2, MAX_INTERPOLATION_STEPS)
        seed = _resolve_seed(seed)
        if device is not None:
            self.to(device)
        encoded = self.encode([start, end])
        t = torch.linspace(0, 1, steps)
        embeddings = torch.lerp(encoded.embeddings[:1].cpu(), encoded.embeddings[1:].cpu(), t[:, None])
        words = self._interpolated_words(start, end, encoded, t) if self.attends_to_words else None
        z, eps = self._noise([seed, seed + 1])
        z = slerp(z[0], z[1], t) if interpolate_noise else z[:1].expand(steps, -1)
        branches, _ = self._generate(embeddings, _truncate(z, truncation), eps[:1].expand(steps, -1), steps, words)
        captions = [start, *(f"t = {float(x):.2f}" for x in t[1:-1]), end]
        return PipelineOutput(
            branches, captions, list(range(steps)), seed, self.config.model.resolutions, encoded.unknown, encoded.truncated
        )

    def _interpolated_words(self, start: str, end: str, encoded: EncodedPrompts, t: torch.Tensor) -> dict[str, torch.Tensor]:
        """AttnGAN: word features blended slot by slot at positions ``t`` (see ``interpolate``), padded
        as every AttnGAN forward is."""
        counts = [len(self._prompt_words(prompt)) for prompt in (start, end)]
        if counts[0] != counts[1] or not torch.equal(encoded.mask[0], encoded.mask[1]):
            why = (f"{start!r} has {counts[0]} words and {end!r} has {counts[1]}" if counts[0] != counts[1]
                   else "their unknown words are at different places")
            raise UsageError(f"an AttnGAN model attends to each word, so interpolation blends the words slot by slot "
                             f"and needs two prompts of the same word count with unknown words at the same places; "
                             f"{why} (e.g. 'a small red bird' -> 'a large blue bird')")
        words = encoded.words.cpu()
        blended = EncodedPrompts(
            encoded.embeddings, encoded.unknown, encoded.truncated,
            torch.lerp(words[:1], words[1:], t[:, None, None]), encoded.mask[:1].cpu().expand(len(t), -1),
        )
        return {k: v.to(self.device) for k, v in self.word_inputs(blended).items()}

    @torch.inference_mode()
    def render(
        self, embeddings: torch.Tensor, seeds: Sequence[int], truncation: float | None = None, batch_size: int = 16,
        words: dict[str, torch.Tensor] | None = None,
    ) -> list[list[Image.Image]]:
        """Row ``i``: sentence embedding ``embeddings[i]`` with the noise of seed ``seeds[i]`` -> PIL images per branch.

        The building block of ``stackgan2 serve``, which stacks the rows of several requests into one
        call; on the CPU a row's images do not depend on the rows beside it. Models that attend to words (AttnGAN,
        ``g_word_attention``) also need each row's ``words`` (``word_inputs``: features and mask, padded to ``text.max_words``).
        """
        if embeddings.shape[0] != len(seeds):
            raise ValueError(f"need one seed per embedding row, got {len(seeds)} seeds for {embeddings.shape[0]} rows")
        if self.attends_to_words and words is None:
            raise UsageError("this model attends to the words of each prompt (AttnGAN, --g-word-attention): give "
                             "their word features (words=pipe.word_inputs(encoded))")
        z, eps = self._noise(seeds)
        return self._generate(embeddings, _truncate(z, truncation), eps, batch_size,
                              words if self.attends_to_words else None)[0]

    def _noise(self, seeds: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """z (N, z_dim) and CA eps (N, eps_dim), row i from a CPU generator seeded ``seeds[i]`` (StackGAN v1
        Stage II: the eps of both CA networks, Stage I's first)."""
        z_dim, c_dim = self.config.model.z_dim, self.config.model.eps_dim
        z, eps = torch.empty(len(seeds), z_dim), torch.empty(len(seeds), c_dim)
        for row, seed in enumerate(seeds):
            generator = torch.Generator().manual_seed(seed)
            z[row] = torch.randn(z_dim, generator=generator)
            eps[row] = torch.randn(c_dim, generator=generator)
        return z, eps

    def _generate(
        self, embeddings: torch.Tensor, z: torch.Tensor, eps: torch.Tensor, batch_size: int,
        words: dict[str, torch.Tensor] | None = None,
    ) -> tuple[list[list[Image.Image]], list[list[torch.Tensor]] | None]:
        """Run G_ema ``rows_per_forward(batch_size)`` rows at a time; returns PIL images per branch and,
        given ``words`` (the word features and mask, one row per image) of an AttnGAN model, the
        attention maps per refine stage and image."""
        _check_range("batch_size", batch_size, 1, 4096)
        step = self.rows_per_forward(batch_size)
        branches: list[list[Image.Image]] = [[] for _ in self.config.model.resolutions]
        attention: list[list[torch.Tensor]] | None = None
        for start in range(0, z.shape[0], step):
            part = slice(start, start + step)
            inputs = [x[part].to(self.device) for x in (z, embeddings, eps)]
            extra = {k: v[part] for k, v in (words or {}).items()}
            if not (extra and self.has_attention_strips):
                images, _, _ = self.generator(*inputs, **extra)
            else:
                images, _, _, maps = self.generator(*inputs, **extra, return_attention=True)
                attention = attention or [[] for _ in maps]
                for out, stage in zip(attention, maps, strict=True):
                    out.extend(stage.float().cpu())
            for out, image in zip(branches, images, strict=True):
                out.extend(to_pil(image))
        return branches, attention


def _trim_maps(
    attention: list[list[torch.Tensor]] | None, tokens: list[list[str]] | None
) -> list[list[torch.Tensor]] | None:
    """Each image's maps without the padding slots of its batch (one map per word of its prompt)."""
    if attention is None or tokens is None:
        return None
    return [[maps[: len(words)] for maps, words in zip(stage, tokens, strict=True)] for stage in attention]


def _given_embeddings(embeddings: torch.Tensor | np.ndarray, text_dim: int) -> EncodedPrompts:
    """Caller-supplied sentence embeddings as ``EncodedPrompts`` (float32, CPU), shape and values checked."""
    tensor = torch.as_tensor(np.asarray(embeddings) if not isinstance(embeddings, torch.Tensor) else embeddings)
    if tensor.ndim == 1:
        tensor = tensor[None]
    if tensor.ndim != 2 or tensor.shape[1] != text_dim or tensor.shape[0] == 0:
        raise UsageError(f"embeddings must have shape (N, {text_dim}) for this model, got {tuple(tensor.shape)}")
    tensor = tensor.detach().to("cpu", torch.float32)
    if not torch.isfinite(tensor).all():
        raise UsageError("embeddings contain NaN or infinite values")
    return EncodedPrompts(tensor, [[] for _ in range(len(tensor))], [False] * len(tensor))


def _check_range(name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise UsageError(f"{name} must be between {low} and {high}, got {value}")


def _resolve_seed(seed: int | None) -> int:
    if seed is None:
        return secrets.randbelow(2**31)
    if not 0 <= seed <= MAX_SEED:
        raise UsageError(f"seed must be between 0 and {MAX_SEED}, got {seed}")
    return seed


def _truncate(z: torch.Tensor, truncation: float | None) -> torch.Tensor:
    if truncation is None:
        return z
    if not truncation > 0:
        raise UsageError(f"truncation must be a positive number (|z| is clamped to it), got {truncation}")
    return z.clamp(-truncation, truncation)


def _cast(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Floating tensors to ``dtype`` (integer buffers such as BatchNorm counters stay as they are)."""
    tensor = tensor.detach().cpu()
    return (tensor.to(dtype) if tensor.is_floating_point() else tensor).contiguous()


def _text_side(encoder: PromptEncoder, dtype: torch.dtype = torch.float32, keep_image: bool = False) -> PromptEncoder:
    """A copy of ``encoder`` in ``dtype``, without the DAMSM image encoder unless ``keep_image``."""
    head = copy.deepcopy(encoder.head).to(dtype) if encoder.head is not None else None
    text = copy.deepcopy(encoder.text_encoder).to(dtype)
    image = copy.deepcopy(encoder.image_encoder).to(dtype) if keep_image and encoder.image_encoder is not None else None
    return PromptEncoder(encoder.vocab, text, encoder.config, head, image, encoder.metrics)


def _validate_config(raw: Any, source: Path) -> ExperimentConfig:
    """The stored config, checked strictly for the architecture (``model``).

    Keys this stackgan2 version does not know in the sections sampling does not use (data, text,
    train) are dropped, so a model exported by an older or newer version still loads.
    """
    if isinstance(raw, dict):
        fields = ExperimentConfig.model_fields
        raw = {key: value for key, value in raw.items() if key in fields}
        for section in ("data", "text", "train"):
            if isinstance(raw.get(section), dict):
                known = fields[section].annotation.model_fields  # type: ignore[union-attr]
                raw[section] = {key: value for key, value in raw[section].items() if key in known}
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "config"
        raise CheckpointError(f"{source} holds an invalid config ({where}: {first['msg']})") from None


def _read_pipeline_config(path: Path) -> dict[str, Any]:
    payload = read_format_json(path, PIPELINE_FORMAT, PIPELINE_VERSION, "pipeline config", _EXPECTED)
    hashes = payload.get("sha256")
    if not isinstance(hashes, dict) or GENERATOR_FILE not in hashes or not all(isinstance(v, str) for v in hashes.values()):
        raise CheckpointError(f"{path} lacks the sha256 of {GENERATOR_FILE}")
    return payload


def _build_generator(config: ExperimentConfig, state: dict[str, torch.Tensor], source: Path) -> torch.nn.Module:
    """A float32 generator of ``config``'s family holding ``state``; built on the meta device (no wasted
    initialisation)."""
    with torch.device("meta"):
        generator = build_generator(config.model)
    try:
        generator.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        first = next((line.strip() for line in str(exc).splitlines()[1:] if line.strip()), str(exc))
        raise CheckpointError(f"{source} does not match its model config: {first}") from None
    return generator.float()


def _load_text_encoder(directory: Path, config: ExperimentConfig) -> PromptEncoder:
    """The text side of the encoder in ``directory``, checked against the generator's ``model.text_dim``."""
    if not directory.is_dir():
        raise CheckpointError(
            f"no text encoder at {directory} (a checkpoint file is read with its run's text_encoder/ two levels up)"
        )
    encoder = PromptEncoder.load(directory)
    if encoder.dim != config.model.text_dim:
        raise CheckpointError(
            f"the text encoder in {directory} gives {encoder.dim}-d embeddings but the generator expects "
            f"model.text_dim = {config.model.text_dim}; use the text encoder the model was trained with"
        )
    # Just loaded, in float32 and ours alone: unlike save_pretrained, nothing needs _text_side's deep
    # copy (3-9 ms of a cold `sample`).
    image = encoder.image_encoder if config.train.damsm_coef > 0 else None
    return PromptEncoder(encoder.vocab, encoder.text_encoder, encoder.config, encoder.head, image, encoder.metrics)


def _is_pipeline_dir(directory: Path) -> bool:
    try:
        return json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8")).get("format") == PIPELINE_FORMAT
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return False


def _write_directory(directory: Path, write: Callable[[Path], None]) -> None:
    """Publish a pipeline directory atomically; only a missing or empty directory, or a previous
    pipeline, may be replaced."""
    check_output_dir(directory)
    if directory.is_dir() and any(directory.iterdir()) and not _is_pipeline_dir(directory):
        raise UsageError(
            f"output directory {directory} holds other files; choose a new or empty directory or a previous export"
        )
    atomic_directory(directory, write)
