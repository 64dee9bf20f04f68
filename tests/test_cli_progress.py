"""Progress bars fall back to periodic plain lines when stderr is a file or a pipe (nohup, CI logs)."""

from __future__ import annotations

from stackgan2.cli.common import RichProgress
from stackgan2.progress import ProgressEvent


def _feed(bar: RichProgress, steps: int) -> None:
    for step in range(1, steps + 1):
        bar(ProgressEvent(task="train", completed=step, total=steps, info={"epoch": 0, "D": 1.5}))


def test_redirected_progress_logs_plain_lines(capsys) -> None:
    with RichProgress() as bar:
        assert bar.plain  # pytest captures stderr, so it is not a terminal
        bar.LOG_EVERY_S = 0.0
        _feed(bar, 3)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("train:")]
    assert lines[:3] == ["train: 1/3 epoch=0 D=1.5", "train: 2/3 epoch=0 D=1.5", "train: 3/3 epoch=0 D=1.5"]


def test_short_tasks_print_no_plain_lines(capsys) -> None:
    with RichProgress() as bar:
        _feed(bar, 5)  # well under LOG_EVERY_S: nothing but the final bar
    assert not [line for line in capsys.readouterr().err.splitlines() if line.startswith("train:")]
