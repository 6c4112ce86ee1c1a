"""Crash-safe file writes: a reader sees the old file or the new one, never half.

Used for everything edgekit writes on a user's behalf (models, personal
state, update files): write a temporary file beside the target, fsync it,
rename it over the target (atomic on POSIX and Windows), fsync the folder.
"""
from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Iterator

STALE_SECONDS = 60  # a temporary file untouched this long was left by a killed save, not one in progress


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path``.

    On any exception the temporary file is removed and ``path`` is left as
    it was, so a failed command never leaves partial output behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # what a plain open() would give; mkstemp makes 0600
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes, mode: int | None = None) -> None:
    """Atomically replace ``path`` with ``data`` (optionally with permissions ``mode``)."""
    with atomic_path(path) as tmp:
        if mode is not None:
            os.chmod(tmp, mode)
        tmp.write_bytes(data)


def remove_stale(path: Path) -> list[Path]:
    """Delete temporary files a killed save of ``path`` left beside it (up to the state file's size each).

    Only names ``atomic_path`` makes for this very ``path`` and only when
    untouched for ``STALE_SECONDS``: another process saving the same file
    right now keeps writing to its own.
    """
    pattern = re.compile(rf"\.{re.escape(path.name)}\.[A-Za-z0-9_]{{8}}\.tmp")
    removed, cutoff = [], time.time() - STALE_SECONDS
    with os.scandir(path.parent) as entries:
        for entry in entries:
            if pattern.fullmatch(entry.name) and entry.is_file(follow_symlinks=False) \
                    and entry.stat(follow_symlinks=False).st_mtime < cutoff:
                Path(entry.path).unlink(missing_ok=True)
                removed.append(Path(entry.path))
    return removed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
