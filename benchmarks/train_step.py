"""Time full StackGAN++ training iterations (G forward, every D update, G update, EMA).

    python benchmarks/train_step.py --preset birds --batch 24 --stage-num 3 --iters 3
    python benchmarks/train_step.py --preset birds --device cuda --iters 20 [--amp bf16] [--stacked-d] [--compile]

Builds the real Trainer on synthetic data. Without ``--plain`` it measures the default (fast) path
and then, in a separate process, the plain path (eager, NCHW, per-tensor Adam/EMA, literal
concatenation in the refine stages, three separate D passes), and prints one
JSON object with both and the speed-up. Each configuration runs in its own process so that peak RSS
is its own. FLOPs per iteration come from ``torch.utils.flop_counter.FlopCounterMode``; the matmul
peak is a large float32 matmul measured in the same process (on CUDA with --amp, a matmul in the
autocast dtype, i.e. the tensor-core peak; the fp32 one is reported beside it), and on CUDA the
peak allocated GPU memory is reported too.
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


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak_gflops(device: torch.device, dtype: torch.dtype = torch.float32, n: int = 2048, repeats: int = 5) -> float:
    """Best-of-``repeats`` GFLOP/s of an n x n matmul (n = 8192 on CUDA, where 2048 is too short to time)."""
    n = 8192 if device.type == "cuda" else n
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def measure(args: argparse.Namespace) -> dict:
    overrides = {
        "train.device": args.device,
        "model.stage_num": args.stage_num,
        "train.batch_size": args.batch,
        "train.embeddings": "damsm",
        "train.amp": args.amp,
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
    fmt, device = trainer.memory_format, trainer.device

    def images() -> list[torch.Tensor]:
        return [(torch.rand(args.batch, 3, r, r, device=device) * 2 - 1).contiguous(memory_format=fmt)
                for r in cfg.model.resolutions]

    real, wrong = images(), images()
    embedding = torch.randn(args.batch, cfg.model.text_dim, device=device)
    trainer.train_step(real, wrong, embedding)  # warm-up (and compilation)
    if device.type == "cuda":
        trainer.train_step(real, wrong, embedding)  # cuDNN autotuning settles on the second call
    times = []
    for _ in range(args.iters):
        _sync(device)
        start = time.perf_counter()
        trainer.train_step(real, wrong, embedding)
        _sync(device)
        times.append(time.perf_counter() - start)
    counter = FlopCounterMode(display=False)
    with counter:
        trainer.train_step(real, wrong, embedding)
    flops = counter.get_total_flops()
    median = statistics.median(times)
    peak = matmul_peak_gflops(device)
    extra = {}
    if device.type == "cuda":
        extra = {"gpu": torch.cuda.get_device_name(device), "peak_gpu_memory_mb": torch.cuda.max_memory_allocated(device) / 2**20}
        if trainer.amp_dtype is not None:  # tensor-core peak in the autocast dtype, for the fraction below
            extra["matmul_peak_gflops_fp32"], peak = peak, matmul_peak_gflops(device, trainer.amp_dtype)
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
        "amp": args.amp if trainer.amp_dtype is not None else "off",
        **extra,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="toy", choices=["tiny", "toy", "birds", "flowers"])
    parser.add_argument("--batch", type=int, default=24)
    parser.add_argument("--stage-num", type=int, default=3)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (the plain reference runs on the same device)")
    parser.add_argument("--amp", choices=["off", "bf16", "fp16"], default="off",
                        help="autocast on CUDA for the fast path (the plain reference stays fp32)")
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
    fast["settings"] = {"amp": args.amp, "compile": args.compile, "channels_last": args.channels_last, "fused": not args.no_fused,
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
