"""Synthetic data at production scale, for the analyst reports and their benchmark.

`finpass-pipeline datagen --users 500000 --credentials 1000000 --payments 1000000 --audit 10000000`
fills an empty, migrated database with rows shaped like the pipeline's own, spread over the last
~13 months and inserted in time order (as the pipeline would have): users with DIDs, KYC and
activity; credentials of those users with expiry, revocation and suspension; payments through
their lifecycle (PENDING → AUTHORIZED → CAPTURED → REFUNDED, FAILED, CANCELLED, a few stuck); and
`audit_events` — one row per domain change (correlated by `correlation_id` with the rows they
touched, `user_id_hash` = HMAC of the DID under the configured key) plus logins, failed logins
(with brute-force and credential-stuffing bursts), `user.seen` and rejected transitions.

The rows come from `finpass_pipeline.dev.synthetic` (pure and seeded); this module loads them.
Everything is streamed with COPY (text format) in one transaction — an interrupted run leaves
nothing — then VACUUM ANALYZE (statistics, visibility map) and `analyst.refresh_rollups(true)`.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from finpass_pipeline.dev.synthetic import Generator, Sizes
from finpass_pipeline.errors import FinpassError, UsageError
from finpass_pipeline.settings import Settings

__all__ = ["DatagenError", "Progress", "Result", "Sizes", "generate", "run_cli"]

Progress = Callable[[str, int], None]
"""progress(table, rows_just_written); called with 0 first to announce a table."""


class DatagenError(UsageError):
    """The target database cannot take generated data (not migrated, or not empty)."""


@dataclass
class Result:
    rows: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    sample_did: str = ""
    sample_user_hash: str = ""
    sample_correlation_id: str = ""


TABLES = ("users", "credentials", "credential_status", "payments", "audit_events")


async def _check_target(conn: asyncpg.Connection) -> None:
    if await conn.fetchval("SELECT to_regnamespace('analyst')") is None:
        raise DatagenError("the database is not migrated to V10: run `finpass-pipeline migrate`")
    for table in TABLES:
        if await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM {table})"):
            raise DatagenError(
                f"table {table} is not empty: datagen only loads an empty database "
                "(create a scratch database and point FINPASS_DATABASE_URL at it)")


async def _drop_secondary_indexes(conn: asyncpg.Connection) -> list[str]:
    """Drop the indexes no constraint owns; returns their CREATE INDEX statements.

    Building an index once after the load is several times faster than maintaining it row by
    row. Runs inside the load's transaction: if anything fails, the indexes are back.
    """
    rows = await conn.fetch(
        """
        SELECT i.indexrelid::regclass::text AS name, pg_get_indexdef(i.indexrelid) AS ddl
        FROM pg_index AS i
        WHERE i.indrelid = ANY($1::regclass[])
          AND NOT EXISTS (SELECT 1 FROM pg_constraint AS c WHERE c.conindid = i.indexrelid)
        ORDER BY 1
        """,
        list(TABLES),
    )
    for r in rows:
        await conn.execute(f"DROP INDEX {r['name']}")
    # The definition of a partitioned table's index reads "ON ONLY parent": as written it would
    # build an invalid index on the parent alone; without ONLY it builds every partition's too.
    return [str(r["ddl"]).replace(" ON ONLY ", " ON ", 1) for r in rows]


async def _prepare_audit_partitions(conn: asyncpg.Connection, since: float) -> bool:
    """True when audit_events is partitioned (V5); then its partitions cover `since` onwards."""
    kind = await conn.fetchval(
        "SELECT relkind::text FROM pg_class WHERE oid = 'audit_events'::regclass")
    if kind != "p":
        return False
    if await conn.fetchval("SELECT to_regproc('audit_ensure_partitions')") is None:
        raise DatagenError("audit_events is partitioned but audit_ensure_partitions() is missing")
    await conn.execute("SELECT audit_ensure_partitions(3, to_timestamp($1), now())", since)
    return True


async def generate(dsn: str, sizes: Sizes, hash_key: bytes, key_id: str, seed: int = 1,
                   progress: Progress | None = None) -> Result:
    """Load `sizes` rows into the empty, migrated database at `dsn`; returns counts and timings.

    One transaction: TRUNCATE (the tables are empty; it lets COPY FREEZE write rows already
    frozen and all-visible), create the audit partitions the history needs (when audit_events
    is partitioned: rows then go through the parent, without FREEZE), drop the secondary
    indexes, COPY every table, rebuild the indexes, commit; then VACUUM/ANALYZE and a full
    rollup refresh.

    Raises:
        DatagenError: the database is not migrated or already holds data.
    """
    result = Result()
    gen = Generator(sizes, hash_key, key_id, seed)
    conn = await asyncpg.connect(dsn)
    gc_was_enabled = gc.isenabled()
    gc.disable()  # millions of long-lived tuples: the cyclic GC only costs time here
    try:
        await _check_target(conn)
        started = time.perf_counter()
        async with conn.transaction():
            partitioned = await _prepare_audit_partitions(conn, gen.start)
            frozen = [t for t in TABLES if not (partitioned and t == "audit_events")]
            await conn.execute(f"TRUNCATE {', '.join(frozen)}")
            await conn.execute("SET LOCAL maintenance_work_mem = '512MB'")
            indexes = await _drop_secondary_indexes(conn)
            for table, columns, _total, chunks in gen.tables():
                t0 = time.perf_counter()
                if progress:
                    progress(table, 0)

                async def source(chunks: Iterator[list[str]] = chunks,
                                 table: str = table) -> AsyncIterator[bytes]:
                    for chunk in chunks:
                        result.rows[table] = result.rows.get(table, 0) + len(chunk)
                        if progress:
                            progress(table, len(chunk))
                        yield "".join(chunk).encode()

                await conn.copy_to_table(table, source=source(), columns=list(columns),
                                         format="text", freeze=table in frozen)
                result.seconds[table] = time.perf_counter() - t0
            t0 = time.perf_counter()
            if progress:
                progress("indexes", 0)
            for ddl in indexes:
                await conn.execute(ddl)
                if progress:
                    progress("indexes", 1)
            invalid = await conn.fetchval(
                "SELECT string_agg(indexrelid::regclass::text, ', ') FROM pg_index"
                " WHERE indrelid = ANY($1::regclass[]) AND NOT indisvalid", list(TABLES))
            if invalid:  # never commit a load whose indexes are not what the migrations built
                raise DatagenError(f"rebuilt indexes are not valid: {invalid}")
            result.seconds["indexes"] = time.perf_counter() - t0
            result.rows["indexes"] = len(indexes)
        result.seconds["load"] = time.perf_counter() - started
        t0 = time.perf_counter()
        # Frozen tables need statistics only; the rest also the visibility map (index-only).
        await conn.execute(f"ANALYZE {', '.join(frozen)}")
        for table in set(TABLES) - set(frozen):
            await conn.execute(f"VACUUM ANALYZE {table}")
        result.seconds["analyze"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        await conn.execute("SELECT analyst.refresh_rollups(true)")
        result.seconds["refresh_rollups"] = time.perf_counter() - t0
        result.sample_did = gen.dids[0]
        result.sample_user_hash = gen.hashes[0]
        if sizes.payments:
            pid = gen.pay_ids[-1]
            result.sample_correlation_id = f"chk-{pid[:8]}{pid[9:13]}{pid[14:18]}"
    finally:
        if gc_was_enabled:
            gc.enable()
        await conn.close()
    return result


def run_cli(args: Any, settings: Settings) -> int:
    """`finpass-pipeline datagen`: load with a progress bar, print counts and timings."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from finpass_pipeline.settings import DEV_AUDIT_HASH_KEY

    sizes = Sizes(args.users, args.credentials, args.payments, args.audit, args.days)
    key = settings.audit_hash_key.get_secret_value() if settings.audit_hash_key else ""
    console = Console(stderr=True)
    if not key:
        console.print("FINPASS_AUDIT_HASH_KEY is unset: user_id_hash uses the dev-mode key")
    totals = {"users": sizes.users, "credentials": sizes.credentials,
              "credential_status": sizes.credentials, "payments": sizes.payments,
              "audit_events": sizes.audit}
    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console) as bar:
        tasks: dict[str, Any] = {}

        def progress(table: str, rows: int) -> None:
            if table not in tasks:
                tasks[table] = bar.add_task(table, total=totals.get(table))
            bar.advance(tasks[table], rows)

        try:
            result = asyncio.run(generate(
                settings.database_url, sizes, (key or DEV_AUDIT_HASH_KEY).encode(),
                settings.audit_hash_key_id, args.seed, progress))
        except DatagenError:
            bar.stop()
            raise  # a UsageError: cli.main prints it, exit 2
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
            bar.stop()
            raise FinpassError("datagen failed, nothing was committed: "
                               f"{type(e).__name__}: {e}") from e
    for table, rows in result.rows.items():
        print(f"{table:>18}: {rows:>10,} in {result.seconds.get(table, 0.0):7.1f} s")
    phases = ("load", "analyze", "refresh_rollups")
    for phase in phases:
        print(f"{phase:>18}: {result.seconds[phase]:7.1f} s")
    print(f"{'total':>18}: {sum(result.seconds[p] for p in phases):7.1f} s")
    print(f"sample DID {result.sample_did}\n  its user_id_hash {result.sample_user_hash}\n"
          f"sample correlation_id {result.sample_correlation_id}")
    return 0
