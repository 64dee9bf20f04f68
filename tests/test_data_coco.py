"""coco: COCO's own caption files and the official StackGAN v1 layout, on small fixtures written here."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stackgan2.cli.main import app
from stackgan2.config import DataConfig
from stackgan2.data import build_dataset
from stackgan2.errors import DataError

COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (220, 220, 40)]


def _image(path: Path, colour: tuple[int, int, int], size: tuple[int, int], mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).convert(mode).save(path, quality=95)


def _captions_file(path: Path, files: list[str], first_id: int) -> dict[str, list[str]]:
    """A COCO captions JSON: image i gets 5 + (i % 3) captions, written in shuffled annotation order."""
    images, notes, expected = [], [], {}
    for i, name in enumerate(files):
        image_id = first_id + i
        images.append({"id": image_id, "file_name": name, "width": 40, "height": 30})
        texts = [f"a  photo {i} of thing {k}" for k in range(5 + i % 3)]
        notes += [{"id": image_id * 100 + k, "image_id": image_id, "caption": text} for k, text in enumerate(texts)]
        expected[name] = [" ".join(t.split()) for t in texts[:5]]
    notes.reverse()  # the reader orders captions by annotation id, not by position in the file
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "annotations": notes}), encoding="utf-8")
    return expected


@pytest.fixture
def coco_own(tmp_path) -> tuple[Path, dict[str, list[str]]]:
    root = tmp_path / "coco"
    train = [f"COCO_train2014_{i:012d}.jpg" for i in range(4)]
    expected = _captions_file(root / "annotations" / "captions_train2014.json", train, 1)
    expected |= _captions_file(root / "annotations" / "captions_val2014.json", ["COCO_val2014_000000000042.jpg"], 42)
    for i, name in enumerate(train):
        _image(root / "train2014" / name, COLOURS[i], (40 + 8 * i, 30), mode="L" if i == 3 else "RGB")
    _image(root / "val2014" / "COCO_val2014_000000000042.jpg", COLOURS[0], (30, 40))
    return root, expected


def test_coco_annotation_files(coco_own, tmp_path):
    root, expected = coco_own
    cfg = DataConfig(dataset="coco", data_dir=tmp_path, captions_per_image=5, cache_dir=tmp_path / "cache")
    train = build_dataset(cfg, "train", [16], augment=False)
    assert len(train) == 4 and train.char_cnn_rnn is None
    assert [len(c) for c in train.captions] == [5, 5, 5, 5]
    assert train.captions[1] == expected["COCO_train2014_000000000001.jpg"]  # first 5 by annotation id, spaces tidied
    item = train[2]
    assert item["images"][0].shape == (3, 16, 16)
    red, _, blue = item["images"][0].mean(dim=(1, 2)).tolist()
    assert blue > 0.3 > red  # image 2 is the blue one
    test = build_dataset(cfg, "test", [16], augment=False)
    assert len(test) == 1 and test.captions[0][0] == "a photo 0 of thing 0"


def _official_layout(root: Path, with_text: bool) -> np.ndarray:
    names = [f"COCO_train2014_{i:012d}" for i in range(4)]
    (root / "train").mkdir(parents=True)
    with open(root / "train" / "filenames.pickle", "wb") as handle:
        pickle.dump(names, handle, protocol=2)
    embeddings = np.random.default_rng(0).normal(size=(4, 5, 16)).astype(np.float32)
    with open(root / "train" / "char-CNN-RNN-embeddings.pickle", "wb") as handle:
        pickle.dump(embeddings, handle, protocol=2)
    for i, name in enumerate(names):
        _image(root / "images" / f"{name}.jpg", COLOURS[i], (36, 36))
        if with_text:
            (root / "text").mkdir(exist_ok=True)
            (root / "text" / f"{name}.txt").write_text("".join(f"caption {k} of {i}\n" for k in range(5)))
    return embeddings


@pytest.mark.parametrize("captions_from", ["text", "annotations"])
def test_coco_official_v1_layout(tmp_path, captions_from):
    root = tmp_path / "coco"
    embeddings = _official_layout(root, with_text=captions_from == "text")
    if captions_from == "annotations":
        _captions_file(root / "annotations" / "captions_train2014.json", [f"COCO_train2014_{i:012d}.jpg" for i in range(4)], 1)
    data = build_dataset(DataConfig(dataset="coco", data_dir=root, captions_per_image=5, cache_dir=tmp_path / "c"),
                         "train", [16], augment=True)
    assert np.array_equal(data.char_cnn_rnn, embeddings)
    first = "caption 0 of 2" if captions_from == "text" else "a photo 2 of thing 0"
    assert data.captions[2][0] == first and all(len(c) == 5 for c in data.captions)


def test_coco_errors_name_what_is_missing(tmp_path):
    with pytest.raises(DataError, match="needs --data-dir"):
        build_dataset(DataConfig(dataset="coco"), "train", [16], augment=False)
    with pytest.raises(DataError, match="filenames.pickle.*captions_train2014.json"):
        build_dataset(DataConfig(dataset="coco", data_dir=tmp_path), "train", [16], augment=False)
    _official_layout(tmp_path / "coco", with_text=False)
    with pytest.raises(DataError, match="text/ folder"):
        build_dataset(DataConfig(dataset="coco", data_dir=tmp_path), "train", [16], augment=False)


def test_data_info_preview_and_v1_training_on_coco(runner, coco_own, tmp_path, text_encoder_dir):
    root, _ = coco_own
    common = ["--dataset", "coco", "--data-dir", str(root), "--cache-dir", str(tmp_path / "cache")]
    info = runner.invoke(app, ["data", "info", *common])
    assert info.exit_code == 0, info.output
    assert "coco" in info.output
    preview = runner.invoke(app, ["data", "preview", *common, "--out", str(tmp_path / "preview.png")])
    assert preview.exit_code == 0, preview.output
    assert (tmp_path / "preview.png").is_file()
    run = tmp_path / "run"
    result = runner.invoke(app, ["--quiet", "train", "--preset", "v1-toy", "--device", "cpu", *common, "--batch-size", "2",
                                 "--max-steps", "2", "--text-encoder", str(text_encoder_dir), "--run-dir", str(run)])
    assert result.exit_code == 0, result.output
    assert json.loads((run / "config.json").read_text())["data"]["dataset"] == "coco"
