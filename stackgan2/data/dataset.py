"""``CaptionedImageDataset``: the one torch Dataset every source (toy-birds, cub, flowers, folder) becomes.

Per item it returns the image at every stage resolution (all cut from the same crop), one caption
picked at random with its index, a "wrong" image of another class for the mismatched-pair loss and
the class id. All randomness comes from ``np.random.default_rng([seed, epoch, index])``, so an item
is the same whichever worker process builds it, and a resumed run sees exactly the same data.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from stackgan2.data.source import DatasetParts
from stackgan2.data.transforms import center_crop, fit_array, oversize, resize_stages


def _to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) -> float32 (3, H, W) in [-1, 1], as the official ToTensor + Normalize(0.5, 0.5)."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div_(127.5).sub_(1.0)


def _seed_word(seed: int) -> int:
    return seed & 0xFFFF_FFFF_FFFF_FFFF  # SeedSequence wants non-negative entropy; keeps seeds >= 0 unchanged


def _outside_block(rng: np.random.Generator, others: int, block_start: int, block_count: int) -> int:
    """A uniform position in a sorted range of ``others + block_count`` items, skipping the block
    [block_start, block_start + block_count): one draw, no rejection."""
    pick = int(rng.integers(others))
    return pick + int(block_count) if pick >= block_start else pick


class CaptionedImageDataset(Dataset):
    """Images with captions, prepared exactly like the official StackGAN-v2 ``TextDataset``.

    ``image_sizes`` (ascending, e.g. [64, 128, 256]): the largest is cut from the image scaled to
    largest * 76/64 (randomly placed and flipped when ``augment``, centred otherwise), the smaller ones
    are that crop resized with antialiasing.
    """

    def __init__(
        self, parts: DatasetParts, image_sizes: Sequence[int], *, augment: bool, seed: int = 0, wrong_images: bool = True
    ) -> None:
        sizes = [int(size) for size in image_sizes]
        if not sizes or sizes != sorted(set(sizes)) or sizes[0] < 1:
            raise ValueError(f"image_sizes must be distinct, ascending and positive, got {list(image_sizes)}")
        self.name = parts.name
        self.split = parts.split
        self.images = parts.images
        self.files = parts.files
        self.captions = parts.captions
        self.class_ids = np.asarray(parts.class_ids, dtype=np.int64)
        self.num_classes = parts.num_classes
        self.attributes = parts.attributes
        self.attribute_values = parts.attribute_values
        self.char_cnn_rnn = parts.char_cnn_rnn
        self.image_sizes = sizes
        self.augment = augment
        self.seed = seed
        self.wrong_images = wrong_images  # False: items skip the mismatched image (half the per-item work)
        self.epoch = 0
        self.embeddings: np.ndarray | None = None
        assert len(self.images) == len(self.captions) == len(self.class_ids) == len(self.files)
        assert all(self.captions), "every image needs at least one caption"
        # Images sorted by class, so "an image of another class" is one uniform draw (see _wrong_index).
        self._by_class = np.argsort(self.class_ids, kind="stable")
        counts = np.bincount(self.class_ids, minlength=self.num_classes)
        self._class_start = np.concatenate([[0], np.cumsum(counts)[:-1]])
        self._class_count = counts

    def __len__(self) -> int:
        return len(self.images)

    def set_epoch(self, epoch: int) -> None:
        """Select the random stream of ``epoch`` (captions, wrong images, crops and flips)."""
        self.epoch = int(epoch)

    def set_embeddings(self, embeddings: np.ndarray | None) -> None:
        """(N, C, D) caption embeddings; items then carry ``embeddings[index, caption_index]``."""
        if embeddings is None:
            self.embeddings = None
            return
        embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        longest = max(len(captions) for captions in self.captions)
        if embeddings.ndim != 3 or embeddings.shape[0] != len(self) or embeddings.shape[1] < longest:
            raise ValueError(
                f"embeddings must have shape ({len(self)}, >={longest}, D) for this dataset, got {embeddings.shape}"
            )
        self.embeddings = embeddings

    def real_image(self, index: int, size: int) -> np.ndarray:
        """uint8 (size, size, 3): the centre crop of image ``index`` scaled to size * 76/64, no augmentation."""
        return np.array(center_crop(fit_array(self.images[index], oversize(size)), size))

    def _wrong_index(self, index: int, rng: np.random.Generator) -> int:
        """A uniformly random image of another class (of another index when there is only one class)."""
        total = len(self)
        own = self.class_ids[index]
        others = total - self._class_count[own]
        if others == 0:
            if total == 1:
                return index
            pick = int(rng.integers(total - 1))
            return pick + (pick >= index)
        return int(self._by_class[_outside_block(rng, others, self._class_start[own], self._class_count[own])])

    def _stage_images(self, index: int, rng: np.random.Generator) -> list[torch.Tensor]:
        largest = self.image_sizes[-1]
        image = fit_array(self.images[index], oversize(largest))
        if self.augment:
            top = int(rng.integers(image.shape[0] - largest + 1))
            left = int(rng.integers(image.shape[1] - largest + 1))
            crop = image[top : top + largest, left : left + largest]
            if rng.random() < 0.5:
                crop = crop[:, ::-1]
        else:
            crop = center_crop(image, largest)
        return [_to_tensor(image) for image in resize_stages(np.ascontiguousarray(crop), self.image_sizes)]

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = operator.index(index)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        rng = np.random.default_rng([_seed_word(self.seed), self.epoch, index])
        captions = self.captions[index]
        caption_index = int(rng.integers(len(captions)))
        wrong = self._wrong_index(index, rng)
        item: dict[str, Any] = {
            "images": self._stage_images(index, rng),
            # Drawn last, so leaving it out changes no other field of the item.
            "wrong_images": self._stage_images(wrong, rng) if self.wrong_images else None,
            "caption": captions[caption_index],
            "caption_index": caption_index,
            "class_id": int(self.class_ids[index]),
            "index": index,
        }
        if self.embeddings is not None:
            item["embedding"] = torch.from_numpy(self.embeddings[index, caption_index].copy())
        return item

    def __repr__(self) -> str:
        return (
            f"CaptionedImageDataset({self.name}/{self.split}: {len(self)} images, {self.num_classes} classes, "
            f"sizes {self.image_sizes}, augment={self.augment})"
        )
