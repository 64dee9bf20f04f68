"""Files written by the code before the ``stackgan2/models/`` move keep loading and give the same bytes.

``tests/fixtures/pre-models/`` was made by commit 025f5e8 (the last one with the flat ``networks.py`` /
``attention.py`` / ``stackgan1.py`` and the if-ladder train step), one thread, for each family at tiny
size (ngf 8, ndf 8): a run directory with its step-2 checkpoint, the pipeline ``stackgan2 export`` made
from it, and the shared text encoder. The StackGAN++ run has every module that owns weights switched
on (text fusion, word attention, projection D, feature D, DAMSM and mode seeking), so every state-dict
key name of the tree, the discriminators and the feature critic is covered. ``expected.json`` holds
what that code printed, and ``expected/`` the PNGs it wrote:

- ``sample`` from the checkpoint (``expected/ckpt-FAMILY.png``; the exported pipeline gave the same bytes)
  and from the shipped model (``expected/shipped.png``);
- the loss terms of steps 3 and 4 when the run is resumed with ``--resume --max-steps 4`` (the whole
  training step, every family and lever of the run), and the sample after them (``expected/res-FAMILY.png``).

On the machine that made them, the code after the move reproduced every byte and every loss exactly
(SHA-256 in ``expected.json``). The tests allow what another CPU may change: one 8-bit level per pixel
(oneDNN picks kernels by instruction set and row count; since ``sample`` draws a lone image in a one-row
forward instead of a padded four-row one, the shipped model's 256 px image differs from the old PNG in
3 of 592,896 values, by one level) and a relative 1e-4 in a loss after two training steps.
``expected/shipped.png`` (and its SHA-256) was made again when issue 31 shipped a new toy-birds model: from
then on it pins the bytes of the model in ``assets/toy-birds``, drawn by the code that shipped it.

Commands (from the fixture's folder, ``S="stackgan2 --quiet"``): ``$S train --preset tiny --ngf 8 --ndf 8
--max-steps 2 --checkpoint-every 2 --text-encoder text_encoder --device cpu --run-dir run-stackgan2
--g-text-fusion --d-projection --g-word-attention --feature-d-coef 1 --damsm-coef 1 --ms-coef 1``; the
same with ``--arch attngan`` (run-attngan) and with ``--preset v1-toy`` (run-v1); ``$S export RUN pipe-FAMILY``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stackgan2.cli.main import app

FIXTURE = Path(__file__).parent / "fixtures" / "pre-models"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text())
TRAIN_FLAGS = {
    "stackgan2": ["--preset", "tiny", "--g-text-fusion", "--d-projection", "--g-word-attention",
                  "--feature-d-coef", "1", "--damsm-coef", "1", "--ms-coef", "1"],
    "attngan": ["--preset", "tiny", "--arch", "attngan"],
    "v1": ["--preset", "v1-toy"],
}
TIMING = {"sec_per_step", "data_sec", "images_per_s", "time"}


def _sample(runner, model: Path | None, out: Path, expected: dict[str, str]) -> np.ndarray:
    """``stackgan2 sample`` of the recorded prompt and seed: the file name must be the one recorded."""
    args = ["sample", EXPECTED["prompt"], "--seed", str(EXPECTED["seed"]), "--all-stages", "--out", str(out),
            "--device", "cpu"]
    result = runner.invoke(app, [*args, *(["--model", str(model)] if model else [])])
    assert result.exit_code == 0, result.output
    (path,) = out.glob("*.png")
    assert path.name == expected["file"]
    return np.asarray(Image.open(path), dtype=np.int16)


def _assert_same_image(image: np.ndarray, name: str) -> None:
    old = np.asarray(Image.open(FIXTURE / "expected" / f"{name}.png"), dtype=np.int16)
    assert image.shape == old.shape
    assert np.abs(image - old).max() <= 1, f"{name}: {int((image != old).sum())} values differ"


@pytest.mark.parametrize("family", list(TRAIN_FLAGS))
def test_old_checkpoint_and_exported_pipeline_give_the_same_images(family, runner, tmp_path):
    expected = EXPECTED["families"][family]
    from_checkpoint = _sample(runner, FIXTURE / f"run-{family}", tmp_path / "ckpt", expected["checkpoint"])
    _assert_same_image(from_checkpoint, f"ckpt-{family}")
    from_pipeline = _sample(runner, FIXTURE / f"pipe-{family}", tmp_path / "pipe", expected["pipeline"])
    assert np.array_equal(from_pipeline, from_checkpoint)  # the export holds the checkpoint's G_ema


def test_shipped_model_gives_the_same_image(runner, tmp_path):
    _assert_same_image(_sample(runner, None, tmp_path / "shipped", EXPECTED["shipped"]), "shipped")


@pytest.mark.parametrize("family", list(TRAIN_FLAGS))
def test_old_checkpoint_resumes_to_the_same_losses_and_weights(family, runner, tmp_path, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(FIXTURE / f"run-{family}", run)
    shutil.copytree(FIXTURE / "text_encoder", tmp_path / "text_encoder")
    monkeypatch.chdir(tmp_path)  # the runs were made with the relative --text-encoder text_encoder
    result = runner.invoke(app, ["--quiet", "train", *TRAIN_FLAGS[family], "--ngf", "8", "--ndf", "8", "--max-steps", "4",
                                 "--checkpoint-every", "2", "--text-encoder", "text_encoder", "--device", "cpu",
                                 "--run-dir", str(run), "--resume"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    resumed = [{k: v for k, v in r.items() if k not in TIMING} for r in records if r["step"] > 2]
    expected = EXPECTED["families"][family]
    assert [sorted(r) for r in resumed] == [sorted(r) for r in expected["resumed_stats"]]  # the same stats keys
    for ours, old in zip(resumed, expected["resumed_stats"], strict=True):
        assert ours == pytest.approx(old, rel=1e-4, abs=1e-6)
    _assert_same_image(_sample(runner, run, tmp_path / "out", expected["resumed"]), f"res-{family}")
