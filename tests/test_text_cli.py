"""``stackgan2 pretrain-text``: flags -> config, printed metrics, one-line errors, and one real tiny run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import stackgan2.text
from stackgan2.cli.main import app
from stackgan2.errors import CheckpointError
from stackgan2.progress import ProgressEvent
from stackgan2.text import PromptEncoder

runner = CliRunner()
METRICS = {
    "r_precision": 0.42, "r_precision_chance": 0.01, "r_precision_candidates": 100,
    "vocab_size": 94, "loss_history": [9.0, 4.5], "seconds": 12.0,
}  # fmt: skip


@pytest.fixture
def calls(monkeypatch) -> list[dict]:
    recorded: list[dict] = []

    def fake_pretrain(cfg, out_dir, *, device, progress_fn, image_backbone, backbone_weights):
        recorded.append({"cfg": cfg, "out": out_dir, "device": device, "backbone": image_backbone})
        progress_fn(ProgressEvent("pretrain text encoder", 1, 1, {"loss": 4.5}))
        if cfg.train.embeddings == "char-cnn-rnn":
            return {**METRICS, "char_cnn_rnn_cosine": 0.8}
        return METRICS

    monkeypatch.setattr(stackgan2.text, "pretrain_text_encoder", fake_pretrain)
    return recorded


def test_flags_build_the_config_and_metrics_are_printed(calls, tmp_path) -> None:
    args = ["pretrain-text", "--preset", "tiny", "--epochs", "3", "--batch-size", "4", "--seed", "7",
            "--cache-dir", str(tmp_path / "cache"), "--device", "cpu", "--out", str(tmp_path / "enc")]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    (call,) = calls
    cfg = call["cfg"]
    assert (cfg.preset, cfg.text.epochs, cfg.text.batch_size, cfg.train.seed) == ("tiny", 3, 4, 7)
    assert cfg.data.cache_dir == tmp_path / "cache" and cfg.text.dim == 16  # the rest comes from the preset
    assert call["out"] == tmp_path / "enc" and call["device"] == "cpu" and call["backbone"] == "cnn"
    assert "R-precision: 42.0%" in result.output and "chance 1.0%" in result.output


def test_defaults_are_the_toy_preset_and_runs_text_encoder(calls) -> None:
    result = runner.invoke(app, ["pretrain-text"])
    assert result.exit_code == 0, result.output
    assert calls[0]["cfg"].preset == "toy" and calls[0]["out"] == Path("runs/text-encoder")
    from stackgan2.config import load_preset

    assert calls[0]["cfg"].text.epochs == load_preset("toy")["text"]["epochs"]


def test_char_cnn_rnn_prints_the_regression_quality(calls) -> None:
    result = runner.invoke(app, ["pretrain-text", "--preset", "birds", "--embeddings", "char-cnn-rnn"])
    assert result.exit_code == 0, result.output
    assert "cosine similarity: 0.800" in result.output


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["--epochs", "0"], 2, "text.epochs"),
        (["--preset", "huge"], 2, "unknown preset"),
        (["--embeddings", "words"], 2, "train.embeddings"),
    ],
)
def test_bad_flags_are_one_line_errors(calls, args, code, message) -> None:
    result = runner.invoke(app, ["pretrain-text", *args])
    assert result.exit_code == code
    assert message in result.output and "Traceback" not in result.output
    assert not calls


def test_library_errors_become_one_red_line(monkeypatch) -> None:
    def broken(*args, **kwargs):
        raise CheckpointError("weights.pth is not a plain state dict")

    monkeypatch.setattr(stackgan2.text, "pretrain_text_encoder", broken)
    result = runner.invoke(app, ["pretrain-text"])
    assert result.exit_code == 1
    assert "error: weights.pth is not a plain state dict" in result.output and "Traceback" not in result.output


@pytest.mark.slow
def test_real_tiny_pretraining_end_to_end(tmp_path) -> None:
    out = tmp_path / "enc"
    args = ["pretrain-text", "--preset", "tiny", "--epochs", "1", "--cache-dir", str(tmp_path / "cache"),
            "--device", "cpu", "--out", str(out)]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "R-precision" in result.output
    stored = json.loads((out / "config.json").read_text())
    assert 0 <= stored["metrics"]["r_precision"] <= 1 and stored["metrics"]["train_images"] == 64
    encoded = PromptEncoder.load(out).encode(["a small red bird with black wings"])
    assert encoded.embeddings.shape == (1, 16) and encoded.unknown == [[]]
