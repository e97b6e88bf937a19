"""Processes as /proc shows them: fields of a pid, processes carrying an environment tag, a
process tree, listening sockets. Read here, independently of launcher's own /proc code."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
from pathlib import Path

RUN_TAG = "DYNLAUNCH_RUN_ID"


def stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name: [state, ppid, pgrp, session, ...]."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def state(pid: int) -> str | None:
    """The one-letter state (R, S, T, Z, ...), or None once the pid is gone."""
    fields = stat_fields(pid)
    return fields[0] if fields is not None else None


def alive(pid: int) -> bool:
    """A live process; a zombie is not."""
    return state(pid) not in (None, "Z")


def ppid(pid: int) -> int | None:
    fields = stat_fields(pid)
    return int(fields[1]) if fields is not None else None


def start_time(pid: int) -> int | None:
    """Field 22 (clock ticks since boot): with the pid, the process's identity."""
    fields = stat_fields(pid)
    return int(fields[19]) if fields is not None else None


def all_pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def children_of(pid: int) -> list[int]:
    """Direct children of ``pid`` (every thread's), from /proc/PID/task/*/children."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            found += [int(c) for c in (task / "children").read_text().split()]
    return found


def tagged_pids(run_id: str, tag: str = RUN_TAG) -> set[int]:
    """Live processes (not this one) whose environment carries ``tag=run_id``."""
    needle = f"{tag}={run_id}".encode()
    found = set()
    for pid in all_pids():
        if pid == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if needle in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") and alive(pid):
                found.add(pid)
    return found


def kill_run(leader: int | None, run_id: str | None = None) -> None:
    """The last resort of a test's `finally`: SIGKILL the process group led by ``leader`` (a
    launcher started in a session of its own; None once it is reaped, as its pid may be reused)
    and, when its run id is known, every process still carrying it (children in sessions of
    their own)."""
    if leader is not None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(leader, signal.SIGKILL)
    for left in tagged_pids(run_id) if run_id else ():
        with contextlib.suppress(ProcessLookupError):
            os.kill(left, signal.SIGKILL)


def cmdline(pid: int) -> list[str]:
    """The argv of ``pid`` (OSError once it is gone)."""
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]


def environ(pid: int) -> dict[str, str]:
    """The environment ``pid`` was started with (OSError once it is gone)."""
    items = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace").split("\0")
    return dict(item.split("=", 1) for item in items if "=" in item)


def cmdline_pids(*words: str) -> set[int]:
    """Live processes whose argv holds every one of ``words`` (each a whole argument)."""
    found = set()
    for pid in all_pids():
        with contextlib.suppress(OSError):
            argv = cmdline(pid)
            if all(w in argv for w in words) and alive(pid):
                found.add(pid)
    return found


def tree_pids(root: int) -> set[int]:
    """Live processes in ``root``'s session or below it in the process tree."""
    parent: dict[int, int] = {}
    found = set()
    for pid in all_pids():
        fields = stat_fields(pid)
        if fields is None or fields[0] == "Z":
            continue
        parent[pid] = int(fields[1])
        if int(fields[3]) == root:
            found.add(pid)
    for pid in parent:
        cur, hops = pid, 0
        while cur > 1 and hops < 64:
            if cur == root:
                found.add(pid)
                break
            cur, hops = parent.get(cur, 0), hops + 1
    return found


def _listen_table() -> dict[str, str]:
    """Socket inode -> 'addr:port' of every listening TCP socket."""
    table: dict[str, str] = {}
    for name in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/net/{name}").read_text().splitlines()[1:]:
                cols = line.split()
                if len(cols) < 10 or cols[3] != "0A":
                    continue
                hexaddr, hexport = cols[1].split(":")
                raw = bytes.fromhex(hexaddr)
                raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
                table[cols[9]] = f"{ipaddress.ip_address(raw)}:{int(hexport, 16)}"
    return table


def listening() -> set[str]:
    """'addr:port' of every listening TCP socket on the host."""
    return set(_listen_table().values())


def listeners(pids: set[int]) -> list[str]:
    """'addr:port (comm)' of every TCP socket these processes listen on."""
    table = _listen_table()
    found = []
    for pid in sorted(pids):
        with contextlib.suppress(OSError):
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:[") and target[8:-1] in table:
                        found.append(f"{table[target[8:-1]]} ({comm})")
    return sorted(set(found))
