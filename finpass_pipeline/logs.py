"""structlog configuration: JSON lines in production, the console renderer on a TTY.

Per-event context (`event_id`, `correlation_id`, topic/partition/offset) is bound with
`structlog.contextvars.bound_contextvars`; raw DIDs are never logged, only `user_id_hash`.
"""

from __future__ import annotations

import logging
import sys

import structlog


class ExpectedAtStartup(logging.Filter):
    """aiokafka logs `GroupCoordinatorNotAvailableError` at ERROR while a fresh broker elects
    the group coordinator (seconds after its first start) and retries by itself; that is normal
    and must not look like a failure, so it is shown at INFO, saying so."""

    def filter(self, record: logging.LogRecord) -> bool:
        if (record.name.startswith("aiokafka") and record.levelno >= logging.ERROR
                and any(type(a).__name__ == "GroupCoordinatorNotAvailableError"
                        for a in (record.args if isinstance(record.args, tuple) else ()))):
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.msg = ("group coordinator not available yet (normal while a fresh broker "
                          "starts); aiokafka retries")
            record.args = ()
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
