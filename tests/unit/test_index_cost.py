"""`finpass_pipeline.dev.index_cost`'s bookkeeping: turns and the offsets a batch commits."""

from __future__ import annotations

from consumers.records import Incoming, PartitionProgress
from finpass_pipeline.dev.index_cost import _progress, _turns
from finpass_pipeline.events import parse_event, serialize_event
from tests.support.builders import registered


def test_each_step_starts_with_the_next_variant() -> None:
    names = ["before", "V19", "seed"]
    assert [_turns(names, step)[0] for step in range(4)] == ["before", "V19", "seed", "before"]
    assert sorted(_turns(names, 2)) == sorted(names)


def test_a_batch_commits_from_its_first_offset_to_after_its_last_per_partition() -> None:
    raw = serialize_event(registered("did:example:a"))
    batch = [Incoming(parse_event(raw), topic, partition, offset, raw)
             for topic, partition, offset in (("t", 0, 7), ("t", 1, 3), ("t", 0, 8), ("u", 0, 0))]
    assert _progress(batch) == {("t", 0): PartitionProgress(9, 0, 7),
                                ("t", 1): PartitionProgress(4, 0, 3),
                                ("u", 0): PartitionProgress(1, 0, 0)}
