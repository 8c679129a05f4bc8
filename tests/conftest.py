"""Shared fixtures, and the tiers: a test's directory says what it needs (tests/README.md).

- `unit/`: no service at all (its conftest makes `services` fail);
- `integration/`: marked `integration`, real PostgreSQL and Kafka;
- `faults/`: marked `integration` and `faults`, kills and restarts things on purpose.

The service fixtures are lazy: PostgreSQL and Kafka are looked for only when a test requests
`services` (directly or through `fresh_db`, `topic_prefix`, `settings`, ...), once per run.
Tests isolate themselves by a fresh database (`fresh_db`) and a fresh topic prefix
(`topic_prefix`), never by restarting services.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from finpass_pipeline.kafka import ensure_topics
from finpass_pipeline.settings import Settings
from producers import outbox
from tests.support.pipeline_support import (
    TEST_PII_MASTER_KEY,
    finpass_env,
    kafka_settings,
    make_settings,
    prepare,
    scratch_database,
)
from tests.support.services import Services, discover_services

TIERS: dict[str, tuple[pytest.MarkDecorator, ...]] = {
    "unit": (),
    "integration": (pytest.mark.integration,),
    "faults": (pytest.mark.integration, pytest.mark.faults),
}
"""Each tier's directory under tests/ and the markers its tests get, in the order they run."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test by its tier's directory and run the tiers in order (unit first, so a
    broken build fails in seconds; faults last, as they restart services). A test outside the
    tier directories is an error: every test must say what it needs."""
    here = Path(__file__).parent
    order = {tier: n for n, tier in enumerate(TIERS)}
    rank: dict[str, int] = {}
    for item in items:
        try:
            tier = item.path.relative_to(here).parts[0]
        except ValueError:  # not under tests/: not ours to sort out
            continue
        if tier not in TIERS:
            raise pytest.UsageError(
                f"{item.nodeid}: tests live in tests/unit, tests/integration or tests/faults "
                "(see tests/README.md)")
        for mark in TIERS[tier]:
            item.add_marker(mark)
        rank[item.nodeid] = order[tier]
    items.sort(key=lambda item: rank.get(item.nodeid, 0))


@pytest.fixture(scope="session")
def services() -> Iterator[Services]:
    """The real PostgreSQL and Kafka this run talks to (local stack, configured, or containers)."""
    with discover_services() as found:
        yield found


@pytest.fixture
async def fresh_db(services: Services) -> AsyncIterator[str]:
    """DSN of a brand-new, empty database; dropped after the test."""
    async with scratch_database(services.database_url) as dsn:
        yield dsn


@pytest.fixture
async def topic_prefix(services: Services) -> AsyncIterator[str]:
    """A topic prefix no other test uses, so topics start empty; its topics are deleted after."""
    prefix = f"t{uuid.uuid4().hex[:12]}."
    yield prefix
    await delete_topics(services.kafka_bootstrap_servers, prefix)


async def delete_topics(bootstrap: str, prefix: str) -> None:
    """Delete every topic under `prefix`, so the shared broker does not accumulate them."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        mine = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if mine:
            await admin.delete_topics(mine)
    finally:
        await admin.close()


@pytest.fixture
def bootstrap(services: Services) -> str:
    return services.kafka_bootstrap_servers


@pytest.fixture
def base_env(services: Services, topic_prefix: str) -> dict[str, str]:
    """Environment for running `finpass-pipeline` subprocesses against the test services."""
    return finpass_env(
        FINPASS_KAFKA_BOOTSTRAP_SERVERS=services.kafka_bootstrap_servers,
        FINPASS_TOPIC_PREFIX=topic_prefix,
        FINPASS_AUDIT_HASH_KEY="test-audit-key",
        FINPASS_PII_MASTER_KEY=TEST_PII_MASTER_KEY,
        FINPASS_HTTP_PORT="0",
    )


@pytest.fixture
async def settings(fresh_db: str, bootstrap: str, topic_prefix: str) -> Settings:
    """The pipeline's settings for one test: a fresh database, migrated; fresh topics (three
    partitions each), created; its own consumer group; the test audit key; any free HTTP port.
    A module that needs more overrides it with a fixture of the same name asking for this one."""
    s = make_settings(fresh_db, bootstrap, topic_prefix)
    await prepare(s)
    return s


@pytest.fixture
async def outbox_settings(fresh_db: str, bootstrap: str, topic_prefix: str) -> Settings:
    """Settings of a producer whose own database (`fresh_db`, not migrated: it holds only the
    outbox) feeds the domain topics, which exist."""
    s = kafka_settings(bootstrap, topic_prefix, database_url=fresh_db)
    await ensure_topics(s)
    return s


@pytest.fixture
async def outbox_conn(outbox_settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the producer's database, with the outbox installed (twice: idempotent)."""
    connection = await asyncpg.connect(outbox_settings.database_url)
    await outbox.install(connection)
    await outbox.install(connection)  # idempotent
    yield connection
    await connection.close()
