"""``stackgan2 data preview`` / ``data info`` on the built-in toy-birds dataset (tiny preset)."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from stackgan2.cli.main import app


def _args(tmp_path: Path) -> list[str]:
    return ["--preset", "tiny", "--cache-dir", str(tmp_path / "cache")]


def test_preview_writes_a_captioned_grid(tmp_path: Path, runner) -> None:
    out = tmp_path / "grid.png"
    result = runner.invoke(app, ["data", "preview", "--out", str(out), "--count", "6", "--columns", "3",
                                 "--size", "64", "--split", "test", *_args(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "6 of 32 toy-birds test images" in " ".join(result.stdout.split())  # rich wraps long lines
    grid = Image.open(out)
    assert grid.size[0] == 3 * (64 + 2 * 4) and grid.size[1] > 2 * 64 + 20


def test_info_reports_counts_and_caption_statistics(tmp_path: Path, runner) -> None:
    result = runner.invoke(app, ["data", "info", "--json", *_args(tmp_path)])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    assert stats["dataset"] == "toy-birds" and stats["num_classes"] == 100
    assert stats["splits"]["train"]["images"] == 64 and stats["splits"]["test"]["captions"] == 320
    assert stats["vocabulary_size"] > 50 and 5 <= stats["caption_words"]["mean"] <= 25
    table = runner.invoke(app, ["data", "info", *_args(tmp_path)])
    assert table.exit_code == 0 and "vocabulary:" in table.stdout and "body_color: red, orange" in table.stdout


def test_bad_split_is_a_usage_error(tmp_path: Path, runner) -> None:
    out = tmp_path / "grid.png"
    result = runner.invoke(app, ["data", "preview", "--split", "val", "--out", str(out), *_args(tmp_path)])
    assert result.exit_code == 2 and "--split must be train or test" in result.stderr
    assert not out.exists()


def test_data_commands_are_listed(runner) -> None:
    result = runner.invoke(app, ["data", "--help"])
    assert result.exit_code == 0 and "preview" in result.stdout and "info" in result.stdout
