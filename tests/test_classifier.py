"""The evaluation networks: the dataset classifier (training, directory format, checks) and Inception-v3 loading."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from stackgan2.cli.main import app
from stackgan2.errors import CheckpointError, UsageError
from stackgan2.metrics.classifier import (
    ClassifierSpec,
    ImageClassifier,
    check_classifier_matches,
    class_labels,
    classifier_split,
    head_accuracies,
    load_classifier,
    load_mobilenet_backbone,
    save_classifier,
)
from stackgan2.metrics.frechet import fid_from_features
from stackgan2.metrics.inception import load_inception

COLORS = ["red", "blue", "green"]
SPEC = ClassifierSpec("small-cnn", 16, 4, "toy-birds", 5, 5, {"body_color": COLORS, "wing_color": COLORS})


@pytest.fixture(scope="module")
def toy_cache(tmp_path_factory):
    return tmp_path_factory.getbasetemp() / "toy-cache"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, toy_cache):
    """A small CNN trained for 64 steps on the tiny toy-birds split through the CLI."""
    from typer.testing import CliRunner

    out = tmp_path_factory.mktemp("classifier") / "clf"
    result = CliRunner().invoke(app, [
        "train-classifier", "--preset", "tiny", "--cache-dir", str(toy_cache), "--epochs", "8", "--batch-size", "8",
        "--image-size", "32", "--width", "4", "--device", "cpu", "--out", str(out),
    ])
    assert result.exit_code == 0, result.output
    return out, result.output


# ----------------------------------------------------------------------------- pure helpers


def test_split_fits_on_train_and_tests_on_test_when_classes_are_shared():
    split = classifier_split(np.array([0, 1, 2, 1]), np.array([2, 0, 7]))
    assert list(split["fit"]) == ["train"] and split["fit"]["train"].tolist() == [0, 1, 2, 3]
    assert list(split["test"]) == ["test"] and split["test"]["test"].tolist() == [0, 1, 2]


def test_split_holds_out_part_of_every_class_when_splits_share_no_class():
    train = np.repeat([0, 1], 20)           # 20 images each of classes 0 and 1
    test = np.repeat([2, 3], [10, 1])       # class 3 has a single image: nothing can be held out
    split = classifier_split(train, test, holdout=0.1, seed=0)
    held_train, fit_train = split["test"]["train"], split["fit"]["train"]
    assert sorted(np.concatenate([held_train, fit_train]).tolist()) == list(range(40))
    assert np.bincount(train[held_train]).tolist() == [2, 2]
    assert test[split["test"]["test"]].tolist() == [2]
    assert sorted(test[split["fit"]["test"]].tolist()) == [2] * 9 + [3]


def test_class_labels_are_global_for_toy_birds_and_offset_for_per_split_numbering():
    train, test, count = class_labels("toy-birds", np.array([0, 5, 99]), np.array([5, 3]), 100, 100)
    assert train.tolist() == [0, 5, 99] and test.tolist() == [5, 3] and count == 100
    train, test, count = class_labels("cub", np.array([0, 149]), np.array([0, 49]), 150, 50)
    assert train.tolist() == [0, 149] and test.tolist() == [150, 199] and count == 200


def test_head_accuracies_count_both_colours_together():
    predicted = {"body_color": np.array([0, 1, 2, 0]), "wing_color": np.array([1, 1, 0, 0])}
    truth = {"body_color": np.array([0, 1, 2, 2]), "wing_color": np.array([1, 0, 0, 0])}
    acc = head_accuracies(predicted, truth)
    assert acc == {"body_color": 0.75, "wing_color": 0.75, "prompt_attributes": 0.5}


# ----------------------------------------------------------------------------- network and directory format


@pytest.mark.parametrize("arch", ["small-cnn", "mobilenet_v2"])
def test_classifier_outputs_features_and_one_logit_vector_per_head(arch):
    spec = ClassifierSpec(arch, 32, 4, "toy-birds", 5, 5, {"body_color": COLORS})
    model = ImageClassifier(spec).eval()
    out = model(torch.rand(2, 3, 20, 20) * 2 - 1)  # another size is resized to the spec's
    assert out["features"].shape == (2, model.feature_dim)
    assert out["class"].shape == (2, 5) and out["body_color"].shape == (2, 3)


def test_save_and_load_round_trip(tmp_path):
    model = ImageClassifier(SPEC).eval()
    save_classifier(model, tmp_path / "clf", {"test_accuracy": {"class": 0.5}}, {"epochs": 1})
    loaded, payload = load_classifier(tmp_path / "clf")
    images = torch.rand(3, 3, 16, 16) * 2 - 1
    assert loaded.spec == SPEC and payload["metrics"]["test_accuracy"]["class"] == 0.5
    with torch.no_grad():
        assert torch.equal(loaded(images)["class"], model(images)["class"])


def test_changed_weights_and_missing_files_are_refused(tmp_path):
    save_classifier(ImageClassifier(SPEC), tmp_path / "clf", {}, {})
    with pytest.raises(CheckpointError, match="classifier directory not found"):
        load_classifier(tmp_path / "nowhere")
    weights = tmp_path / "clf" / "classifier.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match="does not match the sha256"):
        load_classifier(tmp_path / "clf")
    weights.unlink()
    with pytest.raises(CheckpointError, match="classifier.safetensors is missing"):
        load_classifier(tmp_path / "clf")


def test_a_config_of_another_format_is_refused(tmp_path):
    save_classifier(ImageClassifier(SPEC), tmp_path / "clf", {}, {})
    (tmp_path / "clf" / "config.json").write_text(json.dumps({"format": "stackgan2-pipeline"}))
    with pytest.raises(CheckpointError, match="not a stackgan2 classifier config"):
        load_classifier(tmp_path / "clf")


def test_classifier_of_another_dataset_is_a_usage_error():
    with pytest.raises(UsageError, match=r"trained on toy-birds \(5 test classes\).*cub \(50 test classes\)"):
        check_classifier_matches(SPEC, "cub", 50, None, "clf")
    with pytest.raises(UsageError, match="other body_color values"):
        check_classifier_matches(SPEC, "toy-birds", 5, {"body_color": ["red", "blue", "black"]}, "clf")
    check_classifier_matches(SPEC, "toy-birds", 5, {"body_color": COLORS}, "clf")


def test_unknown_architecture_is_a_usage_error():
    with pytest.raises(UsageError, match="unknown classifier architecture 'resnet'"):
        ClassifierSpec("resnet", 64, 8, "toy-birds", 100, 100)


# ----------------------------------------------------------------------------- torchvision weights from disk


def test_mobilenet_backbone_loads_torchvision_weights(tmp_path):
    from torchvision import models

    reference = models.mobilenet_v2(weights=None)
    torch.save(reference.state_dict(), tmp_path / "mobilenet.pth")
    model = ImageClassifier(ClassifierSpec("mobilenet_v2", 32, 1, "toy-birds", 5, 5))
    load_mobilenet_backbone(model, tmp_path / "mobilenet.pth")
    assert torch.equal(model.backbone[0][0].weight, reference.features[0][0].weight)
    with pytest.raises(CheckpointError, match=r"MobileNetV2 weights not found.*mobilenet_v2-b0353104\.pth"):
        load_mobilenet_backbone(model, tmp_path / "missing.pth")
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="does not hold torchvision mobilenet_v2 weights"):
        load_mobilenet_backbone(model, tmp_path / "other.pth")


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory):
    """A randomly initialised torchvision Inception-v3 saved as a state dict, and its reference module."""
    from torchvision import models

    torch.manual_seed(0)
    net = models.inception_v3(weights=None, aux_logits=True, init_weights=False, transform_input=False).eval()
    path = tmp_path_factory.mktemp("inception") / "inception.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return path, net


def test_inception_gives_pool3_features_and_imagenet_logits(inception_file):
    path, reference = inception_file
    model = load_inception(path)
    images = torch.rand(2, 3, 40, 40) * 2 - 1
    with torch.no_grad():
        out = model(images)
        expected = reference(torch.nn.functional.interpolate(images, size=(299, 299), mode="bilinear"))
    assert out["features"].shape == (2, 2048)
    assert torch.allclose(out["class"], expected, atol=1e-4)


def test_inception_weights_errors_say_how_to_get_them(tmp_path, inception_file):
    with pytest.raises(CheckpointError, match=r"not found.*inception_v3_google-0cc3c7bd\.pth.*--inception-weights"):
        load_inception(tmp_path / "missing.pth")
    torch.save({"fc.weight": torch.zeros(3, 3)}, tmp_path / "wrong.pth")
    with pytest.raises(CheckpointError, match="does not hold torchvision inception_v3 weights"):
        load_inception(tmp_path / "wrong.pth")
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read backbone weights"):
        load_inception(tmp_path / "garbage.pth")


# ----------------------------------------------------------------------------- training on toy-birds


def test_train_classifier_cli_saves_a_loadable_classifier(trained):
    out, output = trained
    assert "test accuracy" in output and "body_color" in output and "prompt_attributes" in output
    model, payload = load_classifier(out)
    assert model.spec.dataset == "toy-birds" and model.spec.num_classes == 100
    assert set(model.spec.attributes) >= {"body_color", "wing_color", "size", "beak_color"}
    assert payload["metrics"]["test_split"] == "dataset test split" and payload["metrics"]["test_images"] == 32
    assert 0.0 <= payload["metrics"]["test_accuracy"]["body_color"] <= 1.0


def test_classifier_features_separate_toy_birds_from_noise(trained, toy_cache):
    """FID(train, test) with the project's feature extractor is small next to FID(test, uniform noise)."""
    from stackgan2.config import resolve_config
    from stackgan2.data import build_dataset

    model, _ = load_classifier(trained[0])
    data = resolve_config("tiny", overrides={"data.cache_dir": str(toy_cache)}).data

    def features(images: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return model(images)["features"].double().numpy()

    splits = {}
    for split in ("train", "test"):
        ds = build_dataset(data, split, image_sizes=[32], augment=False)
        splits[split] = features(torch.stack([ds[i]["images"][0] for i in range(len(ds))]))
    noise = features(torch.rand(len(splits["test"]), 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1)
    between_splits = fid_from_features(splits["train"], splits["test"])
    to_noise = fid_from_features(splits["test"], noise)
    assert abs(fid_from_features(splits["test"], splits["test"])) < 1e-6 * to_noise
    assert between_splits < 0.25 * to_noise, (between_splits, to_noise)


def test_train_classifier_cli_rejects_bad_options(runner, tmp_path):
    result = runner.invoke(app, ["train-classifier", "--arch", "resnet", "--out", str(tmp_path / "c")])
    assert result.exit_code == 2 and "unknown classifier architecture 'resnet'" in result.output
    result = runner.invoke(app, ["train-classifier", "--init-weights", str(tmp_path / "w.pth"), "--out", str(tmp_path / "c")])
    assert result.exit_code == 2 and "trains from scratch" in result.output
    assert not (tmp_path / "c").exists()


def test_a_copied_classifier_with_an_edited_dataset_is_refused_by_name(trained, tmp_path):
    copy = tmp_path / "clf"
    shutil.copytree(trained[0], copy)
    payload = json.loads((copy / "config.json").read_text())
    payload["spec"]["dataset"] = "cub"
    (copy / "config.json").write_text(json.dumps(payload))
    model, _ = load_classifier(copy)  # weights still match their hash; only the dataset differs
    with pytest.raises(UsageError, match="trained on cub"):
        check_classifier_matches(model.spec, "toy-birds", 100, None, copy)
