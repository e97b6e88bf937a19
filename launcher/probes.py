"""Readiness probes: small HTTP and TCP checks that never raise, only answer yes or no."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx

from launcher import sockets

TIMEOUT = httpx.Timeout(2.0, connect=1.0)


def etcd_verify() -> ssl.SSLContext | bool:
    """How an https:// etcd is checked: the active credentials' CA and client certificate."""
    from launcher import credentials

    context = credentials.active().etcd.ssl_context()
    return context if context is not None else True


def http_ok(url: str, verify: ssl.SSLContext | bool = True) -> bool:
    """200 from ``url``; etcd's /health must also say ``"health": "true"``."""
    got = http_get(url, verify)
    if got is None or got[0] != 200:
        return False
    if url.endswith("/health"):
        try:
            body = json.loads(got[1])
        except ValueError:
            return True
        if isinstance(body, dict) and "health" in body:
            return str(body["health"]).lower() == "true"
    return True


def etcd_ok(endpoints: str) -> bool:
    verify = etcd_verify() if "https:" in endpoints else True
    eps = [ep.strip().rstrip("/") for ep in endpoints.split(",") if ep.strip()]
    return any(http_ok(ep + "/health", verify) for ep in eps)


def nats_ok(url: str) -> bool:
    """A NATS server greets every client with an INFO line."""
    for one in url.split(","):
        parts = urlsplit(one.strip())
        try:
            with socket.create_connection(
                (parts.hostname or "127.0.0.1", parts.port or 4222), 1.0
            ) as s:
                s.settimeout(1.0)
                if s.recv(5).startswith(b"INFO"):
                    return True
        except OSError:
            continue
    return False


def not_etcd(endpoints: str) -> str | None:
    """Why ``endpoints`` answer HTTP but are not etcd (etcd's GET /version has "etcdserver");
    None when one of them is etcd, or none answers yet. The text may hold a URL's credentials."""
    wrong: list[str] = []
    verify = etcd_verify() if "https:" in endpoints else True
    for ep in (e.strip().rstrip("/") for e in endpoints.split(",") if e.strip()):
        try:
            resp = httpx.get(f"{ep}/version", timeout=TIMEOUT, verify=verify)
        except httpx.HTTPError:
            continue
        try:
            body = resp.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and "etcdserver" in body:
            return None
        wrong.append(
            f"{ep} answers HTTP but is not etcd (GET /version: HTTP "
            f"{resp.status_code}, no etcdserver version)"
        )
    return wrong[0] if wrong else None


def _nats_greetings(url: str, size: int) -> Iterator[tuple[str, bytes]]:
    """(entry, the first bytes it sent within 2 s; b"" when none) for each entry of ``url`` that
    accepts a connection (a NATS server greets with INFO at once)."""
    for one in (u.strip() for u in url.split(",") if u.strip()):
        parts = urlsplit(one)
        try:
            with socket.create_connection(
                (parts.hostname or "127.0.0.1", parts.port or 4222), 1.0
            ) as s:
                s.settimeout(2.0)
                greeting = s.recv(size)
        except TimeoutError:
            greeting = b""
        except OSError:
            continue
        yield one, greeting


def not_nats(url: str) -> str | None:
    """Why ``url`` accepts connections but is not NATS; None when one of them is NATS, or none
    accepts yet."""
    wrong: list[str] = []
    for one, greeting in _nats_greetings(url, 5):
        if greeting.startswith(b"INFO"):
            return None
        said = f"it sent {greeting!r}" if greeting else "no INFO greeting within 2s"
        wrong.append(f"{one} accepts connections but is not NATS ({said})")
    return wrong[0] if wrong else None


def nats_info(url: str) -> dict[str, object] | None:
    """The INFO a NATS server greets with (``tls_required``, ``auth_required``, ...), from the
    first that answers; None when none does."""
    for _, greeting in _nats_greetings(url, 4096):
        line = greeting.split(b"\r\n", 1)[0]
        if line.startswith(b"INFO "):
            try:
                info = json.loads(line[5:])
            except ValueError:
                return {}
            return info if isinstance(info, dict) else {}
    return None


def models(base_url: str) -> list[str]:
    """The model ids the frontend lists (empty when it does not answer)."""
    got = http_get(f"{base_url}/v1/models")
    if got is None or got[0] != 200:
        return []
    try:
        return [str(m.get("id")) for m in json.loads(got[1]).get("data", [])]
    except (ValueError, AttributeError):
        return []


def model_listed(base_url: str, model: str) -> bool:
    return model in models(base_url)


def one_token_completion(base_url: str, model: str) -> bool:
    body = {"model": model, "messages": [{"role": "user", "content": "ping"}], "max_tokens": 1}
    try:
        resp = httpx.post(f"{base_url}/v1/chat/completions", json=body, timeout=httpx.Timeout(30.0))
        return resp.status_code == 200 and bool(resp.json().get("choices"))
    except (httpx.HTTPError, ValueError, AttributeError):
        return False


def http_get(
    url: str, verify: ssl.SSLContext | bool = True, timeout: float = 2.0
) -> tuple[int, bytes] | None:
    """(status, body) of GET ``url``; None if nothing answers. Plain http (the children's health
    and liveness URLs, probed every 50 ms while starting and every few seconds while serving)
    goes through the standard library: 0.3 ms of CPU a call where httpx.get, which builds an SSL
    context each time, takes 18.5 ms (measured here)."""
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname is None:
        try:
            resp = httpx.get(url, timeout=httpx.Timeout(timeout, connect=1.0), verify=verify)
        except httpx.HTTPError:
            return None
        return resp.status_code, resp.content
    conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
    try:
        conn.request("GET", (parts.path or "/") + (f"?{parts.query}" if parts.query else ""))
        answer = conn.getresponse()
        return answer.status, answer.read(1 << 20)
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def http_status(url: str, timeout: float) -> int | None:
    """The HTTP status ``url`` answers with within ``timeout`` seconds; None if nothing answers
    (the liveness watcher's probe: see `http_get`)."""
    got = http_get(url, timeout=timeout)
    return None if got is None else got[0]


def nats_subscribed(monitor: str, subject: str) -> bool | None:
    """Does any client of the NATS server subscribe to ``subject``? Its monitoring port's
    ``/subsz?subs=1&test=SUBJECT`` lists the matching subscriptions (no list: none). None when the
    monitor does not answer as NATS does."""
    try:
        resp = httpx.get(f"{monitor}/subsz", params={"subs": 1, "test": subject}, timeout=TIMEOUT)
        body = resp.json()
    except (httpx.HTTPError, ValueError):
        return None
    if not isinstance(body, dict) or "num_subscriptions" not in body:
        return None
    return bool(body.get("subscriptions_list"))


def nats_subjects_of(monitor: str, nats_port: int, pid: int) -> set[str] | None:
    """The subjects process ``pid``'s own NATS connections subscribe to: its sockets to
    ``nats_port`` (/proc/PID/fd and /proc/PID/net/tcp), matched by their local port with the
    connections the server's monitoring port lists (``/connz?subs=1``). None when either side
    cannot be read."""
    try:
        inodes = sockets.socket_inodes(pid)
        tables = (f"/proc/{pid}/net/tcp", f"/proc/{pid}/net/tcp6")  # its network namespace's
        ports = {row.local_port for row in sockets.tcp_rows(tables)
                 if row.inode in inodes and row.remote_port == nats_port}  # fmt: skip
        body = httpx.get(f"{monitor}/connz", params={"subs": 1, "limit": 4096},
                         timeout=TIMEOUT).json()  # fmt: skip
    except (OSError, ValueError, httpx.HTTPError):
        return None
    if not isinstance(body, dict) or not isinstance(body.get("connections"), list):
        return None
    return {
        subject
        for conn in body["connections"]
        if isinstance(conn, dict) and conn.get("port") in ports
        for subject in conn.get("subscriptions_list") or []
    }
