"""benchmarks/condition_probe.py, damsm_gap.py and seed_variety.py on a real tiny run: one JSON line per model/branch."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import condition_probe  # noqa: E402
import damsm_gap  # noqa: E402
import numpy as np  # noqa: E402
import seed_variety  # noqa: E402


def test_condition_probe_reports_each_code(tiny_run, capsys):
    assert condition_probe.main(["--model", str(tiny_run), "--train", "40", "--test", "20"]) == 0
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    for name in ("sentence", "mu", "c"):
        assert 0 <= row[f"{name}_body"] <= 1 and 0 <= row[f"{name}_wing"] <= 1
    assert row["mean_sigma"] > 0
    # the sentence embedding is the probe's upper bound on these templated captions
    assert row["sentence_body"] >= row["c_body"] - 0.2
    with pytest.raises(SystemExit):
        condition_probe.main(["--model", str(tiny_run), "--train", "5"])


def test_damsm_gap_judges_every_branch(tiny_run, capsys):
    args = ["--model", str(tiny_run), "--text-encoder", str(tiny_run / "text_encoder"), "--num-prompts", "6"]
    assert damsm_gap.main(args) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [row["branch"] for row in rows] == ["8px", "16px", "32px"]
    assert all(0 <= row[k] <= 1 for row in rows for k in ("classifier_body", "classifier_wing", "damsm_body",
                                                            "damsm_wing"))


def test_seed_variety_counts_the_seeds_that_differ(tiny_run, capsys):
    same = np.array([[0, 0, 0, 0], [1, 1, 1, 1]])
    assert seed_variety.disagreement(same) == 0
    assert seed_variety.disagreement(np.array([[0, 1, 0, 1]])) == 4 / 6  # 4 of the 6 pairs differ
    assert seed_variety.chance_disagreement(np.array([0, 1])) == 0.5
    assert seed_variety.chance_disagreement(np.array([2, 2, 2])) == 0
    args = ["--model", str(tiny_run), "--num-prompts", "3", "--seeds", "3", "--real-images", "40"]
    assert seed_variety.main(args) == 0
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert row["branch"] == "32px" and row["seeds"] == 3
    for name in seed_variety.OPEN:
        assert 0 <= row[name]["disagreement"] <= 1 and 0 < row[name]["real"] < 1
    with pytest.raises(SystemExit):
        seed_variety.main(["--model", str(tiny_run), "--seeds", "1"])
