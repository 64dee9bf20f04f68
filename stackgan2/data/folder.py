"""folder: your own images with captions, so stackgan2 can train on anything.

Layout, under ``--data-dir D`` (searched recursively):

- ``D/**/photo.jpg`` with ``D/**/photo.txt`` beside it, one caption per line; or
- ``D/captions.jsonl``, one ``{"file": "relative/path.jpg", "captions": ["...", ...]}`` per line.

If ``D`` has both a ``train/`` and a ``test/`` folder, each split is read from its own folder;
otherwise both splits are the whole folder. Images in the same sub-folder form one class (the
"wrong" image of the matching loss comes from another folder when there are several). Images that
cannot be used (no captions, not an image, truncated) are skipped with one warning that counts and
names them, so a bad file never stops training halfway through an epoch.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path, PurePosixPath

from stackgan2.config import DataConfig
from stackgan2.data.source import DatasetParts, contiguous_ids, decoded_store, read_captions
from stackgan2.errors import DataError
from stackgan2.progress import ProgressFn

log = logging.getLogger("stackgan2.data")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")
JSONL_NAME = "captions.jsonl"
_SHOWN_SKIPS = 5


def load_folder(cfg: DataConfig, split: str, short_side: int, progress_fn: ProgressFn | None = None) -> DatasetParts:
    """The images of ``cfg.data_dir`` (or of its ``split`` sub-folder) with their captions, decoded into the cache."""
    if cfg.data_dir is None:
        raise DataError("the folder dataset needs --data-dir: a folder of images with same-named .txt captions")
    root = Path(cfg.data_dir).expanduser()
    if not root.is_dir():
        raise DataError(f"data directory {root} does not exist (expected a folder of images with captions)")
    if (root / "train").is_dir() and (root / "test").is_dir():
        root = root / split
    jsonl = root / JSONL_NAME
    records, skipped = _jsonl_records(jsonl, cfg.captions_per_image) if jsonl.is_file() else _txt_records(
        root, cfg.captions_per_image
    )
    if not records:
        raise DataError(
            f"no captioned images in {root}: expected image files ({', '.join(IMAGE_EXTENSIONS)}) each with a "
            f"same-named .txt caption file beside it, or a {JSONL_NAME}"
            + (f" ({len(skipped)} images have no captions)" if skipped else "")
        )
    files = list(records)
    listed = len(files) + len(skipped)
    store, failed = decoded_store(
        "folder", split, [root / name for name in files], None, short_side, cfg.cache_dir,
        skip_unreadable=True, exif_transpose=True, progress_fn=progress_fn,
    )
    skipped += [(files[position], reason) for position, reason in failed]
    failed_positions = {position for position, _ in failed}
    kept = [name for position, name in enumerate(files) if position not in failed_positions]
    if not kept:  # one error, no warning before it, and no cached store that holds nothing
        shutil.rmtree(store.directory, ignore_errors=True)
        raise DataError(f"none of the {len(files)} images in {root} could be read: {_describe(skipped)}")
    if skipped:
        _warn_skipped(root, skipped, listed)
    class_ids, num_classes = contiguous_ids([str(PurePosixPath(name).parent) for name in kept])
    return DatasetParts(
        name="folder",
        split=split,
        images=store,
        files=kept,
        captions=[records[name] for name in kept],
        class_ids=class_ids,
        num_classes=num_classes,
    )


def _txt_records(root: Path, limit: int) -> tuple[dict[str, list[str]], list[tuple[str, str]]]:
    """{relative image path: captions} from same-named .txt files, and the images without any."""
    records: dict[str, list[str]] = {}
    skipped: list[tuple[str, str]] = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if path.suffix.lower() not in IMAGE_EXTENSIONS or any(part.startswith(".") for part in relative.parts):
            continue
        if not path.is_file():
            continue
        caption_file = path.with_suffix(".txt")
        captions = read_captions(caption_file, limit) if caption_file.is_file() else []
        if captions:
            records[relative.as_posix()] = captions
        else:
            skipped.append((relative.as_posix(), f"no captions in {caption_file.name}"))
    return records, skipped


def _jsonl_records(path: Path, limit: int) -> tuple[dict[str, list[str]], list[tuple[str, str]]]:
    """{file: captions} from a captions.jsonl (a file listed twice gets the captions of both lines)."""
    records: dict[str, list[str]] = {}
    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                name, captions = entry["file"], entry["captions"]
                if not isinstance(name, str) or not isinstance(captions, list):
                    raise TypeError
                texts = [str(caption).strip() for caption in captions if str(caption).strip()]
            except (ValueError, KeyError, TypeError):
                raise DataError(
                    f'{path} line {number}: expected {{"file": "<image path>", "captions": ["...", ...]}}, '
                    f"found {line.strip()[:80]!r}"
                ) from None
            records.setdefault(PurePosixPath(name).as_posix(), []).extend(texts)
    skipped = [(name, f"no captions in {path.name}") for name, texts in records.items() if not texts]
    return {name: texts[:limit] for name, texts in records.items() if texts}, skipped


def _describe(skipped: list[tuple[str, str]]) -> str:
    shown = "; ".join(f"{name} ({reason})" for name, reason in skipped[:_SHOWN_SKIPS])
    more = len(skipped) - _SHOWN_SKIPS
    return shown + (f"; and {more} more" if more > 0 else "")


def _warn_skipped(root: Path, skipped: list[tuple[str, str]], total: int) -> None:
    log.warning("skipped %d of %d images in %s: %s", len(skipped), total, root, _describe(skipped))
