"""Lanes: one poll batch committed as several concurrent transactions, split by partition.

One consumer process is serial: while PostgreSQL runs a batch's statements its Python thread
waits, and while Python applies the batch PostgreSQL idles (measured: the process was busy ~60 %
of the time). With lanes, each lane commits the records of its own partitions in its own
transaction on its own connection, concurrently: one lane's Python runs while another's
statements run. Every partition's records stay in one lane and in offset order, so this is the
same as that many consumers in the group, which the store already makes safe (advisory locks on
subjects, chain heads per partition, offsets per partition); the next batch starts once every
lane has committed. `FINPASS_CONSUMER_LANES`; 1 (the default) = one transaction per batch.
On this project's 2-core machine, where PostgreSQL, Kafka and the consumer already share the
cores, 2 lanes measured no faster (docs/performance.md#lanes): there is no idle CPU to fill.
They are for a consumer whose database is elsewhere and whose time goes to waiting on it.
"""

from __future__ import annotations

from collections import Counter

from consumers.records import Record, TopicPartition


def split(records: list[Record], lanes: int) -> list[list[Record]]:
    """`records` in `lanes` parts (some maybe empty), whole partitions per part and the order
    of `records` kept within each; partitions go largest first to the lightest part so far."""
    if lanes <= 1:
        return [records]
    sizes = Counter((r.topic, r.partition) for r in records)
    load = [0] * lanes
    lane_of: dict[TopicPartition, int] = {}
    for tp, n in sorted(sizes.items(), key=lambda item: (-item[1], item[0])):
        lightest = load.index(min(load))
        lane_of[tp] = lightest
        load[lightest] += n
    parts: list[list[Record]] = [[] for _ in range(lanes)]
    for r in records:
        parts[lane_of[(r.topic, r.partition)]].append(r)
    return parts
