"""A process's identity beyond its pid: the pid plus its start time, which a reused pid lacks.

`/proc/PID/stat` field 22 is the start time in clock ticks since boot; it never changes for a
process and a later process that gets the same pid has a later one. Stdlib only (the dead-man
switch and `status` import it).
"""

from __future__ import annotations

import os
from pathlib import Path


def start_time(pid: int) -> int | None:
    """The start time of a live (non-zombie) process, or None when there is none."""
    if pid <= 0:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # the name (field 2) may hold spaces and ')'
    if fields[0] in ("Z", "X"):  # fields[0] is field 3, the state
        return None
    return int(fields[19])  # field 22


def same_process(pid: object, start: object) -> bool:
    """True when ``pid`` is alive and is the process that started at ``start``; a record
    without a start time cannot be verified and counts as dead."""
    if not isinstance(pid, int) or not isinstance(start, int):
        return False
    return start_time(pid) == start


def pid_namespace() -> str:
    """This process's pid namespace ('pid:[4026531836]'): pids only compare inside one."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return "?"


def me() -> dict[str, int]:
    """{"pid", "start"} of this process, for records that others check with `same_process`."""
    pid = os.getpid()
    return {"pid": pid, "start": start_time(pid) or 0}
