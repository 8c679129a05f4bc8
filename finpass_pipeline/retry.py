"""One backoff policy for every wait-and-retry loop: the database at start-up and per batch, the
broker at start-up, the outbox relay.

Exponential: 0.5 s, 1 s, 2 s, ... capped at 30 s, reset after a success; every wait ends early
when the stop event is set, so SIGTERM never waits out a backoff.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

FIRST_DELAY_S = 0.5
MAX_BACKOFF_S = 30.0


class Stopped(Exception):
    """The stop event was set while waiting to retry."""


async def sleep_or_stop(delay: float, stop: asyncio.Event | None) -> None:
    """Wait `delay` seconds, or less if `stop` is set meanwhile."""
    if stop is None:
        await asyncio.sleep(delay)
        return
    try:
        await asyncio.wait_for(stop.wait(), timeout=delay)
    except TimeoutError:
        pass


class Backoff:
    """The delay before the next retry; `wait` sleeps it (or less, see `sleep_or_stop`) and
    doubles it up to the cap, `reset` starts again after a success."""

    def __init__(self, first: float = FIRST_DELAY_S, cap: float = MAX_BACKOFF_S,
                 on_retry: Callable[[], None] | None = None) -> None:
        self.first = first
        self.cap = cap
        self.delay = first
        """What the next `wait` sleeps (log it as `retry_in_s`)."""
        self.on_retry = on_retry
        """Called at every wait: the daemon counts `finpass_transient_retries_total` here."""

    async def wait(self, stop: asyncio.Event | None = None) -> None:
        if self.on_retry is not None:
            self.on_retry()
        await sleep_or_stop(self.delay, stop)
        self.delay = min(self.delay * 2, self.cap)

    def reset(self) -> None:
        self.delay = self.first
