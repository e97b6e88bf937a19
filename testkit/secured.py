"""External infra locked down the way a careful operator would, for tests on loopback: one private
CA, an etcd 3.4 that requires a client certificate and has auth on (users `root` and `dynamo`, both
with the root role), and a nats-server 2.9 that requires TLS, a client certificate and a user and
password. Certificates from testkit.tls; every process in its own session, killed by stop().

etcd's two logins (see launcher/credentials.py): a client without a common name logs in as `root`
with its password (dynlaunch, and the tests' own Gateway); Dynamo's client uses the certificate
whose common name is `dynamo` and no username."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from testkit import tls
from testkit.etcd import Gateway
from testkit.net import free_port, poll_for

ETCD = "/usr/bin/etcd"


@dataclass(frozen=True)
class Pki:
    ca: tls.Authority
    server: tls.CertFiles  # etcd's and nats-server's
    launcher: tls.CertFiles  # no common name: root's password goes with it
    dynamo: tls.CertFiles  # common name "dynamo": Dynamo's etcd user over TLS
    stranger: tls.Authority  # a CA nobody here trusts

    def context(self) -> ssl.SSLContext:
        """The test's own client side: the CA and the certificate without a common name."""
        ctx = ssl.create_default_context(cafile=self.ca.cert)
        ctx.load_cert_chain(self.launcher.cert, self.launcher.key)
        return ctx


def make_pki(where: Path) -> Pki:
    ca = tls.make_ca(where / "pki")
    return Pki(
        ca=ca,
        server=tls.issue(ca, where / "pki", "server"),
        launcher=tls.issue(ca, where / "pki", "launcher"),
        dynamo=tls.issue(ca, where / "pki", "dynamo", user="dynamo"),
        stranger=tls.make_ca(where / "stranger", "someone else's CA"),
    )


def _answers(url: str, verify: ssl.SSLContext | bool) -> bool:
    try:
        return httpx.get(url, timeout=2, verify=verify, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


@dataclass
class SecuredEtcd:
    """etcd on https://127.0.0.1 with --client-cert-auth and auth enabled."""

    pki: Pki
    root_password: str
    url: str = ""
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self, data: Path, timeout: float = 60.0) -> SecuredEtcd:
        client, peer = free_port(), free_port()
        self.url, peer_url = f"https://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
        argv = [
            ETCD, "--name", "sec", "--data-dir", str(data),
            "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
            "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
            "--initial-cluster", f"sec={peer_url}", "--log-level", "warn",
            "--cert-file", self.pki.server.cert, "--key-file", self.pki.server.key,
            "--trusted-ca-file", self.pki.ca.cert, "--client-cert-auth",
        ]  # fmt: skip
        with open(data.with_suffix(".log"), "wb") as log:
            self.proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        verify = self.pki.context()
        poll_for(lambda: _answers(f"{self.url}/health", verify), timeout, "the TLS etcd to answer")
        with httpx.Client(verify=verify, trust_env=False) as http:
            for call, body in (
                ("user/add", {"name": "root", "password": self.root_password}),
                ("user/grant", {"user": "root", "role": "root"}),
                ("user/add", {"name": "dynamo", "password": os.urandom(12).hex()}),
                ("user/grant", {"user": "dynamo", "role": "root"}),
                ("enable", {}),
            ):
                http.post(f"{self.url}/v3/auth/{call}", json=body, timeout=10).raise_for_status()
        return self

    def gateway(self) -> Gateway:
        """Logged in as root over TLS: independent of dynlaunch's own etcd client."""
        return Gateway(
            self.url, user="root", password=self.root_password, verify=self.pki.context()
        )

    def stop(self) -> None:
        if self.proc is not None:
            _kill(self.proc)


def nats_binary() -> str:
    for where in ("/usr/sbin/nats-server", "/usr/bin/nats-server"):
        if os.path.exists(where):
            return where
    return "nats-server"


@dataclass
class SecuredNats:
    """nats-server that requires TLS with a client certificate and the user `dynamo`."""

    pki: Pki
    password: str
    url: str = ""  # nats://: dynlaunch's own client upgrades; Dynamo 1.6 gets tls://
    monitor: str = ""  # plain HTTP monitoring, loopback only
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self, conf: Path, timeout: float = 60.0) -> SecuredNats:
        port, http = free_port(), free_port()
        self.url, self.monitor = f"nats://127.0.0.1:{port}", f"http://127.0.0.1:{http}"
        conf.write_text(
            f"listen: 127.0.0.1:{port}\nhttp: 127.0.0.1:{http}\n"
            f'authorization {{\n  user: "dynamo"\n  password: "{self.password}"\n}}\n'
            f'tls {{\n  cert_file: "{self.pki.server.cert}"\n  key_file: "{self.pki.server.key}"\n'
            f'  ca_file: "{self.pki.ca.cert}"\n  verify: true\n}}\n'
        )
        os.chmod(conf, 0o600)
        self.proc = subprocess.Popen(
            [nats_binary(), "-c", str(conf)], stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        poll_for(lambda: _answers(f"{self.monitor}/healthz", False), timeout, "the TLS NATS")
        return self

    def connections(self) -> list[dict[str, object]]:
        """nats-server's own /connz, with the user of each connection."""
        got = httpx.get(f"{self.monitor}/connz?auth=1", timeout=10, trust_env=False).json()
        return list(got.get("connections") or [])

    def dynamo_tls_clients(self) -> list[dict[str, object]]:
        """The connections that came over TLS from Dynamo's (Rust) client as user dynamo."""
        return [
            c for c in self.connections()
            if c.get("lang") == "rust" and c.get("tls_version")
            and c.get("authorized_user") == "dynamo"
        ]  # fmt: skip

    def stop(self) -> None:
        if self.proc is not None:
            _kill(self.proc)
