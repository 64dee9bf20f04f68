"""Files written by the code before the ``stackgan2/models/`` move keep loading and give the same bytes.

``tests/fixtures/pre-models/`` was made by commit 025f5e8 (the last one with the flat ``networks.py`` /
``attention.py`` / ``stackgan1.py`` and the if-ladder train step), one thread, for each family at tiny
size (ngf 8, ndf 8): a run directory with its step-2 checkpoint, the pipeline ``stackgan2 export`` made
from it, and the shared text encoder. The StackGAN++ run has every module that owns weights switched
on (text fusion, word attention, projection D, feature D, DAMSM and mode seeking), so every state-dict
key name of the tree, the discriminators and the feature critic is covered. ``expected.json`` holds
what that code printed:

- the SHA-256 of ``sample`` from the checkpoint, from the exported pipeline and from the shipped model;
- the loss terms of steps 3 and 4 when the run is resumed with ``--resume --max-steps 4`` (the whole
  training step, every family and lever of the run, compared exactly), and the sample after them.

Commands (from the fixture's folder, ``S="stackgan2 --quiet"``): ``$S train --preset tiny --ngf 8 --ndf 8
--max-steps 2 --checkpoint-every 2 --text-encoder text_encoder --device cpu --run-dir run-stackgan2
--g-text-fusion --d-projection --g-word-attention --feature-d-coef 1 --damsm-coef 1 --ms-coef 1``; the
same with ``--arch attngan`` (run-attngan) and with ``--preset v1-toy`` (run-v1); ``$S export RUN pipe-FAMILY``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

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


def _sample_sha(runner, model: Path | None, out: Path) -> dict[str, str]:
    args = ["sample", EXPECTED["prompt"], "--seed", str(EXPECTED["seed"]), "--all-stages", "--out", str(out),
            "--device", "cpu"]
    result = runner.invoke(app, [*args, *(["--model", str(model)] if model else [])])
    assert result.exit_code == 0, result.output
    (path,) = out.glob("*.png")
    return {"file": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


@pytest.mark.parametrize("family", list(TRAIN_FLAGS))
def test_old_checkpoint_and_exported_pipeline_give_the_same_bytes(family, runner, tmp_path):
    expected = EXPECTED["families"][family]
    assert _sample_sha(runner, FIXTURE / f"run-{family}", tmp_path / "ckpt") == expected["checkpoint"]
    assert _sample_sha(runner, FIXTURE / f"pipe-{family}", tmp_path / "pipe") == expected["pipeline"]


def test_shipped_model_gives_the_same_bytes(runner, tmp_path):
    assert _sample_sha(runner, None, tmp_path / "shipped") == EXPECTED["shipped"]


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
    assert resumed == EXPECTED["families"][family]["resumed_stats"]
    assert _sample_sha(runner, run, tmp_path / "out") == EXPECTED["families"][family]["resumed"]
