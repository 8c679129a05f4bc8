"""Foundation: the local services, compose.yaml parity, the CLI's configuration errors."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from finpass_pipeline.dev.stack import local_kafka
from finpass_pipeline.dev.stack import local_postgres as local_pg
from finpass_pipeline.settings import Settings
from tests.support import REPO_ROOT
from tests.support.services import Services


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("FINPASS_")}
    base.update(env or {})
    return subprocess.run([sys.executable, "-m", "finpass_pipeline.cli", *args],
                          capture_output=True, text=True, env=base, timeout=60, check=False)


def test_compose_matches_local_stack() -> None:
    """compose.yaml exposes the ports, database and Kafka settings the code expects."""
    compose = yaml.safe_load((REPO_ROOT / "compose.yaml").read_text())
    pg, kafka = compose["services"]["postgres"], compose["services"]["kafka"]
    defaults = Settings()
    assert pg["image"].startswith("postgres:15")
    assert f"{local_pg.PORT}:5432" in pg["ports"]
    assert pg["environment"]["POSTGRES_DB"] == local_pg.DATABASE
    assert pg["environment"]["POSTGRES_HOST_AUTH_METHOD"] == "trust"
    assert defaults.database_url == f"postgresql://postgres@127.0.0.1:{local_pg.PORT}/finpass"
    assert "healthcheck" in pg and "healthcheck" in kafka
    assert kafka["image"] == f"apache/kafka:{local_kafka.KAFKA_VERSION}"
    assert f"{local_kafka.PORT}:9092" in kafka["ports"]
    env = kafka["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_ADVERTISED_LISTENERS"] == f"PLAINTEXT://127.0.0.1:{local_kafka.PORT}"
    assert defaults.kafka_bootstrap_servers == f"127.0.0.1:{local_kafka.PORT}"
    local = dict(line.split("=", 1) for line in local_kafka.SERVER_PROPERTIES.splitlines()
                 if "=" in line)
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == local["auto.create.topics.enable"]
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == local[
        "offsets.topic.replication.factor"]
    assert env["KAFKA_MESSAGE_MAX_BYTES"] == local["message.max.bytes"]
    assert env["KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS"] == local[
        "group.initial.rebalance.delay.ms"]


@pytest.mark.integration
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


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"FINPASS_DATABASE_URL": "mysql://db"}, "FINPASS_DATABASE_URL"),
        ({"FINPASS_DATABASE_URL": "postgresql://h:notaport/db"}, "FINPASS_DATABASE_URL"),
        ({"FINPASS_KAFKA_BOOTSTRAP_SERVERS": "nohostport"}, "FINPASS_KAFKA_BOOTSTRAP_SERVERS"),
        ({"FINPASS_HTTP_PORT": "70000"}, "FINPASS_HTTP_PORT"),
        ({"FINPASS_MAX_CONSECUTIVE_DEAD_LETTERS": "0"}, "FINPASS_MAX_CONSECUTIVE_DEAD_LETTERS"),
        ({"FINPASS_TOPIC_PREFIX": "bad prefix!"}, "FINPASS_TOPIC_PREFIX"),
    ],
)
def test_bad_configuration_exits_2_with_one_line(env: dict[str, str], fragment: str) -> None:
    """A malformed variable is bad configuration: exit 2, one line naming the variable."""
    result = cli("migrations", env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0]


def test_consume_without_audit_key_exits_2() -> None:
    """Outside dev mode the consumer refuses to start without FINPASS_AUDIT_HASH_KEY."""
    result = cli("consume", env={"FINPASS_HTTP_PORT": "0"})
    assert result.returncode == 2
    assert "FINPASS_AUDIT_HASH_KEY" in result.stderr


@pytest.mark.integration
def test_dev_status_reports_running_services(services: Services) -> None:
    """`dev status` answers 0 when both services are reachable."""
    result = cli("dev", "status", env={"FINPASS_DATABASE_URL": services.database_url,
                                       "FINPASS_KAFKA_BOOTSTRAP_SERVERS":
                                           services.kafka_bootstrap_servers})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "reachable" in result.stdout


@pytest.mark.integration
def test_dev_up_with_external_services_starts_nothing(services: Services) -> None:
    """With both services configured, `dev up` only checks them."""
    result = cli("dev", "up", env={"FINPASS_DATABASE_URL": services.database_url,
                                   "FINPASS_KAFKA_BOOTSTRAP_SERVERS":
                                       services.kafka_bootstrap_servers})
    assert result.returncode == 0, result.stderr
    assert "nothing started" in result.stdout


def test_dev_up_refuses_unreachable_external_service() -> None:
    """A configured but dead service is a clear one-line error, not a silent local start."""
    result = cli("dev", "up", env={"FINPASS_DATABASE_URL": "postgresql://u@127.0.0.1:1/x"})
    assert result.returncode == 1
    assert "FINPASS_DATABASE_URL is set but its server does not answer" in result.stderr


@pytest.mark.integration
def test_main_job_runs_end_to_end(fresh_db: str, services: Services, topic_prefix: str) -> None:
    """`finpass-pipeline demo` (what `make demo` runs): migrations, topics, consumer, stream,
    summary; every demo event is accounted for."""
    result = cli("demo", "--count", "3000", "--users", "200", "--seed", "5", env={
        "FINPASS_DATABASE_URL": fresh_db,
        "FINPASS_KAFKA_BOOTSTRAP_SERVERS": services.kafka_bootstrap_servers,
        "FINPASS_TOPIC_PREFIX": topic_prefix, "FINPASS_HTTP_PORT": "0",
        "FINPASS_AUDIT_HASH_KEY": "k", "FINPASS_CONSUMER_GROUP": f"demo-{uuid.uuid4().hex[:6]}"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "consumer stopped with SIGTERM: exit code 0" in result.stdout
    summary = dict(line.split()[:2] for line in result.stdout.split("What landed")[1]
                   .splitlines() if len(line.split()) >= 2 and line.split()[1][0].isdigit())
    audited = int(summary["audit_events"].replace(",", ""))
    parked = int(summary["parked_events"].replace(",", ""))
    assert audited + parked == 3000
    assert int(summary["dead_letter_events"]) == 0
