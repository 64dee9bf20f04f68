"""``PromptEncoder``: free sentences -> conditioning embeddings, and its on-disk directory format.

A text-encoder directory holds ``text_encoder.safetensors`` (the LSTM and, for char-CNN-RNN runs,
the regression head), ``vocab.json``, ``config.json`` (the ``TextConfig``, the vocabulary's size and
fingerprint, the image backbone and the pretraining metrics) and, after pretraining,
``image_encoder.safetensors``. Loading checks every file against the others, so a vocabulary from
another run or truncated weights give a ``CheckpointError`` instead of silently wrong embeddings;
nothing is ever unpickled.
"""

from __future__ import annotations

import json
import logging
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from stackgan2.config import TextConfig
from stackgan2.errors import CheckpointError, PromptError, UsageError
from stackgan2.io import atomic_directory, read_format_json
from stackgan2.text.encoders import ALL_BACKBONES, ImageEncoder, RegressionHead, TextEncoder
from stackgan2.text.vocab import PAD_ID, UNK_ID, Vocabulary

# Longer input is not a caption (AttnGAN uses the first 18 words); up to this length it is truncated
# with a warning, beyond it refused before any work is done.
MAX_PROMPT_CHARS = 10_000

logger = logging.getLogger("stackgan2.text")

ENCODER_FORMAT = "stackgan2-text-encoder"
ENCODER_VERSION = 1
TEXT_WEIGHTS, IMAGE_WEIGHTS, VOCAB_FILE, CONFIG_FILE = (
    "text_encoder.safetensors", "image_encoder.safetensors", "vocab.json", "config.json",
)
ENCODER_FILES = (TEXT_WEIGHTS, IMAGE_WEIGHTS, VOCAB_FILE, CONFIG_FILE)


def shorten(text: str, limit: int = 40) -> str:
    """``text`` quoted on one line, cut to ``limit`` characters, for messages."""
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= limit else flat[: limit - 1] + "…")


def word_list(words: Sequence[str], limit: int = 5) -> str:
    """The first ``limit`` words, each cut to 20 characters, comma-separated, for messages."""
    shown = [w if len(w) <= 20 else w[:19] + "…" for w in words[:limit]]
    return ", ".join(shown) + (f" and {len(words) - limit} more" if len(words) > limit else "")


def pad_batch(
    sequences: Sequence[Sequence[int]], device: torch.device | str, vocab: Vocabulary | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids (B, T) and lengths (B,); an empty sequence becomes one ``<unk>`` (a vocabulary
    without one, AttnGAN's: one padding token, which the attention mask hides)."""
    pad = vocab.pad_id if vocab is not None else PAD_ID
    empty = UNK_ID if vocab is None else vocab.unk_id if vocab.unk_id is not None else vocab.pad_id
    sequences = [list(s) or [empty] for s in sequences]
    lengths = torch.tensor([len(s) for s in sequences], dtype=torch.long)
    ids = torch.full((len(sequences), int(lengths.max())), pad, dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
    return ids.to(device), lengths.to(device)


@dataclass(frozen=True)
class EncodedPrompts:
    """Embeddings of a batch of prompts plus what the user should be told about each."""

    embeddings: torch.Tensor        # (B, dim) float32
    unknown: list[list[str]]        # per prompt, the words mapped to <unk>
    truncated: list[bool]           # per prompt, whether words beyond text.max_words were dropped
    words: torch.Tensor | None = None   # (B, D, T) float32 word features (what AttnGAN attends to)
    mask: torch.Tensor | None = None    # (B, T) True at padding and unknown words: they get no attention

    def attention_inputs(self, rows: slice | torch.Tensor = slice(None), length: int | None = None) -> dict[str, torch.Tensor]:
        """``words`` and ``mask`` of some prompts, as AttnGAN's generator takes them; with ``length``
        padded to that many word slots (zero features, masked), so that prompts encoded apart can share
        one forward and a prompt's forward does not depend on how long its companions are."""
        assert self.words is not None and self.mask is not None
        words, mask = self.words[rows], self.mask[rows]
        extra = 0 if length is None else length - words.shape[2]
        if extra < 0:
            raise ValueError(f"cannot pad {words.shape[2]} word slots to {length}")
        if extra:
            words = torch.nn.functional.pad(words, (0, extra))
            mask = torch.nn.functional.pad(mask, (0, extra), value=True)
        return {"words": words, "mask": mask}


class PromptEncoder:
    """Vocabulary + ``TextEncoder`` (+ char-CNN-RNN regression head) + ``TextConfig``, in eval mode."""

    def __init__(
        self,
        vocab: Vocabulary,
        text_encoder: TextEncoder,
        config: TextConfig,
        head: RegressionHead | None = None,         # sentence (D) -> char-CNN-RNN space (1024)
        image_encoder: ImageEncoder | None = None,  # kept so the directory stays a full DAMSM model
        metrics: dict[str, Any] | None = None,      # pretraining metrics, stored in config.json
    ) -> None:
        if text_encoder.vocab_size != len(vocab):
            raise ValueError(f"text encoder has {text_encoder.vocab_size} word embeddings, vocabulary {len(vocab)}")
        self.vocab = vocab
        self.text_encoder = text_encoder.eval()
        self.config = config
        self.head = head.eval() if head is not None else None
        self.image_encoder = image_encoder.eval() if image_encoder is not None else None
        self.metrics = dict(metrics or {})

    @property
    def dim(self) -> int:
        return self.head.out_features if self.head is not None else self.config.dim

    @property
    def device(self) -> torch.device:
        return self.text_encoder.embedding.weight.device

    def to(self, device: torch.device | str) -> PromptEncoder:
        for module in (self.text_encoder, self.head, self.image_encoder):
            if module is not None:
                module.to(device)
        return self

    def embed(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Conditioning embeddings (B, dim) of padded id batches (the head applied when present)."""
        _, sentence = self.text_encoder(ids, lengths)
        return self.head(sentence) if self.head is not None else sentence

    def encode(self, prompts: Sequence[str], device: torch.device | str | None = None) -> EncodedPrompts:
        """Embed ``prompts`` (a single string counts as one) on ``device``, moving the encoder there.

        Raises ``PromptError`` for an empty prompt or one without a known word; unknown words are
        returned in ``.unknown`` for the caller to show, over-long prompts are logged and truncated.
        """
        if isinstance(prompts, str):
            prompts = [prompts]
        if not prompts:
            raise PromptError("no prompt given; pass at least one sentence such as 'a small red bird'")
        encoded = []
        for prompt in prompts:
            if not isinstance(prompt, str):
                raise PromptError(f"a prompt must be a string, got {type(prompt).__name__}")
            if len(prompt) > MAX_PROMPT_CHARS:
                raise PromptError(
                    f"prompt {shorten(prompt)} is {len(prompt):,} characters long; at most {MAX_PROMPT_CHARS:,} "
                    f"are accepted (only the first {self.config.max_words} words are used anyway)"
                )
            control = sorted({f"U+{ord(c):04X}" for c in prompt if unicodedata.category(c) == "Cc" and c not in "\t\n\r"})
            if control:
                raise PromptError(f"prompt {shorten(prompt)} contains control characters ({', '.join(control[:5])})")
            item = self.vocab.encode(prompt, self.config.max_words)
            if item.num_tokens == 0:
                raise PromptError(f"prompt {shorten(prompt)} contains no words; describe the image in words")
            if all(i == self.vocab.unk_id for i in item.ids):  # attngan convention: unknown words have no id
                raise PromptError(
                    f"prompt {shorten(prompt)} has no word the text encoder knows (unknown: "
                    f"{word_list(item.unknown)}); known words include: {word_list(self.vocab.words[:10], 10)}"
                )
            encoded.append(item)
        self._warn_truncated(prompts, encoded)
        device = self.device if device is None else device
        self.to(device)
        ids, lengths = pad_batch([item.ids for item in encoded], device, self.vocab)
        with torch.no_grad():
            words, sentence = self.text_encoder(ids, lengths)
            embeddings = (self.head(sentence) if self.head is not None else sentence).float()
        return EncodedPrompts(embeddings, [item.unknown for item in encoded], [item.truncated for item in encoded],
                              words.float(), self.vocab.attention_mask(ids))

    def _warn_truncated(self, prompts: Sequence[str], encoded: Sequence[Any]) -> None:
        """One warning per call: the prompt itself, or for a batch (evaluation captions) a count."""
        long = [(prompt, item.num_tokens) for prompt, item in zip(prompts, encoded, strict=True) if item.truncated]
        limit = self.config.max_words
        if len(long) == 1:
            logger.warning("prompt %s has %d words; only the first %d are used", shorten(long[0][0]), long[0][1], limit)
        elif long:
            logger.warning("%d of %d prompts have more than %d words (e.g. %s, %d words); only the first %d of each are used",
                           len(long), len(prompts), limit, shorten(long[0][0]), long[0][1], limit)

    def _config_payload(self) -> dict[str, Any]:
        return {
            "format": ENCODER_FORMAT,
            "version": ENCODER_VERSION,
            "text": self.config.model_dump(mode="json"),
            "vocab_size": len(self.vocab),
            "vocab_sha256": self.vocab.fingerprint,
            "output_dim": self.dim,
            "image_backbone": self.image_encoder.backbone if self.image_encoder is not None else None,
            "metrics": self.metrics,
        }

    def save(self, directory: Path) -> None:
        """Write the encoder directory atomically: into a temporary sibling, then renamed into place."""
        text_state = {f"encoder.{k}": v for k, v in self.text_encoder.state_dict().items()}
        if self.head is not None:
            text_state |= {f"head.{k}": v for k, v in self.head.state_dict().items()}

        def write(tmp: Path) -> None:
            save_file(_contiguous(text_state), str(tmp / TEXT_WEIGHTS))
            if self.image_encoder is not None:
                save_file(_contiguous(self.image_encoder.state_dict()), str(tmp / IMAGE_WEIGHTS))
            self.vocab.save(tmp / VOCAB_FILE)
            (tmp / CONFIG_FILE).write_text(json.dumps(self._config_payload(), indent=2) + "\n", encoding="utf-8")

        write_directory_atomically(Path(directory), write)

    @classmethod
    def load(cls, directory: Path, device: torch.device | str | None = None) -> PromptEncoder:
        """Read a directory written by ``save``; any missing, tampered or mismatched file -> ``CheckpointError``."""
        directory = Path(directory)
        if not directory.is_dir():
            raise CheckpointError(f"text encoder directory not found: {directory}")
        for name in (TEXT_WEIGHTS, VOCAB_FILE, CONFIG_FILE):
            if not (directory / name).is_file():
                raise CheckpointError(f"{directory} is not a text encoder directory: {name} is missing")
        payload = _read_config(directory / CONFIG_FILE)
        config = payload["config"]
        vocab = Vocabulary.load(directory / VOCAB_FILE)
        if len(vocab) != payload["vocab_size"] or vocab.fingerprint != payload["vocab_sha256"]:
            difference = (
                f"{len(vocab)} words, the weights were trained with {payload['vocab_size']}"
                if len(vocab) != payload["vocab_size"]
                else "same size, other words than the weights were trained with"
            )
            raise CheckpointError(
                f"{directory / VOCAB_FILE} does not match the encoder weights ({difference}); "
                "use the vocab.json saved with them"
            )
        state = _read_safetensors(directory / TEXT_WEIGHTS)
        text_encoder = TextEncoder(len(vocab), config.word_dim, config.dim, config.dropout)
        _load_state(text_encoder, _prefixed(state, "encoder."), directory / TEXT_WEIGHTS)
        head = None
        head_state = _prefixed(state, "head.")
        if head_state:
            head = RegressionHead(config.dim, payload["output_dim"])
            _load_state(head, head_state, directory / TEXT_WEIGHTS)
        elif payload["output_dim"] != config.dim:
            raise CheckpointError(f"{directory / TEXT_WEIGHTS} lacks the regression head that config.json describes")
        image_encoder = None
        if payload["image_backbone"] is not None:
            if not (directory / IMAGE_WEIGHTS).is_file():
                raise CheckpointError(f"{directory} is not a text encoder directory: {IMAGE_WEIGHTS} is missing")
            image_encoder = ImageEncoder(config.dim, config.image_width, payload["image_backbone"])
            _load_state(image_encoder, _read_safetensors(directory / IMAGE_WEIGHTS), directory / IMAGE_WEIGHTS)
        encoder = cls(vocab, text_encoder, config, head, image_encoder, payload["metrics"])
        return encoder.to(device) if device is not None else encoder


def _contiguous(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}


def _prefixed(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}


def _read_config(path: Path) -> dict[str, Any]:
    payload = read_format_json(path, ENCODER_FORMAT, ENCODER_VERSION, "text-encoder config")
    try:
        config = TextConfig.model_validate(payload.get("text"))
    except ValidationError as exc:
        raise CheckpointError(f"{path}: invalid text config: {exc.errors()[0]['msg']}") from None
    fields = {"vocab_size": int, "vocab_sha256": str, "output_dim": int, "metrics": dict}
    for key, kind in fields.items():
        if not isinstance(payload.get(key), kind):
            raise CheckpointError(f"{path}: {key!r} is missing or not a {kind.__name__}")
    if payload.get("image_backbone") not in (None, *ALL_BACKBONES):
        raise CheckpointError(f"{path}: unknown image_backbone {payload.get('image_backbone')!r}")
    return {**payload, "config": config}


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file ({exc}); it may be truncated") from None


def _load_state(module: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        first = next((line.strip() for line in str(exc).splitlines()[1:] if line.strip()), str(exc))
        raise CheckpointError(f"{path} does not match its config.json/vocab.json: {first}") from None


def check_output_directory(directory: Path) -> None:
    """Refuse to overwrite a directory that holds anything but a text encoder (before hours of training)."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"output path {directory} exists and is not a directory")
    foreign = sorted(p.name for p in directory.iterdir() if p.name not in ENCODER_FILES) if directory.is_dir() else []
    if foreign:
        raise UsageError(
            f"output directory {directory} holds other files ({', '.join(foreign[:3])}); "
            "choose a new or empty directory, or one holding only a previous text encoder"
        )


def write_directory_atomically(directory: Path, write: Callable[[Path], None]) -> None:
    """Publish an encoder directory atomically (see ``stackgan2.io.atomic_directory``). A previous
    text encoder is replaced; a directory with other files in it is refused."""
    check_output_directory(directory)
    atomic_directory(directory, write)
