"""``stackgan2 eval`` end to end on a tiny trained run, its sampling protocol and its error messages."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.torch import save_file
from typer.testing import CliRunner

from stackgan2.cli.main import app
from stackgan2.metrics.evaluate import generate_final_images, parse_metrics, sample_plan, weights_sha256


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


def _eval(runner, tiny_run, toy_cache, *extra):
    return runner.invoke(app, ["eval", "--model", str(tiny_run / "run"), "--cache-dir", str(toy_cache),
                               "--device", "cpu", "--batch-size", "32", *extra])


def test_eval_computes_every_metric_and_writes_the_report(runner, tiny_run, toy_cache, tmp_path):
    out = tmp_path / "metrics.json"
    result = _eval(runner, tiny_run, toy_cache, "--classifier", str(tiny_run / "clf"), "--num-samples", "128",
                   "--out", str(out))
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    metrics = report["metrics"]
    assert set(metrics) == {"fid", "inception_score", "inception_score_real", "r_precision", "attribute_accuracy"}
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
    assert set(report["feature_extractors"]) == {"fid", "is", "attributes", "r-precision"}
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
