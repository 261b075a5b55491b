"""The one interface of an IPFS store: the embedded blockstore (``EmbeddedIpfs``) or a Kubo node (``KuboIpfs``).

Everything above the ledger (commit, verify, the ``ledger`` commands) holds
an ``IpfsStore`` and never asks which one it is. Every read is checked
against its CID by the store itself.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class IpfsStore(Protocol):
    """Files by CID, their blocks, and their DAGs as CARv1 files."""

    @property
    def location(self) -> str:
        """Where the bundles are, for messages."""

    def add(self, data: bytes, cid_version: int = 0) -> str:
        """Store a file as ``ipfs add [--cid-version=1]`` lays it out (kept: pinned); its root CID."""

    def cat(self, cid: str) -> bytes:
        """A file's bytes (CIDv0 or CIDv1), refused unless they hash to ``cid``."""

    def has(self, cid: str) -> bool:
        """Whether the store holds the block, without searching a network."""

    def pin(self, cid: str) -> None:
        """Keep the whole DAG under ``cid``; an error if any block of it is missing."""

    def block_get(self, cid: str) -> bytes:
        """One block's raw bytes, refused unless they hash to ``cid``."""

    def export_car(self, cid: str) -> bytes:
        """The DAG under ``cid`` as a CARv1 with that one root (what ``ipfs dag export`` writes)."""

    def import_car(self, car: bytes, name: str = "CAR") -> list[str]:
        """Store (and pin) a CARv1's blocks, each checked against its CID; the roots its header names."""
