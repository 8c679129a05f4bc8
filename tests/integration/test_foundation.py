"""Foundation against the real services: the broker, `dev status` and `dev up` with external
services, and the main job end to end."""

from __future__ import annotations

import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.support.pipeline_support import TEST_PII_MASTER_KEY, cli
from tests.support.services import Services


async def test_broker_round_trip(services: Services, topic_prefix: str) -> None:
    """A message produced to the real broker comes back through a consumer (aiokafka)."""
    topic = f"{topic_prefix}roundtrip"
    admin = AIOKafkaAdminClient(bootstrap_servers=services.kafka_bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=services.kafka_bootstrap_servers, acks="all")
    await producer.start()
    payload = uuid.uuid4().bytes
    try:
        meta = await producer.send_and_wait(topic, payload, key=b"k")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=services.kafka_bootstrap_servers,
                                auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    try:
        record = await consumer.getone()
    finally:
        await consumer.stop()
    assert (record.value, record.key, record.offset) == (payload, b"k", meta.offset)


def test_dev_status_reports_running_services(services: Services) -> None:
    """`dev status` answers 0 when both services are reachable."""
    result = cli("dev", "status", env=services.env())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "reachable" in result.stdout


def test_dev_up_with_external_services_starts_nothing(services: Services) -> None:
    """With both services configured, `dev up` only checks them."""
    result = cli("dev", "up", env=services.env())
    assert result.returncode == 0, result.stderr
    assert "nothing started" in result.stdout


def test_main_job_runs_end_to_end(fresh_db: str, services: Services, topic_prefix: str) -> None:
    """`finpass-pipeline demo` (what `make demo` runs): migrations, topics, consumer, stream,
    summary; every demo event is accounted for."""
    result = cli("demo", "--count", "3000", "--users", "200", "--seed", "5", env={
        "FINPASS_DATABASE_URL": fresh_db,
        "FINPASS_KAFKA_BOOTSTRAP_SERVERS": services.kafka_bootstrap_servers,
        "FINPASS_TOPIC_PREFIX": topic_prefix, "FINPASS_HTTP_PORT": "0",
        "FINPASS_AUDIT_HASH_KEY": "k", "FINPASS_PII_MASTER_KEY": TEST_PII_MASTER_KEY,
        "FINPASS_CONSUMER_GROUP": f"demo-{uuid.uuid4().hex[:6]}"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "consumer stopped with SIGTERM: exit code 0" in result.stdout
    summary = dict(line.split()[:2] for line in result.stdout.split("What landed")[1]
                   .splitlines() if len(line.split()) >= 2 and line.split()[1][0].isdigit())
    audited = int(summary["audit_events"].replace(",", ""))
    parked = int(summary["parked_events"].replace(",", ""))
    assert audited + parked == 3000
    assert int(summary["dead_letter_events"]) == 0
