"""Two gloo processes on the CPU: gradients are averaged, so both ranks hold identical parameters
(StackGAN++, StackGAN v1 Stage II, whose frozen Stage-I G stays as initialised, and AttnGAN, whose
ranks attend to the words of different captions)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import make_damsm_encoder
from safetensors.torch import load_file, save_file

from stackgan2.config import resolve_config
from stackgan2.training.distributed import DistContext
from stackgan2.training.trainer import Trainer

FAMILIES = {"stackgan2": ("tiny", {}), "stackgan1": ("v1-toy", {"model.v1_stage": 2}),
            "attngan": ("tiny", {"model.arch": "attngan", "train.damsm_coef": 5.0, "train.kl_coef": 1.0})}
CAPTIONS = ["a red bird", "a blue bird with black wings", "red wings", "a bird", "black wings", "a blue bird"]


def _config(family: str):
    preset, overrides = FAMILIES[family]
    return resolve_config(preset, overrides={"train.device": "cpu", **overrides})


def _worker(rank: int, world: int, port: int, out: str, families: list[str]) -> None:
    """Every family in one pair of processes (starting them costs more than the steps)."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        for family in families:
            cfg = _config(family)
            trainer = Trainer(cfg, os.path.join(out, family), ctx=DistContext(rank, world, 0))
            g = torch.Generator().manual_seed(100 + rank)  # every rank sees different data
            sizes = [cfg.model.resolutions[i] for i in cfg.model.trained_branches]
            if trainer.needs_caption_features:
                trainer.attach_text_encoder(make_damsm_encoder(cfg.text))  # the same frozen encoder on both ranks
            for step in range(3):
                real = [torch.rand(4, 3, r, r, generator=g) * 2 - 1 for r in sizes]
                wrong = [torch.rand(4, 3, r, r, generator=g) * 2 - 1 for r in sizes]
                if trainer.needs_caption_features:
                    captions = [CAPTIONS[(rank + step + k) % len(CAPTIONS)] for k in range(4)]
                    text = trainer.damsm.captions(captions, torch.arange(4))
                    trainer.train_step(real, wrong, text.sentence, text)
                else:
                    trainer.train_step(real, wrong, torch.randn(4, cfg.model.text_dim, generator=g))
            params = {f"G.{k}": v.detach() for k, v in trainer.G.named_parameters()}
            params.update({f"D.{k}": v.detach() for k, v in trainer.discriminators.named_parameters()})
            params.update({f"G_ema.{k}": v.detach() for k, v in trainer.G_ema.named_parameters()})
            save_file({k: v.contiguous() for k, v in params.items()}, os.path.join(out, f"{family}-rank{rank}.safetensors"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(2, port, str(out), list(FAMILIES)), nprocs=2, join=True)
    return out


@pytest.mark.parametrize("family", list(FAMILIES))
def test_two_ranks_end_with_identical_parameters(trained, tmp_path, family):
    a, b = (load_file(str(trained / f"{family}-rank{rank}.safetensors")) for rank in (0, 1))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # and training did something: parameters moved away from a fresh initialisation
    fresh = Trainer(_config(family), tmp_path / "fresh")
    assert not torch.equal(a["G.ca.fc.weight"], fresh.G.ca.fc.weight)
    for key, value in fresh.G.named_parameters():  # v1: the frozen Stage-I G did not move
        assert torch.equal(a[f"G.{key}"], value) == key.startswith("stage1."), key
