"""`finpass-pipeline audit tree-bench`: the Merkle tree at scale (docs/audit.md §6.8).

1. Scale, in a fresh database: `rows` audit rows written through the chain writer (12 chains,
   5,000 rows per transaction) while the sealer runs beside it — the backlog (written minus
   sealed) is sampled after every batch; a checkpoint is recorded at every tenth of the way.
   Then: inclusion proofs for `proofs` random rows against the latest checkpoint and
   consistency proofs between random pairs of checkpoints, each timed (p50, p95, max); and a
   full `audit verify` (chains and tree), in rows/s.
2. Ingest, with the sealer off vs on (the same pre-produced demo events consumed by an
   in-process daemon into a fresh database per run; `events` = 0 skips it), `rounds` pairs;
   with it on, the rows not yet sealed when the last batch committed, and how long they wait.
The issue's targets: proofs p95 <= 50 ms at 10M rows, verify >= 50k rows/s, no growing backlog,
ingest with the sealer within 5 % of without.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg
from pydantic import SecretStr

from finpass_pipeline.audit.record import RETENTION_DAYS_DEFAULT, AuditRow
from finpass_pipeline.db import scratch_database
from finpass_pipeline.settings import Settings

BATCH_ROWS = 5_000
CHAINS = 12


@dataclass
class TreeBenchResult:
    rows: int
    write_rows_per_s: float = 0.0
    max_backlog: int = 0
    final_backlog: int = 0
    drain_s: float = 0.0
    inclusion_ms: list[float] = field(default_factory=list)
    consistency_ms: list[float] = field(default_factory=list)
    verify_rows_per_s: float = 0.0
    tree_nodes: int = 0
    off_eps: list[float] = field(default_factory=list)
    on_eps: list[float] = field(default_factory=list)
    ingest_backlog: list[int] = field(default_factory=list)
    ingest_drain_s: list[float] = field(default_factory=list)


def _rows(n: int, start: int) -> list[AuditRow]:
    now = datetime.now(UTC)
    out = []
    for i in range(start, start + n):
        eid = uuid.uuid4()
        out.append(AuditRow(
            id=eid, event_type="PAYMENT_CAPTURED", user_id_hash=f"{i % 50_000:064x}",
            session_id=f"sess-{i % 997}", ip_address=f"10.0.{i % 256}.{i % 199}",
            user_agent="bench/1.0", tenant_id=None, resource_id=str(eid),
            resource_type="PAYMENT", action="CAPTURE", outcome="SUCCESS", severity="INFO",
            description="payment AUTHORIZED -> CAPTURED", details=None,
            previous_values='{"status":"AUTHORIZED"}', new_values='{"status":"CAPTURED"}',
            performed_by=None, performed_by_role=None, source_system="bench",
            correlation_id=f"req-{i}", request_id=None, error_code=None, error_message=None,
            geolocation=None, device_fingerprint=None, retention_days=RETENTION_DAYS_DEFAULT,
            event_id=eid, occurred_at=now, hash_key_id="k1"))
    return out


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def scale(settings: Settings, rows: int, n_proofs: int, say: Callable[[str], None],
                result: TreeBenchResult) -> None:
    from finpass_pipeline.audit import proofs
    from finpass_pipeline.audit.chain import AuditWriter
    from finpass_pipeline.audit.sealer import record_checkpoint, seal_all
    from finpass_pipeline.audit.verify import verify
    from finpass_pipeline.migrations import migrate

    signer = settings.model_copy(update={"dev_mode": True}).signer() \
        if settings.audit_signing_key is None else settings.signer()
    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S") + uuid.uuid4().hex[:4]
    async with scratch_database(settings.database_url, f"tbench_{stamp}") as dsn:
        await migrate(dsn)
        writer_conn, seal_conn = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
        try:
            written, done = 0, asyncio.Event()

            async def sealer() -> None:
                while not done.is_set():
                    await seal_all(seal_conn, limit=50_000)
                    await asyncio.sleep(0.2)

            task = asyncio.create_task(sealer())
            writer, started, next_cp = AuditWriter(), time.perf_counter(), rows // 10
            while written < rows:
                n = min(BATCH_ROWS, rows - written)
                async with writer_conn.transaction():
                    await writer.append(writer_conn, _rows(n, written),
                                        [("bench", i % CHAINS) for i in range(n)])
                written += n
                sealed = int(await writer_conn.fetchval(
                    "SELECT tree_size FROM audit_tree_state"))
                result.max_backlog = max(result.max_backlog, written - sealed)
                if written >= next_cp:
                    next_cp += rows // 10
                    await record_checkpoint(writer_conn, signer)
                if written % 100_000 < BATCH_ROWS:
                    say(f"  written {written:,}, sealed {sealed:,}")
            result.write_rows_per_s = rows / (time.perf_counter() - started)
            result.final_backlog = written - int(await writer_conn.fetchval(
                "SELECT tree_size FROM audit_tree_state"))
            t0 = time.perf_counter()
            done.set()
            await task
            await seal_all(seal_conn, limit=50_000)
            result.drain_s = time.perf_counter() - t0
            await record_checkpoint(writer_conn, signer)
            result.tree_nodes = int(await writer_conn.fetchval(
                "SELECT count(*) FROM audit_tree_nodes"))
            await writer_conn.execute("ANALYZE")
            say(f"  sealed {rows:,}; max backlog {result.max_backlog:,} rows")
            rng = random.Random(7)  # noqa: S311 -- picks rows to prove, not secrets
            ids = [r["id"] for r in await writer_conn.fetch(
                "SELECT id FROM audit_events TABLESAMPLE SYSTEM (1) LIMIT $1", n_proofs * 4)]
            sizes = [r["tree_size"] for r in await writer_conn.fetch(
                "SELECT tree_size FROM audit_checkpoints")]
            for rid in rng.sample(ids, min(n_proofs, len(ids))):
                t = time.perf_counter()
                await proofs.inclusion(writer_conn, row_id=rid)
                result.inclusion_ms.append((time.perf_counter() - t) * 1000)
            for _ in range(n_proofs):
                a, b = sorted(rng.sample(sizes, 2))
                t = time.perf_counter()
                await proofs.consistency(writer_conn, a, b)
                result.consistency_ms.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            report = await verify(writer_conn, vkey=signer.vkey(), second=seal_conn)
            if report.breaks:
                raise RuntimeError(f"verify found a break: {report.breaks[0].line()}")
            result.verify_rows_per_s = report.rows / (time.perf_counter() - t)
        finally:
            await writer_conn.close()
            await seal_conn.close()


async def ingest(settings: Settings, events: int, rounds: int, say: Callable[[str], None],
                 result: TreeBenchResult) -> None:
    """Consumer throughput with the sealer off and on (chaining on in both)."""
    from consumers.daemon import ConsumerDaemon
    from finpass_pipeline.dev.audit_bench import _Bench
    from finpass_pipeline.dev.bench import wait_committed
    from finpass_pipeline.events import message_key, serialize_event, topic_suffix
    from finpass_pipeline.migrations import migrate
    from producers.demo_stream import demo_events

    stream = list(demo_events(events, 2_000, 42, datetime.now(UTC) - timedelta(days=30)))
    bench = _Bench(settings, say)
    say(f"producing {events:,} events to {bench.prefix}* ...")
    await bench.produce([(topic_suffix(e.event_type), message_key(e), serialize_event(e))
                         for e in stream])
    for r in range(rounds):
        for sealing in (False, True):
            name = f"{'on' if sealing else 'off'}{r}"
            async with scratch_database(settings.database_url,
                                        f"tbench_{bench.stamp}_{name}") as dsn:
                s = settings.model_copy(update={
                    "database_url": dsn, "topic_prefix": bench.prefix,
                    "consumer_group": f"tbench-{bench.stamp}-{name}", "http_port": 0,
                    "audit_chain": True, "audit_sealer": "process" if sealing else "off",
                    "audit_seal_every_s": 0.5,
                    "audit_hash_key": SecretStr("bench-key")})
                await migrate(dsn)
                stop = asyncio.Event()
                task = asyncio.create_task(ConsumerDaemon(s).run(stop))
                conn = await asyncpg.connect(dsn)
                try:
                    def check(task: asyncio.Task[int] = task) -> None:
                        if task.done():
                            raise RuntimeError(f"the consumer exited with {task.result()}")

                    eps, _ = await wait_committed(conn, events, check)
                    if sealing:  # the backlog when ingest finished, and how long it lasts
                        t0 = time.monotonic()
                        backlog = await _backlog(conn)
                        result.ingest_backlog.append(backlog)
                        for _ in range(1200):  # polling the table, at most 60 s
                            if not await _backlog(conn):
                                break
                            await asyncio.sleep(0.05)
                        result.ingest_drain_s.append(time.monotonic() - t0)
                finally:
                    stop.set()
                    await asyncio.wait_for(task, timeout=60)
                    await conn.close()
            (result.on_eps if sealing else result.off_eps).append(eps)
            say(f"  round {r + 1}: sealer {'on' if sealing else 'off':<3} {eps:>9,.0f} events/s")


async def _backlog(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT (SELECT count(*) FROM audit_events) - "
                                   "(SELECT tree_size FROM audit_tree_state)"))


def render(r: TreeBenchResult) -> str:
    lines = [
        f"audit rows                 {r.rows:>12,}",
        f"write (chain writer)       {r.write_rows_per_s:>12,.0f} rows/s, sealer running beside",
        f"backlog while writing      {r.max_backlog:>12,} rows max, {r.final_backlog:,} at the "
        f"end (drained in {r.drain_s:.2f}s)",
        f"tree nodes stored          {r.tree_nodes:>12,} (levels >= 4)",
        f"inclusion proof            p50 {_pct(r.inclusion_ms, 0.5):6.1f} ms   p95 "
        f"{_pct(r.inclusion_ms, 0.95):6.1f} ms   max {max(r.inclusion_ms, default=0):6.1f} ms "
        f"({len(r.inclusion_ms)} proofs)",
        f"consistency proof          p50 {_pct(r.consistency_ms, 0.5):6.1f} ms   p95 "
        f"{_pct(r.consistency_ms, 0.95):6.1f} ms   max {max(r.consistency_ms, default=0):6.1f}"
        f" ms ({len(r.consistency_ms)} proofs)",
        f"audit verify (chains+tree) {r.verify_rows_per_s:>12,.0f} rows/s",
    ]
    if r.off_eps and r.on_eps:
        off, on = max(r.off_eps), max(r.on_eps)
        lines += [
            f"ingest, sealer off         {off:>12,.0f} events/s (best of {len(r.off_eps)})",
            f"ingest, sealer on          {on:>12,.0f} events/s (best of {len(r.on_eps)})",
            f"cost of the sealer         {(1 - on / off) * 100:>11.1f}%  (mean of runs: "
            f"{(1 - statistics.mean(r.on_eps) / statistics.mean(r.off_eps)) * 100:.1f}%)",
            f"sealer backlog at the end  {max(r.ingest_backlog, default=0):>12,} rows max, "
            f"sealed {max(r.ingest_drain_s, default=0):.2f}s after the last commit",
        ]
    return "\n".join(lines)


async def run_tree_bench(settings: Settings, rows: int, events: int, n_proofs: int, rounds: int,
                         say: Callable[[str], None] = print) -> int:
    """Entry of `finpass-pipeline audit tree-bench`: prints the numbers; exit 0."""
    from finpass_pipeline.logs import configure_logging

    configure_logging(settings.log_format, "warning")
    result = TreeBenchResult(rows)
    say(f"scale: {rows:,} audit rows ...")
    await scale(settings, rows, n_proofs, say, result)
    if events > 0:
        await ingest(settings, events, rounds, say, result)
    say(render(result))
    return 0
