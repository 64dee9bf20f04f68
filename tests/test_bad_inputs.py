"""Hostile and mistaken input to every command: one clear error line, the right exit code, no file touched.

Every case runs the real CLI inside a workspace that holds all the fixtures (tiny runs, an exported
pipeline, data folders, the dataset cache) and is the working directory, so default outputs such as
``runs/`` or ``data-preview.png`` would land in it. The whole tree is snapshotted (path -> size,
mtime, SHA-256) before and after each case and must be unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_data_cub import make_layout
from typer.testing import CliRunner

from stackgan2.cli.main import app

TINY = ["--preset", "tiny"]
MARKER = "pickle-ran-a-command"
PROMPT_100KB = "a small red bird " * 6100  # 103,700 characters


@dataclass(frozen=True)
class Workspace:
    root: Path
    text_encoder: Path

    def __getitem__(self, name: str) -> str:
        """``ws["pipe"]`` -> the absolute path of a fixture inside the workspace."""
        return str(self.root / name)


class _RunsACommand:
    """Unpickling this with plain ``pickle.load`` would run ``touch MARKER``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def _ok(*args: str) -> None:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output


def _rehash(pipeline: Path) -> None:
    """Make a tampered pipeline's config.json hashes match again (what a deliberate forger would do)."""
    config = json.loads((pipeline / "config.json").read_text())
    for name in config["sha256"]:
        config["sha256"][name] = hashlib.sha256((pipeline / name).read_bytes()).hexdigest()
    (pipeline / "config.json").write_text(json.dumps(config))


def _build(root: Path, text_encoder: Path) -> None:
    enc = str(text_encoder)
    # Two tiny runs (stage-num 3 and 2), a pipeline exported from the first, and the toy-birds cache of both splits.
    _ok("--quiet", "train", *TINY, "--device", "cpu", "--run-dir", str(root / "run3"), "--text-encoder", enc,
        "--max-steps", "2")
    _ok("--quiet", "train", *TINY, "--device", "cpu", "--run-dir", str(root / "run2"), "--text-encoder", enc,
        "--max-steps", "2", "--stage-num", "2")
    _ok("export", str(root / "run3"), str(root / "pipe"))
    _ok("--quiet", "data", "info", *TINY)
    _ok("plot-losses", str(root / "run3"), "--out", str(root / "losses.png"))  # also fills matplotlib's font cache
    checkpoint = "checkpoints/step-00000002"

    # A stage-3 run whose checkpoint (with its own, consistent sidecar) comes from the stage-2 run.
    shutil.copytree(root / "run3", root / "mixed")
    for suffix in (".safetensors", ".json"):
        shutil.copy(root / "run2" / f"{checkpoint}{suffix}", root / "mixed" / f"{checkpoint}{suffix}")
    # Stage-2 weights behind a stage-3 sidecar whose hash was fixed up to match them.
    shutil.copytree(root / "run3", root / "forged-ckpt")
    shutil.copy(root / "run2" / f"{checkpoint}.safetensors", root / "forged-ckpt" / f"{checkpoint}.safetensors")
    meta = json.loads((root / "forged-ckpt" / f"{checkpoint}.json").read_text())
    meta["sha256"] = hashlib.sha256((root / "forged-ckpt" / f"{checkpoint}.safetensors").read_bytes()).hexdigest()
    (root / "forged-ckpt" / f"{checkpoint}.json").write_text(json.dumps(meta))
    # One flipped byte in the only checkpoint.
    shutil.copytree(root / "run3", root / "tampered")
    data = bytearray((root / "tampered" / f"{checkpoint}.safetensors").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (root / "tampered" / f"{checkpoint}.safetensors").write_bytes(bytes(data))
    # Pipelines whose generator.safetensors has a forged header (hashes updated, so the parser itself is hit).
    huge_tensor = json.dumps({"w": {"dtype": "F32", "shape": [10**9], "data_offsets": [0, 4 * 10**9]}}).encode()
    for name, content in {
        "pipe-huge-header": struct.pack("<Q", 2**62) + b"{}",  # the 8-byte prefix claims a 4 EiB header
        "pipe-bad-offsets": struct.pack("<Q", len(huge_tensor)) + huge_tensor + bytes(64),  # 4 GB of data in 64 bytes
    }.items():
        shutil.copytree(root / "pipe", root / name)
        (root / name / "generator.safetensors").write_bytes(content)
        _rehash(root / name)
    # A run whose stats.jsonl is garbage only.
    (root / "garbage-run").mkdir()
    (root / "garbage-run" / "stats.jsonl").write_bytes(b"\x00\xffgarbage\n{not json\n[1, 2]\n\"step\"\n")

    # Data folders: CUB layout variants (a good one decoded once, so the cache looks used), a folder-layout
    # folder, an empty one, plain files.
    _ok("--quiet", "data", "info", *TINY, "--dataset", "cub", "--data-dir", str(make_layout(root / "cub-good")))
    make_layout(root / "cub-truncated")
    jpeg = root / "cub-truncated" / "birds" / "CUB_200_2011" / "images" / "001.Black_footed_Albatross"
    first = sorted(jpeg.iterdir())[0]
    first.write_bytes(first.read_bytes()[: first.stat().st_size // 2])
    make_layout(root / "cub-evil-pickle")
    (root / "cub-evil-pickle" / "birds" / "train" / "filenames.pickle").write_bytes(
        pickle.dumps(_RunsACommand(root / MARKER), protocol=2)
    )
    make_layout(root / "cub-wrong-shapes")
    (root / "cub-wrong-shapes" / "birds" / "train" / "char-CNN-RNN-embeddings.pickle").write_bytes(
        pickle.dumps(np.zeros((4, 1024), np.float32), protocol=2)
    )
    folder = root / "folder-layout"
    folder.mkdir()
    Image.new("RGB", (40, 40), "red").save(folder / "bird.jpg")
    (folder / "bird.txt").write_text("a red bird\n")
    png_text = root / "png-is-text"
    png_text.mkdir()
    (png_text / "bird.png").write_text("this is not a picture, only text pretending to be one\n")
    (png_text / "bird.txt").write_text("a red bird\n")
    (root / "empty").mkdir()
    (root / "a-file.txt").write_text("a regular file, not a directory\n")
    (root / "unknown-keys.toml").write_text("[model]\nstage_num = 2\nwings = 3\n\n[optimiser]\nlr = 1\n")
    (root / "wrong-types.toml").write_text('[train]\nepochs = "many"\nbatch_size = [8]\n')


@pytest.fixture(scope="module")
def ws(tmp_path_factory, text_encoder_dir) -> Workspace:
    root = tmp_path_factory.mktemp("hostile")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(root / "cache"))
        patch.chdir(root)
        _build(root, text_encoder_dir)
    return Workspace(root, text_encoder_dir)


def snapshot(*roots: Path) -> dict[str, tuple[object, ...]]:
    """Every folder and file under ``roots``: folders by name, files by (size, mtime_ns, SHA-256)."""
    tree: dict[str, tuple[object, ...]] = {}
    for root in roots:
        for path in sorted(root.rglob("*")):
            if path.is_dir():
                tree[str(path)] = ("dir",)
            else:
                stat = path.lstat()
                digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "special"
                tree[str(path)] = (stat.st_size, stat.st_mtime_ns, digest)
    return tree


def case(name: str, code: int, *args: str) -> object:
    return pytest.param(list(args), code, id=name)


# Arguments name fixtures as {name} (a path inside the workspace) and {enc} (the text encoder).
PIPE = ["--model", "{pipe}", "--device", "cpu"]
CASES = [
    # sample: prompts
    case("sample-empty-prompt", 1, "sample", "", *PIPE),
    case("sample-whitespace-prompt", 1, "sample", " \t \n ", *PIPE),
    case("sample-emoji-only-prompt", 1, "sample", "\U0001f426\U0001f99c\U0001f424", *PIPE),
    case("sample-control-characters", 1, "sample", "a small\x00red\x1b[2J bird\x07", *PIPE),
    case("sample-100kB-prompt", 1, "sample", PROMPT_100KB, *PIPE),
    case("sample-no-prompt", 2, "sample", *PIPE),
    case("sample-missing-prompts-file", 2, "sample", "--prompts-file", "{no-such-prompts.txt}", *PIPE),
    # sample: counts, seeds, outputs
    case("sample-num-images-0", 2, "sample", "a small red bird", "--num-images", "0", *PIPE),
    case("sample-num-images-10000", 2, "sample", "a small red bird", "--num-images", "10000", *PIPE),
    case("sample-negative-seed", 2, "sample", "a small red bird", "--seed", "-1", *PIPE),
    case("sample-out-under-a-file", 2, "sample", "a small red bird", "--out", "{a-file.txt}/samples", *PIPE),
    case("sample-out-under-proc", 1, "sample", "a small red bird", "--out", "/proc/stackgan2-samples", *PIPE),
    # sample: models
    case("sample-model-not-a-model", 1, "sample", "a small red bird", "--model", "{empty}", "--device", "cpu"),
    case("sample-forged-header-length", 1, "sample", "a small red bird", "--model", "{pipe-huge-header}"),
    case("sample-forged-header-offsets", 1, "sample", "a small red bird", "--model", "{pipe-bad-offsets}"),
    case("sample-stage2-weights-stage3-sidecar", 1, "sample", "a small red bird", "--model",
         "{forged-ckpt}/checkpoints/step-00000002.safetensors"),
    case("sample-tampered-checkpoint", 1, "sample", "a small red bird", "--model",
         "{tampered}/checkpoints/step-00000002.safetensors"),
    case("sample-pickle-as-model", 1, "sample", "a small red bird", "--model",
         "{cub-evil-pickle}/birds/train/filenames.pickle"),
    # interpolate
    case("interpolate-steps-0", 2, "interpolate", "a red bird", "a blue bird", "--steps", "0", *PIPE),
    case("interpolate-empty-start", 1, "interpolate", "", "a blue bird", *PIPE),
    case("interpolate-out-under-a-file", 2, "interpolate", "a red bird", "a blue bird", "--out",
         "{a-file.txt}/strip.png", *PIPE),
    # train: options and config files
    case("train-stage-num-0", 2, "train", *TINY, "--stage-num", "0"),
    case("train-stage-num-5", 2, "train", *TINY, "--stage-num", "5"),
    case("train-stage-num-negative", 2, "train", *TINY, "--stage-num", "-1"),
    case("train-stage-num-three", 2, "train", *TINY, "--stage-num", "three"),
    case("train-epochs-0", 2, "train", *TINY, "--epochs", "0"),
    case("train-batch-size-0", 2, "train", *TINY, "--batch-size", "0"),
    case("train-config-unknown-keys", 2, "train", *TINY, "--config", "{unknown-keys.toml}"),
    case("train-config-wrong-types", 2, "train", *TINY, "--config", "{wrong-types.toml}"),
    case("train-config-missing", 2, "train", *TINY, "--config", "{no-such.toml}"),
    # train: things found only once the data and the run directory are read
    case("train-huge-batch", 1, "train", *TINY, "--device", "cpu", "--text-encoder", "{enc}", "--batch-size", "100000"),
    case("train-missing-data-dir", 1, "train", *TINY, "--dataset", "cub", "--data-dir", "{no-such-data}"),
    case("train-empty-folder-data", 1, "train", *TINY, "--dataset", "folder", "--data-dir", "{empty}"),
    case("train-missing-text-encoder", 1, "train", *TINY, "--device", "cpu", "--text-encoder", "{no-such-encoder}"),
    case("train-resume-other-stage-num", 1, "train", *TINY, "--device", "cpu", "--run-dir", "{mixed}", "--resume"),
    case("train-resume-nothing-to-resume", 2, "train", *TINY, "--run-dir", "{empty}", "--resume"),
    case("train-run-dir-under-a-file", 1, "train", *TINY, "--device", "cpu", "--text-encoder", "{enc}", "--run-dir",
         "{a-file.txt}/run"),
    # info
    case("info-stage-num-5", 2, "info", "--stage-num", "5"),
    case("info-unknown-preset", 2, "info", "--preset", "huge"),
    case("info-config-unknown-keys", 2, "info", "--config", "{unknown-keys.toml}"),
    # data
    case("data-info-missing-dir", 1, "data", "info", *TINY, "--dataset", "cub", "--data-dir", "{no-such-data}"),
    case("data-info-empty-dir", 1, "data", "info", *TINY, "--dataset", "cub", "--data-dir", "{empty}"),
    case("data-info-wrong-layout", 1, "data", "info", *TINY, "--dataset", "cub", "--data-dir", "{folder-layout}"),
    case("data-info-pickle-runs-a-command", 1, "data", "info", *TINY, "--dataset", "cub", "--data-dir",
         "{cub-evil-pickle}"),
    case("data-info-pickle-wrong-shapes", 1, "data", "info", *TINY, "--dataset", "cub", "--data-dir",
         "{cub-wrong-shapes}"),
    case("data-preview-truncated-jpeg", 1, "data", "preview", *TINY, "--dataset", "cub", "--data-dir",
         "{cub-truncated}"),
    case("data-preview-png-is-text", 1, "data", "preview", *TINY, "--dataset", "folder", "--data-dir", "{png-is-text}"),
    case("data-preview-bad-split", 2, "data", "preview", *TINY, "--split", "validation"),
    case("data-preview-out-under-a-file", 2, "data", "preview", *TINY, "--out", "{a-file.txt}/preview.png"),
    # plot-losses, check, export
    case("plot-losses-garbage-stats", 1, "plot-losses", "{garbage-run}"),
    case("plot-losses-no-runs", 1, "plot-losses"),
    case("plot-losses-out-under-proc", 1, "plot-losses", "{run3}", "--out", "/proc/losses.png"),
    case("check-tampered-run", 1, "check", "{tampered}"),
    case("check-not-a-run", 1, "check", "{empty}"),
    case("export-not-a-run", 1, "export", "{folder-layout}", "{exported}"),
    case("export-out-under-a-file", 2, "export", "{run3}", "{a-file.txt}/exported"),
    # eval, train-classifier, pretrain-text
    case("eval-missing-classifier", 1, "eval", *PIPE, "--classifier", "{no-such-classifier}", "--num-samples", "10"),
    case("eval-missing-inception-weights", 1, "eval", *PIPE, "--inception-weights", "{no-such-weights.pth}",
         "--metrics", "fid", "--num-samples", "8"),
    case("eval-unknown-metric", 2, "eval", *PIPE, "--metrics", "beauty"),
    case("train-classifier-epochs-0", 2, "train-classifier", *TINY, "--epochs", "0"),
    case("pretrain-text-epochs-0", 2, "pretrain-text", *TINY, "--epochs", "0"),
]


def _expand(arg: str, ws: Workspace) -> str:
    if arg == "{enc}":
        return str(ws.text_encoder)
    if arg.startswith("{") and "}" in arg:
        name, rest = arg[1:].split("}", 1)
        return ws[name] + rest
    return arg


@pytest.mark.parametrize("args, code", CASES)
def test_bad_input_fails_cleanly_and_touches_nothing(ws: Workspace, monkeypatch, args: list[str], code: int) -> None:
    monkeypatch.chdir(ws.root)
    monkeypatch.setenv("XDG_CACHE_HOME", str(ws.root / "cache"))
    before = snapshot(ws.root, ws.text_encoder)
    result = CliRunner().invoke(app, [_expand(arg, ws) for arg in args])
    after = snapshot(ws.root, ws.text_encoder)

    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert not (ws.root / MARKER).exists()
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(path for path in set(before) & set(after) if before[path] != after[path])
    assert (added, removed, changed) == ([], [], [])
