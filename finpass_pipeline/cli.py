"""`finpass-pipeline`: the one operator command (CONTRACT.md §4).

Exit codes: 0 success, 2 bad usage or configuration (one line on stderr), 1 other failure.
Subcommand modules are imported lazily so `--help` and `dev up` stay fast.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
import uuid
from collections.abc import Callable, Coroutine, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from finpass_pipeline.errors import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    FinpassError,
    UsageError,
    print_error,
)
from finpass_pipeline.privacy import cli as privacy_cli
from finpass_pipeline.settings import Settings, load_settings

T = TypeVar("T")


def _say(line: str) -> None:
    print(line, flush=True)


def _fail(message: str) -> NoReturn:
    raise FinpassError(message)


def _run(coro: Coroutine[Any, Any, int | None]) -> int:
    return asyncio.run(coro) or EXIT_OK


# --- dev stack -------------------------------------------------------------------------------

def cmd_dev(args: argparse.Namespace, settings: Settings) -> int:
    from finpass_pipeline.dev.stack import DevStack

    stack = DevStack(settings)  # DevStackError is a FinpassError: one line, exit 1
    if args.action == "up":
        stack.up(_say)
    elif args.action == "down":
        stack.down(_say)
    else:
        return EXIT_OK if stack.status(_say) else EXIT_FAILURE
    return EXIT_OK


# --- migrations ------------------------------------------------------------------------------

def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from finpass_pipeline import migrations

    applied = _run_db(migrations.migrate(settings.database_url, target=args.target))
    _say(f"applied {len(applied)} migration(s): {', '.join(map(str, applied)) or 'none pending'}")
    return EXIT_OK


def cmd_rollback(args: argparse.Namespace, settings: Settings) -> int:
    from finpass_pipeline import migrations

    undone = _run_db(migrations.rollback(settings.database_url, to=args.to))
    _say(f"rolled back {len(undone)} migration(s): {', '.join(map(str, undone)) or 'none'}")
    return EXIT_OK


def cmd_migrations(args: argparse.Namespace, settings: Settings) -> int:
    from finpass_pipeline import migrations

    states = _run_db(migrations.status(settings.database_url))
    _say(f"{'version':>7}  {'state':<8}  {'installed_at':<25}  file")
    for s in states:
        state = ("applied" if s.checksum_ok else "EDITED") if s.applied else "pending"
        installed = s.installed_at.isoformat(timespec="seconds") if s.installed_at else "-"
        _say(f"{s.version:>7}  {state:<8}  {installed:<25}  {s.file}")
    return EXIT_OK


def _run_db(coro: Coroutine[Any, Any, T]) -> T:
    """Run a database coroutine, turning connection failures into one-line errors (a
    `MigrationError` is a `FinpassError` already)."""
    try:
        return asyncio.run(coro)
    except OSError as e:
        _fail(f"cannot reach PostgreSQL: {e}")


# --- topics, schema --------------------------------------------------------------------------

def cmd_topics(args: argparse.Namespace, settings: Settings) -> int:
    from finpass_pipeline.kafka import ensure_topics

    created = asyncio.run(ensure_topics(settings))
    for topic, was_created in created.items():
        _say(f"{topic}: {'created' if was_created else 'exists'}")
    return EXIT_OK


def cmd_schema(args: argparse.Namespace, settings: Settings) -> int:
    from finpass_pipeline.events.schema_export import export_schemas

    written = export_schemas(Path(args.directory))
    _say(f"wrote {len(written)} JSON Schema file(s) to {args.directory}")
    return EXIT_OK


def cmd_schema_check(args: argparse.Namespace, settings: Settings) -> int:
    from finpass_pipeline.events.compat import check_directory

    directory = Path(args.directory)
    if not directory.is_dir():
        raise UsageError(f"{directory}: no such directory (the committed schemas, e.g. "
                         "docs/schemas)")
    result = check_directory(directory)
    if not result.checked:
        raise UsageError(f"{directory}: no per-version schemas (<event_type>.v<N>.schema.json)")
    for notice in result.notices:
        print(f"notice: {notice}", file=sys.stderr)
    for problem in result.incompatible:
        _say(f"INCOMPATIBLE {problem.line()}")
    if result.incompatible:
        _say(f"{len(result.incompatible)} change(s) would refuse messages that the committed "
             f"schemas accept: restore the field, or add a new schema_version with an upcaster")
        return EXIT_FAILURE
    _say(f"ok: the models accept everything the {result.checked} committed schema version(s) in "
         f"{directory} accept")
    return EXIT_OK


# --- the daemons ------------------------------------------------------------------------------

def cmd_consume(args: argparse.Namespace, settings: Settings) -> int:
    from consumers.daemon import main as consume_main
    from finpass_pipeline.logs import configure_logging

    configure_logging(settings.log_format, settings.log_level)
    settings.hash_key()  # a missing key is a configuration error: exit 2 before connecting
    if settings.event_loop == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(consume_main(settings))
    return asyncio.run(consume_main(settings))


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from finpass_pipeline.dev.demo import run_demo
    from finpass_pipeline.logs import configure_logging

    configure_logging(settings.log_format, settings.log_level)
    return asyncio.run(run_demo(settings, args.count, args.users, args.seed, args.rate))


def cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    import json

    from finpass_pipeline.dev.bench import Bench, render_runs
    from finpass_pipeline.logs import configure_logging

    configure_logging(settings.log_format, "warning")

    def say(line: str) -> None:
        if not args.json:
            print(line, file=sys.stderr, flush=True)

    results = []
    for run in range(1, args.runs + 1):
        if args.runs > 1:
            say(f"--- run {run} of {args.runs}")
        bench = Bench(settings, args.events, args.users, args.seed, args.rate,
                      args.latency_seconds, args.naive_sample, say, consumers=args.consumers,
                      lanes=args.lanes,
                      prefill_audit=args.prefill_audit)
        try:
            results.append(asyncio.run(bench.run()))
        finally:
            if not args.keep:
                asyncio.run(bench.cleanup())
    if args.json:
        print(json.dumps([r.as_dict() for r in results] if args.runs > 1
                         else results[0].as_dict(), indent=2))
    else:
        print(render_runs(results))
    return EXIT_OK


def cmd_bench_phases(args: argparse.Namespace, settings: Settings) -> int:
    from finpass_pipeline.dev.phases import run
    from finpass_pipeline.logs import configure_logging

    configure_logging(settings.log_format, "warning")
    print(run(settings, args.events, args.rounds,
              lambda line: print(line, file=sys.stderr, flush=True)))
    return EXIT_OK


def cmd_summary(args: argparse.Namespace, settings: Settings) -> int:
    from finpass_pipeline.dev.demo import print_summary, summarize

    print_summary(asyncio.run(summarize(settings)))
    return EXIT_OK


def cmd_produce_demo(args: argparse.Namespace, settings: Settings) -> int:
    from aiokafka.errors import KafkaError

    from finpass_pipeline.dev.produce import produce_demo
    from finpass_pipeline.kafka import ensure_topics
    from finpass_pipeline.logs import configure_logging

    configure_logging(settings.log_format, settings.log_level)
    from producers.errors import PublishError

    async def create_topics_then_produce() -> None:
        await ensure_topics(settings)
        await produce_demo(settings, args.count, args.rate, args.users, args.seed)

    try:
        asyncio.run(create_topics_then_produce())
    except (PublishError, KafkaError) as e:
        _fail(f"producing failed: {e}")
    return EXIT_OK


def cmd_outbox_relay(args: argparse.Namespace, settings: Settings) -> int:
    from finpass_pipeline.logs import configure_logging
    from producers.outbox import main as relay_main

    dsn = settings.outbox_dsn()  # validated with the settings: a malformed one is exit 2
    configure_logging(settings.log_format, settings.log_level)
    return asyncio.run(relay_main(settings, dsn, batch_size=args.batch_size))


def cmd_prune(args: argparse.Namespace, settings: Settings) -> int:
    from finpass_pipeline.prune import run

    return _run(run(settings, args.older_than, outbox=args.outbox, batch_size=args.batch_size,
                    dry_run=args.dry_run, say=_say))


def _window(text: str) -> timedelta:
    from finpass_pipeline.prune import parse_window

    try:
        return parse_window(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


# --- analyst reports (docs/analyst.md) -------------------------------------------------------

def cmd_report(args: argparse.Namespace, settings: Settings) -> int:
    from finpass_pipeline.analyst.reports import run_cli

    return run_cli(args, settings)


def cmd_analyst(args: argparse.Namespace, settings: Settings) -> int:
    if args.analyst_action == "backfill":
        from finpass_pipeline.analyst.pseudonyms import backfill

        async def fill() -> None:
            await backfill(settings, batch_size=args.batch_size, every=args.all, say=_say)

        return _run(fill())
    from finpass_pipeline.analyst import dictionary

    mode = "check" if args.check else "write" if args.write else "print"
    generated = asyncio.run(dictionary.generate(settings.database_url, settings.database_role))
    return dictionary.apply(generated, args.doc, mode)


def _add_analyst_parser(sub: Any) -> None:
    from finpass_pipeline.analyst.dictionary import DOC

    analyst = sub.add_parser("analyst", help="the pseudonymous analyst surface: backfill "
                                             "pseudonyms, data dictionary")
    actions = analyst.add_subparsers(dest="analyst_action", required=True, metavar="ACTION")
    fill = actions.add_parser("backfill", help="fill the pseudonym columns of rows written "
                                               "before V15 (needs FINPASS_AUDIT_HASH_KEY)")
    fill.add_argument("--batch-size", type=_positive, default=5000,
                      help="rows per transaction (default 5000)")
    fill.add_argument("--all", action="store_true",
                      help="recompute every row (after rotating the pseudonym key)")
    dictionary = actions.add_parser("dictionary", help="the data dictionary, from the COMMENTs "
                                                       "of what finpass_analyst can reach")
    mode = dictionary.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="replace its section in --doc")
    mode.add_argument("--check", action="store_true",
                      help="exit 1 when --doc's section differs from the database")
    dictionary.add_argument("--doc", type=Path, default=DOC, help="default docs/analyst.md")
    analyst.set_defaults(handler=cmd_analyst)


def cmd_datagen(args: argparse.Namespace, settings: Settings) -> int:
    from finpass_pipeline.dev.datagen import run_cli

    return run_cli(args, settings)


def cmd_report_bench(args: argparse.Namespace, settings: Settings) -> int:
    from finpass_pipeline.dev.report_bench import run_cli

    return run_cli(args, settings)


# --- dead letters, parked events, offsets (docs/operations.md) ------------------------------

def cmd_dead_letters(args: argparse.Namespace, settings: Settings) -> int:
    from finpass_pipeline.ops import inspect

    if args.dl_action == "show":
        return asyncio.run(inspect.dead_letters_show(settings, args.id, say=_say))
    if args.dl_action == "discard":
        from consumers.dead_letter_ops import discard

        asyncio.run(discard(settings, args.ids, args.by, args.why, _say))
        return EXIT_OK
    filt = inspect.DeadLetterFilter(topic=args.topic, event_type=args.event_type,
                                    reason=args.reason, since=args.since, until=args.until)
    if args.dl_action == "replay":
        from consumers.dead_letter_ops import replay

        report = asyncio.run(replay(settings, filt, args.by, args.why, args.ids, _say))
        _say(f"replayed: {report.applied} applied, {report.still_invalid} still invalid "
             f"({report.reason_changed} with a new reason)")
        return EXIT_OK
    return asyncio.run(inspect.dead_letters_list(settings, filt, args.limit, args.format, _say))


def cmd_parked(args: argparse.Namespace, settings: Settings) -> int:
    from finpass_pipeline.ops import inspect

    return asyncio.run(inspect.parked_list(settings, args.limit, args.format, _say))


def cmd_offsets(args: argparse.Namespace, settings: Settings) -> int:
    from finpass_pipeline.ops import inspect

    if args.offsets_action == "skip":
        from finpass_pipeline.ops.skip import skip

        asyncio.run(skip(settings, args.topic, args.partition, args.offset, args.why, args.by,
                         args.group, _say))
        return EXIT_OK
    return asyncio.run(inspect.offsets_show(settings, args.group, _say))


def _add_ops_parsers(sub: Any) -> None:
    dl = sub.add_parser("dead-letters", help="inspect dead letters: list [filters], show ID")
    dl_sub = dl.add_subparsers(dest="dl_action", required=True)
    listing = dl_sub.add_parser("list", help="dead letters, oldest first, filtered")
    replaying = dl_sub.add_parser("replay", help="re-apply waiting dead letters (filtered) "
                                  "through the consumer's validation and apply path, once")
    for p in (listing, replaying):
        p.add_argument("--topic", help="full topic name, e.g. finpass.payments")
        p.add_argument("--event-type", help="e.g. payment.initiated")
        p.add_argument("--reason", metavar="REGEX",
                       help="PostgreSQL regular expression on the reason (case-insensitive)")
        p.add_argument("--since", type=_timestamp, help="ISO 8601, with offset")
        p.add_argument("--until", type=_timestamp, help="ISO 8601, with offset")
        p.set_defaults(handler=cmd_dead_letters)
    listing.add_argument("--limit", type=_positive, default=100, help="rows (default 100)")
    listing.add_argument("--format", choices=("table", "json"), default="table")
    replaying.add_argument("--id", dest="ids", type=_positive, action="append",
                           help="only this letter (repeatable)")
    discarding = dl_sub.add_parser("discard", help="mark dead letters handled, with who and "
                                   "why (nothing is deleted)")
    discarding.add_argument("ids", type=_positive, nargs="+", metavar="ID")
    discarding.set_defaults(handler=cmd_dead_letters)
    for p in (replaying, discarding):
        p.add_argument("--by", default=getpass.getuser(), help="who (default: the OS user)")
    replaying.add_argument("--why", help="a note kept with each replayed letter")
    discarding.add_argument("--why", required=True, help="why no replay is needed")
    show = dl_sub.add_parser("show", help="one dead letter, its raw bytes escaped")
    show.add_argument("id", type=_positive)
    show.set_defaults(handler=cmd_dead_letters)
    parked = sub.add_parser("parked", help="events waiting for their subject")
    parked_sub = parked.add_subparsers(dest="parked_action", required=True)
    plist = parked_sub.add_parser("list", help="parked events with their age, oldest first")
    plist.add_argument("--limit", type=_positive, default=100, help="rows (default 100)")
    plist.add_argument("--format", choices=("table", "json"), default="table")
    plist.set_defaults(handler=cmd_parked)
    offsets = sub.add_parser("offsets", help="consumed offsets: database and Kafka")
    offsets_sub = offsets.add_subparsers(dest="offsets_action", required=True)
    oshow = offsets_sub.add_parser("show", help="per partition: database, Kafka commit, lag")
    oskip = offsets_sub.add_parser("skip", help="move a partition's next offset forward in the "
                                   "database (and Kafka), audited; safe while the group runs")
    oskip.add_argument("topic", help="full topic name, e.g. finpass.payments")
    oskip.add_argument("partition", type=int)
    oskip.add_argument("offset", type=int, help="the next offset to apply")
    oskip.add_argument("--why", required=True, help="what the skipped messages were")
    oskip.add_argument("--by", default=getpass.getuser(), help="who (default: the OS user)")
    for p in (oshow, oskip):
        p.add_argument("--group", help="consumer group (default FINPASS_CONSUMER_GROUP)")
        p.set_defaults(handler=cmd_offsets)


# --- the audit log (docs/audit.md) -----------------------------------------------------------

def cmd_audit(args: argparse.Namespace, settings: Settings) -> int:
    from finpass_pipeline.audit.cli import cmd_audit as run_audit

    return run_audit(args, settings)


def _timestamp(text: str) -> datetime:
    """An ISO 8601 timestamp with a UTC offset (naive times are bad usage)."""
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 timestamp") from None
    if value.utcoffset() is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no UTC offset (e.g. 2026-11-01T00:00Z)")
    return value


def _add_audit_parser(sub: Any) -> None:
    audit = sub.add_parser("audit", help="prove the audit log: verify, checkpoint, retention, "
                                         "user trail, chaining cost")
    actions = audit.add_subparsers(dest="audit_action", required=True, metavar="ACTION")
    verify = actions.add_parser("verify", help="walk every hash chain; exit 1 on a break")
    verify.add_argument("--since", type=_timestamp, default=None, metavar="TIMESTAMP",
                        help="only rows created at or after this time (with offset)")
    verify.add_argument("--checkpoint", type=Path, default=None, metavar="FILE",
                        help="also check a signed checkpoint (FINPASS_AUDIT_CHECKPOINT_KEY)")
    checkpoint = actions.add_parser(
        "checkpoint", help="sign the Merkle tree head (Ed25519 signed note) and record it")
    checkpoint.add_argument("--hmac", action="store_true",
                            help="instead: the v1 JSON of every chain head, HMAC-signed")
    checkpoint.add_argument("--out", type=Path, default=None, metavar="FILE",
                            help="with --hmac: write the file here (default: stdout)")
    actions.add_parser("public-key", help="print the checkpoints' verifier key (note vkey)")
    actions.add_parser("seal", help="integrate committed audit rows into the Merkle tree now")
    prove = actions.add_parser("prove", help="inclusion (--event-id/--id) or consistency "
                                             "(--from/--to) proof, as JSON")
    which = prove.add_mutually_exclusive_group(required=True)
    which.add_argument("--event-id", type=uuid.UUID, default=None, metavar="UUID")
    which.add_argument("--id", type=uuid.UUID, default=None, metavar="ROW_ID",
                       help="audit_events.id (rows no event caused)")
    which.add_argument("--from", dest="from_size", type=int, default=None, metavar="M")
    prove.add_argument("--to", dest="to_size", type=int, default=None, metavar="N")
    prove.add_argument("--size", type=int, default=None, metavar="N",
                       help="a recorded checkpoint size (default: the latest)")
    prove.add_argument("--without-personal", action="store_true",
                       help="leave the row's personal values and salt out (the proof still "
                            "verifies: the leaf holds only their digest)")
    retention = actions.add_parser("retention", help="drop the oldest partitions whose rows "
                                                     "are all past their retention_days")
    retention.add_argument("--dry-run", action="store_true", help="only list what would go")
    user = actions.add_parser("user", help="a DID's whole audit trail across pseudonym keys")
    user.add_argument("did", metavar="DID")
    user.add_argument("--format", choices=["table", "json"], default="table")
    bench = actions.add_parser("bench", help="consumer throughput with chaining on vs off")
    bench.add_argument("--events", type=_positive, default=50_000)
    bench.add_argument("--users", type=_positive, default=2_000)
    bench.add_argument("--seed", type=int, default=42)
    bench.add_argument("--rounds", type=_positive, default=1,
                       help="off/on pairs; the best of each is reported")
    tree_bench = actions.add_parser(
        "tree-bench", help="the Merkle tree at scale: sealing, proofs p95, verify rows/s, and "
                           "ingest with the sealer on vs off")
    tree_bench.add_argument("--rows", type=_positive, default=1_000_000,
                            help="audit rows to write, seal and prove (the issue asks 10M)")
    tree_bench.add_argument("--events", type=int, default=20_000,
                            help="events for the ingest on/off runs (0: skip them)")
    tree_bench.add_argument("--proofs", type=_positive, default=200)
    tree_bench.add_argument("--rounds", type=_positive, default=1)
    audit.set_defaults(handler=cmd_audit)


# --- argument parsing ------------------------------------------------------------------------

def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text}")
    return value


Handler = Callable[[argparse.Namespace, Settings], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="finpass-pipeline",
        description="Kafka domain events into PostgreSQL rows and an audit log, effectively once.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    dev = sub.add_parser("dev", help="start/stop the local PostgreSQL and Kafka (no Docker)")
    dev.add_argument("action", choices=["up", "down", "status"])
    dev.set_defaults(handler=cmd_dev)

    migrate = sub.add_parser("migrate", help="apply pending schema migrations")
    migrate.add_argument("--target", type=int, default=None, help="stop at this version")
    migrate.set_defaults(handler=cmd_migrate)

    rollback = sub.add_parser("rollback", help="undo migrations down to a version")
    rollback.add_argument("--to", type=int, required=True, metavar="N")
    rollback.set_defaults(handler=cmd_rollback)

    sub.add_parser("migrations", help="list migrations and their state").set_defaults(
        handler=cmd_migrations
    )
    sub.add_parser("topics", help="create the contract's topics (idempotent)").set_defaults(
        handler=cmd_topics
    )
    sub.add_parser(
        "consume", help="run the consumer daemon until SIGTERM/SIGINT, then drain and exit 0"
    ).set_defaults(handler=cmd_consume)
    demo = sub.add_parser(
        "demo", help="the main job end to end: migrate, topics, consumer, demo stream, summary"
    )
    demo.add_argument("--count", type=_positive, default=20_000, help="events (default 20000)")
    demo.add_argument("--users", type=_positive, default=1_000, help="users (default 1000)")
    demo.add_argument("--seed", type=int, default=None, help="default: random (printed)")
    demo.add_argument("--rate", type=float, default=0.0, help="events/s cap; 0 = unlimited")
    demo.set_defaults(handler=cmd_demo)
    bench = sub.add_parser("bench", help="pipeline vs database/Kafka ceilings, naive baseline, "
                           "latency and RSS, on fresh topics and databases")
    bench.add_argument("--events", type=_positive, default=200_000)
    bench.add_argument("--users", type=_positive, default=5_000)
    bench.add_argument("--seed", type=int, default=42)
    bench.add_argument("--rate", type=float, default=2_000.0, help="offered rate for latency")
    bench.add_argument("--latency-seconds", type=float, default=15.0)
    bench.add_argument("--naive-sample", type=_positive, default=10_000,
                       help="events for the naive baseline (it is slow)")
    bench.add_argument("--consumers", type=_positive, default=1,
                       help="consumer processes in the group for (c)")
    bench.add_argument("--prefill-audit", type=int, default=0, metavar="N",
                       help="load N audit rows before (c), to see how cost grows")
    bench.add_argument("--lanes", type=_positive, default=1,
                       help="FINPASS_CONSUMER_LANES of the consumers (default 1)")
    bench.add_argument("--runs", type=_positive, default=1,
                       help="whole runs, one after another; the best is shown with every run")
    bench.add_argument("--json", action="store_true", help="machine-readable output")
    bench.add_argument("--keep", action="store_true", help="keep the bench databases")
    bench.set_defaults(handler=cmd_bench)
    phases = sub.add_parser("bench-phases", help="the consumer's Python CPU per event, phase by "
                            "phase (in memory), and the store path's, with the collector's share")
    phases.add_argument("--events", type=_positive, default=20_000)
    phases.add_argument("--rounds", type=_positive, default=5, help="best of (default 5)")
    phases.set_defaults(handler=cmd_bench_phases)
    sub.add_parser("summary", help="rows per table, dead letters, consumer throughput"
                   ).set_defaults(handler=cmd_summary)
    produce = sub.add_parser("produce-demo", help="publish a realistic, seeded event stream")
    produce.add_argument("--count", type=_positive, default=10_000, help="events (default 10000)")
    produce.add_argument("--rate", type=float, default=0.0, help="events/s cap; 0 = unlimited")
    produce.add_argument("--users", type=_positive, default=1_000, help="users (default 1000)")
    produce.add_argument("--seed", type=int, default=42, help="same seed, same stream (default 42)")
    produce.set_defaults(handler=cmd_produce_demo)
    relay = sub.add_parser(
        "outbox-relay", help="publish event_outbox rows of FINPASS_OUTBOX_DATABASE_URL to Kafka"
    )
    relay.add_argument("--batch-size", type=_positive, default=500, help="rows per transaction")
    relay.set_defaults(handler=cmd_outbox_relay)
    prune = sub.add_parser(
        "prune", help="delete idempotency claims (or, --outbox, sent outbox rows) past a window")
    prune.add_argument("--older-than", type=_window, default=_window("30d"), metavar="AGE",
                       help="e.g. 30d, 12h, 90m (default 30d): longer than any redelivery")
    prune.add_argument("--outbox", action="store_true",
                       help="prune event_outbox in FINPASS_OUTBOX_DATABASE_URL instead")
    prune.add_argument("--batch-size", type=_positive, default=10_000,
                       help="rows per transaction to aim at (default 10000)")
    prune.add_argument("--dry-run", action="store_true", help="only count what would go")
    prune.set_defaults(handler=cmd_prune)
    report = sub.add_parser("report", help="analyst reports: report --list, report NAME --help")
    report.add_argument("name", nargs="?", metavar="NAME", help="the report (see --list)")
    report.add_argument("--list", action="store_true", help="describe every report")
    report.add_argument("--refresh-rollups", action="store_true",
                        help="bring the analyst rollups up to date (incremental)")
    report.add_argument("--full", action="store_true", help="with --refresh-rollups: rebuild all")
    report.add_argument("options", nargs=argparse.REMAINDER,
                        help="the report's options: --from, --to, --limit, --format, ...")
    report.set_defaults(handler=cmd_report)
    datagen = sub.add_parser("datagen", help="load synthetic rows at scale into an empty database")
    datagen.add_argument("--users", type=_positive, default=500_000)
    datagen.add_argument("--credentials", type=_positive, default=1_000_000)
    datagen.add_argument("--payments", type=_positive, default=1_000_000)
    datagen.add_argument("--audit", type=_positive, default=10_000_000)
    datagen.add_argument("--days", type=_positive, default=395, help="history (default 395)")
    datagen.add_argument("--seed", type=int, default=1, help="same seed, same data (default 1)")
    datagen.set_defaults(handler=cmd_datagen)
    rbench = sub.add_parser("report-bench", help="p50/p95 latency and plan of every report")
    rbench.add_argument("--runs", type=_positive, default=20, help="runs per report (default 20)")
    rbench.set_defaults(handler=cmd_report_bench)
    schema = sub.add_parser("schema", help="JSON Schema of the event contract")
    schema_sub = schema.add_subparsers(dest="schema_action", required=True)
    export = schema_sub.add_parser("export", help="write one schema file per event type")
    export.add_argument("directory")
    export.set_defaults(handler=cmd_schema)
    check = schema_sub.add_parser(
        "check", help="fail, naming the field, if the models refuse what committed schemas accept")
    check.add_argument("directory", nargs="?", default="docs/schemas",
                       help="the committed per-version schemas (default docs/schemas)")
    check.set_defaults(handler=cmd_schema_check)
    _add_audit_parser(sub)
    _add_analyst_parser(sub)
    _add_ops_parsers(sub)
    privacy_cli.add_parser(sub)

    return parser


def main(argv: Sequence[str] | None = None) -> NoReturn:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        code = handler(args, load_settings())
    except FinpassError as e:  # the one place errors become a line on stderr and an exit code
        print_error(e)
        code = e.exit_code
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    raise SystemExit(code)


if __name__ == "__main__":
    main()
