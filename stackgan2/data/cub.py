"""cub and flowers in the original StackGAN data layout (hanzhanggit/StackGAN-v2 ``TextDataset``).

``--data-dir`` is the ``birds`` (or ``flowers``) folder itself or the folder that contains it::

    birds/
      CUB_200_2011/images/<name>.jpg   bounding_boxes.txt   images.txt   (also accepted beside birds/)
      train/ test/                     filenames.pickle  class_info.pickle  char-CNN-RNN-embeddings.pickle
      text/<name>.txt                  ten captions per image (text_c10/ is accepted too)
    flowers/
      images/<name>.jpg (or <name>.jpg directly)   train/ test/ (same pickles)   text/ or text_c10/

Birds are cropped to 1.5 x their bounding box first, as the official code does; flowers are used whole.
``class_info.pickle`` is optional (as in the official loader: every image is then its own class) and
so is the char-CNN-RNN pickle. Pickles go through the restricted unpickler of ``safe_pickle``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stackgan2.config import DataConfig
from stackgan2.data.safe_pickle import load_pickle
from stackgan2.data.source import DatasetParts, contiguous_ids, decoded_store, read_captions
from stackgan2.data.transforms import BBox
from stackgan2.errors import DataError, UsageError
from stackgan2.progress import ProgressFn

_META_NAMES = {"cub": "birds", "flowers": "flowers"}


def load_stackgan_layout(
    cfg: DataConfig, split: str, short_side: int, progress_fn: ProgressFn | None = None
) -> DatasetParts:
    """The ``split`` of ``cfg.dataset`` ("cub" or "flowers") from ``cfg.data_dir``, decoded into the cache."""
    kind = cfg.dataset
    root = _data_root(cfg.data_dir, kind)
    meta_dir = _meta_dir(root, kind, split)
    split_dir = meta_dir / split
    names = _load_filenames(split_dir / "filenames.pickle")
    labels = _load_per_image(split_dir / "class_info.pickle", len(names), split_dir / "filenames.pickle")
    class_ids, num_classes = contiguous_ids(labels) if labels is not None else (np.arange(len(names)), len(names))
    embeddings = _load_embeddings(split_dir / "char-CNN-RNN-embeddings.pickle", len(names))
    captions = _load_captions(meta_dir, names, cfg.captions_per_image)
    if kind == "cub":
        image_dir = _first_dir([meta_dir / "CUB_200_2011", root / "CUB_200_2011"], "the CUB_200_2011 folder")
        bboxes: list[BBox] | None = _load_bboxes(image_dir, names)
        image_dir = image_dir / "images"
    else:
        image_dir, bboxes = _flowers_image_dir(meta_dir, names[0]), None
    paths = [image_dir / f"{name}.jpg" for name in names]
    store, _ = decoded_store(kind, split, paths, bboxes, short_side, cfg.cache_dir,
                             skip_unreadable=False, progress_fn=progress_fn)
    return DatasetParts(
        name=kind,
        split=split,
        images=store,
        files=names,
        captions=captions,
        class_ids=class_ids.astype(np.int64),
        num_classes=num_classes,
        char_cnn_rnn=embeddings,
    )


def _data_root(data_dir: Path | None, kind: str) -> Path:
    if data_dir is None:
        raise DataError(f"the {kind} dataset needs --data-dir: the {_META_NAMES[kind]}/ folder of the StackGAN layout")
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise DataError(f"data directory {root} does not exist (expected the {_META_NAMES[kind]}/ folder of the StackGAN layout)")
    return root


def _meta_dir(root: Path, kind: str, split: str) -> Path:
    for candidate in (root, root / _META_NAMES[kind]):
        if (candidate / split / "filenames.pickle").is_file():
            return candidate
    raise DataError(
        f"{root} does not have the StackGAN {kind} layout: expected {root / split / 'filenames.pickle'} "
        f"or {root / _META_NAMES[kind] / split / 'filenames.pickle'}"
    )


def _first_dir(candidates: list[Path], what: str) -> Path:
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise DataError(f"missing {what}: expected {' or '.join(str(c) for c in candidates)}")


def _load_filenames(path: Path) -> list[str]:
    names = load_pickle(path)
    if isinstance(names, np.ndarray):
        names = names.tolist()
    if not isinstance(names, list | tuple) or not names:
        raise DataError(f"{path} should hold a non-empty list of image names, found {type(names).__name__}")
    decoded = [name.decode("latin1") if isinstance(name, bytes) else name for name in names]
    if not all(isinstance(name, str) for name in decoded):
        raise DataError(f"{path} should hold a list of image names (strings)")
    return decoded


def _load_per_image(path: Path, count: int, names_path: Path) -> np.ndarray | None:
    """A 1-D per-image pickle (class_info) with exactly ``count`` entries, or None if it is absent."""
    if not path.exists():
        return None
    values = load_pickle(path)
    try:
        array = np.asarray(values)
    except ValueError:
        raise DataError(f"{path} should hold one entry per image, not {type(values).__name__}") from None
    if array.ndim != 1 or len(array) != count:
        found = len(array) if array.ndim else "no"
        raise DataError(f"{path} has {found} entries, expected {count} (one per image in {names_path})")
    return array


def read_char_cnn_rnn(path: Path, count: int | None = None) -> np.ndarray:
    """The (N, captions, dim) float32 array of a char-CNN-RNN embeddings pickle (``count`` images if given)."""
    values = load_pickle(path)
    try:
        array = np.asarray(values, dtype=np.float32)
    except (ValueError, TypeError):
        raise DataError(f"{path} should hold a (N, captions, 1024) array of caption embeddings") from None
    if array.ndim != 3 or (count is not None and len(array) != count) or not array.size:
        described = f"{len(array)} entries of shape {array.shape[1:]}" if array.ndim else "a scalar"
        wanted = f"{count} entries" if count is not None else "N entries"
        raise DataError(f"{path} has {described}, expected {wanted} of shape (captions, 1024), one per image")
    return array


def _load_embeddings(path: Path, count: int) -> np.ndarray | None:
    return read_char_cnn_rnn(path, count) if path.exists() else None


def parse_indices(text: str, count: int) -> list[int]:
    """``"3"``, ``"0..7"`` (both ends included) or a comma list of these -> indices, each checked < ``count``."""
    indices: list[int] = []
    for part in text.replace(" ", "").split(","):
        low, dots, high = part.partition("..")
        if not low.isdigit() or (dots and not high.isdigit()):
            raise UsageError(f"index {part!r} is not a number or a range such as 0..7 (in {text!r})")
        first, last = int(low), int(high) if dots else int(low)
        if first > last or last >= count:
            raise UsageError(f"index {part!r} is outside 0..{count - 1} (or an empty range)")
        indices += range(first, last + 1)
    return indices


def char_cnn_rnn_prompts(path: Path, indices: str, caption: int = 0) -> tuple[np.ndarray, list[str]]:
    """Embeddings (K, dim) of caption ``caption`` of the images ``indices`` (see ``parse_indices``) of an
    official char-CNN-RNN pickle, and a label for each: the caption text when the StackGAN layout around
    the pickle has it (``filenames.pickle`` beside it, ``text/`` or ``text_c10/`` one level up), else
    the image name, else ``image i caption k``."""
    path = Path(path)
    array = read_char_cnn_rnn(path)
    chosen = parse_indices(indices, len(array))
    if not 0 <= caption < array.shape[1]:
        raise UsageError(f"caption must be between 0 and {array.shape[1] - 1} (captions per image in {path}), got {caption}")
    labels = [f"image {i} caption {caption}" for i in chosen]
    names_path = path.parent / "filenames.pickle"
    if names_path.is_file():
        names = _load_filenames(names_path)
        if len(names) == len(array):
            labels = [_caption_text(path.parent.parent, names[i], caption) or f"{names[i]} caption {caption}" for i in chosen]
    return array[chosen, caption], labels


def _caption_text(meta_dir: Path, name: str, caption: int) -> str | None:
    for text_dir in (meta_dir / "text", meta_dir / "text_c10"):
        if (text_dir / f"{name}.txt").is_file():
            lines = read_captions(text_dir / f"{name}.txt", caption + 1)
            return lines[caption] if len(lines) > caption else None
    return None


def _load_captions(meta_dir: Path, names: list[str], limit: int) -> list[list[str]]:
    text_dir = _first_dir([meta_dir / "text", meta_dir / "text_c10"], "the caption folder")
    by_stem: dict[str, Path] | None = None
    captions = []
    for name in names:
        path = text_dir / f"{name}.txt"
        if not path.is_file():
            # Reed et al.'s text_c10 for flowers files captions under class_XXXXX/ folders.
            if by_stem is None:
                by_stem = {p.stem: p for p in sorted(text_dir.rglob("*.txt"))}
            path = by_stem.get(Path(name).name, path)
        if not path.is_file():
            raise DataError(f"missing caption file {path} for image {name}")
        lines = read_captions(path, limit)
        if not lines:
            raise DataError(f"caption file {path} has no captions (expected one per line)")
        captions.append(lines)
    return captions


def _read_table(path: Path, fields: int) -> dict[int, list[str]]:
    """``id value...`` lines of a CUB metadata file, keyed by id."""
    if not path.is_file():
        raise DataError(f"missing file {path}")
    rows: dict[int, list[str]] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != fields or not parts[0].isdigit():
            raise DataError(f"{path} line {number}: expected '<id>' and {fields - 1} values, found {line.strip()!r}")
        rows[int(parts[0])] = parts[1:]
    return rows


def _load_bboxes(cub_dir: Path, names: list[str]) -> list[BBox]:
    images = _read_table(cub_dir / "images.txt", 2)
    boxes = _read_table(cub_dir / "bounding_boxes.txt", 5)
    by_name: dict[str, BBox] = {}
    for image_id, (relative,) in images.items():
        if image_id not in boxes:
            raise DataError(f"image {image_id} of {cub_dir / 'images.txt'} has no line in {cub_dir / 'bounding_boxes.txt'}")
        try:
            x, y, w, h = (int(float(v)) for v in boxes[image_id])  # the official code casts with astype(int)
        except ValueError:
            raise DataError(f"{cub_dir / 'bounding_boxes.txt'}: non-numeric box for image {image_id}") from None
        by_name[relative.rsplit(".", 1)[0]] = (x, y, w, h)
    missing = [name for name in names if name not in by_name]
    if missing:
        raise DataError(f"{len(missing)} images (e.g. {missing[0]}) are not listed in {cub_dir / 'images.txt'}")
    return [by_name[name] for name in names]


def _flowers_image_dir(meta_dir: Path, first_name: str) -> Path:
    candidates = [meta_dir / "images", meta_dir]
    for candidate in candidates:
        if (candidate / f"{first_name}.jpg").is_file():
            return candidate
    raise DataError(f"missing image {first_name}: expected {candidates[0] / first_name}.jpg or {candidates[1] / first_name}.jpg")
