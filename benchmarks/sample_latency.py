"""Sampling latency, printed as JSON.

- ``sample_s``: wall and CPU time from process start to exit (PNG written) of
  ``stackgan2 sample "a small red bird" --model M --seed 0``, one image at the final resolution;
- ``g_forward_s``: G_ema forward time at batch 1 and 16, in this process;
- ``help_s``: wall and CPU time of ``stackgan2 --help`` (start-up cost of the CLI alone);
- ``load_average_1min`` before and after: wall times are only comparable on an otherwise idle machine.

The model is ``--model``, else the shipped toy-birds model, else an untrained pipeline with the
``--preset`` architecture (weights do not change the timings) saved to a temporary directory.

    python benchmarks/sample_latency.py [--model PATH] [--preset toy] [--repeats 5] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from stackgan2.config import resolve_config
from stackgan2.networks import Generator, init_weights
from stackgan2.pipeline import Text2ImagePipeline, shipped_model_dir
from stackgan2.text import PromptEncoder, TextEncoder, Vocabulary

PROMPT = "a small red bird"


def _cli() -> list[str]:
    script = Path(sys.executable).with_name("stackgan2")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "stackgan2.cli"]


def _timed_runs(command: list[str], repeats: int) -> dict[str, dict[str, float | list[float]]]:
    """Wall and CPU (user + sys) seconds of ``repeats`` runs of ``command``; CPU time barely moves when
    other processes compete for the cores, wall time does."""
    wall, cpu = [], []
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        wall.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return {"wall": _stats(wall), "cpu": _stats(cpu)}


def _stats(times: list[float]) -> dict[str, float | list[float]]:
    return {"median": statistics.median(times), "min": min(times), "runs": [round(t, 4) for t in times]}


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
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="stackgan2-bench-"))
    try:
        if args.model is not None:
            model, source = args.model, "given"
        elif (shipped := shipped_model_dir()) is not None:
            model, source = shipped, "shipped"
        else:
            model, source = untrained_pipeline(args.preset, scratch / "pipeline"), f"untrained {args.preset} preset"
        out = scratch / "out"
        sample_cmd = [*_cli(), "sample", PROMPT, "--model", str(model), "--seed", "0", "--out", str(out), "--device", args.device]
        load_before = os.getloadavg()[0]
        sample_times = _timed_runs(sample_cmd, args.repeats)
        written = sorted(out.glob("*.png"))
        assert len(written) == 1, f"expected one PNG, found {[p.name for p in written]}"
        help_times = _timed_runs([*_cli(), "--help"], args.repeats)
        pipe = Text2ImagePipeline.from_pretrained(model, device=args.device)
        result = {
            "model": str(model),
            "model_source": source,
            "resolutions": pipe.config.model.resolutions,
            "generator_parameters": sum(p.numel() for p in pipe.generator.parameters()),
            "device": args.device,
            "torch": torch.__version__,
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "png": written[0].name,
            "sample_s": sample_times,
            "g_forward_s": {f"batch_{b}": _stats(g_forward(pipe, b, args.repeats)) for b in (1, 16)},
            "help_s": help_times,
            "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        }
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
