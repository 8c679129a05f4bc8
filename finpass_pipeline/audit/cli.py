"""`finpass-pipeline audit verify|checkpoint|retention|user|bench` (docs/audit.md).

Each action is an async function taking the settings, its options and a `say` callable and
returning the exit code (0 success, 1 failure or a broken log, 2 bad usage or configuration), so
tests call them in their own event loop; `cmd_audit` is the CLI's synchronous entry.
Connections use FINPASS_DATABASE_ROLE when set (verify, checkpoint and user need only SELECT;
retention needs the owner: finpass_owner or a superuser).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from pathlib import Path

import asyncpg

from finpass_pipeline.db import command_connection
from finpass_pipeline.errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, FinpassError, print_error
from finpass_pipeline.settings import ConfigError, Settings

Say = Callable[[str], None]


class AuditCommandError(FinpassError):
    """A one-line failure of an audit command (exit 1)."""


_err = print_error


def _out(line: str) -> None:
    print(line, flush=True)


def _connect(settings: Settings) -> AbstractAsyncContextManager[asyncpg.Connection]:
    return command_connection(
        settings.database_url, settings.database_role, "audit_chain_heads",
        missing="the audit chain tables are missing: run `finpass-pipeline migrate` (V4+) "
                "against this database", error=AuditCommandError)


# --- actions -------------------------------------------------------------------------------------

async def verify(settings: Settings, since: datetime | None = None,
                 checkpoint: Path | None = None, say: Say = _out, err: Say = _err) -> int:
    """Walk every chain; print each chain's first break (exit 1) or a summary (exit 0)."""
    from finpass_pipeline.audit import checkpoint as audit_checkpoint
    from finpass_pipeline.audit.verify import verify as walk

    signed = None
    if checkpoint is not None:
        key = settings.checkpoint_key()  # ConfigError (exit 2) before reading anything
        try:
            text = await asyncio.to_thread(checkpoint.read_text, encoding="utf-8")
        except OSError as e:
            err(f"cannot read checkpoint {checkpoint}: {e.strerror or e}")
            return EXIT_USAGE
        try:
            signed = audit_checkpoint.load(text, key)
        except audit_checkpoint.CheckpointError as e:
            err(f"checkpoint {checkpoint} rejected: {e}")
            return EXIT_FAILURE
    async with _connect(settings) as conn:
        report = await walk(conn, since, signed)
    for b in report.breaks:
        say(b.line())
    if report.breaks:
        err(f"audit log BROKEN: {len(report.breaks)} of {report.chains} chain(s) have a break "
            f"({report.rows} row(s) read in {report.seconds:.2f}s)")
        return EXIT_FAILURE
    say(report.summary())
    return EXIT_OK


async def checkpoint(settings: Settings, out: Path | None = None, say: Say = _out,
                     err: Say = _err) -> int:
    """Export every chain head as JSON signed with FINPASS_AUDIT_CHECKPOINT_KEY."""
    from finpass_pipeline.audit import checkpoint as audit_checkpoint

    key = settings.checkpoint_key()
    async with _connect(settings) as conn:
        try:
            data = await audit_checkpoint.create(conn, key)
        except audit_checkpoint.StaleHeads as e:
            err(str(e))
            return EXIT_FAILURE
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    if out is None:
        say(text.rstrip("\n"))
        return EXIT_OK
    try:
        await asyncio.to_thread(out.write_text, text, encoding="utf-8")
    except OSError as e:
        err(f"cannot write {out}: {e.strerror or e}")
        return EXIT_USAGE
    say(f"wrote a signed checkpoint of {len(data['chains'])} chain(s) to {out}")
    return EXIT_OK


async def retention(settings: Settings, dry_run: bool = False, say: Say = _out,
                    err: Say = _err) -> int:
    """Drop (or list) the oldest partitions whose rows are all past their retention."""
    from finpass_pipeline.audit.retention import run_retention

    async with _connect(settings) as conn:
        outcomes = await run_retention(conn, dry_run)
    verb = "would drop" if dry_run else "dropped"
    gone = 0
    for o in outcomes:
        span = f"[{o.range_from:%Y-%m-%d}, {o.range_to:%Y-%m-%d})"
        if o.dropped:
            gone += 1
            say(f"{verb} {o.name} {span}: anchors for {len(o.anchors)} chain(s)")
        else:
            say(f"kept {o.name} {span} and every newer partition: {o.reason}")
    say(f"{gone} partition(s) {verb}")
    return EXIT_OK


async def user(settings: Settings, did: str, fmt: str = "table", say: Say = _out,
               err: Say = _err) -> int:
    """Print the DID's audit trail under every known pseudonym key."""
    from finpass_pipeline.audit.trail import pseudonyms, user_trail

    keys = settings.hash_keys()
    async with _connect(settings) as conn:
        trail = await user_trail(conn, did, keys)
    if fmt == "json":
        say(json.dumps({
            "pseudonyms": pseudonyms(did, keys),
            "rows": [{"match": t.match, "key_id": t.key_id, **t.values} for t in trail],
        }, indent=2, default=str))
        return EXIT_OK
    say(f"pseudonyms: {', '.join(f'{k}={h[:16]}…' for k, h in pseudonyms(did, keys).items())}")
    say(f"{'created_at':<32}  {'event_type':<22}  {'outcome':<9}  {'match':<17}  "
        f"{'key':<6}  resource")
    for t in trail:
        v = t.values
        say(f"{v['created_at'].isoformat():<32}  {v['event_type']:<22}  {v['outcome'] or '':<9}  "
            f"{t.match:<17}  {t.key_id:<6}  {v['resource_type'] or ''}:{v['resource_id'] or ''}")
    by_key: dict[str, int] = {}
    for t in trail:
        by_key[t.key_id] = by_key.get(t.key_id, 0) + 1
    say(f"{len(trail)} row(s): " + (", ".join(f"{n} under {k}" for k, n in sorted(by_key.items()))
                                    or "none"))
    return EXIT_OK


# --- the CLI ------------------------------------------------------------------------------------

def cmd_audit(args: argparse.Namespace, settings: Settings) -> int:
    """`finpass-pipeline audit ACTION` (the parser lives in finpass_pipeline.cli)."""
    action = args.audit_action
    try:
        if action == "verify":
            return asyncio.run(verify(settings, args.since, args.checkpoint))
        if action == "checkpoint":
            return asyncio.run(checkpoint(settings, args.out))
        if action == "retention":
            return asyncio.run(retention(settings, args.dry_run))
        if action == "user":
            return asyncio.run(user(settings, args.did, args.format))
        from finpass_pipeline.dev.audit_bench import run_bench

        return asyncio.run(run_bench(settings, args.events, args.users, args.seed, args.rounds))
    except AuditCommandError as e:
        _err(str(e))
        return EXIT_FAILURE
    except ConfigError:
        raise  # the CLI prints it and exits 2
