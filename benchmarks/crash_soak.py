"""Long variant of tests/test_crash_safety.py: SIGKILL `stackgan2 train` many times, resume each time.

    python benchmarks/crash_soak.py --kills 100 --preset tiny --epochs 20 [--ngf 16 --ndf 16]

Prints one JSON object: kills survived, kills that landed while a checkpoint was being written,
checkpoint files found corrupt (must be 0), and whether the final weights equal an uninterrupted run's.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from stackgan2.errors import CheckpointError
from stackgan2.training.checkpoint import list_checkpoints, load_checkpoint, sidecar


def train_command(run: Path, args: argparse.Namespace, resume: bool) -> list[str]:
    cmd = [sys.executable, "-m", "stackgan2.cli", "--quiet", "train", "--preset", args.preset, "--device", "cpu",
           "--run-dir", str(run), "--epochs", str(args.epochs), "--checkpoint-every", "1", "--keep-checkpoints", "2"]
    cmd += ["--text-encoder", str(args.text_encoder)] if args.text_encoder else []
    cmd += ["--ngf", str(args.ngf)] if args.ngf else []
    cmd += ["--ndf", str(args.ndf)] if args.ndf else []
    return cmd + (["--resume"] if resume else [])


def corrupt_files(run: Path) -> int:
    paths = list_checkpoints(run / "checkpoints")
    bad = 0
    for path in paths:
        try:
            if sidecar(path).is_file():
                load_checkpoint(path)
            elif path != paths[-1]:
                bad += 1
            else:
                load_file(str(path))
        except (CheckpointError, OSError, ValueError):
            bad += 1
    return bad


def logged_steps(run: Path) -> int:
    stats = run / "stats.jsonl"
    return stats.read_text().count("\n") if stats.is_file() else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--ngf", type=int)
    parser.add_argument("--ndf", type=int)
    parser.add_argument("--text-encoder", type=Path, help="pretrained encoder dir (default: phase 0 in the run)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="stackgan2-soak-"))
    reference, run = work / "reference", work / "killed"
    subprocess.run(train_command(reference, args, resume=False), check=True, capture_output=True)
    kills = during_write = corrupt = 0
    started = time.time()
    while kills < args.kills:
        resume = bool(list_checkpoints(run / "checkpoints"))
        before = logged_steps(run) if resume else 0
        proc = subprocess.Popen(train_command(run, args, resume), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while proc.poll() is None and logged_steps(run) <= before:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.2))
        if proc.poll() is not None:
            break
        writing = any((run / "checkpoints").glob(".*.tmp"))
        proc.kill()
        proc.wait()
        kills += 1
        during_write += writing
        corrupt += corrupt_files(run)
    final = subprocess.run(train_command(run, args, resume=True), capture_output=True, text=True)
    a = load_file(str(list_checkpoints(reference / "checkpoints")[-1]))
    b = load_file(str(list_checkpoints(run / "checkpoints")[-1]))
    equal = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a if not k.startswith("rng."))
    print(json.dumps({
        "kills_survived": kills,
        "kills_during_checkpoint_write": during_write,
        "corrupt_checkpoint_files": corrupt,
        "files_lost": 0 if final.returncode == 0 else 1,
        "final_weights_equal_uninterrupted": equal,
        "seconds": round(time.time() - started, 1),
        "work_dir": str(work),
    }, indent=1))


if __name__ == "__main__":
    main()
