"""DAMSM pretraining on a tiny in-memory dataset: the loss falls, metrics, char-CNN-RNN head, caption embedding."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from stackgan2.config import resolve_config
from stackgan2.errors import DataError, UsageError
from stackgan2.text import (
    PromptEncoder,
    encode_dataset_captions,
    evaluate_r_precision,
    fit_prompt_encoder,
    pretrain_text_encoder,
)

COLOURS = {"red": (1, -1, -1), "green": (-1, 1, -1), "blue": (-1, -1, 1), "yellow": (1, 1, -1), "white": (1, 1, 1)}


class ShapesDataset:
    """The ``stackgan2.data`` dataset interface over coloured squares on coloured backgrounds."""

    def __init__(self, n: int, seed: int, size: int = 16, char_dim: int | None = None) -> None:
        rng = np.random.default_rng(seed)
        names = list(COLOURS)
        self.size = size
        self.fg, self.bg = rng.integers(len(names), size=n), rng.integers(len(names), size=n)
        self.captions = [
            [f"a {names[f]} square on {names[b]}.", f"{names[b].title()} background, {names[f]} square"][: 1 + i % 2]
            for i, (f, b) in enumerate(zip(self.fg, self.bg, strict=True))
        ]
        self.class_ids = self.fg.astype(np.int64)
        self.num_classes = len(names)
        self.char_cnn_rnn = None
        if char_dim:  # a fixed linear function of the square's colour: learnable from the caption
            projection = np.random.default_rng(99).normal(size=(len(names), char_dim)).astype(np.float32)
            projection -= projection.mean(axis=0)  # zero mean: a constant prediction scores cosine ~0
            self.char_cnn_rnn = np.repeat(projection[self.fg][:, None], 2, axis=1)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, i: int) -> dict:
        names = list(COLOURS)
        image = torch.tensor(COLOURS[names[self.bg[i]]], dtype=torch.float32).view(3, 1, 1).repeat(1, self.size, self.size)
        q = self.size // 4
        image[:, q : 3 * q, q : 3 * q] = torch.tensor(COLOURS[names[self.fg[i]]], dtype=torch.float32).view(3, 1, 1)
        k = (i + self.epoch) % len(self.captions[i])
        return {
            "images": [image], "wrong_images": [image], "caption": self.captions[i][k],
            "caption_index": k, "class_id": int(self.class_ids[i]), "index": i,
        }  # fmt: skip


def tiny_config(**overrides):
    return resolve_config("tiny", None, {"text.epochs": 6, "text.batch_size": 16, "train.seed": 0, **overrides})


@pytest.fixture(scope="module")
def trained() -> PromptEncoder:
    return fit_prompt_encoder(tiny_config(), ShapesDataset(128, seed=0), ShapesDataset(64, seed=1))


def test_damsm_loss_falls_and_r_precision_beats_chance(trained: PromptEncoder) -> None:
    m = trained.metrics
    assert m["steps"] == 6 * (128 // 16) and len(m["loss_history"]) == 6
    assert m["loss_history"][-1] < 0.7 * m["loss_history"][0]
    assert set(m["final_losses"]) == {"sentence", "word"}
    # 64 test images, 5 colour classes: every other-class caption is a candidate
    assert m["r_precision_candidates"] <= 64 and 0.01 < m["r_precision_chance"] < 0.05
    assert m["r_precision"] > 3 * m["r_precision_chance"]
    assert trained.dim == 16 and trained.head is None and trained.image_encoder is not None


def test_r_precision_counts_ties_as_misses(trained: PromptEncoder) -> None:
    global_proj = trained.image_encoder.global_proj
    saved = global_proj.weight.detach().clone(), global_proj.bias.detach().clone()
    with torch.no_grad():
        global_proj.weight.zero_()
        global_proj.bias.zero_()  # every image feature is 0: all candidates tie
    try:
        assert evaluate_r_precision(trained, ShapesDataset(20, seed=2))["r_precision"] == 0.0
    finally:
        with torch.no_grad():
            global_proj.weight.copy_(saved[0])
            global_proj.bias.copy_(saved[1])


def test_encode_dataset_captions_pads_by_repeating(trained: PromptEncoder) -> None:
    dataset = ShapesDataset(5, seed=3)  # images alternate between 1 and 2 captions
    embeddings = encode_dataset_captions(trained, dataset, batch_size=3)
    assert embeddings.shape == (5, 2, 16) and embeddings.dtype == np.float32
    for i, captions in enumerate(dataset.captions):
        expected = trained.encode([captions[k % len(captions)] for k in range(2)]).embeddings.numpy()
        np.testing.assert_allclose(embeddings[i], expected, atol=1e-5)


def test_char_cnn_rnn_head_regresses_the_original_embeddings() -> None:
    cfg = tiny_config(**{"train.embeddings": "char-cnn-rnn", "model.text_dim": 24, "text.epochs": 10})
    encoder = fit_prompt_encoder(cfg, ShapesDataset(128, seed=0, char_dim=24), ShapesDataset(32, seed=1, char_dim=24))
    assert encoder.dim == 24 and encoder.head is not None
    assert set(encoder.metrics["final_losses"]) == {"sentence", "word", "regression"}
    assert encoder.metrics["char_cnn_rnn_cosine"] > 0.25  # a constant prediction scores ~0 here
    assert encoder.encode(["a red square"]).embeddings.shape == (1, 24)


def test_char_cnn_rnn_without_embeddings_is_a_data_error() -> None:
    cfg = tiny_config(**{"train.embeddings": "char-cnn-rnn", "model.text_dim": 24})
    with pytest.raises(DataError, match="char-CNN-RNN"):
        fit_prompt_encoder(cfg, ShapesDataset(16, seed=0), ShapesDataset(8, seed=1))


def test_pretrain_writes_the_encoder_directory(tmp_path, monkeypatch) -> None:
    import stackgan2.data

    built = []

    def build_dataset(data_cfg, split, *, image_sizes, augment, seed, progress_fn=None, wrong_images=True):
        built.append((split, tuple(image_sizes), augment, wrong_images))
        return ShapesDataset(64 if split == "train" else 16, seed=len(built), size=image_sizes[0])

    monkeypatch.setattr(stackgan2.data, "build_dataset", build_dataset, raising=False)
    events = []
    metrics = pretrain_text_encoder(tiny_config(**{"text.epochs": 2}), tmp_path / "enc", progress_fn=events.append)
    assert built == [("train", (16,), True, False), ("test", (16,), False, False)]  # no unused wrong images
    assert {e.task for e in events} == {"pretrain text encoder", "evaluate R-precision"}
    assert events[-1].completed == events[-1].total
    stored = json.loads((tmp_path / "enc" / "config.json").read_text())
    assert stored["metrics"]["r_precision"] == metrics["r_precision"]
    assert stored["metrics"]["loss_history"] == metrics["loss_history"]
    assert PromptEncoder.load(tmp_path / "enc").encode(["a red square"]).embeddings.shape == (1, 16)


def test_pretrain_refuses_a_foreign_output_directory_before_training(tmp_path) -> None:
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "holiday.jpg").write_bytes(b"")
    with pytest.raises(UsageError, match="holiday.jpg"):
        pretrain_text_encoder(tiny_config(), tmp_path / "photos")


@pytest.mark.parametrize(
    "backbone, weights, message",
    [
        ("resnet50", None, "unknown image backbone"),
        ("mobilenet_v2", None, "needs its ImageNet weights"),
        ("cnn", "weights.pth", "not cnn"),
    ],
)
def test_bad_backbone_choices_are_usage_errors(backbone, weights, message) -> None:
    with pytest.raises(UsageError, match=message):
        fit_prompt_encoder(
            tiny_config(), ShapesDataset(8, seed=0), ShapesDataset(8, seed=1),
            image_backbone=backbone, backbone_weights=weights,
        )  # fmt: skip
