"""Crash-safe writes: after the rename, the directory is fsync'd too (POSIX keeps a new name only then).

Durability itself shows only after a power cut, so these tests watch the
system calls instead: ``os.fsync`` and ``os.replace`` are wrapped (the real
calls still run) and the order they came in is checked.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from twinloop.harness.commit import write_atomic
from twinloop.ledger.ipfs import CHUNK_SIZE, EmbeddedIpfs, import_file


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """('replace', target) and ('fsync dir' | 'fsync file', path) in the order they happened."""
    seen: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        kind = "fsync dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file"
        seen.append((kind, os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src: str | Path, dst: str | Path) -> None:
        real_replace(src, dst)
        seen.append(("replace", str(Path(dst).resolve())))

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return seen


def _synced_after_rename(calls: list[tuple[str, str]], target: Path) -> bool:
    """Whether the rename onto ``target`` was followed by an fsync of its directory."""
    target = target.resolve()
    i = calls.index(("replace", str(target)))
    return ("fsync dir", str(target.parent)) in calls[i + 1:]


def test_write_atomic_fsyncs_the_file_then_its_directory_after_the_rename(tmp_path: Path,
                                                                          calls: list[tuple[str, str]]) -> None:
    path = tmp_path / "home" / "outbox" / "run.json"
    write_atomic(path, b"bundle")
    assert path.read_bytes() == b"bundle" and not list(path.parent.glob("*.tmp"))
    renamed = calls.index(("replace", str(path.resolve())))
    assert ("fsync file", str(path.resolve()) + ".tmp") in calls[:renamed] and _synced_after_rename(calls, path)
    # the directories it made are durable in their parents too
    for made in (tmp_path, tmp_path / "home"):
        assert ("fsync dir", str(made.resolve())) in calls
    calls.clear()
    write_atomic(path, b"again")  # over an existing file
    assert path.read_bytes() == b"again" and _synced_after_rename(calls, path)


def test_every_block_the_store_writes_has_its_directory_fsynced_after_the_rename(
        tmp_path: Path, calls: list[tuple[str, str]]) -> None:
    ipfs = EmbeddedIpfs(tmp_path / "ipfs")
    data = os.urandom(2 * CHUNK_SIZE + 5)
    root = ipfs.add(data)
    blocks = import_file(data)[1]
    assert ipfs.cat(root) == data and len(blocks) == 4
    for cid, _ in blocks:
        assert _synced_after_rename(calls, ipfs.store.path(cid)), cid
