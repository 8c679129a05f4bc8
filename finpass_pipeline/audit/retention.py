"""`finpass-pipeline audit retention`: drop whole audit partitions whose rows are past retention.

The rule (enforced by the SQL procedure `audit_retention_drop`, not only here):
  * only whole monthly partitions go, oldest first, and only months that have ended;
  * a partition goes only when EVERY row in it is past its own retention:
    `created_at + retention_days days < now()`; a row with NULL retention_days is kept forever,
    and keeps its whole partition (and every newer one) with it;
  * the first partition that must stay stops the run, so each chain always loses a prefix.
Before a partition is dropped, the last (chain_seq, row_hash) of each chain in it is recorded in
`audit_retention_anchors`; `audit verify` starts each chain there, checking the first retained
row's link against the anchor.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg


@dataclass
class PartitionOutcome:
    name: str
    range_from: datetime
    range_to: datetime
    dropped: bool
    reason: str = ""
    anchors: list[tuple[str, int]] = field(default_factory=list)
    """(chain_id, last removed chain_seq) per chain the partition held."""


async def run_retention(conn: asyncpg.Connection, dry_run: bool = False,
                        now: datetime | None = None) -> list[PartitionOutcome]:
    """Drop (or, with `dry_run`, list) the partitions past retention, oldest first.

    Each partition is dropped in its own transaction. Returns one outcome per partition looked
    at; the last one is the partition that stopped the run (dropped=False), if any.
    """
    now = now or datetime.now(UTC)
    outcomes: list[PartitionOutcome] = []
    for p in await conn.fetch("SELECT partition_name, range_from, range_to "
                              "FROM audit_partitions()"):
        outcome = PartitionOutcome(p["partition_name"], p["range_from"], p["range_to"], False)
        outcomes.append(outcome)
        if p["range_to"] > now:
            outcome.reason = "the month has not ended"
            break
        try:
            async with conn.transaction():
                rows = await conn.fetch(
                    "SELECT chain_id, chain_seq FROM audit_retention_drop($1, $2)",
                    outcome.name, dry_run)
        except asyncpg.ObjectNotInPrerequisiteStateError as e:
            outcome.reason = str(e)
            break
        outcome.dropped = True
        outcome.anchors = [(r["chain_id"], r["chain_seq"]) for r in rows]
    return outcomes
