"""Kafka plumbing shared by producers and consumers: topic names and idempotent topic creation."""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from finpass_pipeline.events.routing import DEAD_LETTER_SUFFIX as DEAD_LETTER_TOPIC
from finpass_pipeline.events.routing import DOMAIN_TOPIC_SUFFIXES as DOMAIN_TOPICS
from finpass_pipeline.settings import Settings

__all__ = ["DEAD_LETTER_TOPIC", "DOMAIN_TOPICS", "all_topics", "domain_topics", "ensure_topics",
           "topic_partitions"]


def domain_topics(settings: Settings) -> list[str]:
    """The four topics the consumer reads, under the configured prefix."""
    return [settings.topic(name) for name in DOMAIN_TOPICS]


def all_topics(settings: Settings) -> list[str]:
    return [*domain_topics(settings), settings.topic(DEAD_LETTER_TOPIC)]


async def ensure_topics(settings: Settings) -> dict[str, bool]:
    """Create the contract's topics that are missing; returns topic → created (False: existed)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers,
                                request_timeout_ms=30_000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = all_topics(settings)
        missing = [
            NewTopic(name=t, num_partitions=settings.topic_partitions,
                     replication_factor=settings.topic_replication_factor)
            for t in wanted if t not in existing
        ]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass  # another process created it between list and create: that is the goal
        return {t: t not in existing for t in wanted}
    finally:
        await admin.close()


async def topic_partitions(settings: Settings, topics: list[str]) -> dict[str, list[int]]:
    """Partition numbers of each topic (empty list: the topic does not exist)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers,
                                request_timeout_ms=30_000)
    await admin.start()
    try:
        described = await admin.describe_topics(topics)
    finally:
        await admin.close()
    return {d["topic"]: sorted(p["partition"] for p in d["partitions"]) for d in described}
