"""Foundation without services: compose.yaml parity, the CLI's configuration errors."""

from __future__ import annotations

import os

import pytest
import yaml

from finpass_pipeline.dev.stack import local_kafka
from finpass_pipeline.dev.stack import local_postgres as local_pg
from finpass_pipeline.settings import Settings
from tests.support import REPO_ROOT
from tests.support.pipeline_support import cli


def test_compose_matches_local_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    """compose.yaml exposes the ports, database and Kafka settings the code expects."""
    compose = yaml.safe_load((REPO_ROOT / "compose.yaml").read_text())
    pg, kafka = compose["services"]["postgres"], compose["services"]["kafka"]
    for name in [n for n in os.environ if n.startswith("FINPASS_")]:
        monkeypatch.delenv(name)  # the built-in defaults, whatever this shell configures
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


def test_dev_up_refuses_unreachable_external_service() -> None:
    """A configured but dead service is a clear one-line error, not a silent local start."""
    result = cli("dev", "up", env={"FINPASS_DATABASE_URL": "postgresql://u@127.0.0.1:1/x"})
    assert result.returncode == 1
    assert "FINPASS_DATABASE_URL is set but its server does not answer" in result.stderr
