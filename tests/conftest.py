"""Shared fixtures: one PostgreSQL and one Kafka broker for the whole run.

Tests isolate themselves by a fresh database (`fresh_db`) and a fresh topic prefix
(`topic_prefix`), never by restarting services.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from tests.support.pipeline_support import scratch_database
from tests.support.services import Services, discover_services


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
    env = {k: v for k, v in os.environ.items() if not k.startswith("FINPASS_")}
    env.update(
        FINPASS_KAFKA_BOOTSTRAP_SERVERS=services.kafka_bootstrap_servers,
        FINPASS_TOPIC_PREFIX=topic_prefix,
        FINPASS_AUDIT_HASH_KEY="test-audit-key",
        FINPASS_HTTP_PORT="0",
    )
    return env
