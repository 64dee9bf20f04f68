"""Shared by the dataset sources: ``DatasetParts`` (what a source hands to ``CaptionedImageDataset``), the
decode cache of image files, caption files and class labels."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stackgan2.data.storage import ImageStore, build_image_store, cache_root, content_key, open_image_store
from stackgan2.data.transforms import BBox, decode_image
from stackgan2.errors import DataError
from stackgan2.progress import ProgressFn

DECODER_VERSION = 1  # bump when decoding or cropping changes, so old decoded caches are not reused


@dataclass
class DatasetParts:
    """Cached images plus everything known about them, aligned by index."""

    name: str                                           # "toy-birds", "cub", "flowers", "coco" or "folder"
    split: str                                          # "train" or "test"
    images: ImageStore                                  # uint8 images, shorter side = the cache size
    files: list[str]                                    # image names (toy-birds: "train/000042")
    captions: list[list[str]]                           # at most cfg.captions_per_image per image
    class_ids: np.ndarray                               # (N,) int64 in [0, num_classes)
    num_classes: int
    attributes: dict[str, np.ndarray] | None = None     # toy-birds ground truth codes
    attribute_values: dict[str, list[str]] | None = None
    char_cnn_rnn: np.ndarray | None = None              # (N, 10, 1024) float32 (cub/flowers)


def read_captions(path: Path, limit: int) -> list[str]:
    """Up to ``limit`` non-empty, stripped lines of a UTF-8 caption file (bad bytes become U+FFFD).

    Like the official loader, the "\\ufffd\\ufffd" pairs left by a broken encoding in CUB's text become a space.
    """
    with open(path, encoding="utf-8", errors="replace") as handle:
        lines = [line.replace("\ufffd\ufffd", " ").strip() for line in handle]
    return [line for line in lines if line][:limit]


def contiguous_ids(labels: list[str] | np.ndarray) -> tuple[np.ndarray, int]:
    """Map arbitrary class labels to 0..K-1 (sorted order); returns (ids as int64, K)."""
    values, ids = np.unique(np.asarray(labels), return_inverse=True)
    return ids.astype(np.int64).reshape(-1), len(values)


def _decode_job(job: tuple[str, BBox | None, int, bool]) -> np.ndarray | str:
    path, bbox, short_side, exif_transpose = job
    return decode_image(Path(path), bbox, short_side, exif_transpose)


def _file_stamp(path: Path) -> tuple[str, int, int]:
    try:
        stat = path.stat()
    except OSError:
        return str(path), -1, -1
    return str(path), stat.st_size, stat.st_mtime_ns


def decoded_store(
    name: str,
    split: str,
    paths: Sequence[Path],
    bboxes: Sequence[BBox] | None,
    short_side: int,
    cache_dir: Path | None,
    *,
    skip_unreadable: bool,
    exif_transpose: bool = False,
    progress_fn: ProgressFn | None = None,
) -> tuple[ImageStore, list[tuple[int, str]]]:
    """Decode, crop and scale ``paths`` once into a cached store (reused while no file changes).

    An unreadable file (missing, not an image, truncated) raises DataError naming it, and nothing is
    cached; with ``skip_unreadable`` it is left out instead. Returns the store and the (position,
    reason) of every file left out, which the cache remembers.
    """
    boxes = list(bboxes) if bboxes is not None else [None] * len(paths)
    key = content_key({
        "version": DECODER_VERSION,
        "short_side": short_side,
        "exif": exif_transpose,
        "files": [_file_stamp(Path(path).resolve()) for path in paths],
        "boxes": boxes,
    })
    # Named by content, not split: a folder read as both splits is decoded once.
    directory = cache_root(cache_dir) / "decoded" / f"{name}-{short_side}px-{key}"
    opened = open_image_store(directory)
    if opened is None:
        failed: list[tuple[int, str]] = []

        def on_failure(position: int, reason: str) -> None:
            if not skip_unreadable:
                raise DataError(f"cannot read image {paths[position]}: {reason}")
            failed.append((position, reason))

        jobs = [(str(path), box, short_side, exif_transpose) for path, box in zip(paths, boxes, strict=True)]
        opened = build_image_store(
            directory, _decode_job, jobs, lambda: {"failed": failed},
            task=f"decode {name} {split}", progress_fn=progress_fn, on_failure=on_failure,
        )
    store, meta = opened
    return store, [(int(position), str(reason)) for position, reason in meta["failed"]]
