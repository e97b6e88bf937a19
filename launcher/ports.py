"""Port allocation that never collides with another `up` on this host, and port-owner lookup.

Free ports are picked under a host-wide lock and recorded in a reservation file named after the
launcher's pid, with its start time; reservations of dead launchers (a pid that is gone, or that now
belongs to a process with another start time) are removed. A port some process listens on is
reported with that process (pid and name), read from /proc.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import tempfile
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

from launcher import procid, sockets
from launcher.errors import ConfigError
from launcher.plan import PortSlot

AUTO_RANGE = (20000, 32767)  # below Linux's ephemeral range, and valid as DYN_SYSTEM_PORT


def reservation_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"dynlaunch-ports-{os.getuid()}"


def owner(port: int) -> str | None:
    """'pid 123 (etcd)' for the process listening on ``port``, if /proc tells."""
    inodes = {row.inode for row in sockets.tcp_rows()
              if row.state in ("0A", "07") and row.local_port == port}  # fmt: skip
    if not inodes:
        return None
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if sockets.socket_inodes(int(proc.name)) & inodes:
                comm = (proc / "comm").read_text().strip()
                return f"pid {proc.name} ({comm})"
    return "another process (not visible to this user)"


def is_free(port: int, host: str = "127.0.0.1") -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as err:
            if err.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _reserved_by_others(directory: Path, me: int) -> set[int]:
    taken: set[int] = set()
    for file in directory.glob("*.json"):
        if file.stem == str(me):
            continue
        try:
            held = json.loads(file.read_text())
        except (OSError, ValueError):
            held = None
        # An old-format file (a bare list) has no start time to verify: its owner counts as dead.
        if not isinstance(held, dict) or not procid.same_process(
            held.get("pid"), held.get("start")
        ):
            file.unlink(missing_ok=True)
            continue
        with contextlib.suppress(TypeError, ValueError):
            taken.update(int(p) for p in held.get("ports", []))
    return taken


def _record(directory: Path, pid: int, ports: list[int], run_id: str = "") -> None:
    held = {"pid": pid, "start": procid.start_time(pid) or 0, "run_id": run_id, "ports": ports}
    tmp = directory / f".{pid}.tmp"
    tmp.write_text(json.dumps(held))
    tmp.replace(directory / f"{pid}.json")  # a reader never sees half a file


def allocate(
    slots: Sequence[PortSlot],
    *,
    seed: str,
    bind_hosts: dict[str, str],
    reserve_for: int | None,
    own: frozenset[int] = frozenset(),
) -> dict[str, int]:
    """Give every slot a port: fixed ones are checked, the others picked free.

    ``bind_hosts`` maps a slot to the address it binds (default 127.0.0.1). With ``reserve_for``
    (a pid), the ports are recorded so that concurrent launchers skip them. ``own``: ports of the
    running stack that resolves a new config (`reload`): a fixed one of them is not taken.
    """
    directory = reservation_dir()
    me = reserve_for if reserve_for is not None else os.getpid()
    with _locked(directory):
        taken = _reserved_by_others(directory, me)
        ports: dict[str, int] = {}
        for slot in (s for s in slots if s.fixed is not None):
            port = slot.fixed
            assert port is not None
            if port > slot.maximum:
                raise ConfigError(f"{slot.origin}: {slot.name} port {port} is above {slot.maximum}")
            if port in ports.values():
                raise ConfigError(f"{slot.origin}: port {port} is asked for twice")
            if port not in own:
                _check_free(port, bind_hosts.get(slot.name, "127.0.0.1"), slot.origin, taken)
            ports[slot.name] = port
        low, high = AUTO_RANGE
        candidate = low + zlib.crc32(seed.encode()) % (high - low)
        for slot in (s for s in slots if s.fixed is None):
            for _ in range(high - low):
                candidate = candidate + 1 if candidate < min(high, slot.maximum) else low
                if (
                    candidate not in taken
                    and candidate not in ports.values()
                    and is_free(candidate, bind_hosts.get(slot.name, "127.0.0.1"))
                ):
                    ports[slot.name] = candidate
                    break
            else:
                raise ConfigError(f"no free port left in {low}-{high} for {slot.name}")
        if reserve_for is not None:
            _record(directory, me, sorted(ports.values()))
    return ports


def _check_free(port: int, host: str, origin: str, taken: set[int]) -> None:
    if port in taken:
        raise ConfigError(f"{origin}: port {port} is reserved by another running dynlaunch")
    if not is_free(port, host):
        who = owner(port) or "another process"
        raise ConfigError(f"{origin}: port {port} on {host} is in use by {who}")


def tag(pid: int, run_id: str) -> None:
    """Add the run id to ``pid``'s reservation once `up` has one (the ports are picked before)."""
    directory = reservation_dir()
    with _locked(directory), contextlib.suppress(OSError, ValueError, AttributeError):
        held = json.loads((directory / f"{pid}.json").read_text())
        _record(directory, pid, list(held.get("ports", [])), run_id)


def release(pid: int) -> None:
    (reservation_dir() / f"{pid}.json").unlink(missing_ok=True)


def allocate_more(slots: Sequence[PortSlot], *, seed: str, reserve_for: int) -> dict[str, int]:
    """Free ports for ``slots`` (none fixed) while ``reserve_for`` runs: a replacement child
    started beside the process it replaces. Added to that launcher's reservation, so that other
    launchers skip them; its own ports are skipped too."""
    directory = reservation_dir()
    with _locked(directory):
        taken = _reserved_by_others(directory, reserve_for)
        mine: list[int] = []
        run_id = ""
        with contextlib.suppress(OSError, ValueError, AttributeError, TypeError):
            held = json.loads((directory / f"{reserve_for}.json").read_text())
            mine = [int(p) for p in held.get("ports", [])]
            run_id = str(held.get("run_id", ""))
        taken |= set(mine)
        low, high = AUTO_RANGE
        candidate = low + zlib.crc32(seed.encode()) % (high - low)
        ports: dict[str, int] = {}
        for slot in slots:
            for _ in range(high - low):
                candidate = candidate + 1 if candidate < min(high, slot.maximum) else low
                if (
                    candidate not in taken
                    and candidate not in ports.values()
                    and is_free(candidate)
                ):
                    ports[slot.name] = candidate
                    break
            else:
                raise ConfigError(f"no free port left in {low}-{high} for {slot.name}")
        _record(directory, reserve_for, sorted({*mine, *ports.values()}), run_id)
    return ports
