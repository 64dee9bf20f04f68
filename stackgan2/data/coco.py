"""coco: MS-COCO 2014 captions, in the layout of the official StackGAN v1 code or as COCO ships it.

``--data-dir`` is the ``coco`` folder itself or the folder that contains it. Two layouts are read:

1. The official StackGAN v1 layout (hanzhanggit/StackGAN-Pytorch ``miscc/datasets.py``)::

       coco/train/filenames.pickle  char-CNN-RNN-embeddings.pickle (N, 5, 1024)  [class_info.pickle]
       coco/test/ (the same)
       coco/images/<name>.jpg

   Its captions (for our text encoder, sampling grids and DAMSM) come from ``coco/text/<name>.txt``
   (five lines each, the AttnGAN layout) or else from COCO's annotation files below. The pickles go
   through the restricted unpickler of ``safe_pickle``.

2. COCO's own files, with our text encoder (no precomputed embeddings)::

       coco/annotations/captions_train2014.json   coco/train2014/<file_name>   (split "train")
       coco/annotations/captions_val2014.json     coco/val2014/<file_name>     (split "test")

Every image keeps its first ``captions_per_image`` captions (COCO: 5; a few images have 6 or 7), in
the order of their annotation ids. COCO has no classes for its captions, so, as in the official loader
without ``class_info.pickle``, every image is its own class. Images are decoded once into the cache
(shorter side scaled, as for the other datasets; the official v1 loader squashes them to a square).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from stackgan2.config import DataConfig
from stackgan2.data.cub import _first_dir, _load_embeddings, _load_filenames, _load_per_image
from stackgan2.data.source import DatasetParts, contiguous_ids, decoded_store, read_captions
from stackgan2.errors import DataError
from stackgan2.progress import ProgressFn

COCO_SPLITS = {"train": "train2014", "test": "val2014"}


def load_coco(cfg: DataConfig, split: str, short_side: int, progress_fn: ProgressFn | None = None) -> DatasetParts:
    """The ``split`` of COCO from ``cfg.data_dir`` (either layout), decoded into the cache."""
    if cfg.data_dir is None:
        raise DataError("the coco dataset needs --data-dir: the coco/ folder (StackGAN v1 layout or COCO's "
                        "annotations/ with train2014/ and val2014/)")
    root = Path(cfg.data_dir).expanduser()
    if not root.is_dir():
        raise DataError(f"data directory {root} does not exist (expected the coco/ folder)")
    coco = next((c for c in (root, root / "coco") if (c / split / "filenames.pickle").is_file()), None)
    if coco is not None:
        return _official_layout(cfg, coco, split, short_side, progress_fn)
    coco = next((c for c in (root, root / "coco") if _annotation_file(c, split).is_file()), None)
    if coco is not None:
        return _annotation_layout(cfg, coco, split, short_side, progress_fn)
    raise DataError(
        f"{root} has no COCO data for split {split}: expected {root / split / 'filenames.pickle'} (StackGAN v1 "
        f"layout) or {_annotation_file(root, split)} (COCO's own files)"
    )


def _annotation_file(coco: Path, split: str) -> Path:
    return coco / "annotations" / f"captions_{COCO_SPLITS[split]}.json"


def _official_layout(
    cfg: DataConfig, coco: Path, split: str, short_side: int, progress_fn: ProgressFn | None
) -> DatasetParts:
    split_dir = coco / split
    names = _load_filenames(split_dir / "filenames.pickle")
    labels = _load_per_image(split_dir / "class_info.pickle", len(names), split_dir / "filenames.pickle")
    class_ids, num_classes = contiguous_ids(labels) if labels is not None else (np.arange(len(names)), len(names))
    embeddings = _load_embeddings(split_dir / "char-CNN-RNN-embeddings.pickle", len(names))
    if (coco / "text").is_dir():
        captions = [_text_file_captions(coco / "text" / f"{name}.txt", cfg.captions_per_image) for name in names]
    else:
        by_file = _annotation_captions(_any_annotation_file(coco), cfg.captions_per_image)
        # A key is the image file's stem (COCO_train2014_000000000009): look it up in either split's file.
        stems = {Path(file).stem: captions for file, captions in by_file.items()}
        missing = [name for name in names if Path(name).name not in stems]
        if missing:
            raise DataError(f"{len(missing)} images (e.g. {missing[0]}) have no captions in {coco / 'annotations'} "
                            f"and there is no {coco / 'text'} folder")
        captions = [stems[Path(name).name] for name in names]
    image_dir = _first_dir([coco / "images"], "the COCO image folder")
    store, _ = decoded_store("coco", split, [image_dir / f"{name}.jpg" for name in names], None, short_side,
                             cfg.cache_dir, skip_unreadable=False, progress_fn=progress_fn)
    return DatasetParts(name="coco", split=split, images=store, files=names, captions=captions,
                        class_ids=class_ids.astype(np.int64), num_classes=num_classes, char_cnn_rnn=embeddings)


def _any_annotation_file(coco: Path) -> list[Path]:
    files = [_annotation_file(coco, split) for split in COCO_SPLITS]
    found = [f for f in files if f.is_file()]
    if not found:
        raise DataError(f"no captions for the StackGAN v1 COCO layout in {coco}: expected a text/ folder "
                        f"(<name>.txt, one caption per line) or {files[0]}")
    return found


def _text_file_captions(path: Path, limit: int) -> list[str]:
    if not path.is_file():
        raise DataError(f"missing caption file {path}")
    captions = read_captions(path, limit)
    if not captions:
        raise DataError(f"caption file {path} has no captions (expected one per line)")
    return captions


def _annotation_layout(
    cfg: DataConfig, coco: Path, split: str, short_side: int, progress_fn: ProgressFn | None
) -> DatasetParts:
    by_file = _annotation_captions([_annotation_file(coco, split)], cfg.captions_per_image)
    image_dir = _first_dir([coco / COCO_SPLITS[split]], f"the COCO {COCO_SPLITS[split]} image folder")
    files = sorted(by_file)
    store, _ = decoded_store("coco", split, [image_dir / name for name in files], None, short_side, cfg.cache_dir,
                             skip_unreadable=False, progress_fn=progress_fn)
    return DatasetParts(name="coco", split=split, images=store, files=files, captions=[by_file[f] for f in files],
                        class_ids=np.arange(len(files), dtype=np.int64), num_classes=len(files))


def _annotation_captions(paths: list[Path], limit: int) -> dict[str, list[str]]:
    """{image file name: its first ``limit`` captions by annotation id} from COCO caption JSON files;
    images without a caption are left out."""
    by_file: dict[str, list[str]] = {}
    for path in paths:
        payload = _read_json(path)
        try:
            names = {int(image["id"]): str(image["file_name"]) for image in payload["images"]}
            notes = sorted((int(a["id"]), int(a["image_id"]), str(a["caption"])) for a in payload["annotations"])
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{path} is not a COCO captions file: expected 'images' with id and file_name and "
                            "'annotations' with id, image_id and caption") from None
        captions: dict[str, list[str]] = {}
        for _, image_id, caption in notes:
            if image_id not in names:
                raise DataError(f"{path}: an annotation refers to image id {image_id}, which is not in 'images'")
            text = " ".join(caption.split())
            if text:
                captions.setdefault(names[image_id], []).append(text)
        by_file.update({name: texts[:limit] for name, texts in captions.items()})
    if not by_file:
        raise DataError(f"no captions in {', '.join(str(p) for p in paths)}")
    return by_file


def _read_json(path: Path) -> dict[str, Any]:
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    if not isinstance(payload, dict):
        raise DataError(f"{path} is not a COCO captions file (a JSON object)")
    return payload
