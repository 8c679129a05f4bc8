"""`finpass-pipeline produce-demo`: publish the demo stream (`producers.demo_stream`) to Kafka.

Events are pipelined through one idempotent `Publisher`: sent in stream order (so each key's
events stay in order), with at most `WINDOW` acknowledgements outstanding, which bounds memory for
any `--count`. Progress goes to stderr (a bar on a terminal, a line every few seconds otherwise);
the summary (count per event type, achieved rate) to stdout.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from finpass_pipeline.events import EVENT_TYPES
from finpass_pipeline.settings import Settings
from producers.demo_stream import SIMULATED_SECONDS_PER_EVENT, demo_events
from producers.publisher import Publisher, RecordMetadata

__all__ = ["WINDOW", "produce_demo"]

WINDOW = 20_000
"""Most acknowledgements awaited at once; the sender waits for the oldest beyond this."""

_PLAIN_EVERY_S = 2.0


class _Reporter(Protocol):
    def update(self, done: int) -> None: ...


class _Quiet:
    def update(self, done: int) -> None:
        pass


class _Lines:
    """Progress for logs and pipes: one line per few seconds, not a redrawn bar."""

    def __init__(self, console: Console, total: int) -> None:
        self.console, self.total = console, total
        self.began = self.last = time.monotonic()
        self.shown = 0

    def update(self, done: int) -> None:
        now = time.monotonic()
        if done != self.shown and (now - self.last >= _PLAIN_EVERY_S or done == self.total):
            self.last, self.shown = now, done
            rate = done / max(now - self.began, 1e-9)
            self.console.print(f"produce-demo: {done}/{self.total} events "
                               f"({100 * done // max(self.total, 1)}%), {rate:,.0f} events/s",
                               highlight=False, soft_wrap=True)


class _Bar:
    def __init__(self, progress: Progress, total: int) -> None:
        self.progress = progress
        self.task = progress.add_task("producing", total=total)

    def update(self, done: int) -> None:
        self.progress.update(self.task, completed=done)


class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text(f"{task.speed or 0:>8,.0f} ev/s")


@contextmanager
def _reporter(total: int, enabled: bool) -> Iterator[_Reporter]:
    if not enabled:
        yield _Quiet()
        return
    console = Console(stderr=True)
    if not console.is_terminal:
        yield _Lines(console, total)
        return
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               _RateColumn(),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        yield _Bar(progress, total)


async def _await_oldest(pending: deque[asyncio.Future[RecordMetadata]], keep: int) -> None:
    while len(pending) > keep:
        await Publisher.acknowledged(pending.popleft())


def _summary(counts: dict[str, int], elapsed: float) -> Table:
    total = sum(counts.values())
    table = Table(title="produce-demo", show_footer=True)
    table.add_column("event_type", footer="total")
    table.add_column("events", justify="right", footer=f"{total:,}")
    for event_type, n in counts.items():
        table.add_row(event_type, f"{n:,}")
    return table


async def produce_demo(settings: Settings, count: int, rate: float, users: int, seed: int,
                       progress: bool = True) -> dict[str, int]:
    """Publish `count` demo events and return how many of each type (every contract type, in
    contract order, zero when absent). The topics must exist (`ensure_topics`).

    `rate` caps events per second (0: as fast as the broker acknowledges). The stream is placed so
    that it ends about now; the same `seed`, `users` and `count` give the same events, event ids
    included, so publishing it twice changes the database once. With `progress`, shows progress
    on stderr and prints the summary table, with the achieved rate, to stdout.
    """
    if rate < 0:
        raise ValueError("rate must be >= 0")
    start = datetime.now(UTC) - timedelta(seconds=count * SIMULATED_SECONDS_PER_EVENT)
    counts: Counter[str] = Counter()
    pending: deque[asyncio.Future[RecordMetadata]] = deque()
    async with Publisher(settings, client_id="finpass-produce-demo") as publisher:
        with _reporter(count, progress) as report:
            began = time.monotonic()
            try:
                for n, event in enumerate(demo_events(count, users, seed, start), 1):
                    pending.append(await publisher.send(event))
                    counts[event.event_type] += 1
                    if len(pending) > WINDOW:
                        await _await_oldest(pending, WINDOW // 2)
                    if rate:
                        ahead = began + n / rate - time.monotonic()
                        if ahead > 0.005:  # pacing, coarse enough not to sleep per event
                            await asyncio.sleep(ahead)
                    if n % 1000 == 0:
                        report.update(n)
                await publisher.settle(list(pending))
            finally:
                # On failure, collect every outstanding future: none is left unretrieved.
                await asyncio.gather(*pending, return_exceptions=True)
            elapsed = time.monotonic() - began
            report.update(count)
    result = {event_type: counts[event_type] for event_type in EVENT_TYPES}
    if progress:
        console = Console()
        console.print(_summary(result, elapsed))
        total = sum(result.values())
        console.print(f"{total:,} events acknowledged in {elapsed:.2f} s: "
                      f"{total / max(elapsed, 1e-9):,.0f} events/s", highlight=False)
    return result
