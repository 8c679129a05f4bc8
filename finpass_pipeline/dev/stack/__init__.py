"""`finpass-pipeline dev up|down|status`: local PostgreSQL and Kafka without Docker.

When `FINPASS_DATABASE_URL` or `FINPASS_KAFKA_BOOTSTRAP_SERVERS` is set (environment or `.env`),
that service is used as it is and nothing is started for it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from finpass_pipeline.dev.stack.local_kafka import LocalKafka
from finpass_pipeline.dev.stack.local_postgres import LocalPostgres
from finpass_pipeline.dev.stack.proc import DevStackError, port_open
from finpass_pipeline.settings import Settings

__all__ = ["DevStack", "DevStackError", "dev_home"]


def dev_home() -> Path:
    """Where the local services keep data, logs and pids: outside any clone, per user."""
    default = f"/var/tmp/finpass-pipeline-{os.getuid()}"  # noqa: S108  (per-uid, survives reboots' /tmp wipes)
    return Path(os.environ.get("FINPASS_DEV_HOME") or default)


class DevStack:
    """The two local services, honouring externally configured ones."""

    def __init__(self, settings: Settings, home: Path | None = None) -> None:
        root = home or dev_home()
        self.settings = settings
        self.postgres = LocalPostgres(root / "postgres")
        self.kafka = LocalKafka(root / "kafka")
        configured = settings.model_fields_set
        self.external_postgres = "database_url" in configured
        self.external_kafka = "kafka_bootstrap_servers" in configured

    def up(self, say: Callable[[str], None]) -> None:
        if self.external_postgres:
            say(self._check_external_postgres())
        else:
            say(self.postgres.up())
        if self.external_kafka:
            say(self._check_external_kafka())
        else:
            say(self.kafka.up())

    def down(self, say: Callable[[str], None]) -> None:
        # Stop the broker first: it holds no state in PostgreSQL, consumers may.
        say("Kafka is external (not stopped)" if self.external_kafka else self.kafka.down())
        say("PostgreSQL is external (not stopped)" if self.external_postgres
            else self.postgres.down())

    def status(self, say: Callable[[str], None]) -> bool:
        """Print each service's state; True when both are reachable."""
        if self.external_postgres:
            pg_ok = _reachable_dsn(self.settings.database_url)
            say(f"PostgreSQL: external {'reachable' if pg_ok else 'UNREACHABLE'}")
        else:
            pg_ok = self.postgres.running()
            say(self.postgres.status())
        if self.external_kafka:
            k_ok = _reachable_bootstrap(self.settings.kafka_bootstrap_servers)
            say(f"Kafka: external {'reachable' if k_ok else 'UNREACHABLE'}")
        else:
            k_ok = self.kafka.running()
            say(self.kafka.status())
        return pg_ok and k_ok

    def _check_external_postgres(self) -> str:
        if not _reachable_dsn(self.settings.database_url):
            raise DevStackError(
                "FINPASS_DATABASE_URL is set but its server does not answer; start it, or unset "
                "the variable to let `dev up` run a local cluster"
            )
        return "PostgreSQL: using FINPASS_DATABASE_URL (nothing started)"

    def _check_external_kafka(self) -> str:
        if not _reachable_bootstrap(self.settings.kafka_bootstrap_servers):
            raise DevStackError(
                "FINPASS_KAFKA_BOOTSTRAP_SERVERS is set but no broker answers there; start it, or "
                "unset the variable to let `dev up` run a local broker"
            )
        return "Kafka: using FINPASS_KAFKA_BOOTSTRAP_SERVERS (nothing started)"


def _reachable_dsn(dsn: str) -> bool:
    parts = urlsplit(dsn)
    return port_open(parts.hostname or "127.0.0.1", parts.port or 5432, timeout=2.0)


def _reachable_bootstrap(bootstrap: str) -> bool:
    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        if port_open(host, int(port), timeout=2.0):
            return True
    return False
