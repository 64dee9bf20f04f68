"""CaptionedImageDataset: items, crops, wrong images, reproducible randomness, embeddings (on tiny toy-birds)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from stackgan2.config import DataConfig
from stackgan2.data import CaptionedImageDataset, build_dataset
from stackgan2.data.transforms import center_crop, oversize

SIZES = [8, 16, 32]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("toy-cache")


def _dataset(cache_dir: Path, augment: bool = True, seed: int = 0, sizes=SIZES) -> CaptionedImageDataset:
    cfg = DataConfig(toy_train_size=50, toy_test_size=10, toy_render_size=40, cache_dir=cache_dir)
    return build_dataset(cfg, "train", sizes, augment=augment, seed=seed)


def _same(a: dict, b: dict) -> bool:
    return (a["caption_index"] == b["caption_index"]
            and all(torch.equal(x, y) for x, y in zip(a["images"] + a["wrong_images"], b["images"] + b["wrong_images"],
                                                      strict=True)))


def test_item_layout(cache_dir: Path) -> None:
    dataset = _dataset(cache_dir)
    item = dataset[7]
    assert set(item) == {"images", "wrong_images", "caption", "caption_index", "class_id", "index"}
    for key in ("images", "wrong_images"):
        assert [tuple(image.shape) for image in item[key]] == [(3, s, s) for s in SIZES]
        assert all(image.dtype == torch.float32 and -1 <= image.min() and image.max() <= 1 for image in item[key])
    assert item["caption"] == dataset.captions[7][item["caption_index"]]
    assert item["class_id"] == dataset.class_ids[7] and item["index"] == 7
    assert dataset.image_sizes == SIZES and isinstance(dataset, torch.utils.data.Dataset)


def test_small_stages_are_resized_from_the_same_crop(cache_dir: Path) -> None:
    dataset = _dataset(cache_dir)
    for index in range(5):
        images = dataset[index]["images"]
        largest = ((images[-1].permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8)
        for image, size in zip(images[:-1], SIZES[:-1], strict=True):
            expected = np.asarray(Image.fromarray(largest).resize((size, size), Image.BILINEAR))
            assert np.abs((image.permute(1, 2, 0).numpy() + 1) * 127.5 - expected).max() < 0.51


def test_without_augmentation_images_are_centre_crops(cache_dir: Path) -> None:
    dataset = _dataset(cache_dir, augment=False)
    source = np.asarray(Image.fromarray(dataset.images[3]).resize((oversize(32),) * 2, Image.BILINEAR))
    largest = dataset[3]["images"][-1]
    assert torch.equal(largest, torch.from_numpy(center_crop(source, 32).transpose(2, 0, 1).copy()).float() / 127.5 - 1)
    dataset.set_epoch(5)
    assert torch.equal(dataset[3]["images"][-1], largest)
    real = dataset.real_image(3, 32)
    assert real.dtype == np.uint8 and real.shape == (32, 32, 3)
    assert np.array_equal(real, center_crop(source, 32))


def test_augmentation_crops_and_flips(cache_dir: Path) -> None:
    dataset = _dataset(cache_dir)
    crops = set()
    for epoch in range(12):
        dataset.set_epoch(epoch)
        crops.add(dataset[0]["images"][-1].numpy().tobytes())
    assert len(crops) > 6


def test_items_without_wrong_images_are_otherwise_identical(cache_dir: Path) -> None:
    cfg = DataConfig(toy_train_size=50, toy_test_size=10, toy_render_size=40, cache_dir=cache_dir)
    full, light = (build_dataset(cfg, "train", SIZES, augment=True, wrong_images=w) for w in (True, False))
    for dataset in (full, light):
        dataset.set_epoch(2)
    for index in range(8):
        a, b = full[index], light[index]
        assert b["wrong_images"] is None and a["wrong_images"] is not None
        assert a["caption"] == b["caption"] and a["caption_index"] == b["caption_index"]
        assert all(torch.equal(x, y) for x, y in zip(a["images"], b["images"], strict=True))


def test_wrong_image_is_of_another_class(cache_dir: Path) -> None:
    dataset = _dataset(cache_dir)
    for index in range(len(dataset)):
        rng = np.random.default_rng([0, 0, index])
        picks = {dataset._wrong_index(index, rng) for _ in range(20)}
        assert all(dataset.class_ids[pick] != dataset.class_ids[index] for pick in picks)


def test_randomness_depends_only_on_seed_epoch_and_index(cache_dir: Path) -> None:
    dataset = _dataset(cache_dir)
    dataset.set_epoch(3)
    first = [dataset[i] for i in range(6)]
    other = _dataset(cache_dir)
    other.set_epoch(3)
    assert all(_same(a, other[i]) for i, a in enumerate(first))
    other.set_epoch(4)
    assert not all(_same(a, other[i]) for i, a in enumerate(first))
    reseeded = _dataset(cache_dir, seed=1)
    reseeded.set_epoch(3)
    assert not all(_same(a, reseeded[i]) for i, a in enumerate(first))


def test_worker_count_does_not_change_batches(cache_dir: Path) -> None:
    dataset = _dataset(cache_dir)
    dataset.set_epoch(2)
    batches = [next(iter(DataLoader(dataset, batch_size=10, num_workers=workers))) for workers in (0, 2)]
    assert batches[0]["caption"] == batches[1]["caption"]
    assert all(torch.equal(a, b) for a, b in zip(batches[0]["wrong_images"], batches[1]["wrong_images"], strict=True))


def test_pickling_does_not_copy_pixels(cache_dir: Path) -> None:
    dataset = _dataset(cache_dir)
    dataset[0]  # opens the memory map
    clone = pickle.loads(pickle.dumps(dataset))
    assert len(pickle.dumps(dataset)) < 50 * 40 * 40 * 3
    assert _same(clone[4], dataset[4])


def test_embeddings_follow_the_caption(cache_dir: Path) -> None:
    dataset = _dataset(cache_dir)
    embeddings = np.random.default_rng(0).standard_normal((len(dataset), 10, 6)).astype(np.float32)
    dataset.set_embeddings(embeddings)
    for index in range(5):
        item = dataset[index]
        assert torch.equal(item["embedding"], torch.from_numpy(embeddings[index, item["caption_index"]]))
    with pytest.raises(ValueError, match=r"embeddings must have shape \(50, >=10, D\)"):
        dataset.set_embeddings(embeddings[:3])
    dataset.set_embeddings(None)
    assert "embedding" not in dataset[0]


def test_index_and_size_checks(cache_dir: Path) -> None:
    dataset = _dataset(cache_dir)
    with pytest.raises(IndexError):
        dataset[50]
    assert dataset[np.int64(2)]["index"] == 2
    with pytest.raises(ValueError, match="ascending"):
        _dataset(cache_dir, sizes=[32, 16])
