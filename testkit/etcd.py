"""A private etcd (a real etcd binary on loopback ports, its data in a directory of the caller's)
and raw access over etcd's own JSON gateway (`/v3/kv/range`, `/v3/kv/put`, `/v3/lease/grant`,
... with base64 keys and values), not through launcher's client."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import ssl
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import httpx

from testkit.net import free_port, poll_for

KV = tuple[str, bytes, int, int, int]  # key, value, lease, mod_revision, create_revision
TXN_OPS = 128  # etcd's default --max-txn-ops: the most puts one transaction may carry


class GatewayError(Exception):
    """etcd's gateway answered, but not with what was asked for."""


class HasEndpoints(Protocol):
    """Any etcd client that names its endpoints (launcher's among them)."""

    @property
    def endpoints(self) -> list[str]: ...


def b64(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return base64.b64encode(raw).decode()


def prefix_end(prefix: str) -> str:
    """The range end of ``prefix``: the next key after every key that starts with it."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def _range(prefix: str) -> dict[str, str]:
    if not prefix:
        return {"key": b64(b"\0"), "range_end": b64(b"\0")}  # every key
    return {"key": b64(prefix), "range_end": b64(prefix_end(prefix))}


class Gateway:
    """etcd's JSON gateway at ``url`` (or at the first endpoint of a client object). With ``user``
    and ``password`` every request carries the token of /v3/auth/authenticate; ``verify`` is how
    an https:// etcd is checked (an SSL context with the test's CA and client certificate)."""

    def __init__(
        self, url: str | HasEndpoints, timeout: float = 30.0, user: str | None = None,
        password: str | None = None, verify: ssl.SSLContext | bool = True,
    ) -> None:  # fmt: skip
        self.url = (url if isinstance(url, str) else url.endpoints[0]).split(",")[0].rstrip("/")
        self.timeout = httpx.Timeout(timeout, connect=2.0)
        self.verify = verify
        self.headers: dict[str, str] = {}
        if user is not None:
            login = {"name": user, "password": password or ""}
            self.headers["Authorization"] = str(self.call("/v3/auth/authenticate", login)["token"])

    @classmethod
    def of_run(cls, state_dir: Path, url: str | None = None) -> Gateway:
        """The embedded etcd of the `dynlaunch up` with ``state_dir``, logged in with the
        credentials that run generated (STATE/credentials.json)."""
        if url is None:
            url = str(json.loads((state_dir / "launcher.json").read_text())["etcd"])
        login = run_credentials(state_dir)["etcd"]
        verify = run_tls(state_dir) if url.startswith("https:") else True
        return cls(url, user=login["username"], password=login["password"], verify=verify)

    def call(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        resp = httpx.post(
            self.url + path, json=dict(body), timeout=self.timeout, trust_env=False,
            headers=self.headers, verify=self.verify,
        )  # fmt: skip
        if resp.status_code != 200:
            raise GatewayError(f"etcd {path}: HTTP {resp.status_code} {resp.text[:200]}")
        data = resp.json()
        return data if isinstance(data, dict) else {}

    def revision(self) -> int:
        """The store's current revision."""
        data = self.call("/v3/kv/range", {"key": b64("testkit/nothing")})
        return int(data["header"]["revision"])

    def put(self, key: str, value: str | bytes, lease: int = 0) -> None:
        body: dict[str, Any] = {"key": b64(key), "value": b64(value)}
        if lease:
            body["lease"] = str(lease)
        self.call("/v3/kv/put", body)

    def put_many(self, items: Mapping[str, Any], batch: int = TXN_OPS) -> int:
        """Lease-less keys (a value that is not a string is written as JSON) in transactions of
        ``batch`` puts each; the number of requests."""
        pairs = [(k, v if isinstance(v, str) else json.dumps(v)) for k, v in items.items()]
        sent = 0
        for start in range(0, len(pairs), batch):
            ops = [{"request_put": {"key": b64(k), "value": b64(v)}}
                   for k, v in pairs[start : start + batch]]  # fmt: skip
            if not self.call("/v3/kv/txn", {"success": ops}).get("succeeded"):
                raise GatewayError("seeding transaction failed")
            sent += 1
        return sent

    def dump(self, *prefixes: str) -> list[KV]:
        """Every key under the prefixes ("" = all) with value, lease and revisions, in key order
        per prefix: two equal dumps mean untouched, byte for byte."""
        found: list[KV] = []
        for prefix in prefixes or ("",):
            found += [
                self.dump_one(kv) for kv in self.call("/v3/kv/range", _range(prefix)).get("kvs", [])
            ]
        return found

    def get(self, key: str) -> KV | None:
        kvs = self.call("/v3/kv/range", {"key": b64(key)}).get("kvs", [])
        return self.dump_one(kvs[0]) if kvs else None

    @staticmethod
    def dump_one(kv: Mapping[str, Any]) -> KV:
        return (base64.b64decode(kv["key"]).decode(), base64.b64decode(kv.get("value", "")),
                int(kv.get("lease", 0)), int(kv.get("mod_revision", 0)),
                int(kv.get("create_revision", 0)))  # fmt: skip

    def count(self, prefixes: Sequence[str]) -> int:
        body = [_range(p) | {"count_only": True} for p in prefixes]
        return sum(int(self.call("/v3/kv/range", b).get("count", 0)) for b in body)

    def lease_grant(self, ttl: int) -> int:
        return int(self.call("/v3/lease/grant", {"TTL": ttl})["ID"])

    def lease_revoke(self, lease: int) -> None:
        self.call("/v3/lease/revoke", {"ID": str(lease)})

    def lease_ttl(self, lease: int) -> int:
        """Seconds ``lease`` has left; -1 once it is revoked or expired."""
        return int(self.call("/v3/lease/timetolive", {"ID": str(lease)}).get("TTL", -1))

    def leases(self) -> set[int]:
        """Every lease the store holds now."""
        return {int(item["ID"]) for item in self.call("/v3/lease/leases", {}).get("leases", [])}

    def delete(self, key: str) -> None:
        self.call("/v3/kv/deleterange", {"key": b64(key)})

    def compact(self) -> None:
        """Drop the store's history up to now (physically)."""
        self.call("/v3/kv/compaction", {"revision": str(self.revision()), "physical": True})


def run_credentials(state_dir: Path) -> dict[str, dict[str, str]]:
    """The logins a `dynlaunch up` generated for its embedded etcd and NATS:
    {"etcd": {"username", "password"}, "nats": {...}}."""
    data = json.loads((state_dir / "credentials.json").read_text())
    assert isinstance(data, dict)
    return data


def run_tls(state_dir: Path, stem: str = "client") -> ssl.SSLContext:
    """A TLS client of a run's embedded etcd with `infra.tls`: its CA (STATE/tls/ca.pem) and the
    certificate ``stem`` (client: no common name, for the JSON gateway; dynamo: CN root)."""
    tls = state_dir / "tls"
    ctx = ssl.create_default_context(cafile=str(tls / "ca.pem"))
    ctx.load_cert_chain(str(tls / f"{stem}.pem"), str(tls / f"{stem}.key"))
    return ctx


def run_gateway(state_dir: Path, url: str | None = None) -> Gateway:
    return Gateway.of_run(state_dir, url)


def etcdctl_env(state_dir: Path) -> dict[str, str]:
    """etcdctl's login to a run's embedded etcd, through the environment (never its argv)."""
    login = run_credentials(state_dir)["etcd"]
    return {"ETCDCTL_API": "3", "ETCDCTL_USER": f"{login['username']}:{login['password']}"}


def healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=1.0, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


class PrivateEtcd:
    """A real etcd on 127.0.0.1 (free ports unless given), data under ``root``, in a session of
    its own; `start()` waits until it answers, `stop()` ends it (SIGTERM, then SIGKILL)."""

    def __init__(
        self, root: Path, ports: tuple[int, int] | None = None, name: str = "kit",
        data_dir: Path | None = None, env: Mapping[str, str] | None = None,
    ) -> None:  # fmt: skip
        self.root, self.name, self.env = root, name, env
        self.data_dir = data_dir or root / "data"
        client, peer = ports or (free_port(), free_port())
        self.url, self.peer_url = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
        self.log = root / "etcd.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        binary = shutil.which("etcd", path="/usr/bin:" + os.environ.get("PATH", "")) or "etcd"
        return [
            binary, "--name", self.name, "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
            "--listen-peer-urls", self.peer_url, "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", f"{self.name}={self.peer_url}", "--log-level", "warn",
        ]  # fmt: skip

    def start(self, timeout: float = 30.0) -> PrivateEtcd:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv(), env=None if self.env is None else dict(self.env),
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        proc = self.proc
        poll_for(lambda: proc.poll() is not None or healthy(self.url), timeout, "etcd to answer")
        if proc.poll() is not None:
            raise GatewayError(f"etcd exited with code {proc.returncode}: {self.tail()}")
        return self

    def gateway(self) -> Gateway:
        return Gateway(self.url)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def tail(self, lines: int = 20) -> str:
        try:
            return " / ".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def dump(target: str | HasEndpoints, *prefixes: str) -> list[KV]:
    """`Gateway.dump` of the etcd at ``target`` (a URL, or a client naming its endpoints)."""
    return Gateway(target).dump(*prefixes)


def revision(target: str | HasEndpoints) -> int:
    return Gateway(target).revision()


def put_many(target: str | HasEndpoints, items: Mapping[str, Any]) -> int:
    return Gateway(target).put_many(items)
