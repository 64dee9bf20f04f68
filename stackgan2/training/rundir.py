"""The run directory contract (docs/training.md, "The run directory"), in one place.

    runs/<name>/
      config.json      resolved ExperimentConfig, written before the first step
      stats.jsonl      one JSON object per logged step
      checkpoints/     step-XXXXXXXX.safetensors + .json
      samples/         epoch-XXXX.png grids of every branch
      text_encoder/    the text encoder used (safetensors + vocab.json + config.json)
      tensorboard/     with train.tensorboard: the same scalars and the sample grids as events
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stackgan2.config import ExperimentConfig
from stackgan2.errors import StackGAN2Error
from stackgan2.io import atomic_write_text


@dataclass(frozen=True)
class RunDir:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def stats(self) -> Path:
        return self.root / "stats.jsonl"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def samples(self) -> Path:
        return self.root / "samples"

    @property
    def text_encoder(self) -> Path:
        return self.root / "text_encoder"

    def sample_grid(self, epoch: int) -> Path:
        return self.samples / f"epoch-{epoch:04d}.png"

    def create(self) -> None:
        for folder in (self.root, self.checkpoints, self.samples):
            folder.mkdir(parents=True, exist_ok=True)

    def remove_stale_temp_files(self) -> list[Path]:
        """Delete temp files left by a process killed mid-write (see ``stackgan2.io``)."""
        stale = [p for folder in (self.root, self.checkpoints, self.samples) for p in folder.glob(".*.tmp")]
        for path in stale:
            path.unlink(missing_ok=True)
        return stale

    def write_config(self, cfg: ExperimentConfig) -> None:
        atomic_write_text(self.config, cfg.to_json())

    def read_config(self) -> ExperimentConfig:
        if not self.config.is_file():
            raise StackGAN2Error(f"{self.root} is not a run directory (no config.json)")
        return ExperimentConfig.from_json(self.config.read_text())

    def append_stats(self, record: dict[str, Any]) -> None:
        with open(self.stats, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
            handle.flush()

    def truncate_stats(self, last_step: int) -> None:
        """Drop records after ``last_step`` (steps redone after a resume) and any partial last line."""
        if not self.stats.is_file():
            return
        kept = []
        for line in self.stats.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and record.get("step", 0) <= last_step:
                kept.append(line)
        atomic_write_text(self.stats, "".join(f"{line}\n" for line in kept))


def latest_run(root: Path = Path("runs")) -> Path:
    """The most recently modified run directory (one with a config.json) under ``root``."""
    runs = [p for p in Path(root).glob("*/config.json")] if Path(root).is_dir() else []
    if not runs:
        raise StackGAN2Error(f"no run directories found under {root}/ (train one with `stackgan2 train`)")
    newest = max(runs, key=lambda p: max(p.stat().st_mtime, (p.parent / "stats.jsonl").stat().st_mtime if (p.parent / "stats.jsonl").exists() else 0))
    return newest.parent
