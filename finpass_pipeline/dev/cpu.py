"""CPU time of processes on this machine, from `/proc/<pid>/stat` (utime + stime), for the bench's
per-event CPU figures. Linux only; a process that is gone or unreadable counts as None."""

from __future__ import annotations

import os
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds `pid` has used so far (children not included)."""
    try:
        return parse_stat(Path(f"/proc/{pid}/stat").read_text())
    except OSError:
        return None


def parse_stat(stat: str) -> float:
    """utime + stime (fields 14 and 15 of proc(5)'s `stat`) in seconds."""
    # The command name (field 2) is in parentheses and may hold spaces or ')': split after the
    # last one.
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def total(pids: list[int]) -> float:
    """Sum of `cpu_seconds` over `pids` (gone ones count 0)."""
    return sum(cpu_seconds(pid) or 0.0 for pid in pids)


def children(pid: int) -> list[int]:
    """The child processes of `pid` (its threads' `children` lists; empty when gone)."""
    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            found.extend(int(c) for c in (task / "children").read_text().split())
    except OSError:
        pass
    return found
