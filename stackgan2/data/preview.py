"""Looking at a dataset: a preview grid of images with their first caption, and caption statistics."""

from __future__ import annotations

import re
import statistics
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from stackgan2.imaging import wrap_text

if TYPE_CHECKING:
    from stackgan2.data.dataset import CaptionedImageDataset

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_CAPTION_LINES = 4


def caption_words(caption: str) -> list[str]:
    """Lower-case words and numbers of a caption (punctuation dropped), as counted by ``dataset_stats``."""
    return _WORD.findall(caption.lower())


def preview_indices(count: int, total: int) -> list[int]:
    """``count`` image indices spread evenly over the dataset (all of them if it is smaller)."""
    return sorted({int(i) for i in np.linspace(0, total - 1, min(count, total)).round()})


def preview_grid(dataset: CaptionedImageDataset, count: int = 16, columns: int = 4, size: int = 128) -> Image.Image:
    """A white sheet of ``count`` centre-cropped images, each with its first caption underneath."""
    indices = preview_indices(count, len(dataset))
    font = ImageFont.load_default(size=max(9, size // 11))
    line_height = int(font.getbbox("Ag")[3]) + 2
    pad = max(4, size // 24)
    cell_w, cell_h = size + 2 * pad, size + 2 * pad + _CAPTION_LINES * line_height
    rows = -(-len(indices) // columns)
    sheet = Image.new("RGB", (min(columns, len(indices)) * cell_w, rows * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    for slot, index in enumerate(indices):
        x, y = (slot % columns) * cell_w + pad, (slot // columns) * cell_h + pad
        sheet.paste(Image.fromarray(dataset.real_image(index, size)), (x, y))
        for number, line in enumerate(wrap_text(dataset.captions[index][0], font, size, _CAPTION_LINES)):
            draw.text((x, y + size + 2 + number * line_height), line, fill=(20, 20, 20), font=font)
    return sheet


def dataset_stats(splits: Mapping[str, CaptionedImageDataset]) -> dict[str, Any]:
    """Counts per split, vocabulary size and caption length (in words) over all given splits."""
    vocabulary: set[str] = set()
    lengths: list[int] = []
    per_split = {}
    for split, dataset in splits.items():
        counts = [len(captions) for captions in dataset.captions]
        for captions in dataset.captions:
            for caption in captions:
                words = caption_words(caption)
                vocabulary.update(words)
                lengths.append(len(words))
        per_split[split] = {
            "images": len(dataset),
            "captions": sum(counts),
            "captions_per_image": [min(counts), max(counts)],
            "classes": len(np.unique(dataset.class_ids)),
        }
    first = next(iter(splits.values()))
    stats: dict[str, Any] = {
        "dataset": first.name,
        "image_sizes": first.image_sizes,
        "num_classes": first.num_classes,
        "splits": per_split,
        "vocabulary_size": len(vocabulary),
        "caption_words": {
            "min": min(lengths),
            "mean": round(statistics.fmean(lengths), 2),
            "median": statistics.median(lengths),
            "max": max(lengths),
        },
        "char_cnn_rnn": list(first.char_cnn_rnn.shape[1:]) if first.char_cnn_rnn is not None else None,
    }
    if first.attribute_values is not None:
        stats["attributes"] = first.attribute_values
    return stats
