"""Splitting a batch into lanes: whole partitions, order kept, nothing lost, balanced."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from consumers import lanes
from consumers.records import Record

RECORDS = st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 5)), max_size=300)


def records(sources: list[tuple[str, int]]) -> list[Record]:
    return [Record(t, p, i, None, b"") for i, (t, p) in enumerate(sources)]


@given(RECORDS, st.integers(1, 5))
def test_lanes_keep_whole_partitions_in_order(sources: list[tuple[str, int]], n: int) -> None:
    batch = records(sources)
    parts = lanes.split(batch, n)
    assert len(parts) == n
    # Nothing lost or repeated, and each part in the batch's order.
    assert sorted(r.offset for p in parts for r in p) == [r.offset for r in batch]
    for p in parts:
        assert [r.offset for r in p] == sorted(r.offset for r in p)
    # A partition is in exactly one lane.
    owner: dict[tuple[str, int], int] = {}
    for i, p in enumerate(parts):
        for r in p:
            assert owner.setdefault((r.topic, r.partition), i) == i


def test_partitions_are_balanced_largest_first() -> None:
    batch = records([("a", 0)] * 6 + [("a", 1)] * 3 + [("a", 2)] * 3 + [("b", 0)] * 1)
    parts = lanes.split(batch, 2)
    assert sorted(len(p) for p in parts) == [6, 7]
    assert lanes.split(batch, 1) == [batch]
