"""Word tokenizer and vocabulary for the text encoder.

Tokenisation follows AttnGAN (Xu et al., CVPR 2018: lower-cased words, punctuation dropped) with two
additions so that nothing a user types disappears silently: text is NFKC-normalised (full-width
letters become ASCII) and every non-punctuation symbol outside a word (an emoji, "+", "$") becomes a
token of its own, which the vocabulary then reports as unknown.

The vocabulary is a pure function of the captions it is built from: words sorted by descending
count, ties alphabetically, so the same captions always give a byte-identical ``vocab.json``.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from stackgan2.errors import CheckpointError

if TYPE_CHECKING:
    import torch

PAD, UNK = "<pad>", "<unk>"
SPECIALS = (PAD, UNK)
PAD_ID, UNK_ID = 0, 1
VOCAB_FORMAT = "stackgan2-vocab"
VOCAB_VERSION = 1

# A run of word characters, or any single non-space character (filtered for punctuation below).
_TOKEN = re.compile(r"\w+|[^\w\s]")


def tokenize(text: str) -> list[str]:
    """Lower-cased words of ``text``; punctuation splits words and is dropped, other symbols are kept."""
    normalised = unicodedata.normalize("NFKC", text).lower()
    return [tok for tok in _TOKEN.findall(normalised) if not unicodedata.category(tok[0]).startswith("P")]


def attention_mask(ids: torch.Tensor) -> torch.Tensor:
    """(B, T) True at ``<pad>`` and ``<unk>`` ids: neither is a word that AttnGAN's pixels may attend to."""
    return (ids == PAD_ID) | (ids == UNK_ID)


@dataclass(frozen=True)
class EncodedText:
    """Token ids of one text, the words that were mapped to ``<unk>`` and whether it was cut short."""

    ids: list[int]
    unknown: list[str]          # distinct unknown words, in order of appearance
    truncated: bool             # more than max_words tokens; only the first max_words are kept
    num_tokens: int             # tokens before truncation


class Vocabulary:
    """Word <-> id mapping with ``<pad>`` = 0 and ``<unk>`` = 1."""

    def __init__(self, words: Iterable[str], min_count: int = 1) -> None:
        self.itos: list[str] = list(SPECIALS) + [w for w in words if w not in SPECIALS]
        self.stoi: dict[str, int] = {w: i for i, w in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise ValueError("vocabulary words must be distinct")
        self.min_count = min_count

    @classmethod
    def build(cls, captions: Iterable[str], min_count: int = 1) -> Vocabulary:
        """Every word that occurs at least ``min_count`` times, most frequent first (ties alphabetical)."""
        counts = Counter(tok for caption in captions for tok in tokenize(caption))
        kept = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
        return cls(kept, min_count)

    def __len__(self) -> int:
        return len(self.itos)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.itos == other.itos

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the word list; stored beside encoder weights to detect a swapped vocab.json."""
        return hashlib.sha256("\n".join(self.itos).encode("utf-8")).hexdigest()

    def encode(self, text: str, max_words: int) -> EncodedText:
        """Ids of the first ``max_words`` tokens of ``text``; unknown words become ``<unk>``."""
        tokens = tokenize(text)
        kept = tokens[:max_words]
        ids = [self.stoi.get(tok, UNK_ID) for tok in kept]
        unknown = list(dict.fromkeys(tok for tok, i in zip(kept, ids, strict=True) if i == UNK_ID))
        return EncodedText(ids=ids, unknown=unknown, truncated=len(tokens) > max_words, num_tokens=len(tokens))

    def to_json(self) -> str:
        payload = {"format": VOCAB_FORMAT, "version": VOCAB_VERSION, "min_count": self.min_count, "words": self.itos}
        return json.dumps(payload, ensure_ascii=False, indent=1) + "\n"

    def save(self, path: Path) -> None:
        Path(path).write_text(self.to_json(), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> Vocabulary:
        """Read a ``vocab.json`` written by ``save``; anything else is a ``CheckpointError``."""
        path = Path(path)
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CheckpointError(f"vocabulary file not found: {path}") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{path} is not a valid vocab.json: {exc}") from None
        if not isinstance(payload, dict):
            payload = {}
        words, min_count = payload.get("words"), payload.get("min_count", 1)
        if (
            payload.get("format") != VOCAB_FORMAT
            or not isinstance(min_count, int)
            or not isinstance(words, list)
            or not all(isinstance(w, str) for w in words)
            or tuple(words[: len(SPECIALS)]) != SPECIALS
            or len(set(words)) != len(words)
        ):
            raise CheckpointError(
                f"{path} is not a stackgan2 vocabulary (expected format {VOCAB_FORMAT!r} with distinct words "
                f"starting {list(SPECIALS)})"
            )
        return cls(words[len(SPECIALS) :], min_count)
