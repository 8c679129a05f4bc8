"""`finpass-pipeline audit verify|checkpoint|public-key|prove|seal|retention|user|bench|tree-bench`
(docs/audit.md).

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
import uuid
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


def _connect_tree(settings: Settings) -> AbstractAsyncContextManager[asyncpg.Connection]:
    return command_connection(
        settings.database_url, settings.database_role, "audit_tree_leaves",
        missing="the audit Merkle tree tables are missing: run `finpass-pipeline migrate` "
                "(V14+) against this database", error=AuditCommandError)


def _vkey(settings: Settings, err: Say) -> str | None:
    """The verifier key when a signer is configured (or dev mode); None: signatures unchecked."""
    if settings.audit_signing_key is None and not settings.dev_mode:
        return None
    signer = settings.signer()
    if signer.dev:
        err("notice: using the dev signing key (FINPASS_AUDIT_SIGNING_KEY is not set; "
            "dev mode only, never for a real log)")
    return signer.vkey()


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
    vkey = _vkey(settings, err)
    async with _connect(settings) as conn, _connect(settings) as second:
        report = await walk(conn, since, signed, vkey=vkey, second=second)
    for b in report.breaks:
        say(b.line())
    if report.breaks:
        err(f"audit log BROKEN: {len(report.breaks)} of {report.chains} chain(s) have a break "
            f"({report.rows} row(s) read in {report.seconds:.2f}s)")
        return EXIT_FAILURE
    say(report.summary())
    return EXIT_OK


async def public_key(settings: Settings, say: Say = _out, err: Say = _err) -> int:
    """Print the checkpoints' verifier key (signed-note vkey)."""
    signer = settings.signer()
    if signer.dev:
        err("notice: this is the dev signing key's (FINPASS_AUDIT_SIGNING_KEY is not set)")
    say(signer.vkey())
    return EXIT_OK


async def seal(settings: Settings, say: Say = _out, err: Say = _err) -> int:
    """Seal every committed audit row not in the tree yet (what the daemon's sealer does)."""
    from finpass_pipeline.audit.sealer import TreeError, seal_all

    async with _connect_tree(settings) as conn:
        try:
            result = await seal_all(conn)
        except TreeError as e:
            err(str(e))
            return EXIT_FAILURE
    if result is None:
        err("another sealer holds the lock (a consumer is sealing); try again")
        return EXIT_FAILURE
    say(f"sealed {result.sealed} row(s); tree size {result.tree_size}, root "
        f"{result.root.hex()}")
    return EXIT_OK


async def tree_checkpoint(settings: Settings, say: Say = _out, err: Say = _err) -> int:
    """Seal what is committed, sign the tree head (C2SP tlog-checkpoint), record it, print it."""
    from finpass_pipeline.audit.sealer import TreeError, record_checkpoint, seal_all

    signer = settings.signer()
    if signer.dev:
        err("notice: signing with the dev key (FINPASS_AUDIT_SIGNING_KEY is not set; dev mode "
            "only, never for a real log)")
    async with _connect_tree(settings) as conn:
        try:
            if await seal_all(conn) is None:
                err("notice: another sealer is running; checkpointing the tree as sealed so far")
            _, note = await record_checkpoint(conn, signer)
        except TreeError as e:
            err(str(e))
            return EXIT_FAILURE
    say(note.rstrip("\n"))
    return EXIT_OK


async def prove(settings: Settings, event_id: uuid.UUID | None = None,
                row_id: uuid.UUID | None = None, size: int | None = None,
                first: int | None = None, second: int | None = None, personal: bool = True,
                say: Say = _out, err: Say = _err) -> int:
    """Print an inclusion proof (event_id/row_id) or a consistency proof (first, second)."""
    from finpass_pipeline.audit import proofs
    from finpass_pipeline.audit.sealer import TreeError

    async with _connect_tree(settings) as conn:
        try:
            if first is not None and second is not None:
                data = await proofs.consistency(conn, first, second)
            else:
                data = await proofs.inclusion(conn, event_id=event_id, row_id=row_id, size=size,
                                              personal=personal)
        except proofs.ProofUsage as e:
            err(str(e))
            return EXIT_USAGE
        except (proofs.ProofUnavailable, TreeError) as e:
            err(str(e))
            return EXIT_FAILURE
    say(json.dumps(data, indent=2))
    return EXIT_OK


async def checkpoint(settings: Settings, out: Path | None = None, say: Say = _out,
                     err: Say = _err) -> int:
    """Export every chain head as JSON signed with FINPASS_AUDIT_CHECKPOINT_KEY (`--hmac`)."""
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
            if args.hmac:
                return asyncio.run(checkpoint(settings, args.out))
            if args.out is not None:
                _err("--out is for the HMAC checkpoint (with --hmac); the signed note goes "
                     "to stdout")
                return EXIT_USAGE
            return asyncio.run(tree_checkpoint(settings))
        if action == "public-key":
            return asyncio.run(public_key(settings))
        if action == "seal":
            return asyncio.run(seal(settings))
        if action == "prove":
            if (args.from_size is None) != (args.to_size is None) or (
                    args.from_size is not None and args.size is not None):
                _err("a consistency proof needs --from M and --to N (and no --size)")
                return EXIT_USAGE
            return asyncio.run(prove(settings, args.event_id, args.id, args.size,
                                     args.from_size, args.to_size, not args.without_personal))
        if action == "tree-bench":
            from finpass_pipeline.dev.tree_bench import run_tree_bench

            return asyncio.run(run_tree_bench(settings, args.rows, args.events, args.proofs,
                                              args.rounds))
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
