"""The audit log's Merkle tree (RFC 9162 §2.1) and the `finpass-leaf-v1` leaf encoding.

    leaf hash  = SHA-256(0x00 || leaf)
    node hash  = SHA-256(0x01 || left || right)
    MTH({})    = SHA-256("")

Storage: leaf hashes in `audit_tree_leaves` (level 0) and the complete subtrees of height
>= `STORED_LEVEL` in `audit_tree_nodes`; the few below are recomputed from leaves (at most
2^(STORED_LEVEL-1) leaf hashes per subtree). A proof is computed in two passes of the same
recursion: the first collects the (level, index) hashes it needs, one query fetches them, the
second computes (`resolve`).

Leaf (`LEAF_ENCODING`): the ASCII bytes of the compact JSON array
`["finpass-leaf-v1", <the LEAF_COLUMNS values of the row>]`, encoded exactly as the chain's
canonical encoding (chain.py); `pii_digest` as 64 lowercase hex characters. docs/audit.md §6.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from finpass_pipeline.audit.chain import _encode, ts_text

LEAF_ENCODING = "finpass-leaf-v1"

LEAF_COLUMNS: tuple[str, ...] = (
    "id", "event_type", "user_id_hash", "tenant_id", "resource_id", "resource_type", "action",
    "outcome", "severity", "description", "previous_values", "new_values", "performed_by",
    "performed_by_role", "source_system", "correlation_id", "request_id", "duration_ms",
    "error_code", "stack_trace", "client_version", "api_version", "compliance_flags",
    "retention_days", "created_at", "event_id", "occurred_at", "hash_key_id", "chain_id",
    "chain_seq", "row_hash", "audit_seq", "hash_version", "pii_digest",
)
"""Every column of `audit_events` but the personal ones and `pii_salt`, in table order: what a
leaf commits to (the personal values through `pii_digest`)."""

STORED_LEVEL = 4
"""Complete subtrees of this height and above are stored (`audit_tree_nodes`)."""

EMPTY_ROOT = hashlib.sha256(b"").digest()

Getter = Callable[[int, int], bytes]
"""(level, index) -> hash of the complete subtree over [index << level, (index + 1) << level)."""


def leaf_bytes(values: Sequence[Any]) -> bytes:
    """The leaf of a row, from its `LEAF_COLUMNS` values as SELECTed (bytes -> hex)."""
    return _encode([LEAF_ENCODING, *(
        v if v is None or type(v) is str or type(v) is int  # exact types first: fast
        else v.hex() if isinstance(v, bytes) else str(v) if isinstance(v, uuid.UUID)
        else ts_text(v) if isinstance(v, datetime) else v for v in values)]).encode()


def leaf_hash(leaf: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def subtree(get: Getter, start: int, end: int) -> bytes:
    """MTH of leaves [start, end), from stored hashes; `start` is aligned as RFC 9162 splits."""
    n = end - start
    if n <= 0:
        return EMPTY_ROOT
    if n & (n - 1) == 0:
        level = n.bit_length() - 1
        if level == 0 or level >= STORED_LEVEL:
            return get(level, start >> level)
    k = _split(n)
    return node_hash(subtree(get, start, start + k), subtree(get, start + k, end))


def inclusion_path(get: Getter, index: int, size: int) -> list[bytes]:
    """RFC 9162 §2.1.3.1 PATH(index, D[size]), leaf side first."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of size {size}")
    path: list[bytes] = []
    start, end, m = 0, size, index
    while end - start > 1:
        k = _split(end - start)
        if m < k:
            path.append(subtree(get, start + k, end))
            end = start + k
        else:
            path.append(subtree(get, start, start + k))
            start, m = start + k, m - k
    path.reverse()
    return path


def consistency_path(get: Getter, first: int, second: int) -> list[bytes]:
    """RFC 9162 §2.1.4.1 PROOF(first, D[second])."""
    if not 0 <= first <= second:
        raise ValueError(f"no consistency proof from size {first} to {second}")
    if first in (0, second):
        return []
    proof: list[bytes] = []
    start, end, m, whole = 0, second, first, True
    while m != end - start:
        k = _split(end - start)
        if m <= k:
            proof.append(subtree(get, start + k, end))
            end = start + k
        else:
            proof.append(subtree(get, start, start + k))
            start, m, whole = start + k, m - k, False
    if not whole:
        proof.append(subtree(get, start, end))
    proof.reverse()
    return proof


def needed(compute: Callable[[Getter], object]) -> set[tuple[int, int]]:
    """The (level, index) hashes `compute` asks for (it is run once with dummy hashes)."""
    keys: set[tuple[int, int]] = set()

    def record(level: int, index: int) -> bytes:
        keys.add((level, index))
        return EMPTY_ROOT

    compute(record)
    return keys


class Frontier:
    """The right edge of a growing tree (one complete subtree per set bit of its size): appends
    leaves, yields the stored-level nodes they complete, and gives the root at any size."""

    def __init__(self, size: int = 0, edge: Mapping[int, bytes] | None = None) -> None:
        self.size = size
        self.edge: dict[int, bytes] = dict(edge or {})

    @staticmethod
    def edge_keys(size: int) -> list[tuple[int, int]]:
        """(level, index) of the complete subtrees on the right edge of a tree of `size`."""
        keys, start = [], 0
        for level in range(size.bit_length() - 1, -1, -1):
            if size >> level & 1:
                keys.append((level, start >> level))
                start += 1 << level
        return keys

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        """Add a leaf hash; returns the new complete nodes of level >= STORED_LEVEL."""
        h, level, index, made = leaf, 0, self.size, []
        while index & 1:
            h = node_hash(self.edge.pop(level), h)
            level, index = level + 1, index >> 1
            if level >= STORED_LEVEL:
                made.append((level, index, h))
        self.edge[level] = h
        self.size += 1
        return made

    def extend(self, leaves: Iterable[bytes]) -> list[tuple[int, int, bytes]]:
        made = []
        for leaf in leaves:
            made.extend(self.append(leaf))
        return made

    def root(self) -> bytes:
        h: bytes | None = None
        for level in sorted(self.edge):
            h = self.edge[level] if h is None else node_hash(self.edge[level], h)
        return h if h is not None else EMPTY_ROOT
