"""Schema migrations without a server: the script files are checked before connecting, and a
database that does not answer is a MigrationError. (Against a real PostgreSQL:
tests/integration/test_migrations.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from finpass_pipeline.migrations import MigrationError, migrate


async def test_unreachable_database_is_a_migration_error() -> None:
    """A server that is down gives MigrationError naming host:port/db, not a raw OSError."""
    dsn = "postgresql://postgres:secret@127.0.0.1:1/nowhere"
    where = r"cannot connect to PostgreSQL at 127\.0\.0\.1:1/nowhere"
    with pytest.raises(MigrationError, match=where) as caught:
        await migrate(dsn)
    assert "secret" not in str(caught.value)


@pytest.mark.parametrize(("files", "message"), [
    ({"V1_single_underscore.sql": b"SELECT 1;\n"}, r"V1_single_underscore\.sql is not named"),
    ({"V0__zero.sql": b"SELECT 1;\n"}, r"V0__zero\.sql is not named .* with N >= 1"),
    ({"notes.sql": b"-- not a migration\n"}, r"notes\.sql is not named V<N>__<description>"),
    ({"V2__a.sql": b"SELECT 1;\n", "V2__b.sql": b"SELECT 2;\n"},
     r"V2__b\.sql and .*V2__a\.sql both claim V2"),
    ({"U2__a.sql": b"SELECT 1;\n", "U2__b.sql": b"SELECT 2;\n"}, r"both claim U2"),
    ({"V1__latin1.sql": "SELECT 'é';\n".encode("latin-1")}, r"V1__latin1\.sql is not UTF-8"),
    ({}, r"schema directory .*missing does not exist"),
], ids=["one-underscore", "version-0", "no-version", "two-V2", "two-U2", "not-utf8", "no-dir"])
async def test_script_files_are_refused_before_connecting(
        tmp_path: Path, files: dict[str, bytes], message: str) -> None:
    """Misnamed, duplicate and undecodable scripts are refused while the directory is read,
    before any connection: the server here does not answer, and the error is not about it."""
    directory = tmp_path / "schema" if files else tmp_path / "missing"
    if files:
        directory.mkdir()
    for name, content in files.items():
        (directory / name).write_bytes(content)
    with pytest.raises(MigrationError, match=message):
        await migrate("postgresql://postgres@127.0.0.1:1/nowhere", schema_dir=directory)
