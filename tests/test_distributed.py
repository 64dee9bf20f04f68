"""Two gloo processes on the CPU: gradients are averaged, so both ranks hold identical parameters
(StackGAN++ and StackGAN v1 Stage II, whose frozen Stage-I G stays as initialised)."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from stackgan2.config import resolve_config
from stackgan2.training.distributed import DistContext
from stackgan2.training.trainer import Trainer

FAMILIES = {"stackgan2": ("tiny", {}), "stackgan1": ("v1-toy", {"model.v1_stage": 2})}


def _config(family: str):
    preset, overrides = FAMILIES[family]
    return resolve_config(preset, overrides={"train.device": "cpu", **overrides})


def _worker(rank: int, world: int, port: int, out: str, family: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        cfg = _config(family)
        trainer = Trainer(cfg, out, ctx=DistContext(rank, world, 0))
        g = torch.Generator().manual_seed(100 + rank)  # every rank sees different data
        sizes = [cfg.model.resolutions[i] for i in cfg.model.trained_branches]
        for _ in range(3):
            real = [torch.rand(4, 3, r, r, generator=g) * 2 - 1 for r in sizes]
            wrong = [torch.rand(4, 3, r, r, generator=g) * 2 - 1 for r in sizes]
            trainer.train_step(real, wrong, torch.randn(4, cfg.model.text_dim, generator=g))
        params = {f"G.{k}": v.detach() for k, v in trainer.G.named_parameters()}
        params.update({f"D.{k}": v.detach() for k, v in trainer.discriminators.named_parameters()})
        params.update({f"G_ema.{k}": v.detach() for k, v in trainer.G_ema.named_parameters()})
        save_file({k: v.contiguous() for k, v in params.items()}, os.path.join(out, f"rank{rank}.safetensors"))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("family", list(FAMILIES))
def test_two_ranks_end_with_identical_parameters(tmp_path, family):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(2, port, str(tmp_path), family), nprocs=2, join=True)
    a, b = load_file(str(tmp_path / "rank0.safetensors")), load_file(str(tmp_path / "rank1.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # and training did something: parameters moved away from a fresh initialisation
    fresh = Trainer(_config(family), tmp_path / "fresh")
    assert not torch.equal(a["G.ca.fc.weight"], fresh.G.ca.fc.weight)
    for key, value in fresh.G.named_parameters():  # v1: the frozen Stage-I G did not move
        assert torch.equal(a[f"G.{key}"], value) == key.startswith("stage1."), key
