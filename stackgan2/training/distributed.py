"""Multi-process data parallelism under ``torchrun`` (gloo on CPU, nccl on CUDA).

StackGAN++ runs three discriminator forward passes per backward and switches the discriminators'
``requires_grad`` off for the generator step; DistributedDataParallel's reducer supports neither, so
gradients are averaged here with the same bucketed all-reduce DDP performs, after each backward.
BatchNorm statistics stay per process, as with DDP without SyncBatchNorm.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def init_distributed(device_type: str) -> DistContext:
    """Join the process group torchrun describes in the environment; a single process otherwise."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistContext()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def shutdown_distributed(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def average_gradients(params: Iterable[torch.nn.Parameter], ctx: DistContext, bucket_bytes: int = 25 << 20) -> None:
    """All-reduce and average ``.grad`` of ``params`` across processes, in buckets of ~25 MB (DDP default)."""
    if not ctx.enabled:
        return
    grads = [p.grad for p in params if p.grad is not None]
    bucket: list[torch.Tensor] = []
    size = 0
    for grad in [*grads, None]:
        if grad is not None:
            bucket.append(grad)
            size += grad.numel() * grad.element_size()
        if bucket and (grad is None or size >= bucket_bytes):
            flat = _flatten_dense_tensors(bucket)
            dist.all_reduce(flat)
            flat /= ctx.world_size
            for g, synced in zip(bucket, _unflatten_dense_tensors(flat, bucket), strict=True):
                g.copy_(synced)
            bucket, size = [], 0


def broadcast_module(module: torch.nn.Module, ctx: DistContext) -> None:
    """Make every process start from rank 0's parameters and buffers."""
    if ctx.enabled:
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=0)


def gather_tensors(tensor: torch.Tensor, ctx: DistContext) -> list[torch.Tensor]:
    """Every rank's copy of a same-shaped tensor (used for per-rank RNG states)."""
    if not ctx.enabled:
        return [tensor]
    out = [torch.empty_like(tensor) for _ in range(ctx.world_size)]
    dist.all_gather(out, tensor)
    return out
