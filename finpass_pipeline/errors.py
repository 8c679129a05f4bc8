"""One root for every error an operator sees, and the exit codes (CONTRACT.md §4).

A command fails with one line on stderr (`finpass-pipeline: <message>`) and an exit code:
0 success, 1 failure, 2 bad usage or configuration, 130 interrupted. Modules raise a
`FinpassError` subclass carrying its `exit_code`; `cli.main` catches the root once, prints it
with `print_error` and exits with that code.
"""

from __future__ import annotations

import sys
from typing import ClassVar

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class FinpassError(Exception):
    """A failure explained in one line (exit 1 unless a subclass says otherwise)."""

    exit_code: ClassVar[int] = EXIT_FAILURE


class UsageError(FinpassError):
    """Bad usage or configuration: the operator must change the command or the environment."""

    exit_code: ClassVar[int] = EXIT_USAGE


def print_error(message: object) -> None:
    """The one-line error form every command uses on stderr."""
    print(f"finpass-pipeline: {message}", file=sys.stderr, flush=True)
