"""The dataset classifier behind ``stackgan2 train-classifier``: IS probabilities, FID features offline, attributes.

StackGAN/StackGAN++ compute the Inception Score with an Inception network fine-tuned on the dataset's
classes; a MobileNetV2 fine-tuned the same way (``arch="mobilenet_v2"`` with local ImageNet weights)
is this package's accepted substitute, and a small CNN trained from scratch (``"small-cnn"``) is the
offline default that trains on toy-birds in CPU minutes. Its pooled penultimate features serve as the
FID feature space when no Inception-v3 weights are available. On toy-birds, extra heads predict each
ground-truth attribute (body colour, wing colour, size, beak, ...) so that generated images can be
checked against their prompt.

A classifier directory holds ``classifier.safetensors`` and ``config.json`` (architecture, the
dataset's name, classes and attribute vocabularies, the weights' sha256 and the test metrics);
nothing is unpickled, and loading checks the files against each other.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from stackgan2.config import DataConfig
from stackgan2.device import resolve_device
from stackgan2.errors import CheckpointError, DataError, UsageError
from stackgan2.io import atomic_save, atomic_write_text, read_format_json, sha256_file
from stackgan2.progress import ProgressFn, report

logger = logging.getLogger("stackgan2.metrics")

ARCHS = ("small-cnn", "mobilenet_v2")
CLASSIFIER_FORMAT = "stackgan2-classifier"
CLASSIFIER_VERSION = 1
WEIGHTS_FILE, CONFIG_FILE = "classifier.safetensors", "config.json"
CLASS_HEAD = "class"
# The attributes whose agreement with the prompt is "attribute accuracy" (both must match).
PROMPT_ATTRIBUTES = ("body_color", "wing_color")
HOLDOUT_FRACTION = 0.1  # per class, when the dataset's test classes were never seen in training

_IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision ImageNet weights expect these statistics
_IMAGENET_STD = (0.229, 0.224, 0.225)
MOBILENET_WEIGHTS_URL = "https://download.pytorch.org/models/mobilenet_v2-b0353104.pth"  # IMAGENET1K_V1
_MOBILENET_WEIGHTS_HINT = (
    f"download {MOBILENET_WEIGHTS_URL} on a machine with internet (torchvision's MobileNet_V2_Weights.IMAGENET1K_V1) "
    "and pass its path with --init-weights, or train from scratch without it"
)


@dataclass(frozen=True)
class ClassifierSpec:
    """Everything needed to rebuild the network, and what it was trained to recognise."""

    arch: str                                   # "small-cnn" or "mobilenet_v2"
    image_size: int                             # input resolution; other sizes are resized to it
    width: int                                  # small-cnn: channels of the first layer
    dataset: str                                # DataConfig.dataset it was trained on
    num_classes: int                            # outputs of the class head (see ``class_labels``)
    test_classes: int                           # the dataset's test-split class count, to recognise it
    attributes: dict[str, list[str]] = field(default_factory=dict)  # attribute -> value names

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise UsageError(f"unknown classifier architecture {self.arch!r}; valid: {', '.join(ARCHS)}")
        if self.image_size < 16:
            raise UsageError(f"classifier image size must be at least 16, got {self.image_size}")
        if self.width < 1:
            raise UsageError(f"classifier width must be positive, got {self.width}")


def _conv_bn_relu(in_ch: int, out_ch: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True)]


def _small_cnn(width: int) -> tuple[nn.Sequential, int]:
    """Stem, then three (stride-2 conv, conv) stages doubling the width up to 8*width; 64 px -> 8 x 8."""
    channels = [width, 2 * width, 4 * width, 8 * width]
    layers = _conv_bn_relu(3, width, 1)
    for in_ch, out_ch in zip(channels, channels[1:], strict=False):
        layers += _conv_bn_relu(in_ch, out_ch, 2) + _conv_bn_relu(out_ch, out_ch, 1)
    return nn.Sequential(*layers), channels[-1]


class ImageClassifier(nn.Module):
    """Images (B, 3, S, S) in [-1, 1] -> pooled features and one logit vector per head."""

    def __init__(self, spec: ClassifierSpec) -> None:
        super().__init__()
        self.spec = spec
        if spec.arch == "small-cnn":
            self.backbone, channels = _small_cnn(spec.width)
        else:
            from torchvision import models

            self.backbone, channels = models.mobilenet_v2(weights=None).features, 1280
        self.feature_dim = 2 * channels  # average and max pooled
        heads = {CLASS_HEAD: spec.num_classes} | {name: len(values) for name, values in spec.attributes.items()}
        self.heads = nn.ModuleDict({name: nn.Linear(self.feature_dim, size) for name, size in heads.items()})

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        size = self.spec.image_size
        if images.shape[-2:] != (size, size):
            images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        if self.spec.arch == "mobilenet_v2":
            mean = images.new_tensor(_IMAGENET_MEAN).view(1, 3, 1, 1)
            std = images.new_tensor(_IMAGENET_STD).view(1, 3, 1, 1)
            images = ((images + 1) / 2 - mean) / std
        return images

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"features": (B, F), "class": (B, classes), <attribute>: (B, values), ...}``."""
        assert images.ndim == 4 and images.shape[1] == 3, f"images must be (B, 3, S, S), got {tuple(images.shape)}"
        # Max pooling next to average pooling: a bird covers a small part of the frame, and a colour
        # present anywhere on it should not be averaged away by the background.
        grid = self.backbone(self._prepare(images))
        features = torch.cat([grid.mean(dim=(2, 3)), grid.amax(dim=(2, 3))], dim=1)
        assert features.shape == (images.shape[0], self.feature_dim)
        return {"features": features} | {name: head(features) for name, head in self.heads.items()}


def load_mobilenet_backbone(model: ImageClassifier, path: Path) -> None:
    """Initialise a MobileNetV2 classifier's backbone from torchvision ImageNet weights on disk."""
    from torchvision import models

    from stackgan2.text.encoders import load_backbone_weights

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"MobileNetV2 weights not found: {path}; {_MOBILENET_WEIGHTS_HINT}")
    net = models.mobilenet_v2(weights=None)
    try:
        net.load_state_dict(load_backbone_weights(path))
    except RuntimeError as exc:
        raise CheckpointError(f"{path} does not hold torchvision mobilenet_v2 weights: {str(exc).splitlines()[0]}") from None
    model.backbone.load_state_dict(net.features.state_dict())


# ----------------------------------------------------------------------------- directory format


def save_classifier(model: ImageClassifier, directory: Path, metrics: dict[str, Any], training: dict[str, Any]) -> None:
    """Write the weights, then the config that names their hash (a torn pair fails to load)."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"output path {directory} exists and is not a directory")
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_save(directory / WEIGHTS_FILE, lambda tmp: save_file(state, str(tmp)))
    payload = {
        "format": CLASSIFIER_FORMAT,
        "version": CLASSIFIER_VERSION,
        "spec": asdict(model.spec),
        "weights_sha256": sha256_file(directory / WEIGHTS_FILE),
        "training": training,
        "metrics": metrics,
    }
    atomic_write_text(directory / CONFIG_FILE, json.dumps(payload, indent=2) + "\n")


def read_classifier_config(directory: Path) -> dict[str, Any]:
    """The parsed ``config.json`` of a classifier directory (``CheckpointError`` if it is not one)."""
    directory = Path(directory)
    path = directory / CONFIG_FILE
    if not directory.is_dir():
        raise CheckpointError(f"classifier directory not found: {directory} (create one with stackgan2 train-classifier)")
    for name in (WEIGHTS_FILE, CONFIG_FILE):
        if not (directory / name).is_file():
            raise CheckpointError(f"{directory} is not a classifier directory: {name} is missing")
    payload = read_format_json(path, CLASSIFIER_FORMAT, CLASSIFIER_VERSION, "classifier config")
    try:
        payload["spec"] = ClassifierSpec(**payload["spec"])
    except (KeyError, TypeError, UsageError) as exc:
        raise CheckpointError(f"{path}: invalid classifier spec: {exc}") from None
    return payload


def load_classifier(directory: Path, device: torch.device | str = "cpu") -> tuple[ImageClassifier, dict[str, Any]]:
    """The classifier in eval mode on ``device`` and its config payload (spec, metrics, training)."""
    directory = Path(directory)
    payload = read_classifier_config(directory)
    weights = directory / WEIGHTS_FILE
    if sha256_file(weights) != payload.get("weights_sha256"):
        raise CheckpointError(f"{weights} does not match the sha256 in {directory / CONFIG_FILE}; it was changed or truncated")
    model = ImageClassifier(payload["spec"])
    try:
        model.load_state_dict(load_file(str(weights)))
    except (SafetensorError, RuntimeError) as exc:
        first = next((line.strip() for line in str(exc).splitlines()[1:] if line.strip()), str(exc))
        raise CheckpointError(f"{weights} does not match its config.json: {first}") from None
    return model.to(device).eval(), payload


def check_classifier_matches(spec: ClassifierSpec, dataset_name: str, test_classes: int,
                             attributes: dict[str, list[str]] | None, where: Path | str) -> None:
    """``UsageError`` unless the classifier was trained on this dataset (test classes, attribute values)."""
    hint = f"train one with: stackgan2 train-classifier --dataset {dataset_name}"
    if spec.dataset != dataset_name or spec.test_classes != test_classes:
        raise UsageError(
            f"classifier {where} was trained on {spec.dataset} ({spec.test_classes} test classes), but the evaluation "
            f"dataset is {dataset_name} ({test_classes} test classes); {hint}"
        )
    for name, values in (attributes or {}).items():
        if name in spec.attributes and spec.attributes[name] != list(values):
            raise UsageError(f"classifier {where} knows other {name} values than the dataset ({hint})")


# ----------------------------------------------------------------------------- training


class _Labelled(Dataset):
    """(image (3, S, S), labels {head: int}) for chosen indices of one split."""

    def __init__(self, dataset: Any, indices: np.ndarray, classes: np.ndarray, heads: Sequence[str]) -> None:
        self.dataset, self.indices, self.classes, self.heads = dataset, np.asarray(indices), classes, list(heads)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, int]]:
        index = int(self.indices[i])
        item = self.dataset[index]
        labels = {CLASS_HEAD: int(self.classes[index])}
        labels |= {name: int(self.dataset.attributes[name][index]) for name in self.heads if name != CLASS_HEAD}
        return item["images"][0], labels


def _collate(items: list[tuple[torch.Tensor, dict[str, int]]]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    images = torch.stack([image for image, _ in items])
    labels = {name: torch.tensor([lab[name] for _, lab in items]) for name in items[0][1]}
    return images, labels


def class_labels(dataset_name: str, train_ids: np.ndarray, test_ids: np.ndarray,
                 train_classes: int, test_classes: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Class-head labels of both splits and their count.

    toy-birds class ids are global (body colour x wing colour) and shared by the splits. The cub,
    flowers and folder sources number classes within each split (0..K-1 in sorted order), so equal
    ids of the two splits need not be the same class; their test labels are placed after the train
    labels. StackGAN's CUB (150/50) and Oxford-102 (82/20) splits have disjoint classes, so this gives
    200 and 102 classes; a folder dataset whose splits share classes gets each shared class twice.
    """
    train_ids, test_ids = np.asarray(train_ids, np.int64), np.asarray(test_ids, np.int64)
    if dataset_name == "toy-birds":
        return train_ids, test_ids, max(train_classes, test_classes)
    return train_ids, test_ids + train_classes, train_classes + test_classes


def classifier_split(
    train_classes: np.ndarray, test_classes: np.ndarray, holdout: float = HOLDOUT_FRACTION, seed: int = 0
) -> dict[str, dict[str, np.ndarray]]:
    """Which images of each split train the classifier and which test it: ``{"fit"|"test": {split: indices}}``.

    When the splits share classes (toy-birds), the classifier is fit on the train split and tested on
    the test split (a test class missing from the train split just counts as errors). When they share
    none (StackGAN's CUB and Oxford-102 splits: 150/50 and 82/20 classes), a ``holdout`` fraction (at
    least one image) of every class of both splits is kept for testing and the rest is fit, so the
    classifier knows every class a generated image may show.
    """
    train_classes, test_classes = np.asarray(train_classes), np.asarray(test_classes)
    if np.isin(test_classes, train_classes).any():
        return {"fit": {"train": np.arange(len(train_classes))}, "test": {"test": np.arange(len(test_classes))}}
    rng = np.random.default_rng(seed)
    split: dict[str, dict[str, np.ndarray]] = {"fit": {}, "test": {}}
    for name, classes in (("train", train_classes), ("test", test_classes)):
        held = []
        for c in np.unique(classes):
            members = rng.permutation(np.flatnonzero(classes == c))
            held.append(members[: max(1, math.floor(holdout * len(members)))] if len(members) > 1 else members[:0])
        held_idx = np.sort(np.concatenate(held)) if held else np.array([], dtype=np.int64)
        split["test"][name] = held_idx
        split["fit"][name] = np.setdiff1d(np.arange(len(classes)), held_idx)
    return split


@torch.no_grad()
def predict(model: ImageClassifier, loader: DataLoader, device: torch.device) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Predicted and true labels per head over a loader of ``(images, labels)``."""
    model.eval()
    predicted: dict[str, list[np.ndarray]] = {}
    truth: dict[str, list[np.ndarray]] = {}
    for images, labels in loader:
        outputs = model(images.to(device))
        for name, target in labels.items():
            predicted.setdefault(name, []).append(outputs[name].argmax(dim=1).cpu().numpy())
            truth.setdefault(name, []).append(target.numpy())
    return {k: np.concatenate(v) for k, v in predicted.items()}, {k: np.concatenate(v) for k, v in truth.items()}


def head_accuracies(predicted: dict[str, np.ndarray], truth: dict[str, np.ndarray]) -> dict[str, float]:
    """Accuracy per head, plus ``prompt_attributes`` (body and wing colour both right) when both exist."""
    accuracy = {name: float((predicted[name] == truth[name]).mean()) for name in predicted}
    if all(name in predicted for name in PROMPT_ATTRIBUTES):
        both = np.logical_and.reduce([predicted[n] == truth[n] for n in PROMPT_ATTRIBUTES])
        accuracy["prompt_attributes"] = float(both.mean())
    return accuracy


def train_classifier(
    data: DataConfig,
    out: Path,
    *,
    arch: str = "small-cnn",
    init_weights: Path | None = None,
    epochs: int = 10,
    batch_size: int = 64,
    lr: float = 2e-3,
    image_size: int | None = None,
    width: int = 16,
    device: str = "auto",
    seed: int = 0,
    progress_fn: ProgressFn | None = None,
) -> dict[str, Any]:
    """Train (or fine-tune from ImageNet weights) a classifier on ``data``; save it to ``out``; return test metrics.

    Adam with a cosine learning-rate decay; cross-entropy on the class plus one per attribute head.
    A pretrained MobileNetV2 backbone learns at lr/10 while the new heads learn at lr.
    """
    from stackgan2.data import build_dataset

    if arch not in ARCHS:
        raise UsageError(f"unknown classifier architecture {arch!r}; valid: {', '.join(ARCHS)}")
    if epochs < 1 or batch_size < 2 or lr <= 0:
        raise UsageError(f"need epochs >= 1, batch size >= 2 and lr > 0 (got {epochs}, {batch_size}, {lr})")
    if init_weights is not None and arch != "mobilenet_v2":
        raise UsageError(f"--init-weights holds ImageNet weights for mobilenet_v2; --arch {arch} trains from scratch")
    size = image_size or (64 if arch == "small-cnn" else 224)
    dev = resolve_device(device)
    torch.manual_seed(seed)
    fit_sets = {s: build_dataset(data, s, image_sizes=[size], augment=True, seed=seed) for s in ("train", "test")}
    eval_sets = {s: build_dataset(data, s, image_sizes=[size], augment=False, seed=seed) for s in ("train", "test")}
    attributes = _attribute_values(eval_sets["train"])
    train_labels, test_labels, num_classes = class_labels(
        data.dataset, eval_sets["train"].class_ids, eval_sets["test"].class_ids,
        int(eval_sets["train"].num_classes), int(eval_sets["test"].num_classes),
    )
    labels = {"train": train_labels, "test": test_labels}
    spec = ClassifierSpec(arch, size, width, data.dataset, num_classes, int(eval_sets["test"].num_classes), attributes)
    model = ImageClassifier(spec)
    if init_weights is not None:
        load_mobilenet_backbone(model, init_weights)
    elif arch == "mobilenet_v2":
        logger.warning("training mobilenet_v2 from scratch; --init-weights starts it from ImageNet weights (%s)",
                       MOBILENET_WEIGHTS_URL)
    model.to(dev)
    heads = [CLASS_HEAD, *attributes]
    split = classifier_split(labels["train"], labels["test"], seed=seed)
    fit = ConcatDataset([_Labelled(fit_sets[s], idx, labels[s], heads) for s, idx in split["fit"].items()])
    test = ConcatDataset([_Labelled(eval_sets[s], idx, labels[s], heads) for s, idx in split["test"].items()])
    if len(fit) < batch_size or len(test) == 0:
        raise DataError(f"too few images to train a classifier: {len(fit)} to fit (batch size {batch_size}), {len(test)} to test")
    generator = torch.Generator().manual_seed(seed)
    workers = data.workers
    # Not persistent: workers must be restarted to see each epoch's augmentation stream (set_epoch).
    fit_loader = DataLoader(fit, batch_size, shuffle=True, drop_last=True, num_workers=workers, generator=generator,
                            collate_fn=_collate, pin_memory=dev.type == "cuda")
    test_loader = DataLoader(test, 2 * batch_size, num_workers=workers, collate_fn=_collate)
    pretrained = init_weights is not None
    optimizer = torch.optim.Adam([
        {"params": model.backbone.parameters(), "lr": lr / 10 if pretrained else lr},
        {"params": model.heads.parameters(), "lr": lr},
    ])
    total = epochs * len(fit_loader)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    start, step = time.perf_counter(), 0
    for epoch in range(epochs):
        for ds in fit_sets.values():
            ds.set_epoch(epoch)
        model.train()
        for images, targets in fit_loader:
            outputs = model(images.to(dev, non_blocking=True))
            losses = {name: F.cross_entropy(outputs[name], target.to(dev)) for name, target in targets.items()}
            loss = sum(losses.values())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            report(progress_fn, "train classifier", step, total, epoch=epoch + 1, loss=float(loss.detach()))
    predicted, truth = predict(model, test_loader, dev)
    metrics: dict[str, Any] = {
        "test_accuracy": head_accuracies(predicted, truth),
        "test_images": len(test),
        "fit_images": len(fit),
        "test_split": "dataset test split" if set(split["test"]) == {"test"} else
                      f"{HOLDOUT_FRACTION:.0%} of each class held out (the dataset's splits have disjoint classes)",
        "seconds": time.perf_counter() - start,
    }
    training = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed,
                "init_weights": str(init_weights) if init_weights is not None else None}
    save_classifier(model.cpu(), out, metrics, training)
    return metrics


def _attribute_values(dataset: Any) -> dict[str, list[str]]:
    """The dataset's attribute vocabularies (empty for datasets without ground-truth attributes)."""
    if getattr(dataset, "attributes", None) is None or getattr(dataset, "attribute_values", None) is None:
        return {}
    return {name: list(dataset.attribute_values[name]) for name in dataset.attributes}
