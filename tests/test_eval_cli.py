"""``stackgan2 eval`` end to end on a tiny trained run, its sampling protocol and its error messages."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from stackgan2.cli.main import app
from stackgan2.errors import UsageError
from stackgan2.metrics.evaluate import (
    evaluate_model,
    generate_final_images,
    parse_metrics,
    sample_plan,
    weights_sha256,
)


@pytest.fixture(scope="module")
def toy_cache(tmp_path_factory):
    return tmp_path_factory.getbasetemp() / "toy-cache"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, toy_cache):
    """A tiny model trained for 4 steps (text encoder pretrained as phase 0) and a classifier for its data."""
    root = tmp_path_factory.mktemp("eval")
    runner = CliRunner()
    common = ["--preset", "tiny", "--cache-dir", str(toy_cache), "--device", "cpu"]
    result = runner.invoke(app, ["train", *common, "--max-steps", "4", "--run-dir", str(root / "run")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["train-classifier", *common, "--epochs", "8", "--batch-size", "8",
                                 "--image-size", "32", "--width", "4", "--out", str(root / "clf")])
    assert result.exit_code == 0, result.output
    return root


def _eval(runner, tiny_run, toy_cache, *extra, model=None):
    return runner.invoke(app, ["eval", "--model", str(model or tiny_run / "run"), "--cache-dir", str(toy_cache),
                               "--device", "cpu", "--batch-size", "32", *extra])


def test_eval_computes_every_metric_and_writes_the_report(runner, tiny_run, toy_cache, tmp_path):
    out = tmp_path / "metrics.json"
    result = _eval(runner, tiny_run, toy_cache, "--classifier", str(tiny_run / "clf"), "--num-samples", "128",
                   "--out", str(out))
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    metrics = report["metrics"]
    assert set(metrics) == {"fid", "inception_score", "inception_score_real", "r_precision", "attribute_accuracy",
                            "diversity", "diversity_real", "diversity_ratio", "diversity_groups"}
    assert metrics["fid"] > 1.0  # a 4-step generator is far from the real birds
    assert 1.0 <= metrics["inception_score"]["mean"] <= 100 and metrics["inception_score"]["splits"] == 10
    assert 0.0 <= metrics["r_precision"]["value"] <= 1.0 and metrics["r_precision"]["candidates"] == 100
    rp = metrics["r_precision"]
    assert rp["folds"] == 10 and 0.0 <= rp["mean"] <= 1.0 and rp["std"] >= 0.0  # DM-GAN: mean +- std over folds
    attrs = metrics["attribute_accuracy"]
    assert attrs["attributes"] == ["body_color", "wing_color"]
    assert 0.0 <= attrs["generated"] <= 1.0 and 0.0 <= attrs["real"] <= 1.0
    assert attrs["generated"] <= min(attrs["per_attribute"]["body_color"]["generated"],
                                     attrs["per_attribute"]["wing_color"]["generated"])
    body, wing = attrs["per_attribute"]["body_color"], attrs["per_attribute"]["wing_color"]
    assert body["prompts_naming_it"] == 1.0 and body["generated_where_named"] == body["generated"]
    assert 0.6 < wing["prompts_naming_it"] < 0.95 and 0.0 <= wing["generated_where_named"] <= 1.0  # 13 of 16 templates
    assert "where the prompt names it" in result.output
    assert report["num_samples"] == 128 and report["dataset"]["images"] == 32
    assert report["dataset"]["name"] == "toy-birds" and len(report["dataset"]["sha256"]) == 64
    assert len(report["model"]["weights_sha256"]) == 64
    assert set(report["feature_extractors"]) == {"fid", "is", "attributes", "r-precision", "diversity"}
    assert "classifier" in report["feature_extractors"]["fid"]
    assert "FID" in result.output and "R-precision" in result.output and "attribute accuracy" in result.output
    # 128 samples of 32-d classifier features are plenty, but the 32 real images are not: the rank is stated.
    assert "rank" in result.output


def test_eval_is_deterministic_for_a_seed(runner, tiny_run, toy_cache, tmp_path):
    reports = []
    for name in ("a.json", "b.json"):
        result = _eval(runner, tiny_run, toy_cache, "--classifier", str(tiny_run / "clf"), "--metrics", "fid,is",
                       "--num-samples", "20", "--out", str(tmp_path / name))
        assert result.exit_code == 0, result.output
        reports.append(json.loads((tmp_path / name).read_text()))
    assert reports[0]["metrics"] == reports[1]["metrics"]
    assert reports[0]["dataset"]["sha256"] == reports[1]["dataset"]["sha256"]


def test_eval_prefers_inception_pool3_for_fid_and_the_classifier_for_is(runner, tiny_run, toy_cache, tmp_path,
                                                                          monkeypatch):
    from torchvision import models

    monkeypatch.setattr("stackgan2.metrics.inception.INCEPTION_SIZE", 75)  # the smallest input it takes: 16x faster
    seen = []

    def spy(generated, real, names):  # a 2048 x 2048 sqrtm takes minutes on a busy CPU; the shapes are the point
        seen.append((generated.shape, real.shape))
        return 1.0

    monkeypatch.setattr("stackgan2.metrics.evaluate.fid_from_features", spy)
    net = models.inception_v3(weights=None, aux_logits=False, init_weights=False)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "inception.safetensors"))
    result = _eval(runner, tiny_run, toy_cache, "--inception-weights", str(tmp_path / "inception.safetensors"),
                   "--classifier", str(tiny_run / "clf"), "--metrics", "fid,is", "--num-samples", "10",
                   "--out", str(tmp_path / "m.json"))
    assert result.exit_code == 0, result.output
    assert seen == [((10, 2048), (32, 2048))]
    extractors = json.loads((tmp_path / "m.json").read_text())["feature_extractors"]
    assert extractors["fid"].startswith("inception_v3") and extractors["is"].startswith("classifier")


def test_generated_samples_match_the_pipeline(tiny_run):
    from stackgan2.pipeline import Text2ImagePipeline

    pipe = Text2ImagePipeline.from_pretrained(tiny_run / "run")
    prompts = ["a small red bird with black wings", "a large blue bird"]
    batch, encoded = generate_final_images(pipe, prompts, [7, 8])
    for n, prompt in enumerate(prompts):
        alone = np.asarray(pipe([prompt], seed=7 + n).images[0])
        assert np.array_equal(batch[n], alone)
    assert len(weights_sha256(pipe.generator)) == 64 and len(encoded.unknown) == 2


def test_sample_plan_cycles_images_then_captions():
    images, captions = sample_plan([2, 3, 1], 7)
    assert images.tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert captions.tolist() == [0, 0, 0, 1, 1, 0, 0]


def test_parse_metrics():
    assert parse_metrics(" FID, is,fid ") == ["fid", "is"]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--metrics", "fid,psnr"], 2, "unknown metric psnr"),
        (["--inception-weights", "missing.pth"], 1, "Inception-v3 weights not found: missing.pth"),
        (["--classifier", "nowhere"], 1, "classifier directory not found: nowhere"),
        (["--metrics", "is", "--num-samples", "5", "--inception-weights", "x.pth"], 2, "at least 10 samples"),
        (["--branch", "7"], 2, "--branch 7: the model has branches 0..2"),
        (["--metrics", "diversity", "--diversity-seeds", "1"], 2, "Invalid value for '--diversity-seeds'"),
        (["--metrics", "diversity", "--num-samples", "3"], 2, "needs --num-samples of at least --diversity-seeds (4)"),
    ],
)
def test_eval_errors_are_one_line(runner, tiny_run, toy_cache, args, code, message):
    result = _eval(runner, tiny_run, toy_cache, *args)
    assert result.exit_code == code, result.output
    assert message in result.output and "Traceback" not in result.output


def test_eval_without_a_classifier_says_what_fid_needs(runner, tiny_run, toy_cache, monkeypatch):
    monkeypatch.setattr("stackgan2.pipeline.shipped_classifier_dir", lambda: None)  # an install without assets
    result = _eval(runner, tiny_run, toy_cache, "--metrics", "fid")
    assert result.exit_code == 2, result.output
    assert "metric fid needs --classifier DIR" in result.output and "Traceback" not in result.output


def test_eval_on_toy_birds_defaults_to_the_shipped_classifier(runner, tiny_run, toy_cache, tmp_path):
    from stackgan2.pipeline import shipped_classifier_dir

    shipped = shipped_classifier_dir()
    assert shipped is not None, "assets/classifier-toy-birds is missing"
    out = tmp_path / "metrics.json"
    result = _eval(runner, tiny_run, toy_cache, "--metrics", "attributes", "--num-samples", "32", "--out", str(out))
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert str(shipped) in report["feature_extractors"]["attributes"]
    # Both colours right on the tiny preset's blurry 32 px real birds: ~44 % measured, chance 1 %.
    assert report["metrics"]["attribute_accuracy"]["real"] > 0.2


def test_eval_refuses_a_classifier_of_another_dataset(runner, tiny_run, toy_cache, tmp_path):
    import shutil

    copy = tmp_path / "clf"
    shutil.copytree(tiny_run / "clf", copy)
    payload = json.loads((copy / "config.json").read_text())
    payload["spec"]["test_classes"] = 50
    (copy / "config.json").write_text(json.dumps(payload))
    result = _eval(runner, tiny_run, toy_cache, "--classifier", str(copy), "--metrics", "fid,is", "--num-samples", "10")
    assert result.exit_code == 2
    assert "(50 test classes), but the evaluation dataset is toy-birds (100 test classes)" in result.output


def test_r_precision_needs_enough_samples(runner, tiny_run, toy_cache):
    result = _eval(runner, tiny_run, toy_cache, "--metrics", "r-precision", "--num-samples", "50")
    assert result.exit_code == 1 and "needs 99 mismatched captions" in result.output


def test_r_precision_needs_a_damsm_image_encoder(runner, tiny_run, toy_cache, tmp_path):
    result = _eval(runner, tiny_run, toy_cache, "--metrics", "r-precision", "--text-encoder", str(tmp_path))
    assert result.exit_code == 2 and "holds no DAMSM image encoder" in result.output



def test_eval_judges_the_chosen_branch(runner, tiny_run, toy_cache, tmp_path):
    out = tmp_path / "m.json"
    result = _eval(runner, tiny_run, toy_cache, "--classifier", str(tiny_run / "clf"), "--metrics", "fid",
                   "--num-samples", "10", "--branch", "0", "--out", str(out))
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["branch"] == 0 and report["dataset"]["resolution"] == 8  # tiny preset: 8/16/32 px


def test_eval_reads_a_stackgan1_stage2_model(runner, tiny_run, toy_cache, tmp_path):
    """A StackGAN v1 Stage-II run is evaluated like any model: its final (Stage-II) images are scored."""
    train = ["--quiet", "train", "--preset", "v1-toy", "--device", "cpu", "--cache-dir", str(toy_cache), "--max-steps", "2",
             "--text-encoder", str(tiny_run / "run" / "text_encoder")]
    assert runner.invoke(app, [*train, "--run-dir", str(tmp_path / "s1")]).exit_code == 0
    result = runner.invoke(app, [*train, "--v1-stage", "2", "--stage1", str(tmp_path / "s1"), "--run-dir", str(tmp_path / "s2")])
    assert result.exit_code == 0, result.output
    out = tmp_path / "metrics.json"
    result = runner.invoke(app, ["eval", "--model", str(tmp_path / "s2"), "--cache-dir", str(toy_cache), "--device", "cpu",
                                 "--batch-size", "32", "--classifier", str(tiny_run / "clf"), "--num-samples", "64",
                                 "--metrics", "fid,is", "--out", str(out)])
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())["metrics"]
    assert metrics["fid"] > 1.0 and 1.0 <= metrics["inception_score"]["mean"] <= 100


def _ignore_noise(generator) -> None:
    """Make G's output independent of a seed's noise: zero the first layer's z columns and make the
    conditioning augmentation deterministic (a seed draws both z and CA's eps)."""
    c = generator.ca.c_dim
    with torch.no_grad():
        generator.init_stage.fc[0].weight[:, c:] = 0  # the code is cat([c_code, z])
        fc = generator.ca.fc  # GLU of 4c -> 2c: x[:2c] * sigmoid(x[2c:]); logvar is x[c:2c] * sigmoid(x[3c:])
        fc.weight[c : 2 * c] = 0
        fc.bias[c : 2 * c] = -60  # std = exp(-30)
        fc.weight[3 * c :] = 0
        fc.bias[3 * c :] = 60


def test_diversity_is_near_zero_for_a_generator_that_ignores_its_noise(runner, tiny_run, toy_cache, tmp_path):
    from stackgan2.pipeline import Text2ImagePipeline

    pipe = Text2ImagePipeline.from_pretrained(tiny_run / "run")
    _ignore_noise(pipe.generator)
    pipe.save_pretrained(tmp_path / "collapsed")
    clf = ["--classifier", str(tiny_run / "clf"), "--num-samples", "32"]
    result = _eval(runner, tiny_run, toy_cache, *clf, "--metrics", "attributes,fid,diversity",
                   "--out", str(tmp_path / "normal.json"))
    assert result.exit_code == 0, result.output
    assert "diversity (4 seeds per prompt)" in result.output and "ratio to real" in result.output
    result = _eval(runner, tiny_run, toy_cache, *clf, "--metrics", "diversity", "--out", str(tmp_path / "collapsed.json"),
                   model=tmp_path / "collapsed")
    assert result.exit_code == 0, result.output
    normal, collapsed = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("normal", "collapsed"))
    assert {"fid", "attribute_accuracy", "diversity_ratio"} <= set(normal["metrics"])
    assert set(collapsed["metrics"]) == {"diversity", "diversity_real", "diversity_ratio", "diversity_groups"}
    normal, collapsed = normal["metrics"], collapsed["metrics"]
    assert normal["diversity_ratio"] > 0.05 and collapsed["diversity_ratio"] < 1e-3
    # The real reference depends on the seed and the test set only: the same for both models.
    assert normal["diversity_real"] == collapsed["diversity_real"] > 0
    # 32 tiny test images over 100 colour classes: no class holds 4, so random groups of real birds.
    assert collapsed["diversity_groups"] == {"prompts": 8, "seeds_per_prompt": 4, "real_groups": 8,
                                             "real_reference": "random"}


def test_diversity_seeds_below_two_are_a_usage_error(tiny_run, toy_cache):
    with pytest.raises(UsageError, match="--diversity-seeds must be at least 2.*got 1"):
        evaluate_model(tiny_run / "run", metrics=["diversity"], num_samples=8, diversity_seeds=1, device="cpu",
                       data_overrides={"data.cache_dir": toy_cache})
