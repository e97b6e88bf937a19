"""The etcd client's transport (stdlib http.client) against a stand-in gateway on loopback: one
kept-alive connection, a new one when the server has closed it, endpoint failover, concurrent
prefix reads, and one-line errors."""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from launcher.errors import StartupError
from launcher.registrations.etcd import Etcd, Timeout
from testkit.net import poll_for

pytestmark = pytest.mark.integration


class Gateway(ThreadingHTTPServer):
    """Answers every POST as a range: one key, the requested one plus "k", at revision 7."""

    daemon_threads = True

    def __init__(self) -> None:
        self.connections = 0
        self.finished = 0
        self.open: list[socket.socket] = []
        super().__init__(("127.0.0.1", 0), Handler)

    def close_connections(self) -> None:
        """Close every connection from the server's side, as an idle timeout would, and wait
        until their handlers have finished (a handshake, not a sleep)."""
        started = self.connections
        for conn in self.open:
            with contextlib.suppress(OSError):  # already closed
                conn.shutdown(socket.SHUT_RDWR)
        poll_for(lambda: self.finished == started, 20, "the server to close its connections")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    timeout = 60  # a connection stays open until the test closes it (Gateway.close_connections)
    server: Gateway

    def setup(self) -> None:
        super().setup()
        self.server.connections += 1
        self.server.open.append(self.connection)

    def finish(self) -> None:
        super().finish()
        self.server.finished += 1

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        key = base64.b64decode(body["key"]).decode()
        kv = {"key": base64.b64encode(f"{key}k".encode()).decode(), "mod_revision": "3"}
        data = json.dumps({"header": {"revision": "7"}, "kvs": [kv]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    server = Gateway()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_one_kept_alive_connection_and_a_new_one_once_the_server_closed_it(
    gateway: Gateway,
) -> None:
    with Etcd(gateway.url) as etcd:
        assert etcd.get_prefix("a/")[0].key == "a/k"
        assert etcd.range_prefix("b/") == (etcd.get_prefix("b/"), 7)
        assert gateway.connections == 1
        gateway.close_connections()
        assert etcd.get_prefix("c/")[0].key == "c/k"
        assert gateway.connections == 2


def test_prefixes_are_read_together_each_with_its_revision(gateway: Gateway) -> None:
    with Etcd(gateway.url) as etcd:
        got = etcd.range_prefixes(["x/", "y/", "z/"])
    assert [(kvs[0].key, at) for kvs, at in got] == [("x/k", 7), ("y/k", 7), ("z/k", 7)]
    assert etcd.range_prefixes([]) == []


def test_the_first_endpoint_that_answers_is_used_and_kept(gateway: Gateway) -> None:
    dead = f"http://127.0.0.1:{closed_port()}"
    with Etcd(f"{dead}, {gateway.url}", Timeout(connect=1.0, read=1.0)) as etcd:
        assert etcd.get_prefix("a/")[0].key == "a/k"
        assert etcd.endpoints == [gateway.url, dead]


@pytest.mark.parametrize(
    ("endpoint", "error"),
    [
        ("http://127.0.0.1:{port}", "ConnectError: [Errno 111] Connection refused"),
        ("127.0.0.1:{port}", "UnsupportedProtocol: 127.0.0.1:{port}: not an http:// or https://"),
        ("http://127.0.0.1:port", "UnsupportedProtocol: http://127.0.0.1:port: not an http://"),
    ],
)
def test_no_answer_is_one_line(endpoint: str, error: str) -> None:
    port = closed_port()
    url = endpoint.format(port=port)
    with Etcd(url) as etcd, pytest.raises(StartupError) as caught:
        etcd.get_prefix("a/")
    assert str(caught.value).startswith(f"etcd at {url} unreachable: {error.format(port=port)}")
    assert "\n" not in str(caught.value)
