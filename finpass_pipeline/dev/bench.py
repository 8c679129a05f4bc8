"""`finpass-pipeline bench`: the pipeline measured against its ceilings, in one run.

Fresh topics (a new prefix) and fresh databases each run, on the configured services:
  (a) database ceiling — the rows the pipeline would write, COPYed straight in, no Kafka;
  (b) Kafka ceiling    — the same messages consumed and discarded;
  (c) pipeline         — `finpass-pipeline consume` as a real process, until it has committed all;
  (d) naive baseline   — one transaction and commit per event, as a per-message consumer does;
  (e) latency          — produce-to-commit at a fixed offered rate (Kafka record timestamp to
                          the database commit), p50/p95/p99;
plus the consumer's peak RSS (VmHWM of the process in (c)).
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from pydantic import SecretStr

from consumers import gc_tuning
from consumers.apply import Applier, BatchState
from consumers.records import Incoming, PartitionProgress
from consumers.rows import inserts
from consumers.store import CLAIM_COLUMNS, Store, claim_records, content_digest
from finpass_pipeline.audit.chain import (
    ZERO_HASH,
    audit_copy_columns,
    chain_of,
    chain_records,
    chain_tip,
)
from finpass_pipeline.audit.pseudonym import Pseudonymizer
from finpass_pipeline.audit.sealer_process import SEALER_APPLICATION
from finpass_pipeline.db import create_database, drop_database
from finpass_pipeline.dev import cpu
from finpass_pipeline.dev.stack import dev_home
from finpass_pipeline.dev.stack.local_kafka import LocalKafka
from finpass_pipeline.events import message_key, parse_event, serialize_event, topic_suffix
from finpass_pipeline.kafka import domain_topics, ensure_topics
from finpass_pipeline.migrations import migrate
from finpass_pipeline.privacy.vault import Vault, blind_index_key
from finpass_pipeline.settings import Settings

GOALS = {"vs_ceiling": 0.70, "vs_naive": 5.0, "p99_ms": 250.0, "rss_mb": 150.0}
"""Issue #12's goals; `vs_ceiling` is for two or more processes, one process has its own."""
ONE_PROCESS_VS_CEILING = 0.45


def ceiling_goal(consumers: int) -> float:
    """The pipeline / min(ceilings) goal for a run with `consumers` processes."""
    return GOALS["vs_ceiling"] if consumers >= 2 else ONE_PROCESS_VS_CEILING


BENCH_PII_MASTER_KEY = "YmVuY2gtb25seS1waWktbWFzdGVyLWtleS0zMmJ5dGU="
"""The consumers' PII master key in a bench run (32 bytes, base64; bench data only)."""

@dataclass
class BenchResult:
    events: int
    produce_eps: float = 0.0
    db_ceiling_eps: float = 0.0
    kafka_ceiling_eps: float = 0.0
    pipeline_eps: float = 0.0
    pipeline_eps_with_startup: float = 0.0
    naive_eps: float = 0.0
    naive_sample: int = 0
    latency_rate: float = 0.0
    latency_events: int = 0
    latency_ms: dict[str, float] = field(default_factory=dict)
    consumer_peak_rss_mb: float = 0.0
    consumers: int = 1
    lanes: int = 1
    prefilled_audit_rows: int = 0
    cpu_us_per_event: dict[str, float | None] = field(default_factory=dict)
    """CPU µs per event during (c), from /proc: the consumer process(es), their PostgreSQL
    backends, the Merkle sealer process(es) and their backends, the broker (None when it is not
    the local `dev up` broker); and the PostgreSQL backend of the database ceiling (a)."""

    @property
    def vs_ceiling(self) -> float:
        return self.pipeline_eps / min(self.db_ceiling_eps, self.kafka_ceiling_eps)

    @property
    def vs_naive(self) -> float:
        return self.pipeline_eps / self.naive_eps if self.naive_eps else 0.0

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(vs_ceiling=round(self.vs_ceiling, 3), vs_naive=round(self.vs_naive, 2),
                    goals=GOALS)
        return data


class Bench:
    def __init__(self, settings: Settings, events: int, users: int, seed: int,
                 latency_rate: float, latency_seconds: float, naive_sample: int,
                 say: Any, consumers: int = 1, prefill_audit: int = 0, lanes: int = 1) -> None:
        self.consumers = consumers
        self.lanes = lanes
        self.prefill_audit = prefill_audit
        self.base = settings
        self.n = events
        self.users = users
        self.seed = seed
        self.latency_rate = latency_rate
        self.latency_seconds = latency_seconds
        self.naive_n = min(naive_sample, events)
        self.say = say
        self.stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S") + uuid.uuid4().hex[:4]
        self.databases: list[str] = []
        self.result = BenchResult(events, consumers=consumers, lanes=lanes)

    # --- setup -----------------------------------------------------------------------------

    async def _fresh(self, name: str, prefix: str | None = None) -> Settings:
        db = f"bench_{self.stamp}_{name}"
        dsn = await create_database(self.base.database_url, db)
        self.databases.append(db)
        s = self.base.model_copy(update={
            "database_url": dsn,
            "topic_prefix": prefix or f"bench{self.stamp}.",
            "consumer_group": f"bench-{self.stamp}-{name}",
            "http_port": 0,
            "audit_hash_key": SecretStr("bench-key"),
            "consumer_lanes": self.lanes,
            # The in-process latency daemon needs one too (outside dev mode it is required).
            "pii_master_key": SecretStr(BENCH_PII_MASTER_KEY),
        })
        await migrate(s.database_url)
        return s

    async def cleanup(self) -> None:
        """Drop the run's databases and delete its topics."""
        for db in self.databases:
            await drop_database(self.base.database_url, db)
        kafka = AIOKafkaAdminClient(bootstrap_servers=self.base.bootstrap_servers)
        await kafka.start()
        try:
            mine = [t for t in await kafka.list_topics() if t.startswith(f"bench{self.stamp}")]
            if mine:
                await kafka.delete_topics(mine)
        finally:
            await kafka.close()

    def _messages(self) -> list[tuple[str, bytes, bytes]]:
        from producers.demo_stream import demo_events

        start = datetime.now(UTC) - timedelta(days=30)
        return [(topic_suffix(e.event_type), message_key(e), serialize_event(e))
                for e in demo_events(self.n, self.users, self.seed, start)]

    # --- (a) database ceiling --------------------------------------------------------------

    async def db_ceiling(self, messages: list[tuple[str, bytes, bytes]]) -> float:
        s = await self._fresh("ceiling")
        applier = Applier(Pseudonymizer(s.hash_key(), s.audit_hash_key_id))
        state = BatchState()
        for offset, (suffix, _key, value) in enumerate(messages):
            applier.apply(state, Incoming(parse_event(value), s.topic(suffix), 0, offset, value))
        # Every row the pipeline writes per event, built by the store's own builders (so the
        # ceiling cannot drift from what the pipeline writes) before the clock starts: the
        # domain rows (`consumers.rows.inserts`), the audit rows as the chain writer hashes them
        # (chains from zero, with digests and salts), the idempotency claims.
        now = datetime.now(UTC)
        chains = [chain_of(i.topic, i.partition) for i in state.applied]
        tips = {c: chain_tip(0, ZERO_HASH, now) for c in set(chains)}
        copies = [(c.table, list(c.columns), c.records) for c in inserts(
            [r for r in state.users.values() if r is not None],
            [r for r in state.credentials.values() if r is not None],
            [r for r in state.payments.values() if r is not None]) if c.records]
        copies.append(("audit_events", audit_copy_columns(),
                       chain_records(state.audit, chains, tips)))
        copies.append(("processed_events", list(CLAIM_COLUMNS),
                       claim_records([(i, content_digest(i)) for i in state.applied])))
        conn = await asyncpg.connect(s.database_url)
        try:
            backend = int(await conn.fetchval("SELECT pg_backend_pid()"))
            cpu0 = cpu.cpu_seconds(backend) or 0.0
            t0 = time.monotonic()
            async with conn.transaction():
                for table, columns, records in copies:
                    await conn.copy_records_to_table(table, records=records, columns=columns)
            elapsed = time.monotonic() - t0
            used = (cpu.cpu_seconds(backend) or 0.0) - cpu0
            self.result.cpu_us_per_event["ceiling_postgres"] = round(used / len(messages) * 1e6, 1)
            return len(messages) / elapsed
        finally:
            await conn.close()

    # --- (b) Kafka ceiling -----------------------------------------------------------------

    async def kafka_ceiling(self, s: Settings) -> float:
        consumer = AIOKafkaConsumer(*domain_topics(s), bootstrap_servers=s.bootstrap_servers,
                                    group_id=f"bench-{self.stamp}-kafka-ceiling",
                                    auto_offset_reset="earliest", enable_auto_commit=False,
                                    fetch_max_wait_ms=100)
        await consumer.start()
        try:
            t0, seen = time.monotonic(), 0
            while seen < self.n:
                batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
                seen += sum(len(v) for v in batch.values())
            return self.n / (time.monotonic() - t0)
        finally:
            await consumer.stop()

    # --- (c) the pipeline ------------------------------------------------------------------

    async def pipeline(self, s: Settings) -> tuple[float, float, float]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FINPASS_")}
        env.update(FINPASS_DATABASE_URL=s.database_url,
                   FINPASS_KAFKA_BOOTSTRAP_SERVERS=s.kafka_bootstrap_servers,
                   FINPASS_TOPIC_PREFIX=s.topic_prefix, FINPASS_CONSUMER_GROUP=s.consumer_group,
                   FINPASS_AUDIT_HASH_KEY="bench-key", FINPASS_HTTP_PORT="0",
                   FINPASS_PII_MASTER_KEY=BENCH_PII_MASTER_KEY,
                   FINPASS_LOG_LEVEL="warning", FINPASS_CONSUMER_LANES=str(self.lanes))
        broker = LocalKafka(dev_home() / "kafka").pid()
        started = time.monotonic()
        procs = [await asyncio.create_subprocess_exec(
            sys.executable, "-m", "finpass_pipeline.cli", "consume", env=env,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL) for _ in range(self.consumers)]
        def check() -> None:
            for proc in procs:
                if proc.returncode is not None:
                    raise RuntimeError(f"a consumer exited with code {proc.returncode}")

        conn = await asyncpg.connect(s.database_url)
        try:
            pids = [p.pid for p in procs]
            first: list[tuple[int, dict[str, dict[int, float]]]] = []

            async def at_first_commit(done: int) -> None:
                first.append((done, await self._cpu_snapshot(conn, pids, broker)))

            steady, end = await wait_committed(conn, self.n, check, self.say, interval=0.2,
                                               on_first=at_first_commit)
            self._cpu_per_event(first[0][1], await self._cpu_snapshot(conn, pids, broker),
                                self.n - first[0][0])
        finally:
            await conn.close()
            rss_kb = max(_peak_rss_kb(proc.pid) for proc in procs)
            for proc in procs:
                if proc.returncode is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in procs:
                await asyncio.wait_for(proc.wait(), timeout=60)
        return steady, self.n / (end - started), rss_kb / 1024

    @staticmethod
    async def _cpu_snapshot(conn: asyncpg.Connection, consumers: list[int], broker: int | None
                            ) -> dict[str, dict[int, float]]:
        """CPU seconds so far of each consumer process, each PostgreSQL backend connected to the
        run's database (but this one), and the local broker."""
        rows = await conn.fetch(
            "SELECT pid, application_name = $1 AS sealer FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()", SEALER_APPLICATION)
        groups = {
            "consumer": consumers,
            "postgres": [int(r["pid"]) for r in rows if not r["sealer"]],
            # The Merkle sealer (a child process of each consumer) and its backend, apart.
            "sealer": [c for pid in consumers for c in cpu.children(pid)],
            "sealer_postgres": [int(r["pid"]) for r in rows if r["sealer"]],
            "broker": [broker] if broker else [],
        }
        return {name: {pid: used for pid in pids if (used := cpu.cpu_seconds(pid)) is not None}
                for name, pids in groups.items()}

    def _cpu_per_event(self, before: dict[str, dict[int, float]],
                       after: dict[str, dict[int, float]], events: int) -> None:
        """From the first commit to the last (start-up and group join left out): a backend that
        connected in between counts from 0."""
        for name, now in after.items():
            if not now or events <= 0:
                self.result.cpu_us_per_event[name] = None
                continue
            spent = sum(used - before[name].get(pid, 0.0) for pid, used in now.items())
            self.result.cpu_us_per_event[name] = round(spent / events * 1e6, 1)

    # --- (d) naive baseline ----------------------------------------------------------------

    async def naive(self, s: Settings, messages: list[tuple[str, bytes, bytes]]) -> float:
        pool = await asyncpg.create_pool(s.database_url, min_size=1, max_size=1)
        try:
            pz = Pseudonymizer(s.hash_key(), s.audit_hash_key_id)
            store = Store(pool, s.consumer_group, Applier(pz), vault=Vault(
                Settings(pii_master_key=SecretStr(BENCH_PII_MASTER_KEY)).pii_keyring(),
                blind_index_key(pz)))
            t0 = time.monotonic()
            for offset, (suffix, _key, value) in enumerate(messages[: self.naive_n]):
                inc = Incoming(parse_event(value), s.topic(suffix), 0, offset, value)
                await store.commit_batch([inc], [], {(inc.topic, 0): PartitionProgress(
                    offset + 1, 0)})
            return self.naive_n / (time.monotonic() - t0)
        finally:
            await pool.close()

    # --- (e) latency at a fixed offered rate -----------------------------------------------

    async def latency(self) -> dict[str, float]:
        from consumers.daemon import ConsumerDaemon

        s = await self._fresh("latency", prefix=f"bench{self.stamp}lat.")
        await ensure_topics(s)
        total = int(self.latency_rate * self.latency_seconds)
        samples: list[float] = []
        all_in = asyncio.Event()

        def record(committed: list[Any]) -> None:
            now_ms = time.time() * 1000
            samples.extend(now_ms - r.timestamp_ms for r in committed
                           if r.timestamp_ms is not None)
            if len(samples) >= total:
                all_in.set()

        daemon = ConsumerDaemon(s)
        daemon.on_commit = record
        stop = asyncio.Event()
        # The collector as `consume` tunes it (this process also holds the bench's messages).
        thresholds = gc.get_threshold()
        gc_tuning.tune_for_batches()
        gc_tuning.freeze_startup_heap()
        task = asyncio.create_task(daemon.run(stop))
        env = {k: v for k, v in os.environ.items() if not k.startswith("FINPASS_")}
        env.update(FINPASS_DATABASE_URL=s.database_url,
                   FINPASS_KAFKA_BOOTSTRAP_SERVERS=s.kafka_bootstrap_servers,
                   FINPASS_TOPIC_PREFIX=s.topic_prefix)
        await asyncio.sleep(2)  # let the consumer join its group before the clock starts
        producer = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "finpass_pipeline.cli", "produce-demo", "--count", str(total),
            "--rate", str(self.latency_rate), "--seed", str(self.seed + 1), env=env,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        await producer.wait()
        try:
            await asyncio.wait_for(all_in.wait(), timeout=60)
        except TimeoutError:
            self.say(f"  latency: only {len(samples):,} of {total:,} committed within 60 s")
        stop.set()
        await task
        gc.unfreeze()
        gc.set_threshold(*thresholds)
        samples.sort()
        self.result.latency_events = len(samples)

        def pct(p: float) -> float:
            return round(samples[min(int(p * len(samples)), len(samples) - 1)], 1)

        return {"p50": pct(0.50), "p95": pct(0.95), "p99": pct(0.99), "max": samples[-1]}

    # --- all of it -------------------------------------------------------------------------

    async def run(self) -> BenchResult:
        r = self.result
        self.say(f"generating {self.n:,} demo events (seed {self.seed})")
        messages = self._messages()
        pipe = await self._fresh("pipeline")
        self.say("producing them to fresh topics")
        r.produce_eps = await produce_messages(pipe, messages)
        self.say("(b) Kafka ceiling: consume and discard")
        r.kafka_ceiling_eps = await self.kafka_ceiling(pipe)
        self.say("(a) database ceiling: COPY the same rows")
        r.db_ceiling_eps = await self.db_ceiling(messages)
        if self.prefill_audit:
            from finpass_pipeline.dev.datagen import Sizes, generate

            self.say(f"prefilling audit_events with {self.prefill_audit:,} rows (datagen)")
            await generate(pipe.database_url, Sizes(users=1_000, credentials=0, payments=0,
                                                    audit=self.prefill_audit),
                           b"bench-prefill", "p1", seed=self.seed)
            r.prefilled_audit_rows = self.prefill_audit
            # Measure steady state, not the bulk load's dirty buffers being written out.
            conn = await asyncpg.connect(pipe.database_url)
            try:
                await conn.execute("CHECKPOINT")
            finally:
                await conn.close()
        self.say("(c) pipeline end to end")
        r.pipeline_eps, r.pipeline_eps_with_startup, r.consumer_peak_rss_mb = (
            await self.pipeline(pipe))
        self.say(f"(d) naive baseline: one transaction per event ({self.naive_n:,} events)")
        r.naive_sample = self.naive_n
        r.naive_eps = await self.naive(await self._fresh("naive"), messages)
        self.say(f"(e) latency at {self.latency_rate:,.0f} events/s offered")
        r.latency_rate = self.latency_rate
        r.latency_ms = await self.latency()
        return r


async def wait_committed(conn: asyncpg.Connection, n: int, check: Callable[[], None],
                         say: Callable[[str], None] | None = None, interval: float = 0.05,
                         on_first: Callable[[int], Awaitable[None]] | None = None
                         ) -> tuple[float, float]:
    """Poll the stored offsets until `n` messages are committed; `check` raises if a consumer
    died; `on_first(committed)` runs when the first commit is seen. Returns (events/s from the
    first commit on, the time the last one was seen)."""
    first: tuple[float, int] | None = None
    shown, shown_at = 0, 0.0
    while True:
        done = int(await conn.fetchval(
            "SELECT coalesce(sum(next_offset), 0) FROM consumer_offsets"))
        now = time.monotonic()
        if done and first is None:
            first = (now, done)
            if on_first is not None:
                await on_first(done)
        if done >= n:
            assert first is not None  # noqa: S101  (done > 0 here)
            return (n - first[1]) / max(now - first[0], 1e-9), now
        check()
        if say is not None and done != shown and now - shown_at >= 1.0:
            say(f"  pipeline: {done:,}/{n:,}")  # once a second at most, and only progress
            shown, shown_at = done, now
        await asyncio.sleep(interval)


async def produce_messages(s: Settings, messages: list[tuple[str, bytes, bytes]]) -> float:
    """Create the topics and publish (topic suffix, key, value) triples, pipelined; events/s."""
    await ensure_topics(s)
    producer = AIOKafkaProducer(bootstrap_servers=s.bootstrap_servers, acks="all",
                                enable_idempotence=True, linger_ms=20,
                                max_batch_size=256 * 1024)
    await producer.start()
    t0 = time.monotonic()
    try:
        pending = []
        for suffix, key, value in messages:
            pending.append(await producer.send(s.topic(suffix), key=key, value=value))
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return len(messages) / (time.monotonic() - t0)


def _peak_rss_kb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return float(line.split()[1])
    except OSError:
        pass
    return 0.0


def _us(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.1f}"


def render(r: BenchResult) -> str:
    cpu = r.cpu_us_per_event
    goal = ceiling_goal(r.consumers)
    ok = {"vs_ceiling": r.vs_ceiling >= goal, "vs_naive": r.vs_naive >= GOALS[
        "vs_naive"], "p99": r.latency_ms.get("p99", 1e9) <= GOALS["p99_ms"],
        "rss": r.consumer_peak_rss_mb <= GOALS["rss_mb"]}

    def mark(flag: bool) -> str:
        return "ok" if flag else "MISSED"

    lines = [
        f"events: {r.events:,} (realistic demo mix)   produce rate: {r.produce_eps:,.0f}/s",
        f"(a) database ceiling (COPY)      {r.db_ceiling_eps:>10,.0f} events/s",
        f"(b) Kafka ceiling (consume only) {r.kafka_ceiling_eps:>10,.0f} events/s",
        f"(c) pipeline, {r.consumers} process(es) x {r.lanes} lane(s) {r.pipeline_eps:>7,.0f} "
        "events/s "
        f"[audit_events prefilled: {r.prefilled_audit_rows:,}] "
        f"({r.pipeline_eps_with_startup:,.0f}/s including process start and group join)",
        f"(d) naive, 1 txn per event       {r.naive_eps:>10,.0f} events/s "
        f"(first {r.naive_sample:,} events)",
        f"pipeline / min(ceilings)         {r.vs_ceiling:>10.2f}   goal >= "
        f"{goal:.2f}  {mark(ok['vs_ceiling'])}",
        f"pipeline / naive                 {r.vs_naive:>10.1f}x  goal >= "
        f"{GOALS['vs_naive']:.0f}x     {mark(ok['vs_naive'])}",
        f"latency at {r.latency_rate:,.0f}/s offered ({r.latency_events:,} events): "
        f"p50 {r.latency_ms.get('p50')} ms, p95 {r.latency_ms.get('p95')} ms, "
        f"p99 {r.latency_ms.get('p99')} ms  goal p99 <= {GOALS['p99_ms']:.0f} ms  "
        f"{mark(ok['p99'])}",
        f"consumer peak RSS                {r.consumer_peak_rss_mb:>10.1f} MB  goal <= "
        f"{GOALS['rss_mb']:.0f} MB  {mark(ok['rss'])}",
        "CPU µs per event, (c): " + ", ".join(
            f"{name} {_us(cpu.get(name))}" for name in (
                "consumer", "postgres", "sealer", "sealer_postgres", "broker"))
        + f"; (a) ceiling postgres {_us(cpu.get('ceiling_postgres'))}",
    ]
    return "\n".join(lines)


def render_runs(results: list[BenchResult]) -> str:
    """One run as `render`; several: each run's headline figures, then the best run whole."""
    if len(results) == 1:
        return render(results[0])
    best = max(results, key=lambda r: r.vs_ceiling)
    lines = ["run  (a) ceiling  (c) pipeline  ratio  vs naive  p99 ms  RSS MB  consumer µs  "
             "postgres µs"]
    for i, r in enumerate(results, 1):
        cpu = r.cpu_us_per_event
        lines.append(
            f"{i:>3}  {r.db_ceiling_eps:>9,.0f}/s  {r.pipeline_eps:>10,.0f}/s  "
            f"{r.vs_ceiling:>5.2f}  {r.vs_naive:>7.1f}x  {r.latency_ms.get('p99', 0):>6.0f}  "
            f"{r.consumer_peak_rss_mb:>6.1f}  {_us(cpu.get('consumer')):>11}  "
            f"{_us(cpu.get('postgres')):>11}")
    lines += ["", f"best of {len(results)} runs (by pipeline / min(ceilings)): run "
              f"{results.index(best) + 1}", render(best)]
    return "\n".join(lines)
