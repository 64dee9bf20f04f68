"""Word tokenizer and vocabulary for the text encoder.

Tokenisation follows AttnGAN (Xu et al., CVPR 2018: lower-cased words, punctuation dropped) with two
additions so that nothing a user types disappears silently: text is NFKC-normalised (full-width
letters become ASCII) and every non-punctuation symbol outside a word (an emoji, "+", "$") becomes a
token of its own, which the vocabulary then reports as unknown.

The vocabulary is a pure function of the captions it is built from: words sorted by descending
count, ties alphabetically, so the same captions always give a byte-identical ``vocab.json``.

Two conventions: ``stackgan2`` (ids 0 = ``<pad>``, 1 = ``<unk>``; an unknown word is encoded as
``<unk>`` and masked from attention) and ``attngan``, the official AttnGAN ``captions.pickle``
vocabulary kept with its own indices (``datasets.py: build_dictionary``: 0 = ``'<end>'``, the padding,
and no unknown token). There unknown words are left out of the ids, as the official sampler does
(``main.py: gen_example`` keeps only words in ``wordtoix``); both report them in ``EncodedText.unknown``.
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
ATTNGAN_END = "<end>"   # index 0 of the official AttnGAN vocabulary: the padding
CONVENTIONS = ("stackgan2", "attngan")
VOCAB_FORMAT = "stackgan2-vocab"
VOCAB_VERSION = 1

# A run of word characters, or any single non-space character (filtered for punctuation below).
_TOKEN = re.compile(r"\w+|[^\w\s]")


def tokenize(text: str) -> list[str]:
    """Lower-cased words of ``text``; punctuation splits words and is dropped, other symbols are kept."""
    normalised = unicodedata.normalize("NFKC", text).lower()
    return [tok for tok in _TOKEN.findall(normalised) if not unicodedata.category(tok[0]).startswith("P")]


@dataclass(frozen=True)
class EncodedText:
    """Token ids of one text, the words that were mapped to ``<unk>`` and whether it was cut short."""

    ids: list[int]
    unknown: list[str]          # distinct unknown words, in order of appearance
    truncated: bool             # more than max_words tokens; only the first max_words are kept
    num_tokens: int             # tokens before truncation
    tokens: tuple[str, ...] = ()  # the word each id stands for (an unknown word as typed)


class Vocabulary:
    """Word <-> id mapping: ``<pad>`` = 0 and ``<unk>`` = 1, or (``convention="attngan"``) the official
    AttnGAN list as given, ``'<end>'`` = 0 the padding and no unknown id (``unk_id`` None)."""

    def __init__(self, words: Iterable[str], min_count: int = 1, convention: str = "stackgan2") -> None:
        if convention not in CONVENTIONS:
            raise ValueError(f"unknown vocabulary convention {convention!r}; valid: {', '.join(CONVENTIONS)}")
        self.convention = convention
        if convention == "attngan":
            self.itos: list[str] = list(words)
            if not self.itos or self.itos[0] != ATTNGAN_END:
                raise ValueError(f"an AttnGAN vocabulary starts with {ATTNGAN_END!r} (index 0, the padding)")
        else:
            self.itos = list(SPECIALS) + [w for w in words if w not in SPECIALS]
        self.stoi: dict[str, int] = {w: i for i, w in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise ValueError("vocabulary words must be distinct")
        self.min_count = min_count
        self.pad_id = PAD_ID
        self.unk_id: int | None = UNK_ID if convention == "stackgan2" else None

    @property
    def words(self) -> list[str]:
        """The real words, without the special tokens."""
        return self.itos[len(SPECIALS) if self.unk_id is not None else 1 :]

    def attention_mask(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, T) True at padding and ``<unk>`` ids: neither is a word that AttnGAN's pixels may attend to
        (official AttnGAN: ``mask = (captions == 0)``)."""
        mask = ids == self.pad_id
        return mask | (ids == self.unk_id) if self.unk_id is not None else mask

    @classmethod
    def build(cls, captions: Iterable[str], min_count: int = 1) -> Vocabulary:
        """Every word that occurs at least ``min_count`` times, most frequent first (ties alphabetical)."""
        counts = Counter(tok for caption in captions for tok in tokenize(caption))
        kept = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
        return cls(kept, min_count)

    def __len__(self) -> int:
        return len(self.itos)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.itos == other.itos and self.convention == other.convention

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the word list; stored beside encoder weights to detect a swapped vocab.json."""
        return hashlib.sha256("\n".join(self.itos).encode("utf-8")).hexdigest()

    def encode(self, text: str, max_words: int) -> EncodedText:
        """Ids of the first ``max_words`` tokens of ``text``; unknown words become ``<unk>`` (attngan
        convention: they are left out, and the first ``max_words`` known words are kept)."""
        tokens = tokenize(text)
        if self.unk_id is None:
            unknown = list(dict.fromkeys(tok for tok in tokens if tok not in self.stoi))
            known = [tok for tok in tokens if tok in self.stoi]
            kept = known[:max_words]
            return EncodedText(ids=[self.stoi[tok] for tok in kept], unknown=unknown, truncated=len(known) > max_words,
                               num_tokens=len(tokens), tokens=tuple(kept))
        kept = tokens[:max_words]
        ids = [self.stoi.get(tok, self.unk_id) for tok in kept]
        unknown = list(dict.fromkeys(tok for tok, i in zip(kept, ids, strict=True) if i == self.unk_id))
        return EncodedText(ids=ids, unknown=unknown, truncated=len(tokens) > max_words, num_tokens=len(tokens),
                           tokens=tuple(kept))

    def to_json(self) -> str:
        payload = {"format": VOCAB_FORMAT, "version": VOCAB_VERSION, "min_count": self.min_count, "words": self.itos}
        if self.convention != "stackgan2":  # absent in files written before the attngan convention existed
            payload["convention"] = self.convention
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
        convention = payload.get("convention", "stackgan2")
        first = list(SPECIALS) if convention == "stackgan2" else [ATTNGAN_END]
        if (
            payload.get("format") != VOCAB_FORMAT
            or convention not in CONVENTIONS
            or not isinstance(min_count, int)
            or not isinstance(words, list)
            or not all(isinstance(w, str) for w in words)
            or words[: len(first)] != first
            or len(set(words)) != len(words)
        ):
            raise CheckpointError(
                f"{path} is not a stackgan2 vocabulary (expected format {VOCAB_FORMAT!r} with distinct words "
                f"starting {first})"
            )
        return cls(words[len(SPECIALS) :] if convention == "stackgan2" else words, min_count, convention)
