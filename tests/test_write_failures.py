"""Disk full or permission denied while a checkpoint or an image is written.

The write is made to fail at the library boundary (``safetensors.torch.save_file``, ``PIL.Image.Image.save``,
``matplotlib.figure.Figure.savefig``) after half the bytes reached the disk. The file it was replacing
must stay byte-identical, no temp file may remain, and the CLI must print one clear line and exit 1.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib.figure
import pytest
from PIL import Image
from typer.testing import CliRunner

from stackgan2.cli.main import app

ERRORS = [pytest.param(errno.ENOSPC, id="disk-full"), pytest.param(errno.EACCES, id="permission-denied")]


@dataclass
class FailingWrite:
    """Wraps a write function whose second positional argument is the file it writes.

    Call number ``fail_on`` writes the file, cuts it to half its size and raises ``OSError(code)``;
    ``folder_before`` keeps the other files of that folder (name -> bytes) as they were just before.
    """

    code: int
    fail_on: int = 1
    calls: int = 0
    folder_before: dict[str, bytes] = field(default_factory=dict)

    def wrap(self, real: Callable[..., Any]) -> Callable[..., Any]:
        def write(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if self.calls != self.fail_on:
                return real(*args, **kwargs)
            target = Path(args[1])
            self.folder_before = _files(target.parent, without=target)
            real(*args, **kwargs)
            os.truncate(target, target.stat().st_size // 2)
            raise OSError(self.code, os.strerror(self.code), str(target))

        return write


def _files(folder: Path, without: Path | None = None) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and p != without}


def _invoke(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


def _assert_one_clear_line(result, code: int, target: str) -> None:
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    [line] = [line for line in result.stderr.splitlines() if line.strip()]
    assert line.startswith("error: ") and os.strerror(code) in line and target in line and ".tmp" not in line, line


@pytest.fixture(scope="module")
def run(tmp_path_factory, text_encoder_dir) -> Path:
    """A tiny trained run (2 steps, one checkpoint, stats.jsonl) to sample and plot from."""
    run = tmp_path_factory.mktemp("write-failures") / "run"
    result = _invoke("--quiet", "train", "--preset", "tiny", "--device", "cpu", "--run-dir", run,
                     "--text-encoder", text_encoder_dir, "--max-steps", "2")
    assert result.exit_code == 0, result.output
    return run


@pytest.mark.parametrize("code", ERRORS)
def test_failed_checkpoint_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch, text_encoder_dir, code):
    import stackgan2.training.checkpoint as checkpoint

    run = tmp_path / "run"
    train = ["train", "--preset", "tiny", "--device", "cpu", "--run-dir", run, "--text-encoder", text_encoder_dir,
             "--max-steps", "4", "--checkpoint-every", "2"]
    failing = FailingWrite(code, fail_on=2)
    with monkeypatch.context() as patch:
        patch.setattr(checkpoint, "save_file", failing.wrap(checkpoint.save_file))
        result = _invoke(*train)
    _assert_one_clear_line(result, code, "step-00000004.safetensors")
    assert failing.calls == 2
    assert sorted(failing.folder_before) == ["step-00000002.json", "step-00000002.safetensors"]
    assert _files(run / "checkpoints") == failing.folder_before  # byte-identical, no temp file, nothing new

    verified = _invoke("check", run)
    assert verified.exit_code == 0, verified.output
    resumed = _invoke("--quiet", *train, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert sorted(_files(run / "checkpoints")) == [f"step-0000000{s}.{x}" for s in (2, 4) for x in ("json", "safetensors")]


IMAGE_COMMANDS = {
    "sample": (Image.Image, "save", lambda run, out: ["sample", "a small red bird", "--model", run, "--seed", "0",
                                                       "--device", "cpu", "--out", out]),
    "interpolate": (Image.Image, "save", lambda run, out: ["interpolate", "a red bird", "a blue bird", "--steps", "2",
                                                            "--model", run, "--seed", "0", "--device", "cpu",
                                                            "--out", out / "strip.png"]),
    "data-preview": (Image.Image, "save", lambda run, out: ["data", "preview", "--preset", "tiny", "--count", "4",
                                                             "--out", out / "preview.png"]),
    "plot-losses": (matplotlib.figure.Figure, "savefig", lambda run, out: ["plot-losses", run, "--out",
                                                                            out / "losses.png"]),
}


@pytest.mark.parametrize("code", ERRORS)
@pytest.mark.parametrize("command", IMAGE_COMMANDS)
def test_failed_image_write_keeps_the_previous_png(run, tmp_path, monkeypatch, command, code):
    owner, method, arguments = IMAGE_COMMANDS[command]
    out = tmp_path / "out"
    first = _invoke(*arguments(run, out))
    assert first.exit_code == 0, first.output
    [png] = list(out.iterdir())
    previous = png.read_bytes()

    failing = FailingWrite(code)
    with monkeypatch.context() as patch:
        patch.setattr(owner, method, failing.wrap(getattr(owner, method)))
        result = _invoke(*arguments(run, out))  # the same seed and options: the same file name
    _assert_one_clear_line(result, code, png.name)
    assert failing.calls == 1 and failing.folder_before == {png.name: previous}
    assert _files(out) == {png.name: previous}
