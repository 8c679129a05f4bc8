"""What a database error means for a batch: retried, or pinned on one message.

(Connections the server dropped: tests/integration/test_db.py and tests/faults/test_db.py.)
"""

from __future__ import annotations

import asyncpg
import pytest

from finpass_pipeline.db import (
    describe,
    is_infrastructure,
    is_rejection,
    is_transient,
)


@pytest.mark.parametrize(("error", "infrastructure"), [
    (asyncpg.exceptions.UndefinedTableError("relation does not exist"), True),  # 42P01
    (asyncpg.exceptions.InsufficientPrivilegeError("permission denied"), True),  # 42501
    (asyncpg.exceptions.InvalidAuthorizationSpecificationError("no such role"), True),  # 28000
    (asyncpg.exceptions.LockNotAvailableError("could not obtain lock"), True),  # 55P03
    (asyncpg.exceptions.DiskFullError("no space left"), True),  # 53100
    (asyncpg.exceptions.InternalServerError("internal"), True),  # XX000
    (asyncpg.exceptions.ProgramLimitExceededError("index row size exceeds"), False),  # 54000
    (asyncpg.exceptions.RaiseError("a trigger refused it"), False),  # P0001
    (asyncpg.exceptions.UniqueViolationError("duplicate key"), False),
    (asyncpg.exceptions.DataError("invalid input for query argument $1"), False),  # client side
    (KeyError("a bug this message triggers"), False),
])
def test_infrastructure_or_the_message(error: BaseException, infrastructure: bool) -> None:
    """Infrastructure is retried; anything else is bisected and pinned on one message
    (CONTRACT.md §5), whatever its SQLSTATE."""
    assert is_infrastructure(error) is infrastructure


def test_describe_names_the_sqlstate() -> None:
    assert describe(asyncpg.exceptions.ProgramLimitExceededError("index row too big\nDETAIL")) == (
        "SQLSTATE 54000: index row too big")
    assert describe(KeyError("x")) == "KeyError: 'x'"


@pytest.mark.parametrize(("error", "transient", "rejection"), [
    (ConnectionRefusedError(111, "Connect call failed"), True, False),
    (TimeoutError(), True, False),
    (asyncpg.exceptions.ConnectionDoesNotExistError("closed in the middle"), True, False),
    (asyncpg.InternalClientError("cannot switch to state 15; another operation (2)"), True,
     False),
    (asyncpg.exceptions.AdminShutdownError("terminating connection"), True, False),
    (asyncpg.exceptions.CannotConnectNowError("the database system is shutting down"), True,
     False),
    (asyncpg.exceptions.DeadlockDetectedError("deadlock detected"), True, False),
    (asyncpg.exceptions.SerializationError("could not serialize"), True, False),
    (asyncpg.exceptions.UniqueViolationError("duplicate key"), False, True),
    (asyncpg.exceptions.StringDataRightTruncationError("value too long"), False, True),
    (asyncpg.exceptions.UndefinedTableError("relation does not exist"), False, False),
    (ValueError("a bug"), False, False),
    # A value the client cannot encode (2**70 for a bigint) is reported as class 22: the data.
    (asyncpg.exceptions.DataError("invalid input for query argument $1"), False, True),
])
def test_error_classification(error: BaseException, transient: bool, rejection: bool) -> None:
    assert is_transient(error) is transient
    assert is_rejection(error) is rejection
