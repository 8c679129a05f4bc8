"""A project-owned PostgreSQL cluster from the installed Debian packages (no Docker).

The cluster lives under the dev home (outside the clone), listens on 127.0.0.1 only, trusts
loopback connections, and is run as the `postgres` user when we are root (initdb refuses root).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from finpass_pipeline.dev.stack.proc import DevStackError, port_open, tail

HOST = "127.0.0.1"
PORT = 5432
DATABASE = "finpass"

# Fast enough for a laptop-sized test run, durable (fsync stays on: the fault tests restart it).
SERVER_OPTIONS = (
    f"-c listen_addresses={HOST} -c port={PORT} -c max_connections=300 "
    "-c max_locks_per_transaction=256 "
    "-c shared_buffers=512MB -c max_wal_size=4GB -c checkpoint_timeout=15min "
    "-c synchronous_commit=on -c log_min_messages=warning"
)


def find_bindir() -> Path:
    """The newest installed PostgreSQL ≥ 15 server binaries (or `FINPASS_PG_BINDIR`)."""
    configured = os.environ.get("FINPASS_PG_BINDIR")
    candidates = [Path(configured)] if configured else sorted(
        (p / "bin" for p in Path("/usr/lib/postgresql").glob("*") if p.name.isdigit()
         and int(p.name) >= 15),
        key=lambda p: int(p.parent.name),
        reverse=True,
    )
    for bindir in candidates:
        if (bindir / "initdb").exists() and (bindir / "pg_ctl").exists():
            return bindir
    raise DevStackError(
        "PostgreSQL server binaries (initdb, pg_ctl) not found under /usr/lib/postgresql/*/bin: "
        "install them with `apt-get install -y postgresql-15` or set FINPASS_PG_BINDIR"
    )


@dataclass(frozen=True)
class LocalPostgres:
    """The cluster's files: data directory, log and socket directory under `root`."""

    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "postgres.log"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@{HOST}:{PORT}/{DATABASE}"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(a) for a in args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, capture_output=True, text=True, check=check)  # noqa: S603  (fixed argv, no shell)

    def _prepare_root(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            try:
                entry = pwd.getpwnam("postgres")
            except KeyError:
                raise DevStackError(
                    "running as root but there is no `postgres` user to own the cluster "
                    "(install the postgresql-15 package, which creates it)"
                ) from None
            shutil.chown(self.root, entry.pw_uid, entry.pw_gid)
            for parent in self.root.parents:
                # The postgres user must be able to reach its directory.
                if parent == Path("/"):
                    break
                mode = parent.stat().st_mode
                if not mode & 0o001:
                    raise DevStackError(f"{parent} is not searchable by the postgres user")

    def running(self) -> bool:
        if not (self.data / "PG_VERSION").exists():
            return False
        result = self._run(str(find_bindir() / "pg_ctl"), "status", "-D", str(self.data),
                           check=False)
        return result.returncode == 0

    def up(self) -> str:
        """Initialise (once), start and create the `finpass` database; idempotent."""
        bindir = find_bindir()
        if self.running():
            return f"PostgreSQL already up ({self.url})"
        if port_open(HOST, PORT):
            raise DevStackError(
                f"port {PORT} on {HOST} is taken by another process: stop it, or point "
                "FINPASS_DATABASE_URL at it to use it instead"
            )
        self._prepare_root()
        if not (self.data / "PG_VERSION").exists():
            result = self._run(str(bindir / "initdb"), "-D", str(self.data), "-U", "postgres",
                               "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8", check=False)
            if result.returncode != 0:
                raise DevStackError(f"initdb failed: {result.stderr.strip().splitlines()[-1:]}")
        options = f"{SERVER_OPTIONS} -c unix_socket_directories={self.root}"
        result = self._run(str(bindir / "pg_ctl"), "start", "-D", str(self.data), "-l",
                           str(self.log), "-w", "-t", "60", "-o", options, check=False)
        if result.returncode != 0:
            raise DevStackError(
                f"PostgreSQL failed to start; last lines of {self.log}:\n{tail(self.log)}"
            )
        self._create_database(bindir)
        return f"PostgreSQL up ({self.url}; data {self.data}; log {self.log})"

    def _create_database(self, bindir: Path) -> None:
        psql = [str(bindir / "psql"), "-h", HOST, "-p", str(PORT), "-U", "postgres", "-tAc"]
        exists = self._run(*psql, f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'")
        if exists.stdout.strip() != "1":
            self._run(*psql, f"CREATE DATABASE {DATABASE}")

    def down(self) -> str:
        if not self.running():
            return "PostgreSQL not running (nothing to stop)"
        # pg_ctl stops the postmaster whose pid is recorded in the data directory.
        self._run(str(find_bindir() / "pg_ctl"), "stop", "-D", str(self.data), "-m", "fast",
                  "-w", "-t", "60")
        return "PostgreSQL stopped"

    def restart(self) -> None:
        """Stop and start again (the fault tests use it)."""
        self.down()
        self.up()

    def status(self) -> str:
        return f"PostgreSQL: {'up' if self.running() else 'down'} ({self.url}; data {self.data})"
