"""A raw NATS login: what a server answers a CONNECT and a PING (no client library in between)."""

from __future__ import annotations

import json
import socket


def nats_login(port: int, **login: str) -> bytes:
    """What the NATS server on 127.0.0.1:``port`` answers a raw CONNECT (with ``login``) and
    PING: b"PONG" when it took the login, b"-ERR 'Authorization Violation'" when not."""
    with socket.create_connection(("127.0.0.1", port), 5) as sock:
        sock.settimeout(5)
        assert sock.recv(4096).startswith(b"INFO ")
        connect = {"verbose": False, "pedantic": False, **login}
        sock.sendall(b"CONNECT " + json.dumps(connect).encode() + b"\r\nPING\r\n")
        return sock.recv(4096).strip()


def greets(port: int) -> bool:
    """The server on ``port`` answers with its INFO line."""
    try:
        with socket.create_connection(("127.0.0.1", port), 2) as sock:
            sock.settimeout(2)
            return sock.recv(4096).startswith(b"INFO ")
    except OSError:
        return False
