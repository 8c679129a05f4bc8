"""`finpass-pipeline report`: run a named analyst report and print it as a table, CSV or JSON.

    finpass-pipeline report --list
    finpass-pipeline report NAME [--from T] [--to T] [--limit N] [report options] [--format F]
    finpass-pipeline report NAME --help
    finpass-pipeline report --refresh-rollups [--full]      (the operator's; not the analyst's)

The reports themselves are in `report_defs.REPORTS`; each is one call of an `analyst.*` SQL
function. Output: `--format table` (aligned, for a terminal), `csv` (RFC 4180 with a header row;
NULL is an empty field) or `json` (an array of objects; NUMERIC values are strings, so money keeps
every digit; timestamps are ISO 8601 with offset). Default: table when stdout is a terminal, csv
when it is piped. Reports run in a read-only transaction.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import sys
import time
from collections.abc import Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import IO, Any, NoReturn
from uuid import UUID

import asyncpg

from finpass_pipeline.analyst.definitions import (
    BY_NAME,
    RELATIVE_TIME,
    REPORTS,
    ParamError,
    Report,
    resolve,
)
from finpass_pipeline.errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, UsageError, print_error
from finpass_pipeline.settings import Settings

FORMATS = ("table", "csv", "json")
READ_ONLY_SETTINGS = {
    "application_name": "finpass-report",
    "default_transaction_read_only": "on",
    "TimeZone": "UTC",
    # Report functions are inlined into the caller's query; plan every execution with its
    # actual arguments (a generic plan cannot pick the right index for a date window).
    "plan_cache_mode": "force_custom_plan",
    # JIT compiles per partition and costs more than it saves on these queries (1.4 s of a
    # 2.8 s suspicious-activity run at 10M audit rows); hash aggregates want more than 4MB.
    "jit": "off",
    "work_mem": "64MB",
}


class ReportUsageError(UsageError):
    """Bad report name or option: printed on one line, exit 2."""


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage and exiting."""

    def error(self, message: str) -> NoReturn:
        raise ReportUsageError(f"{self.prog}: {message}")


def report_parser(report: Report) -> argparse.ArgumentParser:
    parser = _Parser(prog=f"finpass-pipeline report {report.name}",
                     description=report.description, allow_abbrev=False)
    for p in report.params:
        parser.add_argument(p.option, dest=p.name, metavar=p.type.upper(),
                            help=f"{p.help} ({p.describe_default()})")
    parser.add_argument("--format", choices=FORMATS, default=None,
                        help="output format (default: table on a terminal, csv when piped)")
    return parser


# --- running ------------------------------------------------------------------------------

async def connect(dsn: str) -> asyncpg.Connection:
    """A read-only reporting connection (see READ_ONLY_SETTINGS)."""
    conn: asyncpg.Connection = await asyncpg.connect(dsn, server_settings=READ_ONLY_SETTINGS)
    return conn


async def fetch(conn: asyncpg.Connection, report: Report, args: Sequence[Any]
                ) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run one report: its column names and rows."""
    stmt = await conn.prepare(report.sql)
    rows = await stmt.fetch(*args)
    return [a.name for a in stmt.get_attributes()], [tuple(r) for r in rows]


async def refresh_rollups(dsn: str, full: bool) -> list[tuple[Any, ...]]:
    conn = await asyncpg.connect(dsn, server_settings={"application_name": "finpass-report"})
    try:
        return [tuple(r) for r in await conn.fetch(
            "SELECT * FROM analyst.refresh_rollups($1)", full)]
    finally:
        await conn.close()


async def _run(dsn: str, report: Report, args: list[Any]
               ) -> tuple[list[str], list[tuple[Any, ...]], float]:
    conn = await connect(dsn)
    try:
        started = time.perf_counter()
        columns, rows = await fetch(conn, report, args)
        return columns, rows, (time.perf_counter() - started) * 1000
    finally:
        await conn.close()


# --- output -------------------------------------------------------------------------------

def plain(value: Any) -> Any:
    """A JSON-ready value: Decimal and UUID as strings, times as ISO 8601."""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    return value


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(plain(value))


def write_csv(out: IO[str], columns: list[str], rows: list[tuple[Any, ...]]) -> None:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([_cell(v) for v in row] for row in rows)


def write_json(out: IO[str], columns: list[str], rows: list[tuple[Any, ...]]) -> None:
    out.write("[")
    for i, row in enumerate(rows):
        out.write(",\n" if i else "\n")
        out.write(json.dumps({c: plain(v) for c, v in zip(columns, row, strict=True)},
                             ensure_ascii=False))
    out.write("\n]\n" if rows else "]\n")


def write_table(out: IO[str], report: Report, columns: list[str], rows: list[tuple[Any, ...]],
                elapsed_ms: float) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title=report.name, caption=f"{len(rows)} row(s) in {elapsed_ms:.0f} ms",
                  header_style="bold", show_lines=False)
    cells = [[_table_cell(v) for v in row] for row in rows]
    for name, sample in zip(columns, rows[0] if rows else [None] * len(columns), strict=True):
        numeric = isinstance(sample, int | float | Decimal) and not isinstance(sample, bool)
        table.add_column(name, justify="right" if numeric else "left", overflow="fold")
    for row_cells in cells:
        table.add_row(*(Text(c) for c in row_cells))  # Text: no [markup] in data
    # A terminal folds what does not fit; into a file or pipe the table keeps its natural width.
    natural = sum(max([len(c)] + [len(r[i]) for r in cells]) + 3 for i, c in enumerate(columns))
    Console(file=out, width=None if out.isatty() else max(80, natural + 1)).print(table)


def _table_cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    return _cell(value)


def list_reports(out: IO[str]) -> None:
    for r in REPORTS:
        out.write(f"{r.name}  ({r.kind})\n    {r.description}\n")
        for p in r.params:
            out.write(f"    {p.option} {p.type.upper()}: {p.help} ({p.describe_default()})\n")
    out.write("Every report also takes --format table|csv|json; "
              "`report NAME --help` shows its options.\n")


# --- the command --------------------------------------------------------------------------

def run_cli(args: argparse.Namespace, settings: Settings, out: IO[str] | None = None) -> int:
    """The `report` subcommand (cli.py); returns the exit code. One line on stderr on error."""
    out = out or sys.stdout
    try:
        return _dispatch(args, settings, out)
    except (ReportUsageError, ParamError) as e:
        _error(str(e))
        return EXIT_USAGE
    except asyncpg.UndefinedFunctionError:
        _error("the analyst functions are missing: run `finpass-pipeline migrate` first")
    except asyncpg.InsufficientPrivilegeError as e:
        _error(f"permission denied: {e}")
    except asyncpg.PostgresError as e:
        _error(f"the report failed: {type(e).__name__}: {e}")
    except (OSError, asyncpg.InterfaceError) as e:
        _error(f"cannot reach PostgreSQL: {e}")
    return EXIT_FAILURE


def _glue_relative_times(report: Report, options: list[str]) -> list[str]:
    """`--from -30d` → `--from=-30d`: argparse would take `-30d` for an option."""
    takes_value = {p.option for p in report.params}
    glued: list[str] = []
    for token in options:
        if glued and glued[-1] in takes_value and RELATIVE_TIME.match(token):
            glued[-1] = f"{glued[-1]}={token}"
        else:
            glued.append(token)
    return glued


_error = print_error


def _dispatch(args: argparse.Namespace, settings: Settings, out: IO[str]) -> int:
    options: list[str] = list(args.options or [])
    if args.list:
        list_reports(out)
        return EXIT_OK
    if args.refresh_rollups:
        if options or args.name:
            raise ReportUsageError("report --refresh-rollups takes no report name or options")
        for rollup, days, groups, covered in asyncio.run(
                refresh_rollups(settings.database_url, args.full)):
            out.write(f"{rollup}: recomputed {days} day(s), {groups} row(s), "
                      f"covers until {covered.isoformat()}\n")
        return EXIT_OK
    if not args.name:
        raise ReportUsageError("report: name a report (report --list shows them)")
    report = BY_NAME.get(args.name)
    if report is None:
        raise ReportUsageError(f"report: no report named {args.name!r} "
                               "(report --list shows them)")
    parser = report_parser(report)
    if "-h" in options or "--help" in options:
        parser.print_help(out)
        return EXIT_OK
    parsed = vars(parser.parse_args(_glue_relative_times(report, options)))
    fmt = parsed.pop("format") or ("table" if out.isatty() else "csv")
    values = resolve(report, parsed, datetime.now(UTC))
    columns, rows, elapsed_ms = asyncio.run(_run(settings.database_url, report, values))
    if fmt == "csv":
        write_csv(out, columns, rows)
    elif fmt == "json":
        write_json(out, columns, rows)
    else:
        write_table(out, report, columns, rows, elapsed_ms)
    return EXIT_OK
