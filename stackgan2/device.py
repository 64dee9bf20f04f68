"""Device selection for ``--device auto|cpu|cuda|mps``."""

from __future__ import annotations

import torch

from stackgan2.errors import UsageError


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` picks CUDA, then MPS, then the CPU; an unavailable explicit choice is an error."""
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if name == "auto":
        name = "cuda" if cuda else "mps" if mps else "cpu"
    if name == "cuda":
        if not cuda:
            raise UsageError("--device cuda was requested but no CUDA GPU is available (try --device cpu)")
        return torch.device("cuda", local_rank)
    if name == "mps" and not mps:
        raise UsageError("--device mps was requested but MPS is not available (try --device cpu)")
    if name not in ("cpu", "mps"):
        raise UsageError(f"unknown device {name!r}; valid: auto, cpu, cuda, mps")
    return torch.device(name)
