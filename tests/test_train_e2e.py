"""End-to-end training on tiny toy-birds renders: the run directory contract, exact resume,
signals, bad input and two-process (gloo) training."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from stackgan2.cli.main import app

TINY = ["--preset", "tiny", "--device", "cpu"]


def _train(runner, *args: str):
    return runner.invoke(app, ["--quiet", "train", *TINY, *args])


@pytest.fixture(scope="module")
def text_encoder(tmp_path_factory) -> Path:
    """One tiny DAMSM text encoder shared by the tests (phase 0 is tested once, below)."""
    from typer.testing import CliRunner

    out = tmp_path_factory.mktemp("text") / "encoder"
    result = CliRunner().invoke(app, ["--quiet", "pretrain-text", "--preset", "tiny", "--device", "cpu", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def _latest_tensors(run: Path) -> dict[str, torch.Tensor]:
    newest = sorted((run / "checkpoints").glob("step-*.safetensors"))[-1]
    return load_file(str(newest))


def test_phase0_and_run_directory_contract(runner, tmp_path):
    run = tmp_path / "run"
    result = _train(runner, "--run-dir", str(run), "--max-steps", "9")
    assert result.exit_code == 0, result.output
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["stage_num"] == 3 and config["preset"] == "tiny"
    assert (run / "text_encoder" / "vocab.json").is_file()
    records = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 10))
    for key in ("D0/real", "D2/fake", "G1/cond", "G/adversarial", "KL", "color", "sec_per_step", "data_sec", "images_per_s", "epoch"):
        assert key in records[-1], key
    assert all(0 < r["data_sec"] < r["sec_per_step"] for r in records)  # the wait for a batch is part of the step
    assert "data loading:" in result.output and "% of the time" in result.output
    checkpoints = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert checkpoints == [f"step-0000000{s}.{ext}" for s in (4, 8, 9) for ext in ("json", "safetensors")]
    assert (run / "samples" / "epoch-0001.png").is_file()  # 8 steps per epoch with 64 images / batch 8


def test_damsm_coef_trains_and_logs_the_damsm_terms(runner, tmp_path, text_encoder):
    run = tmp_path / "run"
    result = _train(runner, "--run-dir", str(run), "--max-steps", "2", "--text-encoder", str(text_encoder),
                    "--damsm-coef", "5")
    assert result.exit_code == 0, result.output
    assert json.loads((run / "config.json").read_text())["train"]["damsm_coef"] == 5.0
    records = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    assert all(r["DAMSM/word"] > 0 and r["DAMSM/sentence"] > 0 for r in records)


@pytest.mark.parametrize("stage_num", [1, 2])
def test_fewer_stages_train(runner, tmp_path, text_encoder, stage_num):
    run = tmp_path / f"run{stage_num}"
    result = _train(runner, "--run-dir", str(run), "--stage-num", str(stage_num), "--max-steps", "3",
                    "--text-encoder", str(text_encoder))
    assert result.exit_code == 0, result.output
    tensors = _latest_tensors(run)
    assert any(k.startswith(f"D.{stage_num - 1}.") for k in tensors)
    assert not any(k.startswith(f"D.{stage_num}.") for k in tensors)


# NHWC too: loaded Adam moments must be re-laid to the parameters' strides for the fused kernel.
@pytest.mark.parametrize("layout", ["--no-channels-last", "--channels-last"])
def test_resume_is_bit_identical(runner, tmp_path, text_encoder, layout):
    straight, split = tmp_path / "straight", tmp_path / "split"
    common = ["--text-encoder", str(text_encoder), "--epochs", "2", layout]
    assert _train(runner, "--run-dir", str(straight), *common).exit_code == 0
    assert _train(runner, "--run-dir", str(split), *common, "--max-steps", "5").exit_code == 0  # stops mid-epoch
    result = _train(runner, "--run-dir", str(split), *common, "--resume")
    assert result.exit_code == 0, result.output
    a, b = _latest_tensors(straight), _latest_tensors(split)
    assert a.keys() == b.keys()
    for key in a:
        if key.startswith(("G.", "G_ema.", "D.", "opt_")):
            assert torch.equal(a[key], b[key]), key
    steps = [json.loads(line)["step"] for line in (split / "stats.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 17))


def test_resume_refuses_architecture_change_and_missing_checkpoint(runner, tmp_path, text_encoder):
    run = tmp_path / "run"
    assert _train(runner, "--run-dir", str(run), "--max-steps", "1", "--text-encoder", str(text_encoder)).exit_code == 0
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    result = _train(runner, "--run-dir", str(run), "--stage-num", "2", "--resume")
    assert result.exit_code == 2 and "model.stage_num" in result.output
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == before
    result = _train(runner, "--run-dir", str(tmp_path / "empty"), "--resume")
    assert result.exit_code == 2 and "no checkpoint" in result.output


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--epochs", "0"], 2, "train.epochs"),
        (["--batch-size", "0"], 2, "train.batch_size"),
        (["--batch-size", "1000"], 1, "larger than"),
        (["--stage-num", "5"], 2, "model.stage_num"),
        (["--device", "quantum"], 2, "train.device"),
        (["--ma-gp", "2"], 2, "needs a discriminator without batch norm"),
        (["--d-norm", "layer"], 2, "model.d_norm"),
        (["--gan-loss", "wasserstein"], 2, "train.gan_loss"),
    ],
)
def test_bad_training_options(runner, tmp_path, text_encoder, args, code, message):
    result = _train(runner, "--run-dir", str(tmp_path / "r"), "--text-encoder", str(text_encoder), *args)
    assert result.exit_code == code, result.output
    assert message in result.output and "Traceback" not in result.output


def test_resume_with_new_learning_rates_uses_them(runner, tmp_path, text_encoder):
    """--lr-g / --lr-d given on --resume win over the optimiser state stored in the checkpoint."""
    run = tmp_path / "run"
    assert _train(runner, "--run-dir", str(run), "--max-steps", "4", "--text-encoder", str(text_encoder)).exit_code == 0
    result = _train(runner, "--run-dir", str(run), "--max-steps", "8", "--resume", "--lr-g", "5e-5", "--lr-d", "3e-5")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    assert [(r["lr_g"], r["lr_d"]) for r in records] == [(2e-4, 2e-4)] * 4 + [(5e-5, 3e-5)] * 4
    meta = json.loads((run / "checkpoints" / "step-00000008.json").read_text())
    groups = meta["param_groups"]
    assert groups["opt_G"][0]["lr"] == 5e-5 and all(groups[f"opt_D{i}"][0]["lr"] == 3e-5 for i in range(3))


def test_tampered_latest_checkpoint_falls_back(runner, tmp_path, text_encoder):
    run = tmp_path / "run"
    assert _train(runner, "--run-dir", str(run), "--max-steps", "6", "--text-encoder", str(text_encoder)).exit_code == 0
    newest = run / "checkpoints" / "step-00000006.safetensors"
    newest.write_bytes(newest.read_bytes()[:-50])
    result = _train(runner, "--run-dir", str(run), "--max-steps", "8", "--resume")
    assert result.exit_code == 0, result.output
    assert "falling back" in result.output
    steps = [json.loads(line)["step"] for line in (run / "stats.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 9))


def test_sigint_saves_a_checkpoint_and_exits_130(tmp_path, text_encoder):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "stackgan2.cli", "--quiet", "train", *TINY, "--run-dir", str(run),
           "--text-encoder", str(text_encoder), "--epochs", "200", "--checkpoint-every", "1000"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not ((run / "stats.jsonl").exists() and (run / "stats.jsonl").read_text().count("\n") >= 3):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "SIGINT received" in err and "Traceback" not in err
    saved = list((run / "checkpoints").glob("step-*.safetensors"))
    assert len(saved) == 1 and saved[0].with_suffix(".json").is_file()


def test_sigterm_to_the_process_group_stops_cleanly_with_workers(tmp_path, text_encoder):
    """pkill -f / Ctrl-C / a scheduler signal every process of the group, DataLoader workers included;
    the workers leave the stop to the main process, which saves and exits 143 without a traceback."""
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "stackgan2.cli", "--quiet", "train", *TINY, "--run-dir", str(run), "--workers", "2",
           "--text-encoder", str(text_encoder), "--epochs", "200", "--checkpoint-every", "1000"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and not ((run / "stats.jsonl").exists() and (run / "stats.jsonl").read_text().count("\n") >= 3):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "SIGTERM received" in err and "Traceback" not in err and "DataLoader worker" not in err
    saved = list((run / "checkpoints").glob("step-*.safetensors"))
    assert len(saved) == 1 and saved[0].with_suffix(".json").is_file()
    deadline = time.time() + 30
    while time.time() < deadline:  # no worker outlives the trainer
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        pytest.fail("processes of the training run are still alive after it exited")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_processes_gloo(tmp_path, text_encoder):
    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(_free_port()),
           "-m", "stackgan2.cli", "--quiet", "train", *TINY, "--run-dir", str(run), "--text-encoder", str(text_encoder),
           "--batch-size", "4", "--max-steps", "3"]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]  # rank 0 only writes
    assert records[0]["images_per_s"] > 0
    assert len(list((run / "checkpoints").glob("*.safetensors"))) == 1


def test_init_from_run_pipeline_and_checkpoint(runner, tmp_path, text_encoder):
    """--init-from starts a new run at another model's weights (G, G_ema, and D from checkpoints) with
    its text encoder; optimisers and the step start fresh."""
    from stackgan2.config import resolve_config
    from stackgan2.training.trainer import Trainer, load_initial_weights

    source = tmp_path / "source"
    assert _train(runner, "--run-dir", str(source), "--max-steps", "3", "--text-encoder", str(text_encoder)).exit_code == 0
    assert runner.invoke(app, ["--quiet", "export", str(source), str(tmp_path / "pipe")]).exit_code == 0
    trained = _latest_tensors(source)
    cfg = resolve_config("tiny", overrides={"train.device": "cpu"})
    for where, has_d in ((source, True), (tmp_path / "pipe", False)):
        trainer = Trainer(cfg, tmp_path / "unused")
        weights = load_initial_weights(where)
        assert weights.text_encoder == where / "text_encoder"
        trainer.start_from(weights)
        for key, value in trainer.G_ema.state_dict().items():
            assert torch.equal(value, trained[f"G_ema.{key}"]), key
        g_source = "G" if has_d else "G_ema"
        assert all(torch.equal(v, trained[f"{g_source}.{k}"]) for k, v in trainer.G.state_dict().items())
        d_equal = all(torch.equal(v, trained[f"D.{k}"]) for k, v in trainer.discriminators.state_dict().items())
        assert d_equal == has_d

    run = tmp_path / "finetune"
    result = _train(runner, "--run-dir", str(run), "--max-steps", "1", "--init-from", str(tmp_path / "pipe"))
    assert result.exit_code == 0, result.output
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["init_from"] == str(tmp_path / "pipe")
    assert config["train"]["text_encoder"] == str(tmp_path / "pipe" / "text_encoder")
    assert (run / "checkpoints" / "step-00000001.safetensors").is_file()


def test_init_from_with_another_discriminator_width_keeps_g_and_starts_d_fresh(runner, tmp_path, text_encoder):
    """ndf shapes only the discriminators, so a model can be fine-tuned against wider (or narrower)
    ones: G and G_ema are loaded, D starts fresh; any other architecture difference is still refused."""
    from stackgan2.config import resolve_config
    from stackgan2.errors import CheckpointError
    from stackgan2.training.trainer import Trainer, load_initial_weights

    source = tmp_path / "source"
    assert _train(runner, "--run-dir", str(source), "--max-steps", "2", "--text-encoder", str(text_encoder)).exit_code == 0
    trained = _latest_tensors(source)
    weights = load_initial_weights(source)
    ndf = weights.config.model.ndf
    cfg = resolve_config("tiny", overrides={"train.device": "cpu", "model.ndf": ndf * 2})
    trainer = Trainer(cfg, tmp_path / "unused")
    fresh_d = {k: v.clone() for k, v in trainer.discriminators.state_dict().items()}
    trainer.start_from(weights)
    assert all(torch.equal(v, trained[f"G.{k}"]) for k, v in trainer.G.state_dict().items())
    assert all(torch.equal(v, trained[f"G_ema.{k}"]) for k, v in trainer.G_ema.state_dict().items())
    assert all(torch.equal(v, fresh_d[k]) for k, v in trainer.discriminators.state_dict().items())
    other = resolve_config("tiny", overrides={"train.device": "cpu", "model.ndf": ndf * 2, "model.ngf": weights.config.model.ngf * 2})
    with pytest.raises(CheckpointError, match="different architecture"):
        Trainer(other, tmp_path / "unused2").start_from(weights)

    result = _train(runner, "--run-dir", str(tmp_path / "wide"), "--max-steps", "1", "--ndf", str(ndf * 2), "--init-from", str(source))
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "wide" / "config.json").read_text())["model"]["ndf"] == ndf * 2


def test_init_from_other_architecture_or_no_model_is_refused(runner, tmp_path, text_encoder):
    source = tmp_path / "source"
    assert _train(runner, "--run-dir", str(source), "--max-steps", "1", "--text-encoder", str(text_encoder)).exit_code == 0
    result = _train(runner, "--run-dir", str(tmp_path / "b"), "--stage-num", "2", "--init-from", str(source))
    assert result.exit_code == 1 and "different architecture" in result.output and "stage_num: 3 vs 2" in result.output
    result = _train(runner, "--run-dir", str(tmp_path / "c"), "--init-from", str(tmp_path / "nothing"))
    assert result.exit_code == 1 and "model not found" in result.output
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()


def test_lever_flags_reach_the_config(runner, tmp_path):
    result = runner.invoke(app, ["train", "--preset", "tiny", "--run-dir", str(tmp_path / "r"), "--dry-run",
                                 "--d-projection", "--d-norm", "spectral", "--g-text-fusion", "--gan-loss", "hinge",
                                 "--ma-gp", "2", "--ma-gp-power", "6", "--beta1", "0", "--beta2", "0.9",
                                 "--stacked-d-passes"])
    assert result.exit_code == 0, result.output
    cfg = json.loads(result.output[: result.output.rindex("}") + 1])
    assert cfg["model"] | {"d_projection": True, "d_norm": "spectral", "g_text_fusion": True} == cfg["model"]
    assert {k: cfg["train"][k] for k in ("gan_loss", "ma_gp_coef", "ma_gp_power", "beta1", "beta2", "stacked_d_passes")} == {
        "gan_loss": "hinge", "ma_gp_coef": 2.0, "ma_gp_power": 6.0, "beta1": 0.0, "beta2": 0.9, "stacked_d_passes": True}


def test_init_from_grows_the_tree(runner, tmp_path, text_encoder):
    """A 1-branch model continues as a 3-branch one: its branch is loaded, the new ones start fresh."""
    from stackgan2.config import resolve_config
    from stackgan2.training.trainer import Trainer, load_initial_weights

    source = tmp_path / "one"
    result = _train(runner, "--run-dir", str(source), "--stage-num", "1", "--max-steps", "2", "--text-encoder", str(text_encoder))
    assert result.exit_code == 0, result.output
    trained = _latest_tensors(source)
    trainer = Trainer(resolve_config("tiny", overrides={"train.device": "cpu"}), tmp_path / "unused")
    fresh = {k: v.clone() for k, v in trainer.G.state_dict().items()}
    trainer.start_from(load_initial_weights(source))
    for key, value in trainer.G.state_dict().items():
        loaded = key.startswith(("ca.", "init_stage.", "to_images.0."))
        assert torch.equal(value, trained[f"G.{key}"] if loaded else fresh[key]), key
    assert all(torch.equal(v, trained[f"D.0.{k}"]) for k, v in trainer.discriminators[0].state_dict().items())
    result = _train(runner, "--run-dir", str(tmp_path / "three"), "--max-steps", "1", "--init-from", str(source))
    assert result.exit_code == 0, result.output
