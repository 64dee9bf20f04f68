"""Train a config for a fixed CPU budget, then measure whether it draws the prompted colours.

    python benchmarks/quality.py --name baseline64 --minutes 10 -- --preset toy --stage-num 1
    python benchmarks/quality.py --name proj64 --minutes 10 --eval-at 5 -- --preset toy --stage-num 1 --d-projection
    python benchmarks/quality.py --name attn --iterations 600 --metrics attributes,r-precision \
        --text-encoder runs/te-damsm -- --preset attngan-toy     # a fixed iteration count instead of a clock
    python benchmarks/quality.py --table runs/quality     # the rows so far as a markdown table

Everything after ``--`` goes to ``stackgan2 train`` unchanged (preset, stage count, levers). The
script adds ``--run-dir RUNS/NAME``, ``--text-encoder`` (default: the shipped model's encoder, so
that text pretraining is not part of the budget and every row is conditioned on the same sentence
embeddings), ``--seed 0`` and ``--workers 0`` unless given, and an iteration cap it never reaches.

The budget clock starts when the run writes its first ``stats.jsonl`` record (after the data,
caption encoding and the first ``log_every`` iterations), so start-up is not counted and every row
gets the same few iterations of slack. At each ``--eval-at`` minute and at ``--minutes`` the run is
stopped with SIGTERM (the trainer saves a checkpoint at the step it is on), every generator branch
of G_ema is judged with ``stackgan2 eval --metrics attributes,fid`` (the same ``--num-samples``
toy-birds test captions and noise seeds for every row, judged by the shipped toy-birds classifier;
FID in its feature space), and the run is continued with ``--resume`` (exact) until the budget is
spent. Prints one JSON line and writes it to ``RUNS/NAME/quality.json``.

``--metrics`` chooses what ``stackgan2 eval`` computes per branch (default ``attributes,fid``);
``r-precision`` (AttnGAN's protocol, mean ± std over folds) is judged by the DAMSM encoders of
``--text-encoder``, which must then hold the image encoder (``stackgan2 pretrain-text`` saves it), so
that every row is scored in the same DAMSM space; ``diversity`` adds the diversity ratio per prompt
(``stackgan2 eval``: 4 seeds per prompt against real birds of the prompt's colours; near 0 = the
generator ignores its noise). ``--iterations N`` replaces the clock: the run trains
exactly N iterations (``--max-steps N``) and is judged once; its seconds are still reported.

Run one study row at a time on an otherwise idle core, e.g. ``taskset -c 0 env OMP_NUM_THREADS=1``:
two CPU jobs at once slow each other several-fold (docs/performance.md).
"""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from stackgan2.metrics.evaluate import evaluate_model
from stackgan2.pipeline import default_model
from stackgan2.training.checkpoint import latest_checkpoint

NEVER = 10**9  # an iteration cap the budget always stops first


def _has(args: list[str], flag: str) -> bool:
    return any(a == flag or a.startswith(flag + "=") for a in args)


def train_command(run_dir: Path, train_args: list[str], text_encoder: Path, resume: bool,
                  max_steps: int = NEVER) -> list[str]:
    """The ``stackgan2 train`` command line of one training segment."""
    cmd = [sys.executable, "-m", "stackgan2.cli", "--quiet", "train", *train_args, "--run-dir", str(run_dir),
           "--max-steps", str(max_steps)]
    if not _has(train_args, "--text-encoder") and not _has(train_args, "--init-from"):
        cmd += ["--text-encoder", str(text_encoder)]
    for flag, value in (("--seed", "0"), ("--workers", "0")):
        if not _has(train_args, flag):
            cmd += [flag, value]
    return cmd + (["--resume"] if resume else [])


def _stats_lines(path: Path) -> int:
    try:
        with path.open("rb") as f:
            return sum(1 for _ in f)
    except FileNotFoundError:
        return 0


def train_segment(cmd: list[str], stats: Path, seconds: float) -> float:
    """Run one training segment for ``seconds`` of budget; returns the budget it used.

    The clock starts at the segment's first new ``stats.jsonl`` record. Raises if training ends on its own.
    """
    before = _stats_lines(stats)
    proc = subprocess.Popen(cmd)
    try:
        while _stats_lines(stats) <= before:
            if proc.poll() is not None:
                raise RuntimeError(f"training exited with status {proc.returncode} before its first record: "
                                   + shlex.join(cmd))
            time.sleep(0.2)
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            if proc.poll() is not None:
                raise RuntimeError(f"training ended by itself (status {proc.returncode}): " + shlex.join(cmd))
            time.sleep(0.2)
        used = time.perf_counter() - start
        proc.send_signal(signal.SIGTERM)  # the trainer finishes its step, saves a checkpoint and exits
        proc.wait()
        return used
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def train_to(cmd: list[str], stats: Path) -> float:
    """Run a training command with its own ``--max-steps`` to the end; returns the seconds from its first
    new ``stats.jsonl`` record (as ``train_segment`` counts them)."""
    before = _stats_lines(stats)
    proc = subprocess.Popen(cmd)
    start = None
    while proc.poll() is None:
        if start is None and _stats_lines(stats) > before:
            start = time.perf_counter()
        time.sleep(0.2)
    if proc.returncode != 0:
        raise RuntimeError(f"training exited with status {proc.returncode}: " + shlex.join(cmd))
    return time.perf_counter() - start if start is not None else 0.0


METRICS = ("attributes", "fid", "r-precision", "diversity")


def judge(run_dir: Path, num_samples: int, seed: int, metrics: list[str] | None = None,
          text_encoder: Path | None = None, classifier: Path | None = None) -> dict[str, dict[str, float | None]]:
    """``metrics`` (default attribute accuracy and classifier-feature FID) of every branch of the run's
    latest checkpoint; R-precision is judged by the DAMSM encoders of ``text_encoder``; attributes, FID and
    diversity by ``classifier`` (default: the shipped toy-birds classifier)."""
    from stackgan2.pipeline import Text2ImagePipeline

    metrics = metrics or ["attributes", "fid"]
    branches = Text2ImagePipeline.from_pretrained(run_dir, device="cpu").config.model.resolutions
    out: dict[str, dict[str, float | None]] = {}
    for branch, size in enumerate(branches):
        report = evaluate_model(run_dir, metrics=metrics, num_samples=num_samples, seed=seed, branch=branch,
                                device="cpu", text_encoder=text_encoder if "r-precision" in metrics else None,
                                classifier=classifier)
        scores = report["metrics"]
        row: dict[str, float | None] = {}
        if "attributes" in metrics:
            acc = scores["attribute_accuracy"]
            per = acc["per_attribute"]
            row.update(body=per["body_color"]["generated"], wing=per["wing_color"]["generated"],
                       wing_where_named=per["wing_color"].get("generated_where_named"), both=acc["generated"])
        if "fid" in metrics:
            row["fid"] = scores["fid"]
        if "r-precision" in metrics:
            rp = scores["r_precision"]
            row.update(r_precision=rp["mean"], r_precision_std=rp["std"], r_precision_folds=rp["folds"])
        if "diversity" in metrics:
            row.update({key: scores[key] for key in ("diversity", "diversity_real", "diversity_ratio")})
        out[f"{size}px"] = row
    return out


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def table(paths: list[Path]) -> str:
    """Markdown rows (one per evaluation) from ``quality.json`` files: the docs/quality.md table."""
    lines = ["| row | flags | minutes | iterations | branch | body % | wing % (where named) | both % | FID "
             "| R-precision % | diversity ratio |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for path in paths:
        row = json.loads(path.read_text(encoding="utf-8"))
        flags = " ".join(row["config"])
        for ev in row["evals"]:
            for branch, m in ev["branches"].items():
                fid = "-" if m.get("fid") is None else f"{m['fid']:.0f}"
                rp = ("-" if m.get("r_precision") is None
                      else f"{100 * m['r_precision']:.1f} ± {100 * m['r_precision_std']:.1f}")
                ratio = "-" if m.get("diversity_ratio") is None else f"{m['diversity_ratio']:.2f}"
                lines.append(f"| {row['name']} | `{flags}` | {ev['minutes']:g} | {ev['iterations']} | {branch} | "
                             f"{_pct(m.get('body'))} | {_pct(m.get('wing'))} ({_pct(m.get('wing_where_named'))}) | "
                             f"{_pct(m.get('both'))} | {fid} | {rp} | {ratio} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--table"]:
        paths = sorted((p for d in argv[1:] for p in Path(d).glob("*/quality.json")), key=lambda p: p.stat().st_mtime)
        print(table(paths))
        return None
    if "--" in argv:
        split = argv.index("--")
        own, train_args = argv[:split], argv[split + 1 :]
    else:
        own, train_args = argv, []
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="row name; the run goes to RUNS/NAME")
    parser.add_argument("--minutes", type=float, default=10.0, help="training budget in minutes (the clock, see above)")
    parser.add_argument("--eval-at", default="", help="comma-separated earlier minutes to evaluate at (time-to-accuracy)")
    parser.add_argument("--num-samples", type=int, default=500, help="generated images per branch and evaluation")
    parser.add_argument("--eval-seed", type=int, default=0, help="noise seed of the evaluation (sample i: seed + i)")
    parser.add_argument("--runs", type=Path, default=Path("runs/quality"), help="parent directory of the study's runs")
    parser.add_argument("--text-encoder", type=Path, default=None,
                        help="fixed pretrained text encoder (default: the shipped toy-birds model's)")
    parser.add_argument("--extend", action="store_true",
                        help="continue the finished row NAME (its flags, its clock) up to --minutes, adding evaluations")
    parser.add_argument("--metrics", default="attributes,fid",
                        help=f"comma-separated metrics of stackgan2 eval per branch, of {', '.join(METRICS)}")
    parser.add_argument("--classifier", type=Path, default=None,
                        help="attribute classifier that judges the row (default: the shipped toy-birds classifier; "
                        "e.g. one trained with --toy-framing bird for a bird-framed row)")
    parser.add_argument("--iterations", type=int, default=None,
                        help="train exactly this many iterations instead of --minutes, then judge once")
    args = parser.parse_args(own)
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    if not metrics or not set(metrics) <= set(METRICS):
        parser.error(f"--metrics: choose from {', '.join(METRICS)}, got {args.metrics!r}")
    if args.iterations is not None and (args.iterations < 1 or args.extend or args.eval_at or _has(train_args, "--max-steps")):
        parser.error("--iterations: a positive count, without --extend, --eval-at or a --max-steps of train")
    run_dir = args.runs / args.name
    evals, spent, commands = [], 0.0, []
    if args.extend:
        if not (run_dir / "quality.json").is_file():
            parser.error(f"--extend: {run_dir} holds no finished row (quality.json)")
        prior = json.loads((run_dir / "quality.json").read_text(encoding="utf-8"))
        if train_args and train_args != prior["config"]:
            parser.error(f"--extend: the row was trained with {shlex.join(prior['config'])}")
        train_args, evals, spent = prior["config"], prior["evals"], prior["seconds"]
        commands = prior.get("commands", [prior["command"]])
    elif latest_checkpoint(run_dir / "checkpoints") is not None:
        parser.error(f"{run_dir} already holds a run; choose another --name (or --extend it)")
    text_encoder = args.text_encoder or default_model() / "text_encoder"
    if args.extend and args.text_encoder is None and (run_dir / "config.json").is_file():
        # the row's own encoder: the resumed run must be conditioned on the embeddings it started with
        recorded = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))["train"].get("text_encoder")
        text_encoder = Path(recorded) if recorded else text_encoder
    if args.extend and args.classifier is None and prior.get("classifier"):
        args.classifier = Path(prior["classifier"])  # the row's own judge: every evaluation of a row by one classifier
    if "r-precision" in metrics and not (text_encoder / "image_encoder.safetensors").is_file():
        parser.error(f"--metrics r-precision: {text_encoder} holds no DAMSM image encoder; give --text-encoder "
                     "a stackgan2 pretrain-text output")
    if args.iterations is not None:
        return _fixed_iterations(args, run_dir, train_args, text_encoder, metrics, argv)
    marks = sorted({float(m) for m in args.eval_at.split(",") if m.strip()} | {args.minutes})
    marks = [m for m in marks if m * 60 > spent + 1]
    if not marks or marks[0] <= 0 or marks[-1] > args.minutes:
        parser.error(f"--eval-at and --minutes must lie in ({spent / 60:.1f}, {args.minutes}]")

    this = shlex.join(["python", "benchmarks/quality.py", *argv])
    result: dict[str, Any] = {}
    for i, mark in enumerate(marks):
        cmd = train_command(run_dir, train_args, text_encoder, resume=args.extend or i > 0)
        spent += train_segment(cmd, run_dir / "stats.jsonl", mark * 60 - spent)
        checkpoint = latest_checkpoint(run_dir / "checkpoints")
        tick = time.perf_counter()
        branches = judge(run_dir, args.num_samples, args.eval_seed, metrics, text_encoder, args.classifier)
        evals.append({"minutes": mark, "iterations": checkpoint.step, "seconds": round(spent, 1),
                      "eval_seconds": round(time.perf_counter() - tick, 1), "branches": branches})
        result = {
            "name": args.name,
            "config": train_args,
            "iterations": checkpoint.step,
            "seconds": round(spent, 1),
            "branches": branches,
            "evals": evals,
            "num_samples": args.num_samples,
            "classifier": None if args.classifier is None else str(args.classifier),
            "command": commands[0] if commands else this,
            "commands": [*commands, this],
        }
        # Written after every evaluation, so that a row cut short can be continued with --extend.
        (run_dir / "quality.json").write_text(json.dumps(result) + "\n", encoding="utf-8")
    print(json.dumps(result), flush=True)
    return result


def _fixed_iterations(args: argparse.Namespace, run_dir: Path, train_args: list[str], text_encoder: Path,
                      metrics: list[str], argv: list[str]) -> dict[str, Any]:
    """``--iterations N``: one training run of exactly N iterations, judged once."""
    cmd = train_command(run_dir, train_args, text_encoder, resume=False, max_steps=args.iterations)
    spent = train_to(cmd, run_dir / "stats.jsonl")
    checkpoint = latest_checkpoint(run_dir / "checkpoints")
    tick = time.perf_counter()
    branches = judge(run_dir, args.num_samples, args.eval_seed, metrics, text_encoder, args.classifier)
    this = shlex.join(["python", "benchmarks/quality.py", *argv])
    result = {
        "name": args.name, "config": train_args, "iterations": checkpoint.step, "seconds": round(spent, 1),
        "branches": branches, "num_samples": args.num_samples,
        "classifier": None if args.classifier is None else str(args.classifier), "command": this, "commands": [this],
        "evals": [{"minutes": round(spent / 60, 2), "iterations": checkpoint.step, "seconds": round(spent, 1),
                   "eval_seconds": round(time.perf_counter() - tick, 1), "branches": branches}],
    }
    (run_dir / "quality.json").write_text(json.dumps(result) + "\n", encoding="utf-8")
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
