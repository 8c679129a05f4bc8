"""Find the real services for a test run.

Order: configured `FINPASS_DATABASE_URL` / `FINPASS_KAFKA_BOOTSTRAP_SERVERS` (or the local
`finpass-pipeline dev up` stack on the default ports); else, when a Docker engine is reachable and
we are not in CI, testcontainers. A missing service is a failure, never a skip.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest

from finpass_pipeline.settings import Settings


@dataclass(frozen=True)
class Services:
    database_url: str
    kafka_bootstrap_servers: str

    def env(self) -> dict[str, str]:
        """The `FINPASS_*` variables that point a `finpass-pipeline` process at these services."""
        return {"FINPASS_DATABASE_URL": self.database_url,
                "FINPASS_KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap_servers}


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _pg_reachable(dsn: str) -> bool:
    parts = urlsplit(dsn)
    return _reachable(parts.hostname or "127.0.0.1", parts.port or 5432)


def _kafka_reachable(bootstrap: str) -> bool:
    host, _, port = bootstrap.split(",")[0].strip().rpartition(":")
    return _reachable(host, int(port))


@contextlib.contextmanager
def discover_services() -> Iterator[Services]:
    settings = Settings()
    if _pg_reachable(settings.database_url) and _kafka_reachable(settings.kafka_bootstrap_servers):
        yield Services(settings.database_url, settings.kafka_bootstrap_servers)
        return
    if os.environ.get("CI") or not _docker_available():
        pytest.fail(
            f"PostgreSQL ({settings.database_url}) or Kafka ({settings.kafka_bootstrap_servers}) "
            "is not reachable: run `finpass-pipeline dev up` first (or set FINPASS_DATABASE_URL / "
            "FINPASS_KAFKA_BOOTSTRAP_SERVERS)",
            pytrace=False,
        )
    with _containers() as found:
        yield found


def _docker_available() -> bool:
    try:
        import docker  # type: ignore[import-untyped]

        docker.from_env().ping()
    except Exception:  # noqa: BLE001  (any failure means: no usable engine)
        return False
    return True


@contextlib.contextmanager
def _containers() -> Iterator[Services]:
    """PostgreSQL and Kafka from testcontainers, for laptops with Docker and nothing running."""
    from testcontainers.kafka import KafkaContainer
    from testcontainers.postgres import PostgresContainer

    with (
        PostgresContainer("postgres:15", username="postgres", password="postgres",
                          dbname="finpass", driver=None) as pg,
        KafkaContainer("apache/kafka:4.1.1").with_kraft() as kafka,
    ):
        yield Services(pg.get_connection_url(), kafka.get_bootstrap_server())
