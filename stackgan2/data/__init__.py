"""Datasets: toy-birds (built in), cub / flowers (the original StackGAN layout), coco and folder (your own).

``build_dataset(cfg, split, image_sizes, augment=...)`` returns a ``CaptionedImageDataset`` whatever the
source. Images are decoded (or, for toy-birds, drawn) once into a memory-mapped cache under
``cfg.cache_dir`` (default ``$XDG_CACHE_HOME/stackgan2``), so loading never holds up training.

``CaptionedImageDataset`` needs torch, so it is imported on first use: the processes that render
toy-birds import this package but never torch.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from stackgan2.config import DataConfig
from stackgan2.data.transforms import oversize
from stackgan2.progress import ProgressFn

if TYPE_CHECKING:
    from stackgan2.data.dataset import CaptionedImageDataset

__all__ = ["CaptionedImageDataset", "build_dataset"]

log = logging.getLogger("stackgan2.data")


def build_dataset(
    cfg: DataConfig,
    split: Literal["train", "test"],
    image_sizes: Sequence[int],
    *,
    augment: bool,
    seed: int = 0,
    progress_fn: ProgressFn | None = None,
    wrong_images: bool = True,
) -> CaptionedImageDataset:
    """The ``split`` of ``cfg.dataset`` with images at every size in ``image_sizes`` (ascending).

    ``augment`` gives the official random crop and flip (training); without it images are centre
    crops. ``seed`` (with the epoch, see ``set_epoch``) fixes every random choice an item makes.
    ``wrong_images=False`` leaves the mismatched image out of items (DAMSM pretraining has no use for
    it); every other field of an item is unchanged.
    Raises ``DataError`` naming the file or folder when the data is missing or malformed.
    """
    from stackgan2.data.coco import load_coco
    from stackgan2.data.cub import load_stackgan_layout
    from stackgan2.data.dataset import CaptionedImageDataset
    from stackgan2.data.folder import load_folder
    from stackgan2.data.toybirds import load_toy_birds

    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    short_side = oversize(max(image_sizes))
    if cfg.dataset == "toy-birds":
        if cfg.toy_render_size < short_side:
            log.warning(
                "toy-birds images are rendered at %d px but %d px images need %d px: they will be upscaled "
                "(set data.toy_render_size to at least %d)", cfg.toy_render_size, max(image_sizes), short_side,
                short_side,
            )
        parts = load_toy_birds(cfg, split, progress_fn)
    elif cfg.dataset in ("cub", "flowers"):
        parts = load_stackgan_layout(cfg, split, short_side, progress_fn)
    elif cfg.dataset == "coco":
        parts = load_coco(cfg, split, short_side, progress_fn)
    else:
        parts = load_folder(cfg, split, short_side, progress_fn)
    return CaptionedImageDataset(parts, image_sizes, augment=augment, seed=seed, wrong_images=wrong_images)


def __getattr__(name: str) -> Any:
    if name == "CaptionedImageDataset":
        from stackgan2.data.dataset import CaptionedImageDataset

        return CaptionedImageDataset
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
