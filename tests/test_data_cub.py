"""cub / flowers in the original StackGAN layout, on a miniature fixture (no download)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stackgan2.cli.main import app
from stackgan2.config import DataConfig
from stackgan2.data import build_dataset
from stackgan2.data.transforms import bbox_crop_box, oversize
from stackgan2.errors import DataError

SIZES = [8, 16, 32]
CLASSES = {"train": ["001.Black_footed_Albatross", "002.Laysan_Albatross"], "test": ["003.Sooty_Albatross"]}
IMAGE_SIZE = (60, 44)  # width, height: not square, like CUB photos
BOX = (10, 6, 30, 20)  # x, y, w, h


def _names(split: str) -> list[str]:
    return [f"{cls}/{cls.split('.')[1]}_{i:04d}_{split}" for cls in CLASSES[split] for i in range(2)]


def _write_pickle(path: Path, value: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(value, protocol=2))


def make_layout(root: Path, kind: str = "cub") -> Path:
    """A miniature birds/ (or flowers/) folder in the exact StackGAN layout; returns it."""
    meta = root / ("birds" if kind == "cub" else "flowers")
    image_root = meta / "CUB_200_2011" / "images" if kind == "cub" else meta / "images"
    rng = np.random.default_rng(0)
    image_lines, box_lines = [], []
    for split in ("train", "test"):
        names = _names(split)
        for name in names:
            path = image_root / f"{name}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 256, (IMAGE_SIZE[1], IMAGE_SIZE[0], 3), dtype=np.uint8)
            Image.fromarray(pixels).save(path, quality=90)
            image_id = len(image_lines) + 1
            image_lines.append(f"{image_id} {name}.jpg")
            box_lines.append(f"{image_id} {' '.join(f'{v}.0' for v in BOX)}")
            text = meta / "text" / f"{name}.txt"
            text.parent.mkdir(parents=True, exist_ok=True)
            text.write_text("".join(f"caption {c} of {name.split('/')[1]}\n" for c in range(10)))
        _write_pickle(meta / split / "filenames.pickle", names)
        _write_pickle(meta / split / "class_info.pickle", [int(n[:3]) for n in names])
        embeddings = rng.standard_normal((len(names), 10, 1024)).astype(np.float32)
        _write_pickle(meta / split / "char-CNN-RNN-embeddings.pickle", embeddings)
    if kind == "cub":
        (meta / "CUB_200_2011" / "images.txt").write_text("\n".join(image_lines) + "\n")
        (meta / "CUB_200_2011" / "bounding_boxes.txt").write_text("\n".join(box_lines) + "\n")
    return meta


def _config(data_dir: Path, tmp_path: Path, kind: str = "cub") -> DataConfig:
    return DataConfig(dataset=kind, data_dir=data_dir, cache_dir=tmp_path / "cache")


def _cache_is_empty(tmp_path: Path) -> bool:
    decoded = tmp_path / "cache" / "decoded"
    return not decoded.exists() or not any(decoded.iterdir())


@pytest.fixture
def birds(tmp_path: Path) -> Path:
    return make_layout(tmp_path / "data")


def test_cub_loads_like_the_official_code(birds: Path, tmp_path: Path) -> None:
    dataset = build_dataset(_config(birds, tmp_path), "train", SIZES, augment=True)
    assert len(dataset) == 4 and dataset.num_classes == 2
    assert dataset.class_ids.tolist() == [0, 0, 1, 1]
    assert dataset.captions[0][0] == "caption 0 of Black_footed_Albatross_0000_train"
    assert len(dataset.captions[0]) == 10
    assert dataset.char_cnn_rnn.shape == (4, 10, 1024) and dataset.char_cnn_rnn.dtype == np.float32
    # 1.5 x bounding box crop, then shorter side scaled to 32 * 76 / 64.
    x1, y1, x2, y2 = bbox_crop_box(BOX, *IMAGE_SIZE)
    stored = dataset.images[0]
    assert min(stored.shape[:2]) == oversize(32)
    assert stored.shape[1] == int(oversize(32) * (x2 - x1) / (y2 - y1))
    item = dataset[1]
    assert [tuple(image.shape) for image in item["images"]] == [(3, s, s) for s in SIZES]
    assert item["class_id"] == 0 and item["caption"] in dataset.captions[1]


def test_parent_folder_and_text_c10_are_accepted(birds: Path, tmp_path: Path) -> None:
    (birds / "text").rename(birds / "text_c10")
    dataset = build_dataset(_config(birds.parent, tmp_path), "test", SIZES, augment=False)
    assert len(dataset) == 2 and dataset.files[0].startswith("003.Sooty_Albatross/")


def test_flowers_layout_without_boxes(tmp_path: Path) -> None:
    flowers = make_layout(tmp_path / "data", kind="flowers")
    dataset = build_dataset(_config(flowers, tmp_path, "flowers"), "train", SIZES, augment=True)
    assert dataset.images[0].shape == (oversize(32), int(oversize(32) * IMAGE_SIZE[0] / IMAGE_SIZE[1]), 3)
    assert dataset.char_cnn_rnn.shape == (4, 10, 1024)


def test_python2_pickles_load(birds: Path, tmp_path: Path) -> None:
    # cPickle protocol 2 as Python 2 wrote it: byte strings (opcode U) decoded as latin1.
    names = _names("test")
    body = b"".join(b"U" + bytes([len(n)]) + n.encode() for n in names)
    (birds / "test" / "filenames.pickle").write_bytes(b"\x80\x02](" + body + b"e.")
    dataset = build_dataset(_config(birds, tmp_path), "test", SIZES, augment=False)
    assert dataset.files == names


def test_decoded_images_are_cached_until_a_file_changes(birds: Path, tmp_path: Path, monkeypatch) -> None:
    cfg = _config(birds, tmp_path)
    first = build_dataset(cfg, "train", SIZES, augment=False)
    monkeypatch.setattr("stackgan2.data.source.build_image_store", lambda *a, **k: pytest.fail("decoded again"))
    again = build_dataset(cfg, "train", SIZES, augment=False)
    assert np.array_equal(again.images[3], first.images[3])
    Image.new("RGB", IMAGE_SIZE, "red").save(_first_image(birds))
    with pytest.raises(pytest.fail.Exception, match="decoded again"):
        build_dataset(cfg, "train", SIZES, augment=False)


def _first_image(birds: Path) -> Path:
    return birds / "CUB_200_2011" / "images" / f"{_names('train')[0]}.jpg"


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


def _break_class_info(birds: Path) -> None:
    _write_pickle(birds / "train" / "class_info.pickle", [1, 1, 2])


def _break_embeddings(birds: Path) -> None:
    _write_pickle(birds / "train" / "char-CNN-RNN-embeddings.pickle", np.zeros((5, 10, 1024), np.float32))


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        (lambda b: _first_image(b).write_text("not a jpeg"), "cannot read image .*Black_footed_Albatross_0000_train.jpg: not an image"),
        (lambda b: _truncate(_first_image(b)), "cannot read image .*Black_footed_Albatross_0000_train.jpg: image file is truncated"),
        (lambda b: _first_image(b).unlink(), "cannot read image .*Black_footed_Albatross_0000_train.jpg: no such file"),
        (_break_class_info, r"class_info.pickle has 3 entries, expected 4"),
        (_break_embeddings, r"char-CNN-RNN-embeddings.pickle has 5 entries .* expected 4 entries"),
        (lambda b: (b / "train" / "filenames.pickle").unlink(), r"does not have the StackGAN cub layout: expected .*train/filenames.pickle"),
        (lambda b: (b / "CUB_200_2011" / "bounding_boxes.txt").unlink(), r"missing file .*bounding_boxes.txt"),
        (lambda b: (b / "text" / f"{_names('train')[2]}.txt").unlink(), r"missing caption file .*Laysan_Albatross_0000_train.txt"),
        (lambda b: (b / "text" / f"{_names('train')[2]}.txt").write_text("\n\n"), r"caption file .* has no captions"),
        (lambda b: _write_pickle(b / "train" / "filenames.pickle", {"a": 1}), r"filenames.pickle should hold a non-empty list"),
    ],
)
def test_broken_layout_is_a_clear_error_and_caches_nothing(birds: Path, tmp_path: Path, breakage, expected) -> None:
    breakage(birds)
    with pytest.raises(DataError, match=expected):
        build_dataset(_config(birds, tmp_path), "train", SIZES, augment=True)
    assert _cache_is_empty(tmp_path)


def test_malicious_pickle_is_refused_without_running(birds: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    _write_pickle(birds / "train" / "class_info.pickle", _Exploit(marker))
    with pytest.raises(DataError, match=r"refusing to load .*class_info.pickle: it asks for posix.system"):
        build_dataset(_config(birds, tmp_path), "train", SIZES, augment=True)
    assert not marker.exists()


def test_missing_or_unset_data_dir(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="needs --data-dir"):
        build_dataset(DataConfig(dataset="cub", cache_dir=tmp_path), "train", SIZES, augment=True)
    with pytest.raises(DataError, match=r"data directory .*nowhere does not exist"):
        build_dataset(_config(tmp_path / "nowhere", tmp_path), "train", SIZES, augment=True)


def test_cli_info_and_preview(birds: Path, tmp_path: Path, runner) -> None:
    common = ["--preset", "tiny", "--dataset", "cub", "--data-dir", str(birds), "--cache-dir", str(tmp_path / "cache")]
    result = runner.invoke(app, ["data", "info", "--json", *common])
    assert result.exit_code == 0, result.output
    assert '"vocabulary_size"' in result.stdout and '"char_cnn_rnn": [' in result.stdout
    out = tmp_path / "grid.png"
    result = runner.invoke(app, ["data", "preview", "--out", str(out), "--count", "3", *common])
    assert result.exit_code == 0, result.output
    assert Image.open(out).size[0] == 3 * (128 + 2 * 5)


def test_cli_error_is_one_line_exit_1_and_writes_nothing(birds: Path, tmp_path: Path, runner) -> None:
    _write_pickle(birds / "train" / "class_info.pickle", _Exploit(tmp_path / "pwned"))
    out = tmp_path / "grid.png"
    result = runner.invoke(app, ["data", "preview", "--dataset", "cub", "--data-dir", str(birds),
                                 "--cache-dir", str(tmp_path / "cache"), "--out", str(out)])
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and "refusing to load" in result.stderr and "class_info.pickle" in result.stderr
    assert not out.exists() and not (tmp_path / "pwned").exists()
