"""Operating the daemon without services: library logs come out as JSON lines like ours.
(Health, metrics and logs of a running daemon: tests/integration/test_daemon_ops.py.)"""

from __future__ import annotations

import json
import subprocess
import sys


def test_library_logs_are_json_lines_too() -> None:
    """asyncpg and aiokafka log through the standard library: with FINPASS_LOG_FORMAT=json
    their records, tracebacks included, come out as one JSON object per line like ours."""
    script = (
        "import logging, structlog\n"
        "from finpass_pipeline.logs import configure_logging\n"
        "configure_logging('json')\n"
        "try:\n"
        "    raise ConnectionResetError('peer went away')\n"
        "except OSError:\n"
        "    logging.getLogger('asyncpg.pool').warning('Failed to restore', exc_info=True)\n"
        "logging.getLogger('aiokafka').info('below the warning level: dropped')\n"
        "structlog.get_logger().warning('ours', n=1)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, check=True)
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    assert [(r["event"], r.get("logger")) for r in lines] == [
        ("Failed to restore", "asyncpg.pool"), ("ours", None)]
    assert lines[0]["level"] == "warning" and "ConnectionResetError" in lines[0]["exception"]
