"""structlog configuration: JSON lines in production, the console renderer on a TTY.

Per-event context (`event_id`, `correlation_id`, topic/partition/offset) is bound with
`structlog.contextvars.bound_contextvars`; raw DIDs are never logged, only `user_id_hash`.
"""

from __future__ import annotations

import logging
import sys

import structlog

EXPECTED_AT_STARTUP = {
    "GroupCoordinatorNotAvailableError":
        "group coordinator not available yet (normal while a fresh broker starts); "
        "aiokafka retries",
    "NotLeaderForPartitionError":
        "partition leader not elected yet (normal for a topic just created); the producer "
        "retries",
}
"""aiokafka errors that a fresh broker or a new topic causes for seconds, and that aiokafka
retries by itself: what `ExpectedAtStartup` says instead."""


class ExpectedAtStartup(logging.Filter):
    """aiokafka logs `GroupCoordinatorNotAvailableError` at ERROR while a fresh broker elects
    the group coordinator, and `NotLeaderForPartitionError` at WARNING while a new topic elects
    its leaders (every first `make demo`), and retries both by itself. That is normal and must
    not look like a failure: such a line is shown at INFO, saying so. Nothing is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("aiokafka") and record.levelno >= logging.WARNING:
            args = record.args if isinstance(record.args, tuple) else ()
            names = {a.__name__ if isinstance(a, type) else type(a).__name__ for a in args}
            for name, says in EXPECTED_AT_STARTUP.items():
                if name in names:
                    record.levelno, record.levelname = logging.INFO, "INFO"
                    record.msg, record.args = says, ()
                    break
        return True


def configure_logging(fmt: str = "auto", level: str = "info") -> None:
    """Configure once at process start; `fmt` is auto | json | console."""
    use_console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer() if use_console else structlog.processors.JSONRenderer()
    )
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    # asyncpg and aiokafka log through the standard library: keep their warnings, rendered like
    # ours (one JSON object per line, traceback in `exception`), in the same stream.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    ))
    handler.addFilter(ExpectedAtStartup())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
