"""The cyclic garbage collector, tuned for a batch consumer.

A batch of 2,000 events allocates some 60,000 container objects (models, row images, audit
rows, COPY tuples) that all live until the batch commits and are then freed by reference
counting; almost none are in cycles. With CPython's default threshold (700 net allocations) the
collector runs about 40 times per batch, each time walking every young survivor, and promotes
the batch into the old generations, whose full collections then walk the whole heap: measured
on the consumer's hot path (`docs/performance.md`), 35-45 µs of CPU per event, a third of it.

So: `freeze()` once the daemon has started (modules, clients and pools go to the permanent
generation, never walked again), and a first-generation threshold above a batch's net
allocations, so a collection runs about once per ten batches. Cycles are still collected (asyncio's
exception tracebacks, for one), only less often; the cost is at most one batch of garbage kept
a little longer (a few MB of RSS, measured in the bench's peak RSS).
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 200_000
"""Net container allocations between young collections, above what a batch of 2,000 events
keeps alive at once (a fetched-ahead batch and the committing one): measured on the store path
(`gc.callbacks` over 20,000 demo events, docs/performance.md), 50,000 gave a collection per
batch, 8.8 µs per event; 200,000 one per ten batches, 4 µs."""


def tune_for_batches() -> None:
    """Raise the young-generation threshold (older ones keep their defaults' ratio)."""
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)


def freeze_startup_heap() -> None:
    """Move everything alive now (after start-up) out of the collector's reach."""
    gc.collect()
    gc.freeze()
