"""Loss curves of a training run: read ``stats.jsonl``, summarise it and draw one PNG.

Works on a run that is still training: a partially written last line is ignored, other malformed
lines are skipped with a warning. matplotlib is imported inside ``plot_losses`` only and draws on a
bare ``Figure`` (Agg, no pyplot state), so importing this module stays cheap.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stackgan2.errors import DataError, UsageError
from stackgan2.io import atomic_save

log = logging.getLogger("stackgan2.plotting")

FIGSIZE = (12.0, 8.0)   # inches; at DPI 100 the PNG is 1200 x 800 px
DPI = 100
_STAGE = re.compile(r"^D(\d+)/total$")

Record = dict[str, float]


@dataclass(frozen=True)
class TermSummary:
    name: str
    last: float
    best: float          # the smallest finite value
    best_epoch: float


@dataclass(frozen=True)
class StatsSummary:
    records: int
    steps: int           # step of the last record
    epochs: float        # epoch of the last record
    terms: list[TermSummary]


def read_stats(path: Path) -> list[Record]:
    """The numeric fields of every valid record of ``stats.jsonl``; ``DataError`` if there is none."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"stats file not found: {path} (a run directory holds stats.jsonl once training has logged a step)")
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.splitlines()
    records: list[Record] = []
    bad: list[int] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        record = _parse(line)
        if record is not None:
            records.append(record)
        elif number < len(lines) or text.endswith("\n"):  # an unterminated last line is still being written
            bad.append(number)
    if not records:
        what = "is empty" if not text.strip() else "holds no valid record (JSON objects with 'step' and 'epoch')"
        raise DataError(f"stats file {path} {what}; nothing to plot")
    if bad:
        log.warning("skipped %d malformed line(s) in %s (first: line %d)", len(bad), path, bad[0])
    return records


def _parse(line: str) -> Record | None:
    try:
        raw = json.loads(line)
    except json.JSONDecodeError:
        return None
    if not isinstance(raw, dict):
        return None
    record = {k: float(v) for k, v in raw.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    return record if "step" in record and "epoch" in record else None


def stage_count(records: list[Record]) -> int:
    """Number of branches, from the ``D<i>/total`` keys."""
    stages = {int(m.group(1)) for record in records for key in record if (m := _STAGE.match(key))}
    return max(stages) + 1 if stages else 0


def loss_terms(records: list[Record]) -> list[str]:
    """The loss keys present in ``records``, in display order."""
    stages = range(stage_count(records))
    ordered = [f"D{i}/total" for i in stages] + [f"D{i}/{t}" for i in stages for t in ("ma_gp", "recon")] + ["F/total", "A/total", "Wd/total"]
    ordered += [f"G{i}/{part}" for i in stages for part in ("cond", "uncond")]
    ordered += ["G/adversarial", "G/feature_d", "G/word_d", "KL", "color", "DAMSM/word", "DAMSM/sentence", "DAMSM/swap", "mode_seeking", "G/total"]
    present = {key for record in records for key in record}
    return [key for key in ordered if key in present]


def series(records: list[Record], key: str) -> np.ndarray:
    """Values of ``key`` per record (NaN where a record lacks it)."""
    return np.array([record.get(key, math.nan) for record in records], dtype=np.float64)


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average over ``window`` records, skipping non-finite values (same length)."""
    if window < 1:
        raise UsageError(f"smoothing window must be >= 1, got {window}")
    finite = np.isfinite(values)
    sums = np.concatenate([[0.0], np.cumsum(np.where(finite, values, 0.0))])
    counts = np.concatenate([[0], np.cumsum(finite)])
    end = np.arange(1, len(values) + 1)
    start = np.maximum(0, end - window)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (sums[end] - sums[start]) / (counts[end] - counts[start])


def summarize(records: list[Record]) -> StatsSummary:
    """Last and best (smallest) value of every loss term, with the epoch of the best."""
    epochs = series(records, "epoch")
    terms = []
    for key in loss_terms(records):
        values = series(records, key)
        finite = np.flatnonzero(np.isfinite(values))
        if finite.size:
            best = int(finite[np.argmin(values[finite])])
            terms.append(TermSummary(key, float(values[finite[-1]]), float(values[best]), float(epochs[best])))
    return StatsSummary(len(records), int(records[-1]["step"]), float(records[-1]["epoch"]), terms)


def plot_losses(records: list[Record], out: Path, window: int = 25, log_y: bool = False, title: str = "") -> Path:
    """Write a 2x2 PNG (D per stage, G adversarial per stage, KL, colour and DAMSM) over epochs, raw and smoothed."""
    out = Path(out)
    if out.is_dir():
        raise UsageError(f"output path {out} is a directory; pass a file name such as {out / 'losses.png'}")
    from matplotlib.figure import Figure

    stages = range(stage_count(records))
    panels = [
        ("discriminator loss per stage (F: feature D, Wd: word D, when on)",
         [(f"D{i}/total", i, "-") for i in stages] + [("F/total", len(stages), "-"), ("Wd/total", len(stages) + 1, "-")]),
        ("generator adversarial loss per stage (cond solid, uncond dashed)",
         [(f"G{i}/{part}", i, style) for i in stages for part, style in (("cond", "-"), ("uncond", "--"))]
         + [("G/feature_d", len(stages), "-"), ("G/word_d", len(stages) + 1, "-")]),
        ("KL (conditioning augmentation)", [("KL", 0, "-")]),
        ("colour consistency, DAMSM (word, sentence), mode seeking; unweighted",
         [("color", 0, "-"), ("DAMSM/word", 1, "-"), ("DAMSM/sentence", 2, "-"), ("DAMSM/swap", 3, "-"),
          ("mode_seeking", 4, "-")]),
    ]
    epochs = series(records, "epoch")
    summary = summarize(records)
    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    fig.suptitle(f"{title + ': ' if title else ''}{summary.steps} steps, {summary.epochs:.2f} epochs (smoothing {window})")
    for ax, (name, lines) in zip(fig.subplots(2, 2).flat, panels, strict=True):
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        plotted = [(key, colour, style, series(records, key)) for key, colour, style in lines]
        plotted = [item for item in plotted if np.isfinite(item[3]).any()]
        for key, colour, style, values in plotted:
            ax.plot(epochs, values, color=f"C{colour}", linestyle=style, linewidth=0.8, alpha=0.3)
            ax.plot(epochs, smooth(values, window), color=f"C{colour}", linestyle=style, linewidth=1.6, label=key)
        if not plotted:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="grey")
            continue
        ax.legend(fontsize=8, loc="upper right")
        finite = np.concatenate([values[np.isfinite(values)] for *_, values in plotted])
        if not finite.any():
            ax.text(0.5, 0.6, "all zero (term switched off)", ha="center", transform=ax.transAxes, color="grey")
        elif log_y:
            ax.set_yscale("log" if (finite > 0).all() else "symlog")
    atomic_save(out, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI))
    return out
