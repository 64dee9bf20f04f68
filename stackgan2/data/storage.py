"""The on-disk image cache: decoded RGB images packed into one memory-mapped file, built once.

A store is a directory holding ``pixels.bin`` (every image's uint8 HxWx3 bytes, one after the other),
``shapes.npy`` ((N, 2) heights and widths) and ``meta.json`` (what the dataset needs besides pixels:
captions, attributes, kept and skipped files). It is written into a temporary sibling directory and
renamed into place only when complete, so a killed render never leaves a half-written cache, and two
processes building the same store at once (several ranks of one job) both end up reading one result.
Building maps a picklable function over the work items on all cores, in order, with progress reports.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import socket
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from stackgan2.errors import DataError
from stackgan2.progress import ProgressFn, report

log = logging.getLogger("stackgan2.data")

T = TypeVar("T")
R = TypeVar("R")

PIXELS = "pixels.bin"
SHAPES = "shapes.npy"
META = "meta.json"


def cache_root(cache_dir: Path | None) -> Path:
    """``cache_dir`` if given, else ``$XDG_CACHE_HOME/stackgan2`` (``~/.cache/stackgan2`` without it)."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "stackgan2"


def content_key(payload: Any) -> str:
    """A short stable hash of a JSON-serialisable description of what a cache was built from."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


class ImageStore:
    """N uint8 RGB images of possibly different sizes, memory-mapped from a store directory.

    The memory map is opened lazily and dropped when pickled, so DataLoader workers (forked or
    spawned) each map the file themselves instead of receiving a copy of every pixel.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.shapes = np.load(self.directory / SHAPES)
        if self.shapes.ndim != 2 or self.shapes.shape[1] != 2:
            raise DataError(f"corrupt image cache {self.directory}: {SHAPES} has shape {self.shapes.shape}")
        sizes = self.shapes[:, 0].astype(np.int64) * self.shapes[:, 1] * 3
        self.offsets = np.concatenate([[0], np.cumsum(sizes)])
        found = (self.directory / PIXELS).stat().st_size
        if found != self.offsets[-1]:
            raise DataError(f"corrupt image cache {self.directory}: {PIXELS} has {found} bytes, expected {self.offsets[-1]}")
        self._pixels: np.memmap | None = None

    def __len__(self) -> int:
        return len(self.shapes)

    def __getitem__(self, index: int) -> np.ndarray:
        """A read-only (H, W, 3) uint8 view of image ``index``."""
        if self._pixels is None:
            self._pixels = np.memmap(self.directory / PIXELS, dtype=np.uint8, mode="r")
        height, width = self.shapes[index]
        start = self.offsets[index]
        return self._pixels[start : start + height * width * 3].reshape(height, width, 3)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_pixels": None}


def open_image_store(directory: Path) -> tuple[ImageStore, dict[str, Any]] | None:
    """The store and its metadata if ``directory`` holds a complete one, else None (a damaged one is removed)."""
    if not (directory / META).is_file():
        return None
    try:
        meta = json.loads((directory / META).read_text(encoding="utf-8"))
        return ImageStore(directory), meta
    except (OSError, ValueError, DataError) as exc:
        log.warning("discarding damaged cache %s (%s); rebuilding it", directory, exc)
        shutil.rmtree(directory, ignore_errors=True)
        return None


def parallel_map(
    fn: Callable[[T], R], items: Sequence[T], *, processes: int | None = None, chunksize: int = 16
) -> Iterator[R]:
    """``map(fn, items)`` in order, spread over ``processes`` (default: all cores) when there is enough work.

    Workers are spawned, not forked, so the caller's threads, locks and torch state never leak into
    them; ``fn`` must be a module-level function of modules that import quickly. If the workers cannot
    start (for example when the main program is read from stdin) the rest is done in this process.
    """
    processes = available_cores() if processes is None else processes
    processes = min(processes, len(items) // (4 * chunksize))
    done = 0
    if processes > 1:
        pool = ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"))
        try:
            for result in pool.map(fn, items, chunksize=chunksize):
                yield result
                done += 1
        except BrokenProcessPool as exc:
            log.warning("worker processes failed (%s); continuing in this process", exc)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    yield from map(fn, items[done:])


def build_image_store(
    directory: Path,
    make_image: Callable[[T], np.ndarray | str],
    items: Sequence[T],
    meta: Callable[[], dict[str, Any]],
    *,
    task: str,
    progress_fn: ProgressFn | None = None,
    on_failure: Callable[[int, str], None] | None = None,
) -> tuple[ImageStore, dict[str, Any]]:
    """Write ``make_image(item)`` for every item into a new store at ``directory``, atomically.

    ``make_image`` returns an (H, W, 3) uint8 array, or a message saying why the item failed; a
    failure is passed to ``on_failure(position, message)``, which may raise (nothing is then left on
    disk) or record it and let the item be left out. Without ``on_failure`` a failure raises DataError.
    ``meta()`` is called after all items are done, so it can describe what was kept.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(directory)
    tmp = directory.parent / f".{directory.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}@{socket.gethostname()}"
    tmp.mkdir()
    try:
        shapes: list[tuple[int, int]] = []
        report(progress_fn, task, 0, len(items))
        results = parallel_map(make_image, items)
        with open(tmp / PIXELS, "wb") as handle, contextlib.closing(results):
            for done, result in enumerate(results, start=1):
                if isinstance(result, str):
                    if on_failure is None:
                        raise DataError(result)
                    on_failure(done - 1, result)
                else:
                    assert result.dtype == np.uint8 and result.ndim == 3 and result.shape[2] == 3, result.shape
                    handle.write(np.ascontiguousarray(result).data)
                    shapes.append(result.shape[:2])
                report(progress_fn, task, done, len(items))
            handle.flush()
            os.fsync(handle.fileno())
        np.save(tmp / SHAPES, np.asarray(shapes, dtype=np.int64).reshape(-1, 2))
        _write_synced(tmp / META, json.dumps(meta()).encode("utf-8"))
        _publish(tmp, directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ImageStore(directory), json.loads((directory / META).read_text(encoding="utf-8"))


def _remove_abandoned(directory: Path) -> None:
    """Delete half-built copies of ``directory`` left by killed builders (same host, pid gone)."""
    for stale in directory.parent.glob(f".{directory.name}.tmp-*"):
        owner, _, host = stale.name.rsplit(".tmp-", 1)[1].partition("@")
        pid = owner.split("-")[0]
        if host == socket.gethostname() and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _publish(tmp: Path, directory: Path) -> None:
    try:
        os.rename(tmp, directory)
    except OSError:
        if not (directory / META).is_file():  # not a concurrent builder that finished first
            raise

