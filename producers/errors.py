"""What can go wrong when an upstream service publishes an event, as exceptions that say what to do.

Every failure of `producers.publisher` (and of `producers.outbox.enqueue`) is a `PublishError`;
`retriable` tells the caller whether trying the same event again later can succeed. aiokafka's
errors are translated in one place, `translate_kafka_error`, and chained (`raise ... from e`).
"""

from __future__ import annotations

from typing import ClassVar

from aiokafka.errors import (
    InvalidTopicError,
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
    TopicAuthorizationFailedError,
    UnsupportedForMessageFormatError,
)

from finpass_pipeline.errors import FinpassError
from finpass_pipeline.events import InvalidEventError

__all__ = [
    "BrokerUnavailable",
    "InvalidEvent",
    "MessageRejected",
    "NotInTransaction",
    "PublishError",
    "translate_kafka_error",
]


class PublishError(FinpassError):
    """Base of every publishing failure. `retriable`: the same event may succeed later."""

    retriable: ClassVar[bool] = False


class BrokerUnavailable(PublishError):
    """Kafka could not be reached or did not acknowledge in time. Retry later, with backoff.

    Whether the broker stored the event is unknown: retrying may duplicate it, which is harmless
    (`event_id` is the idempotency key).
    """

    retriable = True


class MessageRejected(PublishError):
    """The broker (or the client, before sending) refused this message for good: too large, an
    invalid or forbidden topic. Retrying the same event cannot help; fix the event or the setup."""


class InvalidEvent(PublishError, InvalidEventError):
    """The event does not satisfy the contract (CONTRACT.md §2-3); `reason` names the field.

    Also an `InvalidEventError`, so code that handles the consumer-side error handles this too.
    """


class NotInTransaction(PublishError):
    """`outbox.enqueue` was called outside a transaction: the event would not be atomic with the
    caller's own writes, which is the point of the outbox. Call it inside `conn.transaction()`."""


# Refused for good by the client or the broker: the same bytes will be refused again.
_REJECTED: tuple[type[KafkaError], ...] = (
    MessageSizeTooLargeError,
    RecordTooLargeError,
    RecordListTooLargeError,
    InvalidTopicError,
    TopicAuthorizationFailedError,
    UnsupportedForMessageFormatError,
)


def translate_kafka_error(error: BaseException, topic: str | None = None) -> PublishError:
    """The `PublishError` for an aiokafka exception; raise it `from` the original.

    Connection failures, timeouts and every error aiokafka marks retriable become
    `BrokerUnavailable`; permanent refusals of the message become `MessageRejected`; anything
    else is a plain, non-retriable `PublishError`.
    """
    where = f" (topic {topic})" if topic else ""
    detail = str(error) or type(error).__name__
    if isinstance(error, _REJECTED):
        return MessageRejected(f"the broker refused the message{where}: {detail}")
    if isinstance(error, KafkaConnectionError | KafkaTimeoutError | ConnectionError | TimeoutError):
        # aiokafka also times out waiting for metadata of a topic that does not exist.
        hint = (" (does the topic exist? `finpass-pipeline topics` creates it)"
                if topic and isinstance(error, KafkaTimeoutError) else "")
        return BrokerUnavailable(
            f"Kafka is unreachable or did not acknowledge{where}: {detail}{hint}"
        )
    if isinstance(error, KafkaError) and error.retriable:
        return BrokerUnavailable(f"Kafka reported a transient error{where}: {detail}")
    return PublishError(f"publishing failed{where}: {detail}")
