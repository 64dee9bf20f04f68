"""Crash-safe file writing: temp file in the same folder, fsync, rename, fsync the folder.

A reader therefore sees either the old file or the complete new one, never a half-written file,
whatever kills the process (SIGKILL, power cut). On failure (disk full, permission denied) the temp
file is removed and the previous file is left untouched.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from stackgan2.errors import CheckpointError, UsageError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a folder be opened for fsync
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def check_output_dir(directory: Path) -> None:
    """UsageError if ``directory`` is, or lies under, something other than a directory.

    Commands call it before doing their work, so a mistyped output path fails at once.
    """
    directory = Path(directory)
    existing = next(path for path in (directory, *directory.parents) if path.exists())
    if not existing.is_dir():
        under = "" if existing == directory else f" lies under {existing}, which"
        raise UsageError(f"output path {directory}{under} exists and is not a directory")


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success it is fsynced and renamed over ``path``.

    An OSError (disk full, no permission) is raised again naming ``path``, not the temp file.
    """
    path = Path(path)
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; the result should look like any file
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as exc:
        raise OSError(exc.errno, f"{exc.strerror or exc} (writing {path})") from exc
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save(path: Path, save: Callable[[Path], None]) -> None:
    """Let ``save(tmp_path)`` write the file (e.g. PIL, safetensors), then publish it atomically."""
    with atomic_path(path) as tmp:
        save(tmp)


def atomic_directory(directory: Path, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` into a fresh sibling folder, fsync it, then swap it in place of ``directory``.

    Readers see either the old complete directory or the new complete one; a failed ``write`` leaves
    the old one untouched. Callers decide beforehand what may be replaced.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
    try:
        write(tmp)
        umask = _umask()
        for path in [tmp, *tmp.rglob("*")]:  # mkdtemp and some writers create owner-only modes
            os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)
            if path.is_file():
                with open(path, "rb") as handle:
                    os.fsync(handle.fileno())
        if directory.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{directory.name}.old-", dir=directory.parent))
            os.replace(directory, old / directory.name)
            os.replace(tmp, directory)
            shutil.rmtree(old)
        else:
            os.replace(tmp, directory)
        _fsync_dir(directory.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def read_format_json(path: Path, fmt: str, version: int, what: str, hint: str = "") -> dict[str, Any]:
    """Read a JSON file tagged ``{"format": fmt, "version": version}``; ``CheckpointError`` otherwise.

    ``what`` names the kind of file in messages ("classifier config"); ``hint`` is appended to them.
    """
    suffix = f"; {hint}" if hint else ""
    try:
        payload = json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc}){suffix}") from None
    if not isinstance(payload, dict) or payload.get("format") != fmt:
        raise CheckpointError(f"{path} is not a stackgan2 {what} (format {fmt!r}){suffix}")
    if payload.get("version") != version:
        raise CheckpointError(f"{path} has {what} version {payload.get('version')!r}; this stackgan2 reads {version}")
    return payload


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
