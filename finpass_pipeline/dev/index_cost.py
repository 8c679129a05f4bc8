"""What the indexes cost at ingest: the same rows written into databases that differ only in their
indexes (docs/indexes.md).

    python -m finpass_pipeline.dev.index_cost [--events 50000] [--users 5000] [--rounds 3]

The demo stream (`producers.demo_stream`, as `bench` sends it, spread over six partitions per
topic) is written once through the consumer's own store (`consumers.store.Store.commit_batch`,
in the consumer's batches of 2,000 records) into a staging database; what that leaves in the
tables the consumer writes per event is read back. Each round then writes it into one fresh
database per variant, in two phases:

  copy   the staged rows COPYed in, one transaction per database: index upkeep with nothing
         else around it (`bench`'s database ceiling, plus the sealed contact data, data keys and
         chained audit rows it leaves out);
  store  the same events through `Store.commit_batch` again: the consumer's transactions
         (claims, locks, look-ups, COPYs, UPDATEs, chain heads, offsets), the consumer's Python
         in the wall time but not in the backend's CPU.

The variants take turns, 5,000 rows (copy) or one batch (store) at a time, each on its own
connection and starting in turn, so that whatever else runs on a shared machine weighs on all
of them alike; the numbers to compare are the ratios within a round.

Variants: `before` is the schema before V19 (migrated to V18), `V19` the newest, `seed` the
newest with every index of those tables dropped that is neither the seed's (V1/V2) nor behind a
constraint — in the store phase except the two the consumer's own erasure statements need
(STORE_NEEDS: without them each erasure scans credentials, a cost of plans, not of upkeep).
Measured: the CPU of each PostgreSQL backend (/proc/<pid>/stat, so the database server must run
on this machine) and the wall time of its calls, per event; the blocks each database read into
shared buffers (pg_stat_database: misses, which random-key indexes make most of once the
buffers are short); and the checkpoints during each phase (after one, the next change of every
page writes the whole page to the WAL). `--unlogged` makes the tables UNLOGGED: the index upkeep
without its WAL.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import statistics
import sys
import time
import uuid
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from consumers.apply import Applier
from consumers.records import Incoming, PartitionProgress
from consumers.store import Store
from finpass_pipeline.audit.pseudonym import Pseudonymizer
from finpass_pipeline.db import create_database, drop_database
from finpass_pipeline.dev import cpu
from finpass_pipeline.dev.bench import BENCH_PII_MASTER_KEY
from finpass_pipeline.events import message_key, parse_event, serialize_event, topic_suffix
from finpass_pipeline.migrations import migrate
from finpass_pipeline.privacy.crypto import MasterKeyring
from finpass_pipeline.privacy.vault import Vault, blind_index_key
from finpass_pipeline.settings import Settings

TABLES = ("users", "credentials", "credential_status", "payments", "person_keys",
          "audit_events", "processed_events")
"""What the consumer writes per event, in foreign-key order."""

SEED_INDEXES = frozenset({
    "idx_users_did", "idx_users_status", "idx_users_kyc_verified", "idx_users_last_seen",
    "idx_credentials_user_id", "idx_credentials_status", "idx_credentials_issuer_id",
    "idx_credentials_expires_at", "idx_credentials_revocation_handle",
    "idx_credentials_credential_hash", "idx_payments_payer_did", "idx_payments_payee_did",
    "idx_payments_status", "idx_payments_transaction_id", "idx_payments_created_at",
    "idx_audit_events_event_type", "idx_audit_events_created_at",
    "idx_audit_events_user_id_hash", "idx_audit_events_severity",
    "idx_audit_events_correlation_id",
})
"""The seed's 20 indexes (M1.7's list, created by V2); its keys and UNIQUEs are constraints."""

STORE_NEEDS = frozenset({"idx_credentials_subject_did", "idx_credentials_revoked_by"})
"""Non-seed indexes a statement of the consumer's batch reads (erasure: privacy.erasure)."""

VARIANTS = ("before", "V19", "seed")
CHUNK = 5_000
"""Rows per COPY turn in the copy phase."""
BEFORE_V19 = 18
PARTITIONS = 6
GROUP = "index-cost"


@dataclass
class Measured:
    wall_s: float
    cpu_s: float
    reads: int = 0
    """Blocks its database read into shared buffers (misses), autovacuum's included."""


async def _reads(admin_dsn: str, names: Sequence[str]) -> dict[str, int]:
    """blks_read of each database (pg_stat_database: one database per variant)."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        return {r["datname"]: int(r["blks_read"]) for r in await conn.fetch(
            "SELECT datname, blks_read FROM pg_stat_database WHERE datname = ANY($1::text[])",
            list(names))}
    finally:
        await conn.close()


async def _variant_db(admin_dsn: str, name: str, variant: str,
                      keep: frozenset[str] = frozenset(), unlogged: bool = False) -> str:
    """A fresh database with `variant`'s indexes (`seed` keeps `keep` besides the seed's);
    with `unlogged`, TABLES (every audit partition) are UNLOGGED: no WAL, no page images."""
    dsn = await create_database(admin_dsn, name)
    await migrate(dsn, target=BEFORE_V19 if variant == "before" else None)
    conn = await asyncpg.connect(dsn)
    try:
        if unlogged:
            partitions = [r["p"] for r in await conn.fetch(
                "SELECT inhrelid::regclass::text AS p FROM pg_inherits"
                " WHERE inhparent = 'audit_events'::regclass")]
            # Referencing tables first: a permanent table may not reference an unlogged one.
            for table in ("credential_status", "credentials", "users", "payments",
                          "person_keys", "processed_events", *partitions):
                await conn.execute(f"ALTER TABLE {table} SET UNLOGGED")
        if variant == "seed":
            for r in await conn.fetch(
                    "SELECT c.relname FROM pg_index AS i JOIN pg_class AS c ON c.oid = i.indexrelid"
                    " JOIN pg_class AS t ON t.oid = i.indrelid"
                    " WHERE t.relnamespace = 'public'::regnamespace"
                    " AND t.relname = ANY($1::text[])"
                    " AND NOT EXISTS (SELECT 1 FROM pg_constraint AS k"
                    "                 WHERE k.conindid = i.indexrelid)"
                    " AND NOT EXISTS (SELECT 1 FROM pg_inherits AS h"
                    "                 WHERE h.inhrelid = i.indexrelid)", list(TABLES)):
                if r["relname"] not in SEED_INDEXES | keep:
                    await conn.execute(f'DROP INDEX "{r["relname"]}"')
    finally:
        await conn.close()
    return dsn


def _incoming(events: int, users: int, seed: int) -> list[list[Incoming]]:
    """The demo stream as the consumer reads it, in batches of at most 2,000 records: each
    topic's events spread over PARTITIONS partitions by key (per-key order kept)."""
    from producers.demo_stream import demo_events

    start = datetime.now(UTC) - timedelta(days=30)
    offsets: dict[tuple[str, int], int] = {}
    out = []
    for e in demo_events(events, users, seed, start):
        raw, key = serialize_event(e), message_key(e)
        tp = (f"finpass.{topic_suffix(e.event_type)}", zlib.crc32(key) % PARTITIONS)
        offset = offsets[tp] = offsets.get(tp, -1) + 1
        out.append(Incoming(parse_event(raw), tp[0], tp[1], offset, raw, key))
    return [out[i:i + 2000] for i in range(0, len(out), 2000)]


def _store(pool: asyncpg.Pool) -> Store:
    pz = Pseudonymizer(b"index-cost-key", "k1")
    keyring = MasterKeyring("m1", {"m1": base64.b64decode(BENCH_PII_MASTER_KEY)})
    return Store(pool, GROUP, Applier(pz), vault=Vault(keyring, blind_index_key(pz)))


def _turns(names: Sequence[str], step: int) -> list[str]:
    """`names` starting at a different one each step: nobody is always first."""
    k = step % len(names)
    return [*names[k:], *names[:k]]


def _progress(batch: list[Incoming]) -> dict[tuple[str, int], PartitionProgress]:
    """The offsets a batch commits, as the consumer computes them."""
    progress: dict[tuple[str, int], PartitionProgress] = {}
    for inc in batch:
        tp = (inc.topic, inc.partition)
        first = progress[tp].from_offset if tp in progress else inc.offset
        progress[tp] = PartitionProgress(inc.offset + 1, 0, first)
    return progress


_CHECKPOINTS = "SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter"


async def _through_stores(dsns: dict[str, str], batches: list[list[Incoming]]
                          ) -> tuple[dict[str, Measured], int]:
    """Every batch through Store.commit_batch into each database, the variants taking turns
    batch by batch, each on one connection: its backend's CPU, the wall time of its calls; and
    how many checkpoints the server made meanwhile."""
    pools = {v: await asyncpg.create_pool(d, min_size=1, max_size=1) for v, d in dsns.items()}
    try:
        stores = {v: _store(p) for v, p in pools.items()}
        backends = {v: int(await p.fetchval("SELECT pg_backend_pid()")) for v, p in pools.items()}
        first = next(iter(pools.values()))
        checkpoints = int(await first.fetchval(_CHECKPOINTS))
        cpu0 = {v: cpu.cpu_seconds(b) or 0.0 for v, b in backends.items()}
        wall = dict.fromkeys(dsns, 0.0)
        for step, batch in enumerate(batches):
            progress = _progress(batch)
            for v in _turns(list(dsns), step):
                t0 = time.monotonic()
                await stores[v].commit_batch(batch, [], progress)
                wall[v] += time.monotonic() - t0
        used = {v: (cpu.cpu_seconds(b) or 0.0) - cpu0[v] for v, b in backends.items()}
        checkpoints = int(await first.fetchval(_CHECKPOINTS)) - checkpoints
        for v, p in pools.items():
            if int(await p.fetchval("SELECT pg_backend_pid()")) != backends[v]:
                raise RuntimeError(f"{v}: the store's connection was replaced mid-run")
        return {v: Measured(wall[v], used[v]) for v in dsns}, checkpoints
    finally:
        for p in pools.values():
            await p.close()


Staged = list[tuple[str, list[str], list[tuple[Any, ...]]]]
"""(table, columns, rows) of every table of TABLES, in that order."""


async def _read_back(dsn: str) -> Staged:
    conn = await asyncpg.connect(dsn)
    try:
        out: Staged = []
        for table in TABLES:
            columns = [r["attname"] for r in await conn.fetch(
                "SELECT attname FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0"
                " AND NOT attisdropped ORDER BY attnum", table)]
            rows = await conn.fetch(f"SELECT {', '.join(columns)} FROM {table}")
            out.append((table, columns, [tuple(r) for r in rows]))
        return out
    finally:
        await conn.close()


async def _copies(dsns: dict[str, str], staged: Staged) -> tuple[dict[str, Measured], int]:
    """The staged rows COPYed into each database in one transaction each, the variants taking
    turns CHUNK rows at a time: each backend's CPU, the wall time of its COPYs and commit; and
    how many checkpoints the server made meanwhile."""
    conns = {v: await asyncpg.connect(d) for v, d in dsns.items()}
    try:
        backends = {v: int(await c.fetchval("SELECT pg_backend_pid()")) for v, c in conns.items()}
        first = next(iter(conns.values()))
        checkpoints = int(await first.fetchval(_CHECKPOINTS))
        cpu0 = {v: cpu.cpu_seconds(b) or 0.0 for v, b in backends.items()}
        wall = dict.fromkeys(dsns, 0.0)
        for c in conns.values():
            await c.execute("BEGIN")
        step = 0
        for table, columns, rows in staged:
            for i in range(0, len(rows), CHUNK):
                for v in _turns(list(dsns), step):
                    t0 = time.monotonic()
                    await conns[v].copy_records_to_table(table, records=rows[i:i + CHUNK],
                                                         columns=columns)
                    wall[v] += time.monotonic() - t0
                step += 1
        for v in _turns(list(dsns), step):
            t0 = time.monotonic()
            await conns[v].execute("COMMIT")
            wall[v] += time.monotonic() - t0
        used = {v: (cpu.cpu_seconds(b) or 0.0) - cpu0[v] for v, b in backends.items()}
        checkpoints = int(await first.fetchval(_CHECKPOINTS)) - checkpoints
        return {v: Measured(wall[v], used[v]) for v in dsns}, checkpoints
    finally:
        for c in conns.values():
            await c.close()


async def _index_sizes(dsn: str) -> list[tuple[str, str, int]]:
    """(table, index, bytes over all partitions) of every index of TABLES."""
    conn = await asyncpg.connect(dsn)
    try:
        return [(r["t"], r["i"], int(r["b"])) for r in await conn.fetch(
            "SELECT t.relname AS t, c.relname AS i,"
            " COALESCE((SELECT sum(pg_relation_size(p.relid)) FROM pg_partition_tree(c.oid) AS p),"
            "          pg_relation_size(c.oid)) AS b"
            " FROM pg_index AS x JOIN pg_class AS c ON c.oid = x.indexrelid"
            " JOIN pg_class AS t ON t.oid = x.indrelid"
            " WHERE t.relnamespace = 'public'::regnamespace AND t.relname = ANY($1::text[])"
            " AND NOT EXISTS (SELECT 1 FROM pg_inherits AS h WHERE h.inhrelid = c.oid)"
            " ORDER BY 1, 2", list(TABLES))]
    finally:
        await conn.close()


async def run(admin_dsn: str, events: int, users: int, rounds: int, seed: int,
              unlogged: bool = False) -> int:
    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S") + uuid.uuid4().hex[:4]
    batches = _incoming(events, users, seed)
    n = sum(len(b) for b in batches)
    made: list[str] = []

    async def fresh(name: str, variant: str, keep: frozenset[str] = frozenset()) -> str:
        made.append(f"idxcost_{stamp}_{name}")
        return await _variant_db(admin_dsn, made[-1], variant, keep, unlogged)

    async def drop(count: int) -> None:
        for _ in range(count):
            await drop_database(admin_dsn, made.pop())

    async def count_reads(measured: dict[str, Measured], names: list[str],
                           reads0: dict[str, int]) -> None:
        # The backends flush their counters when they close; give the last one a moment.
        await asyncio.sleep(1.0)
        after = await _reads(admin_dsn, names)
        for m, name in zip(measured.values(), names, strict=True):
            m.reads = after.get(name, 0) - reads0.get(name, 0)

    try:
        staging = await fresh("staging", "V19")
        await _through_stores({"staging": staging}, batches)  # untimed: it only stages
        staged = await _read_back(staging)
        rows = {t: len(r) for t, _, r in staged}
        await drop(1)
        print(f"{n:,} events of the demo stream ({users:,} users): "
              + ", ".join(f"{t} {c:,}" for t, c in rows.items()))
        results: dict[tuple[str, str], list[Measured]] = {}
        sizes: dict[str, list[tuple[str, str, int]]] = {}
        for r in range(rounds):
            dsns = {v: await fresh(f"{r}_{v.lower()}_copy", v) for v in VARIANTS}
            reads0 = await _reads(admin_dsn, made[-len(dsns):])
            measured, checkpoints = await _copies(dsns, staged)
            await count_reads(measured, made[-len(dsns):], reads0)
            for v, m in measured.items():
                results.setdefault(("copy", v), []).append(m)
            made_checkpoints = {"copy": checkpoints}
            for v, dsn in dsns.items():
                sizes.setdefault(v, await _index_sizes(dsn))
            await drop(len(dsns))
            dsns = {v: await fresh(f"{r}_{v.lower()}_store", v, STORE_NEEDS) for v in VARIANTS}
            reads0 = await _reads(admin_dsn, made[-len(dsns):])
            measured, made_checkpoints["store"] = await _through_stores(dsns, batches)
            await count_reads(measured, made[-len(dsns):], reads0)
            for v, m in measured.items():
                results.setdefault(("store", v), []).append(m)
            await drop(len(dsns))
            _print_round(r, {k: v[-1] for k, v in results.items()}, n, made_checkpoints)
        _print_summary(results, n)
        _print_sizes(sizes, rows)
        return 0
    finally:
        for name in made:
            await drop_database(admin_dsn, name)


def _us(seconds: float, n: int) -> float:
    return seconds / n * 1e6


def _print_round(r: int, last: dict[tuple[str, str], Measured], n: int,
                 checkpoints: dict[str, int]) -> None:
    # A checkpoint makes the next change of every page write the whole page to the WAL: more
    # index pages touched, more such writes. On a shared server other jobs cause them (each
    # DROP DATABASE forces one), so say how many fell into each phase.
    print(f"\nround {r + 1}: µs per event, backend CPU / wall (x: against seed, buffer reads per "
          f"event); checkpoints "
          f"during copy {checkpoints['copy']}, during store {checkpoints['store']}")
    for phase in ("copy", "store"):
        seed = last[(phase, "seed")]
        cells = []
        for v in VARIANTS:
            m = last[(phase, v)]
            cells.append(f"{v} {_us(m.cpu_s, n):.1f} / {_us(m.wall_s, n):.1f}"
                         f" (x{m.cpu_s / seed.cpu_s:.2f} / x{m.wall_s / seed.wall_s:.2f},"
                         f" {m.reads / n:.2f} reads)")
        print(f"  {phase:<5} " + "; ".join(cells))


def _print_summary(results: dict[tuple[str, str], list[Measured]], n: int) -> None:
    """Medians over the rounds, and each variant against `seed` of the same round."""
    print("\n| phase | variant | backend CPU µs/event | wall µs/event | CPU ÷ seed | wall ÷ seed "
          "| buffer reads/event |")
    print("|---|---|--:|--:|--:|--:|--:|")
    for phase in ("copy", "store"):
        seed = results[(phase, "seed")]
        for v in VARIANTS:
            got = results[(phase, v)]
            cpu_ratio = [m.cpu_s / s.cpu_s for m, s in zip(got, seed, strict=True)]
            wall_ratio = [m.wall_s / s.wall_s for m, s in zip(got, seed, strict=True)]
            print(f"| {phase} | {v} | {statistics.median(_us(m.cpu_s, n) for m in got):.1f} "
                  f"| {statistics.median(_us(m.wall_s, n) for m in got):.1f} "
                  f"| {_range(cpu_ratio)} | {_range(wall_ratio)} "
                  f"| {statistics.median(m.reads / n for m in got):.2f} |")
    # What V19 took off: the schema before it against V19, round by round.
    print()
    for phase in ("copy", "store"):
        pairs = list(zip(results[(phase, "before")], results[(phase, "V19")], strict=True))
        cpu_text = _range([b.cpu_s / a.cpu_s for b, a in pairs])
        wall_text = _range([b.wall_s / a.wall_s for b, a in pairs])
        print(f"{phase}: before ÷ V19, backend CPU {cpu_text}, wall {wall_text}")


def _range(values: list[float]) -> str:
    """The median, and the spread over the rounds."""
    return (f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"
            if len(values) > 1 else f"{values[0]:.2f}")


def _print_sizes(sizes: dict[str, list[tuple[str, str, int]]], rows: dict[str, int]) -> None:
    """Bytes per row of each index after the copy, in `before` (every index) with the
    variants that have it."""
    have = {v: {i for _, i, _ in s} for v, s in sizes.items()}
    print("\n| table | index | bytes per row | in |")
    print("|---|---|--:|---|")
    for table, index, size in sizes["before"]:
        if rows[table]:
            where = ", ".join(v for v in VARIANTS if index in have[v])
            print(f"| {table} | {index} | {size / rows[table]:.0f} | {where} |")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m finpass_pipeline.dev.index_cost",
                                     description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--users", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--unlogged", action="store_true",
                        help="UNLOGGED tables: the index upkeep without its WAL")
    args = parser.parse_args(argv)
    settings = Settings()
    return asyncio.run(run(settings.database_url, args.events, args.users, args.rounds,
                           args.seed, args.unlogged))


if __name__ == "__main__":
    sys.exit(main())
