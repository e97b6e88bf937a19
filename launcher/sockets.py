"""TCP sockets as /proc shows them (stdlib only): the rows of /proc/net/tcp and tcp6, and which
socket inodes a process holds. `ports.owner` (who listens on a port) and `probes.nats_subjects_of`
(which NATS connection is a worker's) read them."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

TABLES = ("/proc/net/tcp", "/proc/net/tcp6")


@dataclass(frozen=True)
class TcpRow:
    local_port: int
    remote_port: int
    state: str  # hex, as the kernel writes it: "0A" listen, "07" close, "01" established
    inode: str


def tcp_rows(tables: tuple[str, ...] = TABLES) -> Iterator[TcpRow]:
    """Every socket row of ``tables`` (one that cannot be read is skipped)."""
    for table in tables:
        with contextlib.suppress(OSError), open(table, encoding="ascii") as rows:
            for line in list(rows)[1:]:
                cols = line.split()
                if len(cols) > 9:
                    yield TcpRow(_port(cols[1]), _port(cols[2]), cols[3], cols[9])


def socket_inodes(pid: int) -> set[str]:
    """The inodes of process ``pid``'s sockets (its /proc/PID/fd links ``socket:[N]``). Raises
    OSError when its fd table cannot be read."""
    found: set[str] = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            found.add(target[8:-1])
    return found


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1], 16)
