"""Log set-up: what a newcomer sees on a first start (issue "Running it": demo log noise)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import structlog
from aiokafka.errors import (
    GroupCoordinatorNotAvailableError,
    KafkaConnectionError,
    NotLeaderForPartitionError,
)

from finpass_pipeline.logs import ExpectedAtStartup, configure_logging


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """configure_logging changes process-wide state: put it back for the tests after this one."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        structlog.reset_defaults()


def record(exc: Exception) -> logging.LogRecord:
    return logging.LogRecord("aiokafka.consumer.group_coordinator", logging.ERROR, __file__, 1,
                             "Group Coordinator Request failed: %s", (exc,), None)


def test_coordinator_not_available_on_a_fresh_broker_is_info_and_says_why() -> None:
    expected, other = record(GroupCoordinatorNotAvailableError()), record(
        KafkaConnectionError("down"))
    f = ExpectedAtStartup()
    assert f.filter(expected) and f.filter(other)  # nothing is dropped
    assert (expected.levelname, expected.getMessage()) == (
        "INFO", "group coordinator not available yet (normal while a fresh broker starts); "
                "aiokafka retries")
    assert (other.levelname, other.getMessage()) == (
        "ERROR", "Group Coordinator Request failed: KafkaConnectionError: down")


def test_a_new_topic_without_a_leader_yet_is_info_too() -> None:
    # The producer's sender passes the error class, not an instance.
    r = logging.LogRecord("aiokafka.producer.sender", logging.WARNING, __file__, 1,
                          "Got error produce response on topic-partition %s, retrying. "
                          "Error: %s", ("finpass.users[4]", NotLeaderForPartitionError), None)
    assert ExpectedAtStartup().filter(r)
    assert (r.levelname, r.getMessage()) == (
        "INFO", "partition leader not elected yet (normal for a topic just created); the "
                "producer retries")


@pytest.mark.usefixtures("restored_logging")
def test_configure_logging_installs_the_filter_on_the_one_handler() -> None:
    configure_logging("json", "info")
    handlers = logging.getLogger().handlers
    assert len(handlers) == 1
    assert [type(f) for f in handlers[0].filters] == [ExpectedAtStartup]
