"""`finpass-pipeline prune`: delete old bookkeeping rows that would otherwise grow forever.

* `processed_events` holds one idempotency claim per event. A claim only matters while the same
  event can arrive again: a producer's retry, an outbox relay re-sending after a crash, a topic
  replayed into this database. Claims older than the window (default 30 days, far beyond Kafka's
  default 7-day retention) go; claims of events still parked (`state = 'PARKED'`) never do.
* With `--outbox`, `event_outbox` rows already sent (`sent_at`) older than the window go from
  FINPASS_OUTBOX_DATABASE_URL; unsent rows never do.

Deletion walks time slices forward (a BRIN index on the timestamp finds each slice's pages), one
short transaction per slice, so the consumer and the relay keep running: nothing is locked for
long and no scan goes over the rows already deleted. The slice adapts to aim at `batch_size` rows.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from finpass_pipeline.db import connect
from finpass_pipeline.errors import print_error
from finpass_pipeline.settings import Settings

DEFAULT_WINDOW = "30d"
PROGRESS_EVERY_S = 5.0
Say = Callable[[str], None]


_err = print_error

_UNITS = {"d": "days", "h": "hours", "m": "minutes"}
_DURATION = re.compile(r"(\d+)([dhm])")


def parse_window(text: str) -> timedelta:
    """`30d`, `12h` or `90m` to a positive duration; ValueError with the accepted forms."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a duration: use a whole number of days, hours or "
                         "minutes, e.g. 30d, 12h, 90m")
    value = timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    if value <= timedelta(0):
        raise ValueError(f"{text!r} must be longer than zero")
    return value


@dataclass(frozen=True)
class Target:
    """One table to prune: which rows may go, ordered by which timestamp."""

    table: str
    stamp: str
    keep_condition: str  # rows matching it are never deleted


CLAIMS = Target("processed_events", "processed_at", "state = 'PARKED'")
OUTBOX = Target("event_outbox", "sent_at", "sent_at IS NULL")


@dataclass
class PruneResult:
    table: str
    cutoff: datetime
    deleted: int = 0
    slices: int = 0
    reached: datetime | None = None
    """Every eligible row before this instant is gone."""


Progress = Callable[[PruneResult], None]


async def prune(conn: asyncpg.Connection, target: Target, window: timedelta, *,
                batch_size: int = 10_000, dry_run: bool = False,
                progress: Progress | None = None) -> PruneResult:
    """Delete (or, with `dry_run`, count) `target`'s rows older than `window`."""
    cutoff = await conn.fetchval("SELECT now() - $1::interval", window)
    result = PruneResult(target.table, cutoff)
    eligible = (f"{target.stamp} < $1 AND NOT ({target.keep_condition})")
    if dry_run:
        result.deleted = int(await conn.fetchval(
            f"SELECT count(*) FROM {target.table} WHERE {eligible}", cutoff))
        return result
    start = await conn.fetchval(
        f"SELECT min({target.stamp}) FROM {target.table} WHERE {eligible}", cutoff)
    if start is None:
        return result
    step = timedelta(minutes=10)
    delete = (f"DELETE FROM {target.table} WHERE {target.stamp} >= $1 "
              f"AND {target.stamp} < $2 AND NOT ({target.keep_condition})")
    while start < cutoff:
        end = min(start + step, cutoff)
        status = await conn.execute(delete, start, end)
        gone = int(status.split()[-1])
        result.deleted += gone
        result.slices += 1
        result.reached = end
        if progress is not None:
            progress(result)
        start = end
        # Aim each slice at about batch_size rows: longer after sparse slices, shorter after
        # dense ones (never below a second, so a burst cannot stall the walk).
        if gone < batch_size // 2:
            step *= 2
        elif gone > batch_size * 2:
            step = max(step / 2, timedelta(seconds=1))
    return result


# --- the command ---------------------------------------------------------------------------------

async def run(settings: Settings, window: timedelta, *, outbox: bool = False,
              batch_size: int = 10_000, dry_run: bool = False, say: Say = print,
              err: Say = _err) -> int:
    """`finpass-pipeline prune`: exit 0 done, 1 database missing or failing."""
    target = OUTBOX if outbox else CLAIMS
    dsn = settings.outbox_dsn() if outbox else settings.database_url
    role = None if outbox else settings.database_role
    try:
        conn = await connect(dsn, role=role)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
        err(f"cannot connect to PostgreSQL: {e}")
        return 1
    last_report = time.monotonic()

    def report(r: PruneResult) -> None:
        nonlocal last_report
        if time.monotonic() - last_report >= PROGRESS_EVERY_S:
            last_report = time.monotonic()
            say(f"{r.table}: {r.deleted:,} row(s) deleted so far, up to {r.reached:%Y-%m-%d %H:%M}")

    try:
        if await conn.fetchval("SELECT to_regclass($1)", target.table) is None:
            hint = ("install the outbox (producers.outbox.install) there" if outbox
                    else "run `finpass-pipeline migrate` against this database")
            err(f"table {target.table} not found: {hint}")
            return 1
        result = await prune(conn, target, window, batch_size=batch_size, dry_run=dry_run,
                             progress=report)
    except asyncpg.PostgresError as e:
        err(f"database error: {type(e).__name__}: {e}")
        return 1
    finally:
        await conn.close()
    verb = "would delete" if dry_run else "deleted"
    kept = "unsent rows" if outbox else "claims of parked events"
    say(f"{target.table}: {verb} {result.deleted:,} row(s) older than "
        f"{result.cutoff:%Y-%m-%d %H:%M:%S%z} ({kept} are always kept)")
    return 0
