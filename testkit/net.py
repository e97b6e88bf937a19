"""Waiting and loopback port helpers."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager


def poll_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Call ``predicate`` every 0.1 s until it is true; AssertionError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


def free_port() -> int:
    """A 127.0.0.1 port the kernel had free a moment ago (nothing holds it now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def held_port() -> Iterator[int]:
    """A 127.0.0.1 port this process listens on while the block runs."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield int(sock.getsockname()[1])


@contextmanager
def listening(port: int) -> Iterator[socket.socket]:
    """Something that answers on 127.0.0.1:port, standing in for a live worker's listener."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(16)
    try:
        yield sock
    finally:
        sock.close()


def accepts(port: int) -> bool:
    """A TCP connect to 127.0.0.1:port succeeds."""
    try:
        with socket.create_connection(("127.0.0.1", port), 0.5):
            return True
    except OSError:
        return False


def refuses(port: int) -> bool:
    """A TCP connect to 127.0.0.1:port is refused (a timeout or other error is not a refusal)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
