"""``stackgan2 sample / export / interpolate / plot-losses`` on a real tiny training run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from stackgan2.cli import sample as sample_cli
from stackgan2.cli.main import app
from stackgan2.pipeline import MAX_IMAGES_PER_PROMPT, MAX_INTERPOLATION_STEPS


@pytest.fixture(scope="module")
def run(tiny_run) -> Path:
    """The session's shared tiny training run (see conftest)."""
    return tiny_run


def _invoke(runner: CliRunner, *args: str):
    return runner.invoke(app, [str(a) for a in args])


def _sample(runner: CliRunner, run: Path, out: Path, *args: str):
    return _invoke(runner, "sample", *args, "--model", run, "--out", out, "--device", "cpu")


def _printed_paths(stdout: str) -> list[Path]:
    return [Path(line) for line in stdout.splitlines() if line.strip()]


def test_sample_writes_exactly_the_files_it_prints(runner, run, tmp_path):
    out = tmp_path / "out"
    result = _sample(runner, run, out, "a small red bird", "a large blue bird", "--num-images", "2", "--seed", "42")
    assert result.exit_code == 0, result.output
    paths = _printed_paths(result.stdout)
    assert sorted(paths) == sorted(out.iterdir())
    assert [p.name for p in paths] == [
        "a-small-red-bird_seed42_000_32px.png", "a-small-red-bird_seed42_001_32px.png",
        "a-large-blue-bird_seed42_000_32px.png", "a-large-blue-bird_seed42_001_32px.png",
    ]
    for path in paths:
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size == (32, 32)
    assert "seed 42" in result.stderr


def test_same_seed_gives_identical_files(runner, run, tmp_path):
    first = _sample(runner, run, tmp_path / "a", "a small red bird", "--seed", "7")
    second = _sample(runner, run, tmp_path / "b", "a small red bird", "--seed", "7")
    other = _sample(runner, run, tmp_path / "c", "a small red bird", "--seed", "8")
    assert first.exit_code == second.exit_code == other.exit_code == 0
    [a], [b], [c] = (_printed_paths(r.stdout) for r in (first, second, other))
    assert a.read_bytes() == b.read_bytes() and a.read_bytes() != c.read_bytes()


def test_all_stages_and_grid(runner, run, tmp_path):
    strips = _sample(runner, run, tmp_path / "strips", "a small red bird", "--all-stages", "--seed", "1")
    assert strips.exit_code == 0, strips.output
    [strip] = _printed_paths(strips.stdout)
    assert strip.name == "a-small-red-bird_seed1_000_8-16-32px.png" and Image.open(strip).size == (3 * 32 + 2 * 2, 32)
    grid = _sample(runner, run, tmp_path / "grid", "a small red bird", "a blue bird", "-n", "3", "--grid", "--seed", "1")
    assert grid.exit_code == 0, grid.output
    [sheet] = _printed_paths(grid.stdout)
    assert list((tmp_path / "grid").iterdir()) == [sheet] and sheet.name == "grid_seed1_6images_32px.png"
    assert Image.open(sheet).width >= 3 * 32


def test_prompts_file_and_unknown_word_warning(runner, run, tmp_path):
    prompts = tmp_path / "captions.txt"
    prompts.write_text("# birds\na small red bird\n\na qzxv bird\n", encoding="utf-8")
    result = _sample(runner, run, tmp_path / "out", "a blue bird", "--prompts-file", prompts, "--seed", "0")
    assert result.exit_code == 0, result.output
    assert [p.name.split("_")[0] for p in _printed_paths(result.stdout)] == ["a-blue-bird", "a-small-red-bird", "a-qzxv-bird"]
    assert "unknown words: qzxv" in result.stderr
    (tmp_path / "empty.txt").write_text("# nothing\n\n")
    empty = _sample(runner, run, tmp_path / "out2", "--prompts-file", tmp_path / "empty.txt")
    assert empty.exit_code == 2 and "holds no prompt" in empty.stderr
    (tmp_path / "binary.txt").write_bytes(b"\xff\xfe\x00bird")
    binary = _sample(runner, run, tmp_path / "out2", "--prompts-file", tmp_path / "binary.txt")
    assert binary.exit_code == 2 and "not UTF-8 text" in binary.stderr
    assert not (tmp_path / "out2").exists()
    markup = _sample(runner, run, tmp_path / "out3", "a [bold]red[/bold] qzxv bird", "--seed", "0")
    assert markup.exit_code == 0 and "unknown words: bold, qzxv (in 'a [bold]red[/bold] qzxv bird'" in markup.stderr


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["", "--seed", "0"], 1, "contains no words"),
        (["zebra qzxv"], 1, "no word the text encoder knows"),
        ([], 2, "no prompt given"),
        (["a bird", "--num-images", "0"], 2, "--num-images"),
        (["a bird", "--num-images", "10000"], 2, "--num-images"),
        (["a bird", "--truncation", "-1"], 2, "truncation must be a positive number"),
    ],
)
def test_bad_sample_input_writes_nothing(runner, run, tmp_path, args, code, message):
    out = tmp_path / "out"
    result = _sample(runner, run, out, *args)
    assert result.exit_code == code, result.output
    assert message in result.stderr and "Traceback" not in result.output
    assert not out.exists()


def test_bad_model_paths(runner, run, tmp_path, monkeypatch):
    out = tmp_path / "out"
    missing = _sample(runner, tmp_path / "nope", out, "a bird")
    assert missing.exit_code == 1 and "model not found" in missing.stderr
    tampered = tmp_path / "tampered"
    shutil.copytree(run, tampered)
    checkpoint = tampered / "checkpoints" / "step-00000004.safetensors"
    data = bytearray(checkpoint.read_bytes())
    data[-50] ^= 0xFF
    checkpoint.write_bytes(bytes(data))
    bad = _sample(runner, checkpoint, out, "a bird")
    assert bad.exit_code == 1 and "does not match the hash" in bad.stderr
    not_model = _sample(runner, tampered / "config.json", out, "a bird")
    assert not_model.exit_code == 1 and "is not a model" in not_model.stderr
    monkeypatch.setattr("stackgan2.pipeline.shipped_model_dir", lambda: None)
    default = _invoke(runner, "sample", "a bird", "--out", out)
    assert default.exit_code == 1 and "--model" in default.stderr
    assert len(default.stderr.strip().splitlines()) <= 3  # one (soft-wrapped) error line
    assert not out.exists()


def test_output_path_that_is_a_file(runner, run, tmp_path):
    taken = tmp_path / "taken.png"
    taken.write_bytes(b"mine")
    result = _sample(runner, run, taken, "a small red bird")
    assert result.exit_code == 2 and "not a directory" in result.stderr
    assert taken.read_bytes() == b"mine"


def test_export_then_sample_from_the_export(runner, run, tmp_path):
    full = _invoke(runner, "export", run, tmp_path / "fp32")
    half = _invoke(runner, "export", run, tmp_path / "fp16", "--fp16")
    assert full.exit_code == 0 and half.exit_code == 0, full.output + half.output
    assert "MiB" in full.stdout and "float16" in half.stdout
    assert sorted(p.name for p in (tmp_path / "fp32").iterdir()) == ["config.json", "generator.safetensors", "text_encoder"]
    assert json.loads((tmp_path / "fp16" / "config.json").read_text())["dtype"] == "float16"
    size = {name: (tmp_path / name / "generator.safetensors").stat().st_size for name in ("fp32", "fp16")}
    assert size["fp16"] < 0.6 * size["fp32"]
    from_run = _sample(runner, run, tmp_path / "a", "a small red bird", "--seed", "3")
    from_export = _sample(runner, tmp_path / "fp32", tmp_path / "b", "a small red bird", "--seed", "3")
    from_half = _sample(runner, tmp_path / "fp16", tmp_path / "c", "a small red bird", "--seed", "3")
    assert from_run.exit_code == from_export.exit_code == from_half.exit_code == 0
    [a], [b], [c] = (_printed_paths(r.stdout) for r in (from_run, from_export, from_half))
    assert a.read_bytes() == b.read_bytes() and c.is_file()
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("keep")
    refused = _invoke(runner, "export", run, tmp_path / "busy")
    assert refused.exit_code == 2 and "holds other files" in refused.stderr
    nothing = _invoke(runner, "export", tmp_path / "nope", tmp_path / "new")
    assert nothing.exit_code == 1 and not (tmp_path / "new").exists()


def test_interpolate(runner, run, tmp_path):
    out = tmp_path / "strip.png"
    args = ["interpolate", "a small red bird", "a large blue bird", "--steps", "4", "--model", run, "--seed", "2"]
    result = _invoke(runner, *args, "--out", out, "--interpolate-noise")
    assert result.exit_code == 0, result.output
    assert _printed_paths(result.stdout) == [out]
    with Image.open(out) as image:
        assert image.format == "PNG" and image.width == 6 + 4 * (96 + 6)  # 4 captioned cells of >= 96 px
    into_dir = _invoke(runner, *args, "--out", tmp_path / "dir")
    assert into_dir.exit_code == 0, into_dir.output
    [written] = _printed_paths(into_dir.stdout)
    assert written.parent == tmp_path / "dir" and written.name.startswith("interpolate_a-small-red-bird_to_a-large-blue-bird")
    too_many = _invoke(runner, *args[:3], "--steps", "100", "--model", run)
    assert too_many.exit_code == 2 and "--steps" in too_many.stderr
    unknown = _invoke(runner, "interpolate", "qzxv", "a bird", "--model", run, "--out", tmp_path / "never")
    assert unknown.exit_code == 1 and not (tmp_path / "never").exists()


def test_plot_losses_on_a_run(runner, run, tmp_path, monkeypatch):
    result = _invoke(runner, "plot-losses", run, "--out", tmp_path / "losses.png", "--smooth", "2", "--log-y")
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "losses.png") as image:
        assert image.format == "PNG" and image.size == (1200, 800)
    assert "D0/total" in result.stdout and "step 4" in result.stdout
    assert f"{Path(run).name}: " in result.stdout  # the run is named by its directory ...
    shutil.copy(Path(run) / "stats.jsonl", tmp_path / "toy-stats.jsonl")
    named = _invoke(runner, "plot-losses", tmp_path / "toy-stats.jsonl", "--out", tmp_path / "copy.png")
    assert named.exit_code == 0 and "toy-stats: " in named.stdout  # ... a loose stats file by its own name
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    shutil.copytree(run, tmp_path / "runs" / "latest")
    default = _invoke(runner, "plot-losses")
    assert default.exit_code == 0, default.output
    assert (tmp_path / "runs" / "latest" / "losses.png").is_file()
    (tmp_path / "runs" / "latest" / "stats.jsonl").write_text("")
    empty = _invoke(runner, "plot-losses", tmp_path / "runs" / "latest")
    assert empty.exit_code == 1 and "is empty" in empty.stderr
    missing = _invoke(runner, "plot-losses", tmp_path / "nowhere")
    assert missing.exit_code == 1 and "not found" in missing.stderr


def test_cli_limits_match_the_library():
    assert sample_cli.MAX_IMAGES == MAX_IMAGES_PER_PROMPT and sample_cli.MAX_STEPS == MAX_INTERPOLATION_STEPS
