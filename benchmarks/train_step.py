"""Time full StackGAN++ training iterations (G forward, every D update, G update, EMA).

    python benchmarks/train_step.py --preset birds --batch 24 --stage-num 3 --iters 3

Builds the real Trainer on synthetic data. Without ``--plain`` it measures the default (fast) path
and then, in a separate process, the plain path (eager, NCHW, per-tensor Adam/EMA, literal
concatenation in the refine stages, three separate D passes), and prints one
JSON object with both and the speed-up. Each configuration runs in its own process so that peak RSS
is its own. FLOPs per iteration come from ``torch.utils.flop_counter.FlopCounterMode``; the matmul
peak is a large float32 matmul measured in the same process.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from stackgan2.config import resolve_config
from stackgan2.training.trainer import Trainer


def matmul_peak_gflops(n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def measure(args: argparse.Namespace) -> dict:
    overrides = {
        "train.device": args.device,
        "model.stage_num": args.stage_num,
        "train.batch_size": args.batch,
        "train.embeddings": "damsm",
    }
    # Synthetic sentence embeddings stand in for the text encoder; birds conditions on 1024-d
    # char-CNN-RNN vectors, so keep the preset's width (text.dim must equal it for "damsm").
    text_dim = resolve_config(args.preset).model.text_dim
    cfg = resolve_config(args.preset, overrides={**overrides, "text.dim": text_dim})
    if args.plain:
        cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"channels_last": False, "fused_optimizer": False, "compile": False,
                                                                 "split_condition_conv": False, "stacked_d_passes": False})})
    else:  # the fast path, with the ablation flags applied
        layout = {"auto": None, "on": True, "off": False}[args.channels_last]
        fast = {"compile": args.compile, "channels_last": layout, "fused_optimizer": not args.no_fused,
                "split_condition_conv": not args.no_split_condition, "stacked_d_passes": args.stacked_d}
        cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update=fast)})
    torch.manual_seed(0)
    trainer = Trainer(cfg, "/tmp/stackgan2-bench-unused")
    fmt = trainer.memory_format
    real = [(torch.rand(args.batch, 3, r, r) * 2 - 1).contiguous(memory_format=fmt) for r in cfg.model.resolutions]
    wrong = [(torch.rand(args.batch, 3, r, r) * 2 - 1).contiguous(memory_format=fmt) for r in cfg.model.resolutions]
    embedding = torch.randn(args.batch, cfg.model.text_dim)
    trainer.train_step(real, wrong, embedding)  # warm-up (and compilation)
    times = []
    for _ in range(args.iters):
        start = time.perf_counter()
        trainer.train_step(real, wrong, embedding)
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    counter = FlopCounterMode(display=False)
    with counter:
        trainer.train_step(real, wrong, embedding)
    flops = counter.get_total_flops()
    median = statistics.median(times)
    peak = matmul_peak_gflops()
    return {
        "path": "plain" if args.plain else "fast",
        "preset": args.preset,
        "stage_num": args.stage_num,
        "batch": args.batch,
        "threads": torch.get_num_threads(),
        "median_s": median,
        "min_s": min(times),
        "max_s": max(times),
        "images_per_s": args.batch / median,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "gflop_per_iter": flops / 1e9,
        "achieved_gflops": flops / median / 1e9,
        "matmul_peak_gflops": peak,
        "fraction_of_peak": flops / median / 1e9 / peak,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="toy", choices=["tiny", "toy", "birds", "flowers"])
    parser.add_argument("--batch", type=int, default=24)
    parser.add_argument("--stage-num", type=int, default=3)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--plain", action="store_true", help="measure only the plain path")
    parser.add_argument("--compile", action="store_true", help="also enable torch.compile on the fast path")
    parser.add_argument("--channels-last", choices=["auto", "on", "off"], default="auto",
                        help="fast path memory format (auto: the trainer's default, NHWC on CUDA only)")
    parser.add_argument("--no-fused", action="store_true", help="ablation: fast path without fused Adam / foreach EMA")
    parser.add_argument("--no-split-condition", action="store_true",
                        help="ablation: fast path with the refine stages' joint conv over the full concatenation")
    parser.add_argument("--stacked-d", action="store_true",
                        help="fast path with the D step's real, wrong and fake images in one stacked pass (off by default)")
    parser.add_argument("--no-reference", action="store_true", help="skip the --plain reference run")
    args = parser.parse_args()
    if args.plain:
        print(json.dumps(measure(args)))
        return
    fast = measure(args)
    fast["settings"] = {"compile": args.compile, "channels_last": args.channels_last, "fused": not args.no_fused,
                        "split_condition": not args.no_split_condition, "stacked_d": args.stacked_d}
    if args.no_reference:
        print(json.dumps(fast, indent=1))
        return
    cmd = [sys.executable, __file__, "--plain", "--preset", args.preset, "--batch", str(args.batch),
           "--stage-num", str(args.stage_num), "--iters", str(args.iters), "--device", args.device]
    plain = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
    print(json.dumps({**fast, "plain": plain, "speedup_vs_plain": plain["median_s"] / fast["median_s"]}, indent=1))


if __name__ == "__main__":
    main()
