"""Flyway-style schema migrations: versioned SQL scripts in `schema/`, applied with asyncpg.

`schema/V<N>__<name>.sql` moves the schema from version N-1 to N; `schema/U<N>__<name>.sql`
undoes it. Applied versions are recorded in `schema_history` with the SHA-256 of the script, so
an applied script that was edited afterwards is refused instead of silently diverging from the
databases it already ran on. Each version runs in its own transaction together with its history
row: a failing script leaves no trace. Scripts therefore must not contain BEGIN/COMMIT (nor
statements that cannot run in a transaction, such as CREATE INDEX CONCURRENTLY).

Runs against one database are serialised by a session advisory lock (`ADVISORY_LOCK_KEY`), held
on a connection of its own: a second `migrate()` waits, then finds nothing pending.

The CLI (`finpass-pipeline migrate`, `rollback --to N`, `migrations`) is a thin layer over
`migrate`, `rollback` and `status`; every failure they report is a `MigrationError`.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import structlog

from finpass_pipeline.errors import FinpassError

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schema"
"""Where the scripts live: the repository's `schema/` (every function takes `schema_dir`)."""

ADVISORY_LOCK_KEY = 0x66696E7061737331
"""pg_advisory_lock key serialising migration runs ("finpass1" in ASCII; fits a signed bigint).

Advisory locks are per database, so runs against different databases never wait on each other.
"""

_SCRIPT_NAME = re.compile(r"^(?P<kind>[VU])(?P<version>[0-9]+)__(?P<name>.+)\.sql$")

# Created by migrate() under the lock; read by status() only if it exists.
_CREATE_HISTORY = """
CREATE TABLE IF NOT EXISTS schema_history (
    version INT PRIMARY KEY,
    description TEXT NOT NULL,
    script TEXT NOT NULL,
    checksum TEXT NOT NULL,
    installed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    execution_ms INT NOT NULL
)
"""

_log = structlog.get_logger(__name__)


class MigrationError(FinpassError):
    """A migration cannot run or failed; the message names the file and what to do.

    Nothing of the failing version is left behind (its transaction was rolled back); versions
    applied before it in the same run stay applied.
    """


@dataclass(frozen=True)
class MigrationState:
    """One version as `status()` sees it: its script on disk and its row in `schema_history`."""

    version: int
    description: str
    file: Path | None
    """The V<N> script; None when the version is applied but its file is gone."""
    applied: bool
    installed_at: datetime | None
    checksum_ok: bool | None
    """Whether the file still matches what was applied; None while the version is pending."""
    undo_file: Path | None = None
    """The U<N> script, if there is one."""


@dataclass(frozen=True)
class _Script:
    version: int
    description: str
    path: Path
    sql: str
    checksum: str


@dataclass(frozen=True)
class _Scripts:
    migrations: dict[int, _Script]
    undos: dict[int, _Script]


@dataclass(frozen=True)
class _Applied:
    version: int
    description: str
    script: str
    checksum: str
    installed_at: datetime


def _display(path: Path) -> str:
    """The path as an operator would type it: relative to the working directory when inside."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _discover(schema_dir: Path) -> _Scripts:
    """Read every V/U script of `schema_dir`, refusing names and versions that are ambiguous."""
    if not schema_dir.is_dir():
        raise MigrationError(f"schema directory {_display(schema_dir)} does not exist")
    found: dict[str, dict[int, _Script]] = {"V": {}, "U": {}}
    for path in sorted(schema_dir.glob("*.sql")):
        match = _SCRIPT_NAME.match(path.name)
        # A misnamed script would otherwise be skipped silently and never run.
        if match is None or int(match["version"]) < 1:
            raise MigrationError(
                f"{_display(path)} is not named V<N>__<description>.sql or "
                "U<N>__<description>.sql with N >= 1"
            )
        kind, version = match["kind"], int(match["version"])
        if version in found[kind]:
            raise MigrationError(
                f"{_display(path)} and {_display(found[kind][version].path)} "
                f"both claim {kind}{version}"
            )
        data = path.read_bytes()
        try:
            sql = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise MigrationError(f"{_display(path)} is not UTF-8: {e}") from e
        found[kind][version] = _Script(
            version=version,
            description=match["name"].replace("_", " "),
            path=path,
            sql=sql,
            checksum=hashlib.sha256(data).hexdigest(),
        )
    return _Scripts(migrations=found["V"], undos=found["U"])


def _where(dsn: str) -> str:
    """host:port/database of a DSN, never its password."""
    try:
        parts = urlsplit(dsn)
        port = parts.port or 5432
    except ValueError:
        return "the configured database"
    return f"{parts.hostname}:{port}{parts.path}"


async def _connect(dsn: str) -> Any:
    try:
        return await asyncpg.connect(dsn)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
        raise MigrationError(f"cannot connect to PostgreSQL at {_where(dsn)}: {e}") from e


@asynccontextmanager
async def _locked_connection(dsn: str) -> AsyncIterator[Any]:
    """A connection to migrate on, while this run holds the migration lock.

    The lock lives on a second connection that runs nothing else, so no script (say, one that
    calls pg_advisory_unlock_all() or DISCARD ALL) can release it mid-run. Closing that
    connection releases the lock, also when the process dies.
    """
    lock_conn = await _connect(dsn)
    try:
        if not await lock_conn.fetchval("SELECT pg_try_advisory_lock($1)", ADVISORY_LOCK_KEY):
            _log.info("migration_lock_waiting", database=_where(dsn), key=ADVISORY_LOCK_KEY)
            await lock_conn.execute("SELECT pg_advisory_lock($1)", ADVISORY_LOCK_KEY)
        conn = await _connect(dsn)
        try:
            yield conn
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
            # Failures of the runner's own queries (history, lost connection); script failures
            # arrive here already as MigrationError naming the script.
            raise MigrationError(f"database error while migrating {_where(dsn)}: {e}") from e
        finally:
            await conn.close()
    finally:
        await lock_conn.close()


async def _history(conn: Any) -> dict[int, _Applied]:
    """The applied versions; empty when `schema_history` does not exist yet."""
    if await conn.fetchval("SELECT to_regclass('schema_history')") is None:
        return {}
    rows = await conn.fetch(
        "SELECT version, description, script, checksum, installed_at FROM schema_history"
    )
    return {
        int(r["version"]): _Applied(
            version=int(r["version"]),
            description=str(r["description"]),
            script=str(r["script"]),
            checksum=str(r["checksum"]),
            installed_at=r["installed_at"],
        )
        for r in rows
    }


def _validate(schema_dir: Path, scripts: _Scripts, applied: dict[int, _Applied]) -> None:
    """Refuse to migrate when the files no longer describe what the database went through."""
    for version, record in sorted(applied.items()):
        script = scripts.migrations.get(version)
        if script is None:
            raise MigrationError(
                f"version {version} is applied but {_display(schema_dir / record.script)} "
                "is missing; restore it (applied scripts must stay in schema/)"
            )
        if script.checksum != record.checksum:
            raise MigrationError(
                f"{_display(script.path)} was edited after it was applied (checksum "
                f"{script.checksum} != recorded {record.checksum}); restore it and put the "
                f"change in a new V{max(applied) + 1}__<description>.sql"
            )
    newest = max(applied, default=0)
    for version, script in sorted(scripts.migrations.items()):
        if version < newest and version not in applied:
            raise MigrationError(
                f"{_display(script.path)} is pending but version {newest} is already applied; "
                f"renumber it above {newest}"
            )


def _failure(script: _Script, error: asyncpg.PostgresError) -> MigrationError:
    """A script's error, located by line when PostgreSQL reports a position."""
    where = ""
    position = getattr(error, "position", None)
    if position:
        line = script.sql[: int(position) - 1].count("\n") + 1
        where = f" at line {line}"
    return MigrationError(
        f"{_display(script.path)} failed{where} and was rolled back: "
        f"{type(error).__name__} ({error.sqlstate}): {error}"
    )


async def migrate(
    dsn: str, target: int | None = None, schema_dir: Path | None = None
) -> list[int]:
    """Apply the pending versions up to `target` (default: all), oldest first.

    Each version runs in its own transaction with its `schema_history` row. Before anything
    runs, every applied version's script must still exist with its recorded checksum, and no
    pending version may be older than an applied one. Returns the versions applied now (empty
    when the database is up to date, e.g. because a concurrent run got there first).

    Raises:
        MigrationError: validation failed, a script failed, or the database is unreachable.
    """
    directory = schema_dir if schema_dir is not None else SCHEMA_DIR
    scripts = _discover(directory)
    done: list[int] = []
    async with _locked_connection(dsn) as conn:
        await conn.execute(_CREATE_HISTORY)
        applied = await _history(conn)
        _validate(directory, scripts, applied)
        for version, script in sorted(scripts.migrations.items()):
            if version in applied or (target is not None and version > target):
                continue
            started = time.perf_counter()
            try:
                async with conn.transaction():
                    await conn.execute(script.sql)
                    elapsed_ms = round((time.perf_counter() - started) * 1000)
                    await conn.execute(
                        "INSERT INTO schema_history"
                        " (version, description, script, checksum, execution_ms)"
                        " VALUES ($1, $2, $3, $4, $5)",
                        version,
                        script.description,
                        script.path.name,
                        script.checksum,
                        elapsed_ms,
                    )
            except asyncpg.PostgresError as e:
                raise _failure(script, e) from e
            _log.info(
                "migration_applied", version=version, script=script.path.name,
                execution_ms=elapsed_ms,
            )
            done.append(version)
    return done


async def rollback(dsn: str, to: int, schema_dir: Path | None = None) -> list[int]:
    """Undo every applied version above `to`, newest first, with its U<N> script.

    Each undo runs in its own transaction with the deletion of its `schema_history` row. All
    undo scripts needed are checked before any runs, so a missing one changes nothing. Returns
    the versions undone (empty when none is above `to`).

    Raises:
        MigrationError: `to` is negative, an undo script is missing or fails, or the database
            is unreachable.
    """
    if to < 0:
        raise MigrationError(f"cannot roll back to version {to}: versions start at 0 (empty)")
    directory = schema_dir if schema_dir is not None else SCHEMA_DIR
    scripts = _discover(directory)
    done: list[int] = []
    async with _locked_connection(dsn) as conn:
        applied = await _history(conn)
        doomed = sorted((v for v in applied if v > to), reverse=True)
        missing = [
            _display(directory / ("U" + applied[v].script[1:]))
            for v in doomed
            if v not in scripts.undos
        ]
        if missing:
            raise MigrationError(
                f"cannot roll back to version {to}: undo script {', '.join(missing)} "
                "is missing; nothing was rolled back"
            )
        for version in doomed:
            undo = scripts.undos[version]
            started = time.perf_counter()
            try:
                async with conn.transaction():
                    await conn.execute(undo.sql)
                    await conn.execute("DELETE FROM schema_history WHERE version = $1", version)
            except asyncpg.PostgresError as e:
                raise _failure(undo, e) from e
            _log.info(
                "migration_undone", version=version, script=undo.path.name,
                execution_ms=round((time.perf_counter() - started) * 1000),
            )
            done.append(version)
    return done


async def status(dsn: str, schema_dir: Path | None = None) -> list[MigrationState]:
    """Every version known to the files or to `schema_history`, oldest first.

    Read-only: takes no lock and creates nothing, so it is safe against a production database.

    Raises:
        MigrationError: the scripts are ambiguous or the database is unreachable.
    """
    directory = schema_dir if schema_dir is not None else SCHEMA_DIR
    scripts = _discover(directory)
    conn = await _connect(dsn)
    try:
        applied = await _history(conn)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
        raise MigrationError(f"cannot read schema_history at {_where(dsn)}: {e}") from e
    finally:
        await conn.close()
    states = []
    for version in sorted(set(scripts.migrations) | set(applied)):
        script = scripts.migrations.get(version)
        record = applied.get(version)
        undo = scripts.undos.get(version)
        states.append(
            MigrationState(
                version=version,
                description=(
                    script.description if script else record.description if record else ""
                ),
                file=script.path if script else None,
                applied=record is not None,
                installed_at=record.installed_at if record else None,
                checksum_ok=(
                    None if record is None
                    else script is not None and script.checksum == record.checksum
                ),
                undo_file=undo.path if undo else None,
            )
        )
    return states
