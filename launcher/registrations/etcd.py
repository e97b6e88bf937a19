"""A tiny etcd v3 client over etcd's JSON gateway: ranges, deletes, puts, leases, one txn.

Keys and values travel base64-encoded; int64 fields travel as strings and are left out when zero.
Every transport failure is one `InfraUnreachableError` line, every unexpected answer one
`StartupError` line (both exit 3).

Plain `http.client`, one kept-alive connection per endpoint, not httpx: importing httpx and
building its client (an SSL context loading certifi's CAs) took ~0.15 s of every `dynlaunch
clear-namespace`. Never through a proxy; https:// endpoints are verified against the system's CAs,
or the CA of the credentials (`launcher.credentials`: ETCD_AUTH_CA), with their client certificate.
With a username, every request carries the token of /v3/auth/authenticate (fetched again once
when etcd says it expired). A wrong password, an untrusted certificate and an endpoint that does
not answer are three different one-line errors; none shows a secret.
"""

from __future__ import annotations

import base64
import http.client
import json
import select
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from launcher import credentials
from launcher.credentials import EtcdAuth
from launcher.errors import InfraUnreachableError, StartupError

_TOKENS: dict[tuple[str, str, str], str] = {}  # (endpoint, user, password) -> auth token


class Timeout(NamedTuple):
    connect: float  # seconds to open the TCP (and TLS) connection
    read: float  # seconds any one send or receive may wait


TIMEOUT = Timeout(connect=2.0, read=5.0)


class KeyValue(NamedTuple):
    key: str
    value: bytes
    lease: int  # 0: no lease
    mod_revision: int
    create_revision: int


@dataclass(frozen=True)
class LeaseInfo:
    ttl: int  # seconds left
    granted_ttl: int
    keys: tuple[str, ...]


def _b64(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return base64.b64encode(raw).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)


def prefix_end(prefix: str) -> bytes:
    """etcd's range_end for "every key starting with prefix": the prefix with its last byte + 1."""
    raw = bytearray(prefix.encode())
    while raw:
        if raw[-1] < 0xFF:
            raw[-1] += 1
            return bytes(raw)
        raw.pop()
    return b"\0"  # the empty prefix: every key


def _json(text: bytes) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _kv(item: dict[str, Any]) -> KeyValue:
    return KeyValue(
        key=_unb64(item["key"]).decode("utf-8", errors="replace"),
        value=_unb64(item.get("value", "")),
        lease=int(item.get("lease", 0)),
        mod_revision=int(item.get("mod_revision", 0)),
        create_revision=int(item.get("create_revision", 0)),
    )


class _TransportError(Exception):
    """No answer: "ConnectError: [Errno 111] Connection refused", "TimeoutError: timed out", ..."""

    def __init__(self, kind: str, err: BaseException) -> None:
        super().__init__(f"{kind}: {err}" if str(err) else kind)


class _TlsError(Exception):
    """The TLS handshake failed: an untrusted server certificate, or a client certificate the
    server wants and did not get."""


def _handshake_failed(err: ssl.SSLError) -> str:
    return (
        f"the TLS handshake failed ({err.reason or err}); does it want a client certificate "
        "(ETCD_AUTH_CLIENT_CERT and ETCD_AUTH_CLIENT_KEY, infra.etcd.client_cert/client_key)?"
    )


class _Endpoint:
    """One gateway URL and its kept-alive connection."""

    def __init__(self, url: str, timeout: Timeout, tls: ssl.SSLContext | None = None) -> None:
        self.url = url
        self.timeout = timeout
        self.context = tls
        parts = urlsplit(url)
        self.tls = parts.scheme == "https"
        self.path = parts.path
        try:
            self.host, self.port = parts.hostname or "", parts.port
        except ValueError:  # a port that is not a number
            self.host, self.port = "", None
        usable = parts.scheme in ("http", "https") and self.host
        self.unusable = "" if usable else f"{url}: not an http:// or https:// URL"
        self._conn: http.client.HTTPConnection | None = None

    def post(self, path: str, body: bytes, token: str | None = None) -> tuple[int, bytes]:
        """(status, body) of one POST; `_TransportError` when the request did not get an answer."""
        if self.unusable:
            raise _TransportError("UnsupportedProtocol", ValueError(self.unusable))
        conn = self._connection()
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = token
        try:
            conn.request("POST", self.path + path, body, headers)
            resp = conn.getresponse()
            return resp.status, resp.read()
        except ssl.SSLError as err:  # TLS 1.3: a refused client certificate shows on first read
            self.close()
            raise _TlsError(_handshake_failed(err)) from None
        except (OSError, http.client.HTTPException) as err:  # timed out, closed, reset, ...
            self.close()
            raise _TransportError(type(err).__name__, err) from None

    def _connection(self) -> http.client.HTTPConnection:
        """The kept-alive connection, unless the server has closed it meanwhile (its socket reads
        as ready while idle: EOF); else a new one."""
        conn = self._conn
        if conn is not None and (conn.sock is None or select.select([conn.sock], [], [], 0)[0]):
            self.close()
            conn = None
        if conn is None:
            conn = self._open()
            self._conn = conn
        return conn

    def _open(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection
        if self.tls:
            ctx = self.context or ssl.create_default_context()
            conn = http.client.HTTPSConnection(
                self.host, self.port, timeout=self.timeout.connect, context=ctx
            )
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout.connect)
        try:
            conn.connect()
        except ssl.SSLCertVerificationError as err:
            raise _TlsError(
                f"its TLS certificate is not trusted ({err.verify_message}); set ETCD_AUTH_CA "
                "(infra.etcd.ca) to the CA that signed it"
            ) from None
        except ssl.SSLError as err:
            raise _TlsError(_handshake_failed(err)) from None
        except TimeoutError as err:
            raise _TransportError("ConnectTimeout", err) from None
        except OSError as err:
            raise _TransportError("ConnectError", err) from None
        conn.sock.settimeout(self.timeout.read)
        return conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class Etcd:
    """One etcd cluster, through the first endpoint of a comma-separated list that answers."""

    def __init__(
        self, endpoints: str, timeout: Timeout = TIMEOUT, auth: EtcdAuth | None = None
    ) -> None:
        urls = [e.strip().rstrip("/") for e in endpoints.split(",") if e.strip()]
        if not urls:
            raise StartupError("etcd: no endpoint given")
        self._auth = auth if auth is not None else credentials.active().etcd
        tls = self._auth.ssl_context() if any(u.startswith("https:") for u in urls) else None
        self._endpoints = [_Endpoint(url, timeout, tls) for url in urls]
        self._timeout = timeout
        self._token: str | None = None
        self.label = endpoints

    @property
    def endpoints(self) -> list[str]:
        """The endpoint URLs, the one that last answered first."""
        return [e.url for e in self._endpoints]

    def close(self) -> None:
        for endpoint in self._endpoints:
            endpoint.close()

    def __enter__(self) -> Etcd:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _login(self, endpoint: _Endpoint) -> str | None:
        """The auth token for the credentials' user (None without a username). Tokens are shared
        by every client of this process: etcd checks a password with bcrypt (~0.1 s on a busy
        2-core host), which fencing, a new client per call, must not pay each time."""
        auth = self._auth
        if not auth.username:
            return None
        key = (endpoint.url, auth.username, auth.password or "")
        if self._token is None:
            self._token = _TOKENS.get(key)
        if self._token is None:
            body = json.dumps({"name": auth.username, "password": auth.password or ""}).encode()
            status, text = endpoint.post("/v3/auth/authenticate", body)
            data = _json(text)
            if status != 200 or not data.get("token"):
                said = str(data.get("message") or text.decode(errors="replace")[:200])
                if "authentication is not enabled" in said:
                    return None  # an etcd without auth takes requests without a token
                raise StartupError(
                    f"etcd at {endpoint.url}: authentication failed for user {auth.username!r} "
                    f"({said}); check ETCD_AUTH_USERNAME and ETCD_AUTH_PASSWORD "
                    "(infra.etcd.username/password)"
                )
            self._token = _TOKENS[key] = str(data["token"])
        return self._token

    def _forget_token(self, endpoint: _Endpoint) -> None:
        auth = self._auth
        _TOKENS.pop((endpoint.url, auth.username or "", auth.password or ""), None)
        self._token = None

    def _call(self, path: str, body: dict[str, Any], *, missing_ok: bool = False) -> dict[str, Any]:
        """POST to the gateway; a "not found" answer is {} when ``missing_ok``."""
        last = ""
        raw = json.dumps(body, separators=(",", ":")).encode()
        for endpoint in list(self._endpoints):
            try:
                status, text = endpoint.post(path, raw, self._login(endpoint))
                if status == 401 or b"invalid auth token" in text:  # expired: log in again
                    self._forget_token(endpoint)
                    status, text = endpoint.post(path, raw, self._login(endpoint))
            except _TlsError as err:
                raise StartupError(f"etcd at {endpoint.url}: {err}") from None
            except _TransportError as err:
                last = str(err)
                continue
            if self._endpoints[0] is not endpoint:  # stick to the endpoint that answered
                self._endpoints.remove(endpoint)
                self._endpoints.insert(0, endpoint)
            try:
                data = json.loads(text)
            except ValueError:
                data = {}
            if status == 200 and isinstance(data, dict):
                return data
            shown = text.decode(errors="replace")
            message = data.get("message", shown[:200]) if isinstance(data, dict) else shown
            if missing_ok and "not found" in str(message):
                return {}
            if "user name is empty" in str(message) or "permission denied" in str(message):
                raise StartupError(
                    f"etcd at {endpoint.url}: refused {path} ({message}): it requires "
                    "credentials; set ETCD_AUTH_USERNAME and ETCD_AUTH_PASSWORD "
                    "(infra.etcd.username/password) for a user allowed to do this"
                )
            raise StartupError(f"etcd at {endpoint.url}: {path} failed: HTTP {status} {message}")
        raise InfraUnreachableError(f"etcd at {self.label} unreachable: {last}")

    # -- keys ---------------------------------------------------------------------------------

    def get_prefix(self, prefix: str) -> list[KeyValue]:
        """Every key starting with ``prefix``, sorted by key."""
        return self.range_prefix(prefix)[0]

    def range_prefix(self, prefix: str) -> tuple[list[KeyValue], int]:
        """Every key starting with ``prefix``, and the store's revision when they were read."""
        start = prefix.encode() or b"\0"  # the empty prefix: every key, from "\0"
        body = {"key": _b64(start), "range_end": _b64(prefix_end(prefix))}
        data = self._call("/v3/kv/range", body)
        revision = int(data.get("header", {}).get("revision", 0))
        return sorted(_kv(i) for i in data.get("kvs", [])), revision

    def count_prefix(self, prefix: str) -> int:
        """How many keys start with ``prefix`` (etcd counts them; no key travels)."""
        start = prefix.encode() or b"\0"
        body = {"key": _b64(start), "range_end": _b64(prefix_end(prefix)), "count_only": True}
        return int(self._call("/v3/kv/range", body).get("count", 0))

    def range_prefixes(self, prefixes: Sequence[str]) -> list[tuple[list[KeyValue], int]]:
        """`range_prefix` of each prefix, the reads in flight together (a connection each), so
        that etcd serves them on all its cores: 10,000 keys under four prefixes took ~0.14 s so,
        ~0.2 s one after another (2 cores, etcd 3.4). Each read has its own revision; of several
        failures, the first prefix's is raised."""
        from concurrent.futures import ThreadPoolExecutor

        clients = [self, *(Etcd(self.label, self._timeout, self._auth) for _ in prefixes[1:])]
        try:
            with ThreadPoolExecutor(max_workers=len(clients)) as pool:
                return list(pool.map(Etcd.range_prefix, clients, prefixes))
        finally:
            for client in clients[1:]:
                client.close()

    def get(self, key: str) -> KeyValue | None:
        kvs = self._call("/v3/kv/range", {"key": _b64(key)}).get("kvs", [])
        return _kv(kvs[0]) if kvs else None

    def put(self, key: str, value: bytes | str, lease: int = 0) -> None:
        body: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
        if lease:
            body["lease"] = str(lease)
        self._call("/v3/kv/put", body)

    def delete_key(self, key: str) -> int:
        """Delete one key; the number deleted (0 when it was already gone)."""
        return int(self._call("/v3/kv/deleterange", {"key": _b64(key)}).get("deleted", 0))

    def delete_prefix(self, prefix: str) -> int:
        body = {"key": _b64(prefix), "range_end": _b64(prefix_end(prefix))}
        return int(self._call("/v3/kv/deleterange", body).get("deleted", 0))

    def delete_if_unchanged(self, key: str, mod_revision: int) -> bool:
        """Delete ``key`` only if nobody wrote it since ``mod_revision``: the value judged stale."""
        body = {
            "compare": [
                {"key": _b64(key), "target": "MOD", "result": "EQUAL",
                 "mod_revision": str(mod_revision)},
            ],
            "success": [{"request_delete_range": {"key": _b64(key)}}],
        }  # fmt: skip
        return bool(self._call("/v3/kv/txn", body).get("succeeded", False))

    def delete_guarded(self, key: str, mod_revision: int, guard: str, revision: int) -> bool:
        """Delete ``key`` if unchanged since ``mod_revision`` and no key under the prefix ``guard``
        was written after store revision ``revision`` (what the decision was based on)."""
        body = {
            "compare": [
                {"key": _b64(key), "target": "MOD", "result": "EQUAL",
                 "mod_revision": str(mod_revision)},
                {"key": _b64(guard), "range_end": _b64(prefix_end(guard)), "target": "MOD",
                 "result": "LESS", "mod_revision": str(revision + 1)},
            ],
            "success": [{"request_delete_range": {"key": _b64(key)}}],
        }  # fmt: skip
        return bool(self._call("/v3/kv/txn", body).get("succeeded", False))

    def delete_prefix_if_unchanged(self, prefix: str, revision: int) -> int | None:
        """Delete every key under ``prefix`` in one transaction, only if none of them was written
        after store revision ``revision`` (what was read then is all there is, or less): the
        number deleted, or None when something under the prefix is newer (nothing deleted).

        One compare over the whole range: etcd checks every key in [prefix, prefix_end) and an
        empty range passes. ``prefix`` must end with "/", so that "ns/" never reaches "ns2/"."""
        if not prefix.endswith("/") or prefix == "/":
            raise ValueError(f"a range delete needs a prefix ending with '/': {prefix!r}")
        if revision <= 0:
            raise ValueError(f"a range delete needs the revision it was read at: {revision}")
        key, end = _b64(prefix), _b64(prefix_end(prefix))
        body = {
            "compare": [
                {"key": key, "range_end": end, "target": "MOD", "result": "LESS",
                 "mod_revision": str(revision + 1)},
            ],
            "success": [{"request_delete_range": {"key": key, "range_end": end}}],
        }  # fmt: skip
        data = self._call("/v3/kv/txn", body)
        if not data.get("succeeded", False):  # the gateway leaves out false and zero
            return None
        deleted = [r.get("response_delete_range", {}) for r in data.get("responses", [])]
        return sum(int(r.get("deleted", 0)) for r in deleted)

    def put_if_unchanged(self, kv: KeyValue, value: bytes | str) -> bool:
        """Replace the value of ``kv.key`` (same lease) only if nobody wrote it since ``kv`` was
        read: False when it changed or vanished in between (nothing written)."""
        put: dict[str, Any] = {"key": _b64(kv.key), "value": _b64(value)}
        if kv.lease:
            put["lease"] = str(kv.lease)
        body = {
            "compare": [
                {"key": _b64(kv.key), "target": "MOD", "result": "EQUAL",
                 "mod_revision": str(kv.mod_revision)},
            ],
            "success": [{"request_put": put}],
        }  # fmt: skip
        return bool(self._call("/v3/kv/txn", body).get("succeeded", False))

    def put_if_absent(self, key: str, value: bytes | str, lease: int = 0) -> KeyValue | None:
        """Create ``key`` unless it exists: None when created, else the existing key."""
        put: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
        if lease:
            put["lease"] = str(lease)
        body = {
            "compare": [
                {"key": _b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}
            ],
            "success": [{"request_put": put}],
            "failure": [{"request_range": {"key": _b64(key)}}],
        }
        data = self._call("/v3/kv/txn", body)
        if data.get("succeeded", False):
            return None
        for resp in data.get("responses", []):
            kvs = resp.get("response_range", {}).get("kvs", [])
            if kvs:
                return _kv(kvs[0])
        return self.get(key)  # it vanished in between: report what is there now (None)

    # -- leases -------------------------------------------------------------------------------

    def lease_grant(self, ttl: int) -> int:
        return int(self._call("/v3/lease/grant", {"TTL": str(ttl)})["ID"])

    def lease_revoke(self, lease: int) -> bool:
        """Revoke ``lease`` and so delete every key attached to it; False when it was gone."""
        return bool(self._call("/v3/lease/revoke", {"ID": str(lease)}, missing_ok=True))

    def leases(self) -> list[int]:
        """Every lease the cluster holds."""
        found = self._call("/v3/lease/leases", {}).get("leases", [])
        return sorted(int(item["ID"]) for item in found)

    def lease_info(self, lease: int) -> LeaseInfo | None:
        """Seconds left and attached keys; None when the lease is gone or expired."""
        data = self._call("/v3/lease/timetolive", {"ID": str(lease), "keys": True})
        ttl = int(data.get("TTL", -1))
        if ttl <= 0:
            return None
        keys = tuple(_unb64(k).decode("utf-8", errors="replace") for k in data.get("keys", []))
        return LeaseInfo(ttl=ttl, granted_ttl=int(data.get("grantedTTL", 0)), keys=keys)

    def lease_ttl(self, lease: int) -> int | None:
        info = self.lease_info(lease)
        return None if info is None else info.ttl

    def lease_keepalive(self, lease: int) -> int | None:
        """Refresh ``lease`` once; its new TTL, or None when it is gone."""
        data = self._call("/v3/lease/keepalive", {"ID": str(lease)})
        ttl = int(data.get("result", {}).get("TTL", 0))
        return ttl if ttl > 0 else None

    # -- auth -----------------------------------------------------------------------------------

    def enable_auth(self, user: str, password: str) -> None:
        """Turn on etcd's auth with ``user`` (root: etcd wants a root user first) holding the
        root role. Called on a fresh embedded etcd, by a client without credentials."""
        try:
            self._call("/v3/auth/user/add", {"name": user, "password": password})
        except StartupError as err:
            if "already exists" not in str(err):
                raise
        self._call("/v3/auth/user/grant", {"user": user, "role": "root"})
        self._call("/v3/auth/enable", {})
