"""Sampling latency from a cold process, printed as JSON.

Every command runs ``--repeats`` times (default 5) as a fresh process, round robin, so that a change in
machine load hits all of them alike; medians are what to compare:

- ``sample_s``: ``stackgan2 sample "a small red bird"`` from process start to exit (the PNG written),
  exactly as a user types it (``--model M`` added only for a model other than the shipped one,
  ``--device D`` only for a device other than auto), each run in a fresh working directory;
- ``help_s``: ``stackgan2 --help`` (start-up cost of the CLI alone);
- ``reference_s``: in the same run, ``python -c "import torch"`` (the floor under ``sample``, but for the
  garbage-collector work that ``sample`` avoids and a bare import does not) and ``python -c pass``
  (interpreter start-up, the floor under ``--help``); ``sample_over_import_torch_s``, the difference of
  the medians, is about the part of ``sample`` this project controls and moves less with machine load;
- ``g_forward_s``: G_ema forward time at 1, 4 and 16 rows, warm, in this process (a lone image used to
  be padded to 4 rows);
- ``load_average_1min`` before and after: wall times are only comparable on an otherwise idle machine.

Wall and CPU (user + sys) seconds are both reported: CPU time barely moves when other processes compete
for the cores, wall time does. ``stackgan2`` is the entry-point script beside this Python (``cli``); a
shim in front of it (pyenv's adds ~50 ms) is not measured.

The model is ``--model``, else the shipped toy-birds model, else an untrained pipeline with the
``--preset`` architecture (weights do not change the timings) saved to a temporary directory.

    python benchmarks/sample_latency.py [--model PATH] [--preset toy] [--repeats 5] [--device auto]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from stackgan2.config import resolve_config
from stackgan2.models import init_weights
from stackgan2.models.stackgan2 import Generator
from stackgan2.pipeline import Text2ImagePipeline, shipped_model_dir
from stackgan2.text import PromptEncoder, TextEncoder, Vocabulary

PROMPT = "a small red bird"


def _cli() -> list[str]:
    script = Path(sys.executable).with_name("stackgan2")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "stackgan2.cli"]


def _run(command: list[str], cwd: Path) -> tuple[float, float]:
    """Wall and CPU seconds of one run of ``command`` in ``cwd``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, cwd=cwd)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def _round_robin(commands: dict[str, list[str]], repeats: int, scratch: Path) -> dict[str, dict[str, list[float]]]:
    """``repeats`` cold runs of every command, one of each in turn, each in a new empty directory;
    a ``sample`` run must leave exactly one PNG there."""
    times: dict[str, dict[str, list[float]]] = {name: {"wall": [], "cpu": []} for name in commands}
    for i in range(repeats):
        for name, command in commands.items():
            cwd = scratch / f"{name}-{i}"
            cwd.mkdir()
            wall, cpu = _run(command, cwd)
            times[name]["wall"].append(wall)
            times[name]["cpu"].append(cpu)
            if name == "sample":
                written = [p.name for p in cwd.rglob("*.png")]
                assert len(written) == 1, f"expected one PNG from {command}, found {written}"
    return times


def _stats(times: list[float]) -> dict[str, float | list[float]]:
    return {"median": round(statistics.median(times), 4), "min": round(min(times), 4), "runs": [round(t, 4) for t in times]}


def untrained_pipeline(preset: str, directory: Path) -> Path:
    """Save a randomly initialised pipeline of ``preset``'s architecture into ``directory``."""
    cfg = resolve_config(preset)
    generator = Generator(cfg.model)
    generator.apply(init_weights)
    vocab = Vocabulary.build([PROMPT, "a large blue bird with black wings and a short yellow beak"])
    encoder = PromptEncoder(vocab, TextEncoder(len(vocab), cfg.text.word_dim, cfg.text.dim), cfg.text)
    return Text2ImagePipeline(generator, encoder, cfg).save_pretrained(directory)


def g_forward(pipe: Text2ImagePipeline, batch: int, repeats: int) -> list[float]:
    model = pipe.config.model
    z = torch.randn(batch, model.z_dim, device=pipe.device)
    text = torch.randn(batch, model.text_dim, device=pipe.device)
    eps = torch.zeros(batch, model.c_dim, device=pipe.device)
    times = []
    with torch.inference_mode():
        for i in range(repeats + 2):  # two warm-up passes
            if pipe.device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            pipe.generator(z, text, eps)
            if pipe.device.type == "cuda":
                torch.cuda.synchronize()
            if i >= 2:
                times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="pipeline dir, run dir or checkpoint (default: shipped, else untrained)")
    parser.add_argument("--preset", default="toy", help="architecture of the untrained fallback model")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (stackgan2 sample --device)")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="stackgan2-bench-"))
    try:
        shipped = shipped_model_dir()
        if args.model is not None:
            model, source = args.model.resolve(), "given"
        elif shipped is not None:
            model, source = shipped, "shipped"
        else:
            model, source = untrained_pipeline(args.preset, scratch / "pipeline"), f"untrained {args.preset} preset"
        sample_cmd = [*_cli(), "sample", PROMPT]
        if source != "shipped":
            sample_cmd += ["--model", str(model)]
        if args.device != "auto":
            sample_cmd += ["--device", args.device]
        commands = {
            "sample": sample_cmd,
            "help": [*_cli(), "--help"],
            "import_torch": [sys.executable, "-c", "import torch"],
            "python": [sys.executable, "-c", "pass"],
        }
        load_before = os.getloadavg()[0]
        times = _round_robin(commands, args.repeats, scratch)
        timed = {name: {kind: _stats(values) for kind, values in t.items()} for name, t in times.items()}
        from stackgan2.device import resolve_device

        pipe = Text2ImagePipeline.from_pretrained(model, device=resolve_device(args.device))
        result = {
            "model": str(model),
            "model_source": source,
            "sample_command": shlex.join(["stackgan2", *sample_cmd[len(_cli()):]]),
            "cli": shlex.join(_cli()),
            "resolutions": pipe.config.model.resolutions,
            "generator_parameters": sum(p.numel() for p in pipe.generator.parameters()),
            "device": str(pipe.device),
            "torch": torch.__version__,
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "repeats": args.repeats,
            "sample_s": timed["sample"],
            "help_s": timed["help"],
            "reference_s": {"import_torch": timed["import_torch"], "python": timed["python"]},
            "sample_over_import_torch_s": round(
                statistics.median(times["sample"]["wall"]) - statistics.median(times["import_torch"]["wall"]), 4
            ),
            "g_forward_s": {f"rows_{b}": _stats(g_forward(pipe, b, args.repeats)) for b in (1, 4, 16)},
            "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        }
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
