"""`finpass-pipeline audit bench`: what hash-chaining the audit log costs the consumer.

The same pre-produced events (the seeded demo stream, on fresh topics) are consumed by an
in-process `ConsumerDaemon` into a fresh database, once with FINPASS_AUDIT_CHAIN=false and once
with it true, until the stored offsets cover every event. Throughput is measured from the first
committed batch to the last (startup and group join excluded). With `rounds` > 1 the off/on pair
is repeated and the best of each mode is reported. Also reported: the per-row cost of the canonical
encoding plus SHA-256, measured in memory, and how long `audit verify` takes for the chained run.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from pydantic import SecretStr

from finpass_pipeline.db import scratch_database
from finpass_pipeline.settings import Settings

TARGET_MAX_COST = 0.15
"""Chaining may cost at most 15% of consumer throughput."""


@dataclass
class AuditBenchResult:
    events: int
    off_eps: list[float] = field(default_factory=list)
    on_eps: list[float] = field(default_factory=list)
    hash_us_per_row: float = 0.0
    verify_rows_per_s: float = 0.0

    @property
    def cost(self) -> float:
        """Fraction of throughput lost with chaining on (best of each mode)."""
        return 1.0 - max(self.on_eps) / max(self.off_eps)

    @property
    def mean_cost(self) -> float:
        """The same from the mean of each mode's runs (noisier on a shared machine)."""
        return 1.0 - (sum(self.on_eps) / len(self.on_eps)) / (sum(self.off_eps) /
                                                              len(self.off_eps))


def hash_cost_us(events: list[Any], settings: Settings) -> float:
    """µs per audit row for the canonical encoding + SHA-256, on the rows `events` produce."""
    from consumers.apply import Applier, BatchState
    from consumers.records import Incoming
    from finpass_pipeline.audit.chain import ZERO_HASH, _canonical_audit_row, ts_text
    from finpass_pipeline.audit.pseudonym import Pseudonymizer

    applier = Applier(Pseudonymizer(b"bench-key", "k1"))
    state = BatchState()
    for offset, e in enumerate(events):
        applier.apply(state, Incoming(e, "finpass.bench", 0, offset, b""))
    rows, created = state.audit, ts_text(datetime.now(UTC))
    started = time.perf_counter()
    prev = ZERO_HASH
    for seq, row in enumerate(rows, start=1):
        prev = hashlib.sha256(prev.encode() + _canonical_audit_row(row, created, "c:0", seq)
                              ).hexdigest()
    return (time.perf_counter() - started) / max(len(rows), 1) * 1e6


class _Bench:
    def __init__(self, base: Settings, say: Callable[[str], None]) -> None:
        self.base, self.say = base, say
        self.stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S") + uuid.uuid4().hex[:4]
        self.prefix = f"abench{self.stamp}."

    async def produce(self, messages: list[tuple[str, bytes, bytes]]) -> None:
        from finpass_pipeline.dev.bench import produce_messages

        await produce_messages(self.base.model_copy(update={"topic_prefix": self.prefix}),
                               messages)

    async def consume(self, name: str, chained: bool, n: int) -> tuple[float, float]:
        """Events/s of one run into a fresh database; and verify's rows/s when chained."""
        from consumers.daemon import ConsumerDaemon
        from finpass_pipeline.audit.verify import verify
        from finpass_pipeline.dev.bench import wait_committed
        from finpass_pipeline.migrations import migrate

        async with scratch_database(self.base.database_url,
                                    f"abench_{self.stamp}_{name}") as dsn:
            s = self.base.model_copy(update={
                "database_url": dsn,
                "topic_prefix": self.prefix, "consumer_group": f"abench-{self.stamp}-{name}",
                "http_port": 0, "audit_chain": chained,
                "audit_hash_key": SecretStr("bench-key"),
            })
            await migrate(s.database_url)
            stop = asyncio.Event()
            task = asyncio.create_task(ConsumerDaemon(s).run(stop))
            conn = await asyncpg.connect(s.database_url)
            try:
                def check() -> None:
                    if task.done():
                        raise RuntimeError(f"the consumer exited with code {task.result()}")

                eps, _ = await wait_committed(conn, n, check)
                verify_rate = 0.0
                if chained:
                    t0 = time.perf_counter()
                    report = await verify(conn)
                    if report.breaks:
                        raise RuntimeError(f"verify found a break: {report.breaks[0].line()}")
                    verify_rate = report.rows / (time.perf_counter() - t0)
            finally:
                stop.set()
                await asyncio.wait_for(task, timeout=60)
                await conn.close()
            return eps, verify_rate


async def measure(settings: Settings, events: int, users: int, seed: int, rounds: int,
                  say: Callable[[str], None] = print) -> AuditBenchResult:
    """Produce `events` once, then consume them with chaining off and on, `rounds` times."""
    from finpass_pipeline.events import message_key, serialize_event, topic_suffix
    from finpass_pipeline.logs import configure_logging
    from producers.demo_stream import demo_events

    configure_logging(settings.log_format, "warning")
    stream = list(demo_events(events, users, seed, datetime.now(UTC) - timedelta(days=30)))
    result = AuditBenchResult(events)
    result.hash_us_per_row = hash_cost_us(stream, settings)
    bench = _Bench(settings, say)
    say(f"producing {events:,} events to {bench.prefix}* ...")
    await bench.produce([(topic_suffix(e.event_type), message_key(e), serialize_event(e))
                         for e in stream])
    for r in range(rounds):
        for chained in (False, True):
            mode = "on" if chained else "off"
            eps, verify_rate = await bench.consume(f"{mode}{r}", chained, events)
            (result.on_eps if chained else result.off_eps).append(eps)
            if chained:
                result.verify_rows_per_s = max(result.verify_rows_per_s, verify_rate)
            say(f"  round {r + 1}: chaining {mode:<3} {eps:>9,.0f} events/s")
    return result


def render(r: AuditBenchResult) -> str:
    off, on = max(r.off_eps), max(r.on_eps)
    verdict = "within" if r.cost <= TARGET_MAX_COST else "ABOVE"
    return "\n".join([
        f"events                     {r.events:>10,}",
        f"chaining off               {off:>10,.0f} events/s",
        f"chaining on                {on:>10,.0f} events/s",
        f"on/off                     {on / off:>10.3f}",
        f"cost of chaining           {r.cost * 100:>9.1f}%  ({verdict} the "
        f"{TARGET_MAX_COST * 100:.0f}% target; best of {len(r.on_eps)} run(s) per mode)",
        f"cost, mean of runs         {r.mean_cost * 100:>9.1f}%",
        f"canonical JSON + SHA-256   {r.hash_us_per_row:>10.1f} µs/row (in memory)",
        f"audit verify               {r.verify_rows_per_s:>10,.0f} rows/s",
    ])


async def run_bench(settings: Settings, events: int, users: int, seed: int, rounds: int,
                    say: Callable[[str], None] = print) -> int:
    """Entry of `finpass-pipeline audit bench`: prints the numbers; exit 0."""
    result = await measure(settings, events, users, seed, rounds, say)
    say(render(result))
    return 0
