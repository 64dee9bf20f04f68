"""`stackgan2 train --tensorboard`: RUN/tensorboard/ mirrors stats.jsonl and the sample grids, read back with
TensorBoard's own event reader, across a SIGKILL and a resume; a missing tensorboard package is one error line."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stackgan2.cli.main import app
from stackgan2.errors import UsageError
from stackgan2.training.checkpoint import checkpoint_path, latest_checkpoint, sidecar
from stackgan2.training.tensorboard import SAMPLES_TAG, SUBDIR

# 8 steps per epoch on the tiny preset's 64 images; a sample grid at the end of every epoch.
KILL_AFTER_CHECKPOINT, LAST_STEP = 20, 30


def _command(run: Path, text_encoder: Path, *extra: str) -> list[str]:
    # --epochs 8 (64 steps) leaves the killed process ~20 steps (~1 s) past its step-20 checkpoint.
    return [sys.executable, "-m", "stackgan2.cli", "--quiet", "train", "--preset", "tiny", "--device", "cpu",
            "--run-dir", str(run), "--text-encoder", str(text_encoder), "--epochs", "8",
            "--checkpoint-every", str(KILL_AFTER_CHECKPOINT), "--tensorboard", *extra]


def _records(run: Path) -> list[dict]:
    stats = run / "stats.jsonl"
    lines = stats.read_text().splitlines() if stats.is_file() else []
    return [json.loads(line) for line in lines if line.endswith("}")]


def _kill_after_checkpoint(run: Path, text_encoder: Path) -> int:
    """Start a run, SIGKILL it once the step-20 checkpoint is complete and two more steps are logged;
    the last step the killed process logged."""
    proc = subprocess.Popen(_command(run, text_encoder), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    done = sidecar(checkpoint_path(run / "checkpoints", KILL_AFTER_CHECKPOINT))
    deadline = time.time() + 120
    while proc.poll() is None and time.time() < deadline:
        records = _records(run)
        if done.is_file() and records and records[-1]["step"] >= KILL_AFTER_CHECKPOINT + 2:
            break
        time.sleep(0.01)
    assert proc.poll() is None, f"the run ended before it was killed: {proc.communicate()[1]}"
    proc.kill()
    proc.wait()
    return _records(run)[-1]["step"]


def test_events_mirror_stats_across_sigkill_and_resume(tmp_path, text_encoder_dir):
    from tensorboard.backend.event_processing import event_accumulator, event_file_loader

    run = tmp_path / "run"
    killed_at = _kill_after_checkpoint(run, text_encoder_dir)
    assert latest_checkpoint(run / "checkpoints").step == KILL_AFTER_CHECKPOINT
    assert KILL_AFTER_CHECKPOINT < killed_at < LAST_STEP
    result = subprocess.run(_command(run, text_encoder_dir, "--resume", "--max-steps", str(LAST_STEP)),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr

    records = _records(run)
    assert [r["step"] for r in records] == list(range(1, LAST_STEP + 1))
    # Both processes wrote the steps after the checkpoint: the files hold them twice, TensorBoard once.
    files = sorted((run / SUBDIR).glob("events.out.tfevents.*"))
    assert len(files) == 2
    raw_steps = [e.step for f in files for e in event_file_loader.EventFileLoader(str(f)).Load()
                 if e.HasField("summary") and e.summary.value[0].tag == "G/total"]
    assert raw_steps.count(KILL_AFTER_CHECKPOINT + 1) == 2

    board = event_accumulator.EventAccumulator(str(run / SUBDIR), size_guidance={"scalars": 0, "images": 0})
    board.Reload()
    names = {k for k in records[-1] if k not in ("step", "time")}
    assert {"D0/real", "G/total", "KL", "lr_g", "sec_per_step", "epoch"} <= names
    assert set(board.Tags()["scalars"]) == names
    for name in sorted(names):
        events = board.Scalars(name)
        assert [e.step for e in events] == [r["step"] for r in records], name
        # Scalars are stored as float32; sec_per_step differs between the killed and the resumed process.
        assert [e.value for e in events] == [float(np.float32(r[name])) for r in records], name
        assert [e.wall_time for e in events] == [r["time"] for r in records], name

    grids = board.Images(SAMPLES_TAG)
    assert [g.step for g in grids] == [8, 16, 24]  # the ends of epochs 1-3
    with Image.open(run / "samples" / "epoch-0003.png") as png:
        expected = np.asarray(png.convert("RGB"))
    with Image.open(io.BytesIO(grids[-1].encoded_image_string)) as logged:
        assert np.array_equal(np.asarray(logged.convert("RGB")), expected)


def test_missing_tensorboard_is_one_error_line_before_training(runner, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # what `import` sees without the package
    run = tmp_path / "run"
    result = runner.invoke(app, ["--quiet", "train", "--preset", "tiny", "--device", "cpu", "--run-dir", str(run),
                                 "--tensorboard"])
    assert result.exit_code == UsageError.exit_code, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and 'pip install "stackgan2[tensorboard]"' in lines[0], result.output
    assert not run.exists()  # refused before phase 0 and the data


def test_missing_tensorboard_stops_the_library_before_the_first_step(tmp_path, text_encoder_dir, monkeypatch):
    from stackgan2.config import resolve_config
    from stackgan2.training import run_training

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    cfg = resolve_config("tiny", overrides={"train.device": "cpu", "train.tensorboard": True,
                                            "train.text_encoder": text_encoder_dir})
    with pytest.raises(UsageError, match=r'pip install "stackgan2\[tensorboard\]"'):
        run_training(cfg, tmp_path / "run")
    assert _records(tmp_path / "run") == []
    assert latest_checkpoint(tmp_path / "run" / "checkpoints") is None
