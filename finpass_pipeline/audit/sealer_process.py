"""The daemon's sealer in a child process (FINPASS_AUDIT_SEALER=process, the default).

The consumer is CPU-bound Python: a sealer in its event loop would take its CPU from ingest
(decoding and hashing ~10 µs per row). In a child process it runs on another core, and the
consumer's loop never waits on it. The child runs `sealer.run_sealer` on its own small pool;
SIGTERM (the daemon stopping) lets the round in flight finish; a child whose parent is gone
(the daemon was killed) stops by itself within a second. `task` runs the same loop as a task
of the daemon's event loop instead (one process; costs ingest its CPU).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger("finpass.sealer")

WATCH_PARENT_S = 1.0


@dataclass(frozen=True)
class SealerConfig:
    """What the child needs (picklable; secrets are not among it)."""

    database_url: str
    role: str | None
    every_s: float
    checkpoint_every_s: float | None
    origin: str
    key_path: Path | None
    dev_mode: bool
    log_format: str
    log_level: str


def _child(config: SealerConfig, parent: int) -> None:
    from finpass_pipeline.logs import configure_logging

    configure_logging(config.log_format, config.log_level)
    asyncio.run(_child_main(config, parent))


SEALER_APPLICATION = "finpass-sealer"
"""`application_name` of the sealer process's connections."""


async def _child_main(config: SealerConfig, parent: int) -> None:
    from finpass_pipeline.audit.note import load_signer
    from finpass_pipeline.audit.sealer import run_sealer
    from finpass_pipeline.db import create_pool
    from finpass_pipeline.retry import sleep_or_stop

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)  # Ctrl-C reaches the whole group

    async def watch_parent() -> None:
        while not stop.is_set():
            if os.getppid() != parent:
                log.warning("audit_sealer_orphaned", note="the daemon is gone; stopping")
                stop.set()
            await sleep_or_stop(WATCH_PARENT_S, stop)

    signer = load_signer(config.origin, config.key_path, config.dev_mode) \
        if config.checkpoint_every_s else None
    # Named, so that the sealer's backend can be told from the consumer's (`bench`'s CPU split).
    pool = await create_pool(config.database_url, role=config.role, max_size=2,
                             server_settings={"application_name": SEALER_APPLICATION})
    watcher = asyncio.create_task(watch_parent())
    try:
        await run_sealer(pool, stop, config.every_s, signer, config.checkpoint_every_s)
    finally:
        watcher.cancel()
        await pool.close()


@asynccontextmanager
async def sealer_process(config: SealerConfig) -> AsyncIterator[Any]:
    """Run the sealer in a child process for the duration of the block."""
    ctx = multiprocessing.get_context("spawn")  # no fork of a process holding sockets/loops
    proc = ctx.Process(target=_child, args=(config, os.getpid()), name="finpass-audit-sealer",
                       daemon=True)
    proc.start()
    log.info("audit_sealer_started", pid=proc.pid, mode="process", every_s=config.every_s,
             checkpoint_every_s=config.checkpoint_every_s)
    try:
        yield proc
    finally:
        if proc.is_alive():
            proc.terminate()  # SIGTERM: the round in flight finishes
        await asyncio.to_thread(proc.join, 15)
        if proc.is_alive():
            log.warning("audit_sealer_killed", pid=proc.pid, note="did not stop within 15 s")
            proc.kill()
            await asyncio.to_thread(proc.join, 5)
