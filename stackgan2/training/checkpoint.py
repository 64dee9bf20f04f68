"""Training checkpoints: ``checkpoints/step-XXXXXXXX.safetensors`` plus a ``.json`` sidecar.

The safetensors file holds every tensor (G, G_ema, each D, optimiser moments, RNG states); its
metadata repeats the sidecar's content except the hash, so a checkpoint file alone can be loaded.
The sidecar holds the step/epoch, the config, the non-tensor parts of the RNG and optimiser states
and the SHA-256 of the safetensors file. The safetensors file is written first and the sidecar last,
both atomically, so a checkpoint exists only once both are complete; a truncated, bit-flipped or
swapped file fails the hash check on load and the loader falls back to the previous good one.
Nothing is ever unpickled.
"""

from __future__ import annotations

import json
import logging
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from stackgan2.errors import CheckpointError
from stackgan2.io import atomic_save, atomic_write_text, sha256_file

log = logging.getLogger("stackgan2.training")
FORMAT = "stackgan2-checkpoint/1"
_NAME = re.compile(r"^step-(\d{8,})\.safetensors$")


@dataclass(frozen=True)
class Checkpoint:
    path: Path                       # the .safetensors file
    meta: dict[str, Any]             # sidecar content (step, epoch, config, states)
    tensors: dict[str, torch.Tensor]

    @property
    def step(self) -> int:
        return int(self.meta["step"])


def checkpoint_path(directory: Path, step: int) -> Path:
    return Path(directory) / f"step-{step:08d}.safetensors"


def sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


def list_checkpoints(directory: Path) -> list[Path]:
    """Checkpoint files by ascending step (complete or not)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def save_checkpoint(directory: Path, step: int, tensors: dict[str, torch.Tensor], meta: dict[str, Any], keep: int) -> Path:
    """Write one checkpoint atomically and delete all but the newest ``keep``."""
    path = checkpoint_path(directory, step)
    meta = {"format": FORMAT, **meta, "step": step}
    contiguous = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_save(path, lambda tmp: save_file(contiguous, str(tmp), metadata={"stackgan2": json.dumps(meta)}))
    atomic_write_text(sidecar(path), json.dumps({**meta, "sha256": sha256_file(path)}, indent=1))
    # The tensor file goes first: a kill between the two unlinks then leaves a stale sidecar, which is
    # never listed as a checkpoint (and is removed here next time), not an old sidecar-less checkpoint.
    for old in list_checkpoints(directory)[:-keep]:
        old.unlink(missing_ok=True)
        sidecar(old).unlink(missing_ok=True)
    for stale in Path(directory).glob("step-*.json"):
        if not stale.with_suffix(".safetensors").exists():
            stale.unlink(missing_ok=True)
    return path


def load_checkpoint(path: Path, verify: bool = True) -> Checkpoint:
    """Load one checkpoint; ``CheckpointError`` names what is wrong with it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    meta_path = sidecar(path)
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise CheckpointError(f"checkpoint sidecar {meta_path} is not valid JSON (truncated or corrupt)") from None
        if verify and meta.get("sha256") != sha256_file(path):
            raise CheckpointError(f"checkpoint {path} does not match the hash in {meta_path.name} (truncated, corrupt or swapped)")
    elif verify:
        raise CheckpointError(f"checkpoint {path} has no {meta_path.name} sidecar (incomplete write?)")
    try:
        tensors = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), "pt") as handle:
            embedded = json.loads((handle.metadata() or {}).get("stackgan2", "null"))
    except (SafetensorError, OSError, ValueError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"checkpoint {path} is not a readable safetensors file: {exc}") from None
    if not meta_path.is_file():
        meta = embedded
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a stackgan2 training checkpoint")
    return Checkpoint(path, meta, tensors)


def latest_checkpoint(directory: Path) -> Checkpoint | None:
    """The newest checkpoint that verifies; corrupt newer ones are skipped with a warning."""
    for path in reversed(list_checkpoints(directory)):
        try:
            return load_checkpoint(path)
        except CheckpointError as exc:
            log.warning("%s; falling back to the previous checkpoint", exc)
    return None


def verify_checkpoints(directory: Path) -> list[tuple[Path, str | None]]:
    """(path, problem or None) for every checkpoint in ``directory``."""
    results = []
    for path in list_checkpoints(directory):
        try:
            load_checkpoint(path)
            results.append((path, None))
        except CheckpointError as exc:
            results.append((path, str(exc)))
    return results


def optimizer_tensors(optimizers: dict[str, torch.optim.Optimizer]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Each optimiser's per-parameter state as ``NAME.INDEX.FIELD`` tensors, and its param_groups (JSON)."""
    tensors, groups = {}, {}
    for name, opt in optimizers.items():
        state = opt.state_dict()
        for index, entry in state["state"].items():
            tensors.update({f"{name}.{index}.{k}": torch.as_tensor(v) for k, v in entry.items()})
        groups[name] = state["param_groups"]
    return tensors, groups


def load_optimizer(optimizer: torch.optim.Optimizer, name: str, tensors: dict[str, torch.Tensor], groups: list) -> None:
    """The inverse of ``optimizer_tensors`` for the optimiser stored under ``name``."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith(name + "."):
            _, index, field = key.split(".")
            state.setdefault(int(index), {})[field] = value
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def host_rng_state(device: torch.device) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The process-wide generators (torch, CUDA on ``device``, NumPy, Python) as tensors and JSON."""
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and device.type == "cuda":
        tensors["rng.cuda"] = torch.cuda.get_rng_state(device)
    np_state = np.random.get_state()
    tensors["rng.numpy"] = torch.from_numpy(np_state[1].astype(np.int64))
    py_version, py_state, py_gauss = random.getstate()
    return tensors, {"rng_numpy": [np_state[0], int(np_state[2]), int(np_state[3]), float(np_state[4])],
                     "rng_python": [py_version, list(py_state), py_gauss]}


def restore_host_rng(tensors: dict[str, torch.Tensor], meta: dict[str, Any], device: torch.device) -> None:
    """The inverse of ``host_rng_state``."""
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and device.type == "cuda":
        torch.cuda.set_rng_state(tensors["rng.cuda"], device)
    name, pos, has_gauss, cached = meta["rng_numpy"]
    np.random.set_state((name, tensors["rng.numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))
    version, state_list, gauss = meta["rng_python"]
    random.setstate((version, tuple(state_list), gauss))
