"""Prometheus metrics of the consumer and the tiny HTTP server for `/healthz` and `/metrics`.

The server is hand-written on `asyncio.start_server` (≈40 lines) rather than pulling in an HTTP
framework: it serves two fixed GET paths inside the daemon's own event loop, so health reflects
the loop actually running.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class ConsumerMetrics:
    """Everything `/metrics` exposes for one consumer process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.applied = Counter("finpass_events_applied_total",
                               "Events applied (outcome SUCCESS or FAILURE)", ["event_type"],
                               registry=r)
        self.rejected = Counter("finpass_events_rejected_total",
                                "Events audited REJECTED (disallowed transition, duplicate "
                                "subject)", ["event_type"], registry=r)
        self.parked = Counter("finpass_events_parked_total",
                              "Events parked until their subject exists", ["event_type"],
                              registry=r)
        self.duplicates = Counter("finpass_events_duplicate_total",
                                  "Redelivered or duplicated event ids skipped", registry=r)
        self.dead_lettered = Counter("finpass_events_dead_lettered_total",
                                     "Messages sent to the dead-letter topic and table",
                                     ["event_type"], registry=r)
        self.batch_size = Histogram("finpass_batch_size", "Messages per committed batch",
                                    buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000),
                                    registry=r)
        self.batch_seconds = Histogram("finpass_batch_duration_seconds",
                                       "Time to apply and commit one batch", registry=r)
        self.commit_latency = Histogram(
            "finpass_commit_latency_seconds",
            "From the Kafka record timestamp (produce time) to the database commit, every "
            "committed message", buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
                                          10, 30, 60, 120), registry=r)
        self.event_age = Histogram(
            "finpass_event_age_seconds",
            "From the event's occurred_at to the database commit, applied events (a replay or "
            "a late producer shows here, not in the commit latency)",
            buckets=(1, 5, 30, 60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400, 30 * 86400),
            registry=r)
        self.lag = Gauge("finpass_consumer_lag", "High-water mark minus next offset",
                         ["topic", "partition"], registry=r)
        self.retries = Counter("finpass_transient_retries_total",
                               "Waits before a retry after a database or broker failure (start-up, "
                               "partition assignment, batches)", registry=r)
        self.parked_now = Gauge("finpass_parked_events",
                                "Events in parked_events, waiting for their subject", registry=r)
        self.parked_oldest = Gauge("finpass_parked_oldest_age_seconds",
                                   "Age of the oldest parked event (0 when none)", registry=r)
        # Scheduled lifecycle jobs (consumers/lifecycle.py); `job` is audit_retention or prune.
        self.lifecycle_runs = Counter(
            "finpass_lifecycle_runs_total",
            "Scheduled lifecycle job attempts by outcome: success, failure, locked (another "
            "process held the job's lock), not_due (the group ran it less than an interval ago)",
            ["job", "outcome"], registry=r)
        self.lifecycle_last_success = Gauge(
            "finpass_lifecycle_last_success_timestamp_seconds",
            "Unix time this process last ran the job successfully", ["job"], registry=r)
        self.lifecycle_interval = Gauge(
            "finpass_lifecycle_interval_seconds",
            "Configured interval of each enabled lifecycle job", ["job"], registry=r)
        self.lifecycle_duration = Histogram(
            "finpass_lifecycle_duration_seconds", "Run time of a lifecycle job that ran",
            ["job"], buckets=(0.01, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600), registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)


@contextlib.asynccontextmanager
async def http_server(port: int, metrics: ConsumerMetrics,
                      health: Callable[[], dict[str, object]]) -> AsyncIterator[int | None]:
    """Serve `/healthz` and `/metrics` on `port`, all interfaces, while the block runs.

    `port == 0` turns the server off (CONTRACT §4). Yields the bound port (None when off).
    """
    if port == 0:
        yield None
        return

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), timeout=5)
            while (await asyncio.wait_for(reader.readline(), timeout=5)) not in (b"\r\n", b""):
                pass
            parts = request.decode("latin-1").split()
            path = parts[1] if len(parts) > 1 else "/"
            if path == "/metrics":
                status, ctype, body = "200 OK", "text/plain; version=0.0.4", metrics.render()
            elif path == "/healthz":
                state = health()
                ok = bool(state.get("ok"))
                status = "200 OK" if ok else "503 Service Unavailable"
                ctype, body = "application/json", json.dumps(state).encode()
            else:
                status, ctype, body = "404 Not Found", "text/plain", b"not found\n"
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n".encode() + body
            )
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "0.0.0.0", port)  # noqa: S104  (scraped by Prometheus)
    try:
        yield port
    finally:
        server.close()
        await server.wait_closed()
