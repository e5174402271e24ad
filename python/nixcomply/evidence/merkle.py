"""RFC 6962 Merkle tree hashing, incremental append, and inclusion/consistency proofs.

Hashing (RFC 6962 §2.1, RFC 9162 §2.1.1): the empty tree hashes to ``SHA-256("")``, a
leaf to ``SHA-256(0x00 || data)``, an interior node to ``SHA-256(0x01 || left || right)``,
and a tree of ``n`` leaves splits at the largest power of two below ``n``.

Appending keeps only the *frontier*: the roots of the perfect subtrees that make up the
tree, one per set bit of the size, largest first. Adding a leaf merges equal-sized
subtrees like a binary counter carries, so an append costs O(log n) hashes and the state
is at most 64 hashes. The root is the right-to-left fold of the frontier.

Proofs follow RFC 6962 §2.1.1–2.1.2 (generation) and RFC 9162 §2.1.3.2 and §2.1.4.2
(verification); :class:`Tree` keeps every level in memory to answer many proofs over one
tree in O(log n) each (the export packet needs one per bundle).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Sequence
from hashlib import sha256
from typing import Final

EMPTY_ROOT: Final = sha256(b"").digest()
HASH_LEN: Final = 32


def leaf_hash(data: bytes) -> bytes:
    return sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly below ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_of(leaves: Sequence[bytes]) -> bytes:
    """MTH of a list of leaf *hashes*, by the RFC's recursive definition (the reference
    the incremental code is tested against)."""
    n = len(leaves)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return leaves[0]
    k = _split(n)
    return node_hash(root_of(leaves[:k]), root_of(leaves[k:]))


class Frontier:
    """The O(log n) append state of a tree: its size and the frontier hashes."""

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        if size < 0 or len(hashes) != size.bit_count():
            raise ValueError(f"a tree of {size} leaves has {max(size, 0).bit_count()} frontier hashes")
        self.size = size
        self.hashes = list(hashes)

    def append(self, leaf: bytes) -> None:
        hashes = self.hashes
        hashes.append(leaf)
        size = self.size
        # Each trailing 1 bit of the old size is a perfect subtree that now has a twin.
        while size & 1:
            right = hashes.pop()
            left = hashes.pop()
            hashes.append(node_hash(left, right))
            size >>= 1
        self.size += 1

    def extend(self, leaves: Iterable[bytes]) -> None:
        for leaf in leaves:
            self.append(leaf)

    @classmethod
    def of(cls, leaves: Iterable[bytes]) -> Frontier:
        """The frontier of the tree of ``leaves``."""
        frontier = cls()
        frontier.extend(leaves)
        return frontier

    def root(self) -> bytes:
        hashes = self.hashes
        if not hashes:
            return EMPTY_ROOT
        acc = hashes[-1]
        for h in reversed(hashes[:-1]):
            acc = node_hash(h, acc)
        return acc

    def copy(self) -> Frontier:
        return Frontier(self.size, self.hashes)


def frontiers_at(leaves: Sequence[bytes], sizes: Iterable[int]) -> dict[int, Frontier]:
    """The frontier of the tree of the first ``n`` leaves for every ``n`` in ``sizes`` (that
    is at most ``len(leaves)``), in one pass."""
    wanted = {n for n in sizes if 0 <= n <= len(leaves)}
    out: dict[int, Frontier] = {}
    frontier = Frontier()
    if 0 in wanted:
        out[0] = frontier.copy()
    for i in range(max(wanted, default=0)):
        frontier.append(leaves[i])
        if i + 1 in wanted:
            out[i + 1] = frontier.copy()
    return out


class Tree:
    """A whole tree in memory (every level), for proofs; built in O(n)."""

    def __init__(self, leaves: Sequence[bytes]) -> None:
        self.levels: list[list[bytes]] = [list(leaves)]
        level = self.levels[0]
        while len(level) > 1:
            # An odd last node is carried up unchanged: RFC 6962 never hashes it alone.
            nxt = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
            if len(level) % 2:
                nxt.append(level[-1])
            self.levels.append(nxt)
            level = nxt

    @property
    def size(self) -> int:
        return len(self.levels[0])

    def root(self) -> bytes:
        return self.levels[-1][0] if self.size else EMPTY_ROOT

    def subtree(self, start: int, end: int) -> bytes:
        """MTH of leaves[start:end], using stored levels for aligned perfect blocks."""
        n = end - start
        if n == 0:
            return EMPTY_ROOT
        if n & (n - 1) == 0 and start % n == 0:
            return self.levels[n.bit_length() - 1][start // n]
        k = _split(n)
        return node_hash(self.subtree(start, start + k), self.subtree(start + k, end))

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """PATH(index, D[0:size]) of RFC 6962 §2.1.1."""
        size = self.size if size is None else size
        if not 0 <= index < size <= self.size:
            raise ValueError(f"no leaf {index} in a tree of {size}")
        return self._path(index, 0, size)

    def _path(self, m: int, start: int, end: int) -> list[bytes]:
        n = end - start
        if n == 1:
            return []
        k = _split(n)
        if m < k:
            return [*self._path(m, start, start + k), self.subtree(start + k, end)]
        return [*self._path(m - k, start + k, end), self.subtree(start, start + k)]

    def consistency_proof(self, old: int, new: int | None = None) -> list[bytes]:
        """PROOF(old, D[0:new]) of RFC 6962 §2.1.2."""
        new = self.size if new is None else new
        if not 0 < old <= new <= self.size:
            raise ValueError(f"no consistency proof from {old} to {new}")
        if old == new:
            return []
        return self._subproof(old, 0, new, True)

    def _subproof(self, m: int, start: int, end: int, complete: bool) -> list[bytes]:
        n = end - start
        if m == n:
            return [] if complete else [self.subtree(start, end)]
        k = _split(n)
        if m <= k:
            return [*self._subproof(m, start, start + k, complete), self.subtree(start + k, end)]
        return [*self._subproof(m - k, start + k, end, False), self.subtree(start, start + k)]


def _hashes(*values: bytes) -> bool:
    return all(len(v) == HASH_LEN for v in values)


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> bool:
    """RFC 9162 §2.1.3.2: does ``proof`` place leaf hash ``leaf`` at ``index`` under ``root``?

    Every hash must be a SHA-256 digest (32 bytes): without the length check an empty leaf
    would "verify" against an empty root in a tree of one."""
    if not 0 <= index < size or not _hashes(leaf, root, *proof):
        return False
    fn, sn = index, size - 1
    r = leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(old: int, new: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]) -> bool:
    """RFC 9162 §2.1.4.2: is the tree of size ``old`` a prefix of the one of size ``new``?

    Consistency is defined for ``0 < old <= new`` (RFC 6962 §2.1.2): the empty tree proves
    nothing, so a proof from size 0 (even to another empty tree) is refused, as is any hash
    that is not 32 bytes."""
    if not 0 < old <= new or not _hashes(old_root, new_root, *proof):
        return False
    if old == new:
        return old_root == new_root and not proof
    if not proof:
        return False
    path = list(proof)
    if old & (old - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old - 1, new - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == old_root and sr == new_root and sn == 0


def proof_document(index: int, size: int, leaf: bytes, root: bytes, path: Sequence[bytes]) -> bytes:
    """An inclusion proof as the export packet stores it (``proofs/<seq>.json``)::

        {"index": 17, "tree_size": 1234, "leaf_hash": "<base64>", "root": "<base64>",
         "inclusion_path": ["<base64>", ...]}

    written in exactly this form (two-space indent, final newline)."""

    doc = {
        "index": index,
        "tree_size": size,
        "leaf_hash": base64.b64encode(leaf).decode(),
        "root": base64.b64encode(root).decode(),
        "inclusion_path": [base64.b64encode(h).decode() for h in path],
    }
    return (json.dumps(doc, indent=2) + "\n").encode()
