"""folder: a directory of your own images with captions; unreadable images are skipped with a warning."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stackgan2.cli.main import app
from stackgan2.config import DataConfig
from stackgan2.data import build_dataset
from stackgan2.errors import DataError

SIZES = [8, 16]


def _image(path: Path, color: tuple[int, int, int], size: tuple[int, int] = (30, 24)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def _captioned(path: Path, color: tuple[int, int, int], *captions: str) -> None:
    _image(path, color)
    path.with_suffix(".txt").write_text("\n".join(captions) + "\n")


def _config(data_dir: Path, tmp_path: Path) -> DataConfig:
    return DataConfig(dataset="folder", data_dir=data_dir, cache_dir=tmp_path / "cache", captions_per_image=2)


def test_images_with_txt_captions_and_subfolder_classes(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    _captioned(root / "cats" / "a.png", (200, 0, 0), "a red cat", "", "  a cat  ", "third caption")
    _captioned(root / "cats" / "b.jpg", (0, 200, 0), "a green cat")
    _captioned(root / "dogs" / "c.jpeg", (0, 0, 200), "a blue dog")
    dataset = build_dataset(_config(root, tmp_path), "train", SIZES, augment=True)
    assert dataset.files == ["cats/a.png", "cats/b.jpg", "dogs/c.jpeg"]
    assert dataset.captions[0] == ["a red cat", "a cat"]  # blank lines dropped, cfg.captions_per_image kept
    assert dataset.class_ids.tolist() == [0, 0, 1] and dataset.num_classes == 2
    assert dataset.real_image(0, 8)[4, 4].tolist() == [200, 0, 0]
    item = dataset[2]
    assert float(item["wrong_images"][0][2].mean()) < 0 < float(item["images"][0][2].mean())  # a cat, not the dog
    test = build_dataset(_config(root, tmp_path), "test", SIZES, augment=False)
    assert len(test) == 3  # no train/ and test/ folders: both splits are the whole folder


def test_captions_jsonl_and_split_folders(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    for split in ("train", "test"):
        _image(root / split / "x.png", (10, 20, 30))
        _image(root / split / "y.png", (30, 20, 10))
        lines = [{"file": "x.png", "captions": [f"{split} x"]}, {"file": "y.png", "captions": ["y one", "y two"]}]
        (root / split / "captions.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    dataset = build_dataset(_config(root, tmp_path), "test", SIZES, augment=False)
    assert dataset.files == ["x.png", "y.png"] and dataset.captions == [["test x"], ["y one", "y two"]]


def test_bad_images_are_skipped_with_one_counted_warning(tmp_path: Path, caplog) -> None:
    root = tmp_path / "photos"
    _captioned(root / "good.png", (1, 2, 3), "fine")
    (root / "fake.jpg").write_text("I am text")
    (root / "fake.txt").write_text("a caption\n")
    _captioned(root / "cut.jpg", (9, 9, 9), "truncated")
    (root / "cut.jpg").write_bytes((root / "cut.jpg").read_bytes()[:200])
    _image(root / "silent.png", (5, 5, 5))  # no caption file
    with caplog.at_level(logging.WARNING, logger="stackgan2.data"):
        dataset = build_dataset(_config(root, tmp_path), "train", SIZES, augment=True)
    assert dataset.files == ["good.png"]
    [record] = [r for r in caplog.records if r.name == "stackgan2.data"]
    message = record.getMessage()
    assert message.startswith("skipped 3 of 4 images in")
    assert "fake.jpg (not an image" in message and "cut.jpg (" in message and "silent.png (no captions" in message
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="stackgan2.data"):  # from the cache, the warning stays
        assert len(build_dataset(_config(root, tmp_path), "train", SIZES, augment=True)) == 1
    assert "skipped 3 of 4" in caplog.text


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        (lambda root: root.mkdir(), r"no captioned images in .*photos: expected image files"),
        (lambda root: _image(root / "a.png", (0, 0, 0)), r"no captioned images in .*\(1 images have no captions\)"),
        (lambda root: (root.mkdir(), (root / "a.jpg").write_text("x"), (root / "a.txt").write_text("cap")),
         r"none of the 1 images in .*photos could be read: a.jpg \(not an image"),
        (lambda root: (root.mkdir(), (root / "captions.jsonl").write_text('{"file": "a.png"}\n')),
         r'captions.jsonl line 1: expected \{"file"'),
        (lambda root: None, r"data directory .*photos does not exist"),
    ],
)
def test_unusable_folder_is_a_clear_error(tmp_path: Path, setup, expected) -> None:
    setup(tmp_path / "photos")
    with pytest.raises(DataError, match=expected):
        build_dataset(_config(tmp_path / "photos", tmp_path), "train", SIZES, augment=True)


def test_cli_empty_folder_exits_1_and_writes_nothing(tmp_path: Path, runner) -> None:
    (tmp_path / "photos").mkdir()
    out = tmp_path / "grid.png"
    result = runner.invoke(app, ["data", "preview", "--dataset", "folder", "--data-dir", str(tmp_path / "photos"),
                                 "--cache-dir", str(tmp_path / "cache"), "--out", str(out)])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: no captioned images in") and result.stderr.count("\n") == 1
    assert not out.exists()


def test_cli_preview_of_a_folder(tmp_path: Path, runner) -> None:
    root = tmp_path / "photos"
    for i in range(5):
        _captioned(root / f"{i}.png", tuple(np.full(3, 40 * i)), f"picture number {i} " + "word " * 30)
    out = tmp_path / "sub" / "grid.png"
    result = runner.invoke(app, ["data", "preview", "--dataset", "folder", "--data-dir", str(root), "--preset", "tiny",
                                 "--cache-dir", str(tmp_path / "cache"), "--out", str(out), "--columns", "2",
                                 "--size", "32"])
    assert result.exit_code == 0, result.output
    assert Image.open(out).size[0] == 2 * (32 + 2 * 4) and "5 of 5 folder train images" in " ".join(result.stdout.split())
