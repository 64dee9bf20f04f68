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

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from stackgan2.cli.main import app
from stackgan2.errors import PromptError, UsageError

TINY = ["--preset", "tiny", "--device", "cpu"]
V1_TOY = ["--preset", "v1-toy", "--device", "cpu"]


def _train(runner, *args: str, preset: list[str] = TINY):
    return runner.invoke(app, ["--quiet", "train", *preset, *args])


@pytest.fixture(scope="module")
def text_encoder(tmp_path_factory) -> Path:
    """One tiny DAMSM text encoder shared by the tests (phase 0 is tested once, below)."""
    from typer.testing import CliRunner

    out = tmp_path_factory.mktemp("text") / "encoder"
    result = CliRunner().invoke(app, ["--quiet", "pretrain-text", "--preset", "tiny", "--device", "cpu", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def v1_stage1(tmp_path_factory, text_encoder) -> Path:
    """A StackGAN v1 Stage-I run of the v1-toy preset (2 steps), the --stage1 of the Stage-II tests."""
    from typer.testing import CliRunner

    run = tmp_path_factory.mktemp("v1") / "stage1"
    result = _train(CliRunner(), "--run-dir", str(run), "--max-steps", "2", "--text-encoder", str(text_encoder), preset=V1_TOY)
    assert result.exit_code == 0, result.output
    return run


def _family(name: str, v1_stage1: Path | None) -> tuple[list[str], list[str]]:
    """(preset args, extra args) for a loop test: StackGAN++ tiny, AttnGAN at tiny size (attention stages,
    sentence-conditioned Ds, DAMSM term), or StackGAN v1 Stage II on v1-toy (the v1 loop: frozen Stage-I G
    inside, its own D passes; the schedule halves the rates every epoch)."""
    if name == "stackgan2":
        return TINY, []
    if name == "attngan":
        return TINY, ["--arch", "attngan", "--damsm-coef", "5", "--kl-coef", "1"]
    return V1_TOY, ["--v1-stage", "2", "--stage1", str(v1_stage1), "--lr-decay-every", "1"]


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
    # The export keeps the DAMSM image encoder (sampling ignores it), so fine-tuning the exported
    # model can go on with the DAMSM loss; a model trained without it ships the text side only.
    result = runner.invoke(app, ["--quiet", "export", str(run), str(tmp_path / "pipe")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "pipe" / "text_encoder" / "image_encoder.safetensors").is_file()
    result = _train(runner, "--run-dir", str(tmp_path / "more"), "--max-steps", "1", "--init-from",
                    str(tmp_path / "pipe"), "--damsm-coef", "5")
    assert result.exit_code == 0, result.output
    assert "DAMSM/word" in json.loads((tmp_path / "more" / "stats.jsonl").read_text().splitlines()[-1])
    plain = tmp_path / "plain"
    assert _train(runner, "--run-dir", str(plain), "--max-steps", "1", "--text-encoder", str(text_encoder)).exit_code == 0
    assert runner.invoke(app, ["--quiet", "export", str(plain), str(tmp_path / "plain-pipe")]).exit_code == 0
    assert not (tmp_path / "plain-pipe" / "text_encoder" / "image_encoder.safetensors").exists()


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
@pytest.mark.parametrize(("family", "layout"), [("stackgan2", "--no-channels-last"), ("stackgan2", "--channels-last"),
                                                ("stackgan1", "--no-channels-last"), ("attngan", "--no-channels-last")])
def test_resume_is_bit_identical(runner, tmp_path, text_encoder, family, layout, request):
    preset, extra = _family(family, request.getfixturevalue("v1_stage1") if family == "stackgan1" else None)
    straight, split = tmp_path / "straight", tmp_path / "split"
    common = ["--text-encoder", str(text_encoder), "--epochs", "2", layout, *extra]
    assert _train(runner, "--run-dir", str(straight), *common, preset=preset).exit_code == 0
    assert _train(runner, "--run-dir", str(split), *common, "--max-steps", "5", preset=preset).exit_code == 0  # mid-epoch
    result = _train(runner, "--run-dir", str(split), *common, "--resume", preset=preset)
    assert result.exit_code == 0, result.output
    a, b = _latest_tensors(straight), _latest_tensors(split)
    assert a.keys() == b.keys()
    for key in a:
        if key.startswith(("G.", "G_ema.", "D.", "opt_")):
            assert torch.equal(a[key], b[key]), key
    records = [json.loads(line) for line in (split / "stats.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 17))
    if family == "stackgan1":  # the official v1 schedule: both rates halve when an epoch starts
        assert {(r["lr_g"], r["lr_d"]) for r in records[:8]} == {(2e-4, 2e-4)}
        assert {(r["lr_g"], r["lr_d"]) for r in records[8:]} == {(1e-4, 1e-4)}


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


@pytest.mark.parametrize("family", ["stackgan2", "stackgan1", "attngan"])
def test_sigint_saves_a_checkpoint_and_exits_130(tmp_path, text_encoder, family, request):
    preset, extra = _family(family, request.getfixturevalue("v1_stage1") if family == "stackgan1" else None)
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "stackgan2.cli", "--quiet", "train", *preset, *extra, "--run-dir", str(run),
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


@pytest.mark.parametrize("family", ["stackgan2", "attngan"])
def test_torchrun_two_processes_gloo(tmp_path, text_encoder, family):
    """AttnGAN: each rank encodes its shard's captions for the attention stages and the DAMSM term."""
    preset, extra = _family(family, None)
    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(_free_port()),
           "-m", "stackgan2.cli", "--quiet", "train", *preset, *extra, "--run-dir", str(run),
           "--text-encoder", str(text_encoder), "--batch-size", "4", "--max-steps", "3"]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]  # rank 0 only writes
    assert records[0]["images_per_s"] > 0
    assert all(r.get("DAMSM/word", 0) > 0 for r in records) == (family == "attngan")
    assert len(list((run / "checkpoints").glob("*.safetensors"))) == 1


def test_init_from_run_pipeline_and_checkpoint(runner, tmp_path, text_encoder):
    """--init-from starts a new run at another model's weights (G, G_ema, and D from checkpoints) with
    its text encoder; optimisers and the step start fresh."""
    from stackgan2.config import resolve_config
    from stackgan2.training.trainer import Trainer
    from stackgan2.training.weights import load_initial_weights

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


def test_attngan_trains_exports_samples_and_fine_tunes(runner, tmp_path, text_encoder, tiny_run):
    """The AttnGAN family through the same loop and run directory: DAMSM terms in stats.jsonl, a
    checkpoint, export, generation with attention maps from the pipeline, --init-from."""
    from stackgan2.pipeline import Text2ImagePipeline

    run = tmp_path / "attn"
    result = _train(runner, "--run-dir", str(run), "--arch", "attngan", "--damsm-coef", "5", "--max-steps", "3",
                    "--text-encoder", str(text_encoder))
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    assert all(r["DAMSM/word"] > 0 and r["DAMSM/sentence"] > 0 and "D2/wrong" in r for r in records)
    plotted = runner.invoke(app, ["plot-losses", str(run), "--out", str(tmp_path / "losses.png")], env={"COLUMNS": "200"})
    assert plotted.exit_code == 0 and "DAMSM/word" in plotted.stdout and "DAMSM/sentence" in plotted.stdout, plotted.output
    assert runner.invoke(app, ["--quiet", "export", str(run), str(tmp_path / "pipe")]).exit_code == 0
    pipe = Text2ImagePipeline.from_pretrained(tmp_path / "pipe")
    out = pipe(["a red bird with blue wings", "a bird"], num_images_per_prompt=2, seed=3)
    assert [len(b) for b in out.branches] == [4, 4, 4] and out.words[0] == ["a", "red", "bird", "with", "blue", "wings"]
    assert [m.shape for m in out.attention[0][:3:2]] == [(6, 8, 8), (2, 8, 8)]  # padding slots trimmed
    assert torch.allclose(out.attention[1][2].sum(dim=0), torch.ones(16, 16), atol=1e-5)
    same = pipe(["a red bird with blue wings"], seed=3)  # batching does not change an image
    assert np.array_equal(np.asarray(same.images[0]), np.asarray(out.images[0]))
    unknown = pipe(["a red zzzqx bird"], seed=3)  # reported, and no attention on it (masked like padding)
    assert unknown.unknown == [["zzzqx"]] and unknown.attention[0][0][2].abs().max() == 0
    assert unknown.attention[0][0][1].abs().max() > 0
    with pytest.raises(PromptError, match="no word the text encoder knows"):
        pipe(["zzzqx qqqzz"])
    sample = ["--quiet", "sample", "a red bird", "--model", str(tmp_path / "pipe"), "--seed", "1", "--out"]
    result = runner.invoke(app, [*sample, str(tmp_path / "maps"), "--attention"])
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in (tmp_path / "maps").iterdir())
    assert names == ["a-red-bird_seed1_000_32px.png", "a-red-bird_seed1_000_attention16-32px.png",
                     "a-red-bird_seed1_000_attention8-16px.png"]
    from PIL import Image

    strip = Image.open(tmp_path / "maps" / "a-red-bird_seed1_000_attention16-32px.png")
    assert strip.width > 4 * 96  # the image and one overlay per word (3 words), 96 px wide cells at least
    refused = runner.invoke(app, [*sample[:4], str(tiny_run), "--seed", "1", "--out", str(tmp_path / "no"), "--attention"])
    assert refused.exit_code == 2 and "--attention needs an AttnGAN model" in refused.output
    assert not (tmp_path / "no").exists()
    between = ["--quiet", "interpolate", "--model", str(tmp_path / "pipe"), "--steps", "3", "--out"]
    result = runner.invoke(app, [*between, str(tmp_path / "strip.png"), "a red bird", "a blue bird"])
    assert result.exit_code == 0 and (tmp_path / "strip.png").is_file(), result.output
    refused = runner.invoke(app, [*between, str(tmp_path / "no.png"), "a red bird", "a small blue bird"])
    assert refused.exit_code == 2 and "same word count" in refused.output and len(refused.output.splitlines()) == 1
    assert not (tmp_path / "no.png").exists()
    finetune = tmp_path / "finetune"
    result = _train(runner, "--run-dir", str(finetune), "--arch", "attngan", "--max-steps", "1",
                    "--init-from", str(tmp_path / "pipe"))
    assert result.exit_code == 0, result.output


def test_init_from_with_another_discriminator_width_keeps_g_and_starts_d_fresh(runner, tmp_path, text_encoder):
    """ndf shapes only the discriminators, so a model can be fine-tuned against wider (or narrower)
    ones: G and G_ema are loaded, D starts fresh; any other architecture difference is still refused."""
    from stackgan2.config import resolve_config
    from stackgan2.errors import CheckpointError
    from stackgan2.training.trainer import Trainer
    from stackgan2.training.weights import load_initial_weights

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
    result = runner.invoke(app, ["--quiet", "train", "--preset", "toy", "--device", "cpu", "--run-dir", str(tmp_path / "b"),
                                 "--init-from", str(source)])
    assert result.exit_code == 1 and "different architecture" in result.output and "ngf: 32 vs 16" in result.output
    result = _train(runner, "--run-dir", str(tmp_path / "c"), "--init-from", str(tmp_path / "nothing"))
    assert result.exit_code == 1 and "model not found" in result.output
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()


def test_lever_flags_reach_the_config(runner, tmp_path):
    result = runner.invoke(app, ["train", "--preset", "tiny", "--run-dir", str(tmp_path / "r"), "--dry-run",
                                 "--d-projection", "--d-norm", "spectral", "--g-text-fusion", "--gan-loss", "hinge",
                                 "--ma-gp", "2", "--ma-gp-power", "6", "--beta1", "0", "--beta2", "0.9",
                                 "--stacked-d-passes", "--damsm-coef", "5"])
    assert result.exit_code == 0, result.output
    cfg = json.loads(result.output[: result.output.rindex("}") + 1])
    assert cfg["model"] | {"d_projection": True, "d_norm": "spectral", "g_text_fusion": True} == cfg["model"]
    assert {k: cfg["train"][k] for k in ("gan_loss", "ma_gp_coef", "ma_gp_power", "beta1", "beta2", "stacked_d_passes",
                                         "damsm_coef")} == {
        "gan_loss": "hinge", "ma_gp_coef": 2.0, "ma_gp_power": 6.0, "beta1": 0.0, "beta2": 0.9, "stacked_d_passes": True,
        "damsm_coef": 5.0}


def test_word_attention_trains_samples_and_evaluates(runner, tmp_path, text_encoder):
    """--g-word-attention: the StackGAN++ tree gets the captions' words in training, sampling (CLI,
    pipeline) and evaluation; it has no AttnGAN attention strips."""
    from stackgan2.metrics.evaluate import generate_final_images
    from stackgan2.pipeline import Text2ImagePipeline

    run = tmp_path / "words"
    result = _train(runner, "--run-dir", str(run), "--g-word-attention", "--max-steps", "2",
                    "--text-encoder", str(text_encoder))
    assert result.exit_code == 0, result.output
    assert json.loads((run / "config.json").read_text())["model"]["g_word_attention"] is True
    assert any(".word_fusion." in key for key in _latest_tensors(run))
    sample = ["--quiet", "sample", "a red bird with blue wings", "--model", str(run), "--seed", "1", "--out"]
    result = runner.invoke(app, [*sample, str(tmp_path / "out")])
    assert result.exit_code == 0 and len(list((tmp_path / "out").iterdir())) == 1, result.output
    refused = runner.invoke(app, [*sample, str(tmp_path / "no"), "--attention"])
    assert refused.exit_code == 2 and "--attention needs an AttnGAN model" in refused.output
    pipe = Text2ImagePipeline.from_pretrained(run)
    out = pipe(["a red bird with blue wings", "a bird"], num_images_per_prompt=2, seed=3)
    assert out.attention is None and len(out.images) == 4
    alone = pipe(["a bird"], seed=4)  # padding to text.max_words: batching does not change an image
    assert np.array_equal(np.asarray(alone.images[0]), np.asarray(out.images[3]))
    images, _ = generate_final_images(pipe, ["a red bird with blue wings", "a bird"], [3, 4])
    assert np.array_equal(images[1], np.asarray(out.images[3]))
    with pytest.raises(UsageError, match="attends to the words"):
        pipe(embeddings=torch.zeros(1, pipe.config.model.text_dim))


def test_init_from_grows_the_tree(runner, tmp_path, text_encoder):
    """A 1-branch model continues as a 3-branch one: its branch is loaded, the new ones start fresh."""
    from stackgan2.config import resolve_config
    from stackgan2.training.trainer import Trainer
    from stackgan2.training.weights import load_initial_weights

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


def test_init_from_keeps_the_trunk_of_a_bigger_tree(runner, tmp_path, text_encoder):
    """A 3-branch model starts a 1-branch run: its CA net, trunk, 64 px head and first D are loaded, the rest is
    left out."""
    from stackgan2.config import resolve_config
    from stackgan2.training.trainer import Trainer
    from stackgan2.training.weights import load_initial_weights

    source = tmp_path / "three"
    result = _train(runner, "--run-dir", str(source), "--max-steps", "2", "--text-encoder", str(text_encoder))
    assert result.exit_code == 0, result.output
    trained = _latest_tensors(source)
    trainer = Trainer(resolve_config("tiny", overrides={"train.device": "cpu", "model.stage_num": 1}), tmp_path / "unused")
    trainer.start_from(load_initial_weights(source))
    for prefix, module in (("G", trainer.G), ("G_ema", trainer.G_ema), ("D", trainer.discriminators)):
        state = module.state_dict()
        assert state and all(torch.equal(v, trained[f"{prefix}.{k}"]) for k, v in state.items()), prefix
    result = _train(runner, "--run-dir", str(tmp_path / "one"), "--max-steps", "1", "--stage-num", "1",
                    "--init-from", str(source))
    assert result.exit_code == 0, result.output


def test_g_frozen_stages_keeps_the_trunk_while_growing(runner, tmp_path, text_encoder):
    """--g-frozen-stages 1: the grown run's CA net, trunk and 64 px head stay at the source's averaged weights
    (G and G_ema) and are out of G's optimiser; the new stages train. Without --init-from, or with every
    stage frozen, it is one error line and nothing is written."""
    source = tmp_path / "one"
    result = _train(runner, "--run-dir", str(source), "--stage-num", "1", "--max-steps", "3", "--text-encoder", str(text_encoder))
    assert result.exit_code == 0, result.output
    trained = _latest_tensors(source)
    grown = tmp_path / "three"
    result = _train(runner, "--run-dir", str(grown), "--max-steps", "2", "--init-from", str(source), "--g-frozen-stages", "1")
    assert result.exit_code == 0, result.output
    after = _latest_tensors(grown)
    params = [k[2:] for k in after if k.startswith("G.") and "running_" not in k and "num_batches" not in k]
    frozen = [k for k in params if k.startswith(("ca.", "init_stage.", "to_images.0."))]
    assert frozen and len(frozen) < len(params)
    assert not torch.equal(trained["G.ca.fc.weight"], trained["G_ema.ca.fc.weight"])  # G's copy is G_ema's, not G's
    for key in frozen:
        assert torch.equal(after[f"G.{key}"], trained[f"G_ema.{key}"]), key
        assert torch.equal(after[f"G_ema.{key}"], trained[f"G_ema.{key}"]), key
    assert len({k.split(".")[1] for k in after if k.startswith("opt_G.")}) == len(params) - len(frozen)
    refine = next(k for k in params if k.startswith("refine_stages."))
    assert not torch.equal(after[f"G.{refine}"], after[f"G_ema.{refine}"])  # the new stages move
    for args in (["--g-frozen-stages", "1"], ["--init-from", str(source), "--g-frozen-stages", "3"]):
        bad = _train(runner, "--run-dir", str(tmp_path / "bad"), "--max-steps", "1", *args)
        assert bad.exit_code == 2 and "--g-frozen-stages" in bad.output, bad.output
        assert not (tmp_path / "bad").exists()


def test_v1_stage2_trains_on_the_frozen_stage1_generator(runner, tmp_path, text_encoder, v1_stage1):
    """Stage I's weights enter Stage II unchanged and stay so (no gradient, not in the optimiser); its
    batch norm still runs in train mode, so its running statistics move (official quirk). The run
    works with stats.jsonl, check and plot-losses, and --init-from a Stage-II run needs no --stage1."""
    run = tmp_path / "s2"
    result = _train(runner, "--run-dir", str(run), "--v1-stage", "2", "--stage1", str(v1_stage1), "--max-steps", "3",
                    preset=V1_TOY)
    assert result.exit_code == 0, result.output
    stage1, stage2 = _latest_tensors(v1_stage1), _latest_tensors(run)
    for prefix in ("G", "G_ema"):
        inner = {k[len(prefix) + 8 :]: v for k, v in stage2.items() if k.startswith(f"{prefix}.stage1.")}
        assert inner and inner.keys() == {k[6:] for k in stage1 if k.startswith("G_ema.")}
        for key, value in inner.items():
            moved = "running_" in key or "num_batches" in key
            assert torch.equal(value, stage1[f"G_ema.{key}"]) != moved, (prefix, key)
    trainable = sum(1 for k in stage2 if k.startswith("G.") and not k.startswith("G.stage1.") and "running" not in k
                    and "num_batches" not in k)
    assert len({k.split(".")[1] for k in stage2 if k.startswith("opt_G.")}) == trainable  # Adam holds Stage II only
    record = json.loads((run / "stats.jsonl").read_text().splitlines()[-1])
    assert {"D0/real", "D0/wrong", "D0/fake", "D0/uncond_real", "D0/uncond_fake", "G0/cond", "G0/uncond", "KL"} <= record.keys()
    assert runner.invoke(app, ["check", str(run)]).exit_code == 0
    plotted = runner.invoke(app, ["plot-losses", str(run), "--out", str(tmp_path / "losses.png")])
    assert plotted.exit_code == 0, plotted.output
    assert (tmp_path / "losses.png").is_file()
    again = _train(runner, "--run-dir", str(tmp_path / "again"), "--v1-stage", "2", "--init-from", str(run), "--max-steps", "1",
                   preset=V1_TOY)
    assert again.exit_code == 0, again.output

    # sampling, export and the pipeline: the 16 px Stage-I and the 64 px Stage-II image of one model
    from stackgan2.pipeline import Text2ImagePipeline

    sampled = runner.invoke(app, ["sample", "a small red bird", "--model", str(run), "--all-stages", "--seed", "3",
                                  "--device", "cpu", "--out", str(tmp_path / "samples")])
    assert sampled.exit_code == 0, sampled.output
    assert [p.name for p in (tmp_path / "samples").iterdir()] == ["a-small-red-bird_seed3_000_16-64px.png"]
    assert runner.invoke(app, ["--quiet", "export", str(run), str(tmp_path / "pipe")]).exit_code == 0
    pipe = Text2ImagePipeline.from_pretrained(tmp_path / "pipe")
    out = pipe(["a small red bird"], num_images_per_prompt=2, seed=3)
    assert [im.size for im in (out.branches[0][0], out.branches[1][0])] == [(16, 16), (64, 64)]
    assert out.images[0].tobytes() == Text2ImagePipeline.from_pretrained(run)(["a small red bird"], seed=3).images[0].tobytes()
    assert len(pipe.interpolate("a red bird", "a blue bird", steps=3, seed=0).images) == 3


def test_v1_stage2_refuses_a_missing_or_mismatched_stage1(runner, tmp_path, text_encoder, v1_stage1):
    result = _train(runner, "--run-dir", str(tmp_path / "a"), "--v1-stage", "2", "--text-encoder", str(text_encoder),
                    preset=V1_TOY)
    assert result.exit_code == 2 and "--stage1" in result.output and "Traceback" not in result.output
    plus = tmp_path / "plus"
    assert _train(runner, "--run-dir", str(plus), "--max-steps", "1", "--text-encoder", str(text_encoder)).exit_code == 0
    for stage1, message in ((plus, "not a StackGAN v1 Stage-I model"), (v1_stage1, "different architecture")):
        extra = ["--ngf", "64"] if stage1 == v1_stage1 else []
        result = _train(runner, "--run-dir", str(tmp_path / "b"), "--v1-stage", "2", "--stage1", str(stage1), *extra,
                        preset=V1_TOY)
        assert result.exit_code == 1 and message in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1
    result = _train(runner, "--run-dir", str(tmp_path / "c"), "--stage1", str(v1_stage1), preset=V1_TOY)
    assert result.exit_code == 2 and "train.stage1" in result.output
    assert not any((tmp_path / name).exists() for name in "abc")
