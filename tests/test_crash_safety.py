"""SIGKILL a real `stackgan2 train` at random moments, resume each time, and check that nothing is
lost or corrupt and that the final weights equal an uninterrupted run's.

Run alone with ``pytest -m crash``; the default suite kills 8 times (each kill restarts Python and
torch, most of the suite's time), ``STACKGAN2_CRASH_KILLS=20 pytest -m crash`` as many as asked.
benchmarks/crash_soak.py is the long variant.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from stackgan2.training.checkpoint import list_checkpoints, load_checkpoint, sidecar

pytestmark = pytest.mark.crash
KILLS = int(os.environ.get("STACKGAN2_CRASH_KILLS", "8"))
# 8 epochs of the 64-image tiny render = 64 steps: enough that 20 kills (each after at least one new
# step) land before the run ends, even when several steps fit between two kills (4 epochs ran out at 17).


def _command(run: Path, text_encoder: Path, resume: bool) -> list[str]:
    cmd = [sys.executable, "-m", "stackgan2.cli", "--quiet", "train", "--preset", "tiny", "--device", "cpu",
           "--run-dir", str(run), "--text-encoder", str(text_encoder), "--epochs", "8", "--checkpoint-every", "1",
           "--keep-checkpoints", "2"]
    return cmd + (["--resume"] if resume else [])


def _assert_checkpoints_sound(run: Path) -> None:
    paths = list_checkpoints(run / "checkpoints")
    for path in paths:
        if sidecar(path).is_file():
            load_checkpoint(path)  # raises on a corrupt / truncated file
        else:
            assert path == paths[-1], f"{path.name} has no sidecar but is not the newest"  # killed between the two writes
            load_file(str(path))  # the tensor file itself is complete (atomic rename)


def _steps_logged(run: Path) -> int:
    stats = run / "stats.jsonl"
    return stats.read_text().count("\n") if stats.is_file() else 0


def test_sigkill_at_random_moments_then_resume(tmp_path, text_encoder_dir):
    reference, run = tmp_path / "reference", tmp_path / "killed"
    subprocess.run(_command(reference, text_encoder_dir, resume=False), check=True, capture_output=True, timeout=600)
    rng = random.Random(1234)
    kills = 0
    while kills < KILLS:
        has_checkpoint = bool(list_checkpoints(run / "checkpoints"))
        before = _steps_logged(run) if has_checkpoint else 0
        proc = subprocess.Popen(_command(run, text_encoder_dir, resume=has_checkpoint), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        # Kill at a random moment of a step once this process has made progress (a step is mostly
        # the checkpoint write here, with --checkpoint-every 1).
        deadline = time.time() + 120
        while proc.poll() is None and _steps_logged(run) <= before and time.time() < deadline:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.15))
        if proc.poll() is not None:
            _, err = proc.communicate()
            assert proc.returncode == 0, err
            break
        proc.kill()
        proc.wait()
        kills += 1
        _assert_checkpoints_sound(run)
    assert kills >= KILLS
    result = subprocess.run(_command(run, text_encoder_dir, resume=True), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    _assert_checkpoints_sound(run)
    final_ref = load_file(str(list_checkpoints(reference / "checkpoints")[-1]))
    final_run = load_file(str(list_checkpoints(run / "checkpoints")[-1]))
    assert final_ref.keys() == final_run.keys()
    for key in final_ref:
        if not key.startswith("rng."):
            assert torch.equal(final_ref[key], final_run[key]), key
    assert not list(run.rglob(".*.tmp"))
