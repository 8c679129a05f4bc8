"""The Merkle tree's pure parts: RFC 9162 hashing, proofs checked by a verifier written here from
the RFC's text (§2.1.3.2, §2.1.4.2), the incremental frontier, signed notes and the leaf."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from finpass_pipeline.audit.merkle import (
    EMPTY_ROOT,
    LEAF_COLUMNS,
    Frontier,
    Getter,
    consistency_path,
    inclusion_path,
    leaf_bytes,
    leaf_hash,
    needed,
    node_hash,
    subtree,
)
from finpass_pipeline.audit.note import (
    NoteError,
    Signer,
    checkpoint_text,
    load_signer,
    open_checkpoint,
)


def mth(leaves: list[bytes]) -> bytes:
    """RFC 9162 §2.1.1 MTH, straight from the definition (leaf hashes given)."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(b"\x01" + mth(leaves[:k]) + mth(leaves[k:])).digest()


def getter(leaves: list[bytes]) -> Getter:
    def get(level: int, index: int) -> bytes:
        return mth(leaves[index << level:(index + 1) << level])
    return get


def rfc_inclusion_root(index: int, size: int, leaf: bytes, path: list[bytes]) -> bytes | None:
    """RFC 9162 §2.1.3.2, step by step."""
    if index >= size:
        return None
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            r = hashlib.sha256(b"\x01" + p + r).digest()
            if not fn & 1:
                while fn and not fn & 1:
                    fn, sn = fn >> 1, sn >> 1
        else:
            r = hashlib.sha256(b"\x01" + r + p).digest()
        fn, sn = fn >> 1, sn >> 1
    return r if sn == 0 else None


def rfc_consistency_ok(first: int, second: int, path: list[bytes], r1: bytes, r2: bytes) -> bool:
    """RFC 9162 §2.1.4.2, step by step."""
    if first == second:
        return not path and r1 == r2
    if first == 0:
        return not path
    if not path:
        return False
    if first & (first - 1) == 0:
        path = [r1, *path]
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = hashlib.sha256(b"\x01" + c + fr).digest()
            sr = hashlib.sha256(b"\x01" + c + sr).digest()
            if not fn & 1:
                while fn and not fn & 1:
                    fn, sn = fn >> 1, sn >> 1
        else:
            sr = hashlib.sha256(b"\x01" + sr + c).digest()
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and fr == r1 and sr == r2


LEAVES = [leaf_hash(str(i).encode()) for i in range(70)]


def test_frontier_root_is_the_rfc_root_at_every_size() -> None:
    """Appending leaf by leaf gives MTH of the prefix at every size, and the stored nodes are
    the complete subtrees of height >= 4."""
    f = Frontier()
    assert f.root() == EMPTY_ROOT
    for n, h in enumerate(LEAVES, start=1):
        for level, index, value in f.append(h):
            assert level >= 4 and value == mth(LEAVES[index << level:(index + 1) << level])
        assert f.root() == mth(LEAVES[:n])
        again = Frontier(n, {lv: subtree(getter(LEAVES), i << lv, (i + 1) << lv)
                             for lv, i in Frontier.edge_keys(n)})
        assert again.root() == f.root()


@given(st.integers(1, 70).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n - 1))))
def test_inclusion_paths_verify_by_the_rfc_algorithm(case: tuple[int, int]) -> None:
    """Every inclusion path leads to the root (and not from another leaf)."""
    size, index = case
    path = inclusion_path(getter(LEAVES), index, size)
    assert rfc_inclusion_root(index, size, LEAVES[index], path) == mth(LEAVES[:size])
    other = LEAVES[(index + 1) % 70]
    assert rfc_inclusion_root(index, size, other, path) != mth(LEAVES[:size])


@given(st.integers(0, 70).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_consistency_proofs_verify_by_the_rfc_algorithm(case: tuple[int, int]) -> None:
    """Every consistency proof links the two roots; a different first root fails."""
    first, second = case
    path = consistency_path(getter(LEAVES), first, second)
    r1, r2 = mth(LEAVES[:first]), mth(LEAVES[:second])
    assert rfc_consistency_ok(first, second, path, r1, r2)
    if 0 < first < second:
        assert not rfc_consistency_ok(first, second, path, node_hash(r1, r1), r2)


def test_proofs_need_only_logarithmically_many_stored_hashes() -> None:
    """A proof in a tree of 10M leaves fetches O(log n) hashes (the bench's p95 rests on it)."""
    size = 10_000_000
    for index in (0, 1, 4_999_999, size - 1):
        def path(get: Getter, i: int = index) -> list[bytes]:
            return inclusion_path(get, i, size)

        keys = needed(path)
        assert len(keys) < 100, len(keys)
        assert all(level == 0 or level >= 4 for level, _ in keys)
    assert len(needed(lambda get: consistency_path(get, 3_333_333, size))) < 150


def test_signed_note_round_trip_and_rejections() -> None:
    """A checkpoint signed by a key opens under its vkey only; the vkey has the note format."""
    signer = load_signer("example.com/log", None, dev_mode=True)
    assert signer.dev and signer.name == "example.com/log-dev-insecure"
    root = mth(LEAVES[:5])
    note = signer.sign(checkpoint_text(signer.name, 5, root))
    name, key_hash_hex, key = signer.vkey().split("+", 2)
    assert name == signer.name and len(key_hash_hex) == 8 and key
    cp = open_checkpoint(note, signer.vkey())
    assert (cp.origin, cp.size, cp.root) == (signer.name, 5, root)
    with pytest.raises(NoteError):
        open_checkpoint(note.replace("\n5\n", "\n6\n"), signer.vkey())
    other = Signer(signer.name, load_signer("x", None, True).private)
    assert other.vkey() == signer.vkey()  # same seed: the dev key is deterministic
    with pytest.raises(NoteError, match="no spaces"):
        load_signer("bad name", None, dev_mode=True)
    with pytest.raises(NoteError, match="FINPASS_AUDIT_SIGNING_KEY"):
        load_signer("example.com/log", None, dev_mode=False)


def test_leaf_bytes_follow_the_documented_layout() -> None:
    """["finpass-leaf-v1", values...]: compact ASCII JSON, UUIDs/timestamps/bytes canonical."""
    values: list[object] = [None] * len(LEAF_COLUMNS)
    values[0] = uuid.UUID(int=1)
    values[LEAF_COLUMNS.index("created_at")] = datetime(2026, 12, 1, tzinfo=UTC)
    values[LEAF_COLUMNS.index("description")] = "caf\u00e9 \"x\""
    values[LEAF_COLUMNS.index("pii_digest")] = b"\xab" * 32
    values[LEAF_COLUMNS.index("chain_seq")] = 7
    leaf = leaf_bytes(values)
    assert leaf.startswith(b'["finpass-leaf-v1","00000000-0000-0000-0000-000000000001",null')
    assert b'"caf\\u00e9 \\"x\\""' in leaf and b'"2026-12-01T00:00:00.000000+00:00"' in leaf
    assert leaf.endswith(b',7,null,null,null,"' + b"ab" * 32 + b'"]')
