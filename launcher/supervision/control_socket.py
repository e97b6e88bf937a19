"""The launcher's control socket: STATE/control.sock, a Unix socket only its owner may use.

The file is 0600 in the 0700 state dir, and a peer of another uid (SO_PEERCRED) is refused even
if someone loosened those modes. One JSON request per connection; the launcher streams progress
lines back, then one final reply:

    -> {"op": "restart", "role": "worker", "rolling": true}
    <- {"progress": "restart: step 1/2: replace worker-0 (start the new one first)"}
    <- {"ok": true, "message": "..."}        or   {"ok": false, "error": "...", "code": 3}

`Server` is a thread that only reads requests and hands them on (`on_request`); it never spawns or
signals (the serve loop does). `call` is the client side (`dynlaunch restart`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from launcher.errors import EXIT_STARTUP, NotRunningError, StartupError

log = logging.getLogger(__name__)
SOCKET_NAME = "control.sock"
READ_TIMEOUT_S = 10.0  # a client has this long to send its request
MAX_REQUEST = 64 * 1024
_CRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


SUN_PATH_MAX = 107  # bytes of a Unix socket's path, its NUL not counted (Linux sockaddr_un)


@contextlib.contextmanager
def short_path(path: Path) -> Iterator[str]:
    """The socket's path as bind/connect take it: a state dir deep in a tree makes it longer
    than a Unix socket address holds (measured: a pytest tmp dir's `OSError: AF_UNIX path too
    long`), so then its directory is opened and named through /proc/self/fd."""
    if len(os.fsencode(str(path))) <= SUN_PATH_MAX:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


def peer_uid(conn: socket.socket) -> int:
    _pid, uid, _gid = _CRED.unpack(
        conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size)
    )
    return int(uid)


def _send(conn: socket.socket, message: dict[str, Any]) -> bool:
    """False when the client has gone (the operation goes on without it)."""
    try:
        conn.sendall(json.dumps(message).encode() + b"\n")
    except OSError:
        return False
    return True


class Request:
    """One client's request; ``progress`` and ``reply`` may be called from any thread."""

    def __init__(self, conn: socket.socket | None, payload: dict[str, Any]) -> None:
        self.conn = conn  # None: the launcher's own (SIGHUP): the reply is only logged
        self.payload = payload
        self._lock = threading.Lock()
        self._open = conn is not None

    def progress(self, text: str) -> None:
        with self._lock:
            if self._open and self.conn is not None:
                self._open = _send(self.conn, {"progress": text})

    def reply(self, ok: bool, text: str, code: int = 0) -> None:
        message: dict[str, Any] = {"ok": True, "message": text}
        if not ok:
            message = {"ok": False, "error": text, "code": code}
        if self.conn is None:  # SIGHUP: the operation logged its end itself
            return
        with self._lock:
            if self._open:
                _send(self.conn, message)
            self._open = False
            with contextlib.suppress(OSError):
                self.conn.close()


def _read_request(conn: socket.socket) -> dict[str, Any]:
    conn.settimeout(READ_TIMEOUT_S)
    data = b""
    while b"\n" not in data and len(data) < MAX_REQUEST:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    payload = json.loads(data.split(b"\n", 1)[0] or b"null")
    if not isinstance(payload, dict):
        raise ValueError("a request is one JSON object")
    conn.settimeout(None)
    return payload


class Server:
    def __init__(self, path: Path, on_request: Callable[[Request], None]) -> None:
        self.path = path
        self.on_request = on_request
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # a stale socket of an earlier run of this state dir (it is ours)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)  # created 0600: no moment where another user could connect
        try:
            with short_path(self.path) as where:
                sock.bind(where)
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        sock.listen(8)
        sock.settimeout(0.5)
        self._sock = sock
        self._thread = threading.Thread(target=self._serve, name="control-socket", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed by stop()
            self._handle(conn)

    def _handle(self, conn: socket.socket) -> None:
        uid = peer_uid(conn)
        if uid != os.geteuid():
            log.warning("dynlaunch: control socket: refused a client of uid %d", uid)
            # Its request is read (and not acted on) first: closed on a client still sending,
            # the socket would fail its send (EPIPE) and the refusal would never be read.
            with contextlib.suppress(OSError, ValueError):
                _read_request(conn)
            Request(conn, {}).reply(False, f"refused: uid {uid} does not own this run", 2)
            return
        try:
            payload = _read_request(conn)
        except (OSError, ValueError) as err:
            Request(conn, {}).reply(False, f"bad request: {err}", 2)
            return
        self.on_request(Request(conn, payload))

    def stop(self) -> None:
        self._stop.set()
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
        if self._thread is not None:
            self._thread.join(2.0)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def call(path: Path, payload: dict[str, Any], on_progress: Callable[[str], None]) -> dict[str, Any]:
    """Send ``payload`` to the launcher at ``path``; each progress line to ``on_progress``; the
    final reply. Raises NotRunningError when nothing listens there."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with short_path(path) as where:
            sock.connect(where)
    except FileNotFoundError:
        sock.close()
        raise NotRunningError(f"no control socket at {path}: is the run ready yet?") from None
    except OSError as err:
        sock.close()
        raise NotRunningError(f"cannot connect to {path}: {err.strerror}") from None
    with sock, sock.makefile("rb") as lines:
        sock.sendall(json.dumps(payload).encode() + b"\n")
        for raw in lines:
            message = json.loads(raw)
            if "progress" in message:
                on_progress(str(message["progress"]))
                continue
            return dict(message)
    raise StartupError(f"the launcher closed {path} without a reply (did it stop?)")


def failed_reply_code(reply: dict[str, Any]) -> int:
    return int(reply.get("code") or EXIT_STARTUP)
