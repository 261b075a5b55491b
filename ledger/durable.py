"""Crash-safe files: written whole or not at all, and their names still there after a power cut.

POSIX makes a file's data durable with ``fsync`` of the file, but its name
(a new entry, a rename) only with ``fsync`` of the directory holding it.
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """fsync a directory, so the entries just created or renamed in it survive a crash."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(path: Path) -> None:
    """``mkdir -p``, each directory it creates made durable in its parent."""
    path = Path(path)
    missing = [p for p in (path, *path.parents) if not p.exists()]
    path.mkdir(parents=True, exist_ok=True)
    for created in reversed(missing):
        fsync_dir(created.parent)


def replace_durably(tmp: Path | str, path: Path) -> None:
    """Rename a written and fsync'd ``tmp`` over ``path``, then fsync the directory so the rename holds."""
    os.replace(tmp, path)
    fsync_dir(Path(path).parent)


def write_atomic(path: Path, data: bytes) -> None:
    """Write, fsync, rename and fsync the directory: a crash leaves the old file or the new one, never half."""
    make_dirs(path.parent)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    replace_durably(tmp, path)
