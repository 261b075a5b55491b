"""RFC 6962 (Certificate Transparency) Merkle trees over SHA-256, for batches of runs.

The hashes are domain-separated, so a leaf can never pass for an inner node
(RFC 6962 §2.1, RFC 9162 §2.1.1)::

    leaf_hash(d)   = SHA-256(0x00 || d)
    node_hash(l,r) = SHA-256(0x01 || l || r)
    MTH({})        = SHA-256()
    MTH({d0})      = leaf_hash(d0)
    MTH(D[n])      = node_hash(MTH(D[0:k]), MTH(D[k:n]))   k = the largest power of two < n

An inclusion proof is RFC 6962's audit path ``PATH(m, D[n])`` (siblings from
the leaf up); ``verify_inclusion`` is the verification algorithm of
RFC 9162 §2.1.3.2, step for step. Checked against the RFC 6962 test vectors
of the Certificate Transparency Go code (``tests/test_batch_ledger.py``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

HASH_SIZE = 32
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"


def leaf_hash(data: bytes) -> bytes:
    """SHA-256(0x00 || data): the hash of one leaf."""
    return hashlib.sha256(LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right): the hash of an inner node."""
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def _root_of_hashes(hashes: Sequence[bytes]) -> bytes:
    n = len(hashes)
    if n == 1:
        return hashes[0]
    k = _split(n)
    return node_hash(_root_of_hashes(hashes[:k]), _root_of_hashes(hashes[k:]))


def root(leaves: Sequence[bytes]) -> bytes:
    """The Merkle tree hash MTH of the leaves' data (SHA-256 of nothing for no leaves)."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    return _root_of_hashes([leaf_hash(d) for d in leaves])


def _path(m: int, hashes: Sequence[bytes]) -> list[bytes]:
    n = len(hashes)
    if n == 1:
        return []
    k = _split(n)
    if m < k:
        return _path(m, hashes[:k]) + [_root_of_hashes(hashes[k:])]
    return _path(m - k, hashes[k:]) + [_root_of_hashes(hashes[:k])]


def inclusion_proof(index: int, leaves: Sequence[bytes]) -> list[bytes]:
    """The audit path PATH(index, D[n]) of leaf ``index``: sibling hashes from the leaf up."""
    if not 0 <= index < len(leaves):
        raise ValueError(f"leaf index {index} is outside a tree of {len(leaves)} leaves")
    return _path(index, [leaf_hash(d) for d in leaves])


def inclusion_proofs(leaves: Sequence[bytes]) -> list[list[bytes]]:
    """Every leaf's audit path, each subtree hashed once (what ``inclusion_proof`` gives, leaf by leaf)."""
    hashes = [leaf_hash(d) for d in leaves]
    memo: dict[tuple[int, int], bytes] = {}

    def mth(lo: int, hi: int) -> bytes:
        if hi - lo == 1:
            return hashes[lo]
        if (lo, hi) not in memo:
            k = lo + _split(hi - lo)
            memo[lo, hi] = node_hash(mth(lo, k), mth(k, hi))
        return memo[lo, hi]

    def path(m: int, lo: int, hi: int) -> list[bytes]:
        if hi - lo == 1:
            return []
        k = lo + _split(hi - lo)
        return path(m, lo, k) + [mth(k, hi)] if m < k else path(m, k, hi) + [mth(lo, k)]

    return [path(m, 0, len(hashes)) for m in range(len(hashes))]


def root_from_inclusion_proof(leaf_hash_: bytes, index: int, tree_size: int,
                              proof: Sequence[bytes]) -> bytes | None:
    """The root that ``proof`` leads to from the leaf hash at ``index``, or None if the proof is malformed.

    RFC 9162 §2.1.3.2, steps 1 to 4 (and the ``sn == 0`` half of step 5).
    """
    if not isinstance(index, int) or not isinstance(tree_size, int) or index < 0 or tree_size < 1:
        return None
    if len(leaf_hash_) != HASH_SIZE or any(len(p) != HASH_SIZE for p in proof):
        return None
    if index >= tree_size:                                   # step 1
        return None
    fn, sn = index, tree_size - 1                            # step 2
    r = leaf_hash_                                           # step 3
    for p in proof:                                          # step 4
        if sn == 0:                                          # 4a
            return None
        if fn & 1 or fn == sn:                               # 4b
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1                                             # 4c
        sn >>= 1
    if sn != 0:                                              # step 5, first half
        return None
    return r


def verify_inclusion_hash(leaf_hash_: bytes, index: int, tree_size: int, proof: Sequence[bytes],
                          root_hash: bytes) -> bool:
    """Whether ``proof`` proves the leaf hash at ``index`` in the tree of ``tree_size`` with ``root_hash``."""
    found = root_from_inclusion_proof(leaf_hash_, index, tree_size, proof)
    return found is not None and len(root_hash) == HASH_SIZE and found == root_hash


def verify_inclusion(leaf: bytes, index: int, tree_size: int, proof: Sequence[bytes], root_hash: bytes) -> bool:
    """Whether the leaf's data ``leaf`` is leaf ``index`` of the tree of ``tree_size`` with ``root_hash``.

    The data is hashed here as a leaf (0x00 prefix), so an inner node's
    children (``left || right``) presented as a leaf never verify.
    """
    return verify_inclusion_hash(leaf_hash(leaf), index, tree_size, proof, root_hash)
