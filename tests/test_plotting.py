"""stats.jsonl reading (partial and garbage lines), smoothing, the summary and the loss PNG."""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stackgan2.errors import DataError, UsageError
from stackgan2.plotting import loss_terms, plot_losses, read_stats, smooth, stage_count, summarize


def synthetic_record(step: int, stages: int = 3) -> dict[str, float]:
    record = {"step": step, "epoch": step / 8, "KL": 1.0 / step, "color": 0.0, "G/total": 10.0 - step / 10}
    for i in range(stages):
        record |= {f"D{i}/real": 1.0, f"D{i}/wrong": 1.0, f"D{i}/fake": 1.0, f"D{i}/total": 3.0 + math.sin(step + i)}
        record |= {f"G{i}/cond": 2.0 + i, f"G{i}/uncond": 1.0 + i}
    return record | {"G/adversarial": 9.0, "lr_g": 2e-4, "lr_d": 2e-4, "sec_per_step": 0.1, "time": 1.7e9 + step}


def write_stats(path: Path, steps: int, tail: str = "") -> Path:
    path.write_text("".join(json.dumps(synthetic_record(s)) + "\n" for s in range(1, steps + 1)) + tail)
    return path


def test_partial_last_line_is_tolerated(tmp_path):
    stats = write_stats(tmp_path / "stats.jsonl", 20, tail='{"step": 21, "epoch": 2.6, "D0/to')
    records = read_stats(stats)
    assert [r["step"] for r in records] == list(range(1, 21))
    assert records[0]["D1/total"] == pytest.approx(3.0 + math.sin(2))


def test_malformed_middle_lines_are_skipped_with_a_warning(tmp_path):
    lines = [json.dumps(synthetic_record(1)), "garbage", "[1, 2]", '{"epoch": 1}', json.dumps(synthetic_record(2)), ""]
    (tmp_path / "stats.jsonl").write_text("\n".join(lines))
    messages: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = logging.getLogger("stackgan2.plotting")
    logger.addHandler(handler)
    try:
        records = read_stats(tmp_path / "stats.jsonl")
    finally:
        logger.removeHandler(handler)
    assert [r["step"] for r in records] == [1, 2]
    assert messages == [f"skipped 3 malformed line(s) in {tmp_path / 'stats.jsonl'} (first: line 2)"]


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "is empty"),
        ("\n\n", "is empty"),
        ("not json at all\n\x00\x01\x02\n", "holds no valid record"),
        ('{"loss": 1.0}\n', "holds no valid record"),
        ('{"step": 1, "epoch": 0.1, "D0/to', "holds no valid record"),  # only a partial line so far
    ],
)
def test_empty_or_garbage_stats_are_data_errors(tmp_path, content, message):
    (tmp_path / "stats.jsonl").write_text(content)
    with pytest.raises(DataError, match=message) as info:
        read_stats(tmp_path / "stats.jsonl")
    assert "\n" not in str(info.value)


def test_missing_stats_file(tmp_path):
    with pytest.raises(DataError, match="stats file not found"):
        read_stats(tmp_path / "stats.jsonl")


def test_smooth_is_a_trailing_mean_that_skips_non_finite_values():
    np.testing.assert_allclose(smooth(np.array([1.0, 2.0, 3.0, 4.0]), 2), [1.0, 1.5, 2.5, 3.5])
    np.testing.assert_allclose(smooth(np.array([1.0, math.nan, 3.0, math.inf, 5.0]), 2), [1.0, 1.0, 3.0, 3.0, 5.0])
    np.testing.assert_allclose(smooth(np.array([2.0, 4.0]), 1), [2.0, 4.0])
    assert np.isnan(smooth(np.array([math.nan, 1.0]), 1)[0])
    with pytest.raises(UsageError, match="window"):
        smooth(np.array([1.0]), 0)


def test_terms_and_summary(tmp_path):
    records = read_stats(write_stats(tmp_path / "stats.jsonl", 16))
    assert stage_count(records) == 3
    assert loss_terms(records) == [
        "D0/total", "D1/total", "D2/total", "G0/cond", "G0/uncond", "G1/cond", "G1/uncond", "G2/cond", "G2/uncond",
        "G/adversarial", "KL", "color", "G/total",
    ]
    summary = summarize(records)
    assert (summary.records, summary.steps, summary.epochs) == (16, 16, 2.0)
    terms = {term.name: term for term in summary.terms}
    assert terms["KL"].last == pytest.approx(1 / 16) and terms["KL"].best == pytest.approx(1 / 16)
    best_step = min(range(1, 17), key=lambda s: math.sin(s))
    assert terms["D0/total"].best == pytest.approx(3 + math.sin(best_step))
    assert terms["D0/total"].best_epoch == pytest.approx(best_step / 8)
    assert terms["G/total"].last == pytest.approx(8.4)
    # the feature D's terms, when logged, follow the stage Ds' (train.feature_d_coef)
    with_f = [{**r, "F/total": 1.0, "G/feature_d": 2.0} for r in records]
    assert loss_terms(with_f)[3:4] == ["F/total"] and "G/feature_d" in loss_terms(with_f)


@pytest.mark.parametrize("log_y", [False, True])
def test_plot_writes_a_png_of_the_expected_size(tmp_path, log_y):
    records = read_stats(write_stats(tmp_path / "stats.jsonl", 40, tail='{"step": 4'))
    out = plot_losses(records, tmp_path / "plots" / "losses.png", window=5, log_y=log_y, title="toy")
    assert out == tmp_path / "plots" / "losses.png"
    with Image.open(out) as image:
        image.verify()
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size == (1200, 800)
        pixels = np.asarray(image.convert("L"))
    assert pixels.min() < 100 and pixels.max() > 200  # something was drawn on a light background
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["losses.png"]  # no temp file left


def test_plot_with_a_single_stage_and_missing_terms(tmp_path):
    records = [{"step": 1.0, "epoch": 0.5, "D0/total": 1.0, "G0/cond": 2.0}]
    out = plot_losses(records, tmp_path / "one.png")
    assert Image.open(out).size == (1200, 800)


def test_plot_refuses_a_directory_as_output(tmp_path):
    records = read_stats(write_stats(tmp_path / "stats.jsonl", 3))
    with pytest.raises(UsageError, match="is a directory"):
        plot_losses(records, tmp_path)


def test_importing_plotting_does_not_import_matplotlib():
    code = "import sys, stackgan2.plotting; print('matplotlib' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
