"""External etcd with users and client-certificate TLS, external NATS with a user and password
(and one that requires TLS), certificates made here: `up mocker` serves, fencing revokes a dead
worker's lease, `clear-namespace` clears; a wrong password and an untrusted CA each give their
own one-line error (exit 3) that shows no secret.

Two etcd logins, as etcd 3.4 and Dynamo need them (launcher/credentials.py): dynlaunch's own
(`infra.etcd.*`: root's password and a client certificate without a common name, which etcd's JSON
gateway accepts) and Dynamo's (ETCD_AUTH_CA/CLIENT_CERT/CLIENT_KEY: a certificate whose common name
is its etcd user, which Dynamo's client uses only without a username)."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import test_cli_errors as cli_errors
from launcher_run import REPO, Launcher, chat_ok, up_env, up_mocker

from testkit import tls
from testkit.dynamo import put_worker_1x
from testkit.etcd import Gateway
from testkit.net import free_port, poll_for

pytestmark = pytest.mark.integration

ROOT_PW = "root-pw-3e8a1f"  # dynlaunch's etcd login
NATS_PW = "nats-pw-77c1d0"


@dataclass(frozen=True)
class Pki:
    ca: tls.Authority
    server: tls.CertFiles
    launcher: tls.CertFiles  # no common name: etcd's gateway takes it with a token
    dynamo: tls.CertFiles  # common name "dynamo": Dynamo's etcd user over TLS
    stranger: tls.Authority  # a CA nobody here trusts


def _ssl(pki: Pki) -> ssl.SSLContext:
    """dynlaunch's side of the TLS: the test's CA and the certificate without a common name."""
    ctx = ssl.create_default_context(cafile=pki.ca.cert)
    ctx.load_cert_chain(pki.launcher.cert, pki.launcher.key)
    return ctx


def _ctx(pki: Pki) -> httpx.Client:
    return httpx.Client(verify=_ssl(pki), trust_env=False)


@dataclass
class SecureEtcd:
    url: str
    proc: subprocess.Popen[bytes]
    pki: Pki

    def gateway(self) -> Gateway:
        return Gateway(self.url, user="root", password=ROOT_PW, verify=_ssl(self.pki))


def _nats_conf(path: Path, port: int, pki: Pki | None) -> Path:
    users = f'  user: "dynamo"\n  password: "{NATS_PW}"\n'
    text = f"listen: 127.0.0.1:{port}\nauthorization {{\n{users}}}\n"
    if pki is not None:
        text += f'tls {{\n  cert_file: "{pki.server.cert}"\n  key_file: "{pki.server.key}"\n}}\n'
    path.write_text(text)
    return path


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    where = tmp_path / "pki"
    ca = tls.make_ca(where)
    return Pki(
        ca=ca,
        server=tls.issue(ca, where, "server"),
        launcher=tls.issue(ca, where, "launcher"),
        dynamo=tls.issue(ca, where, "dynamo", user="dynamo"),
        stranger=tls.make_ca(tmp_path / "stranger", "someone else's CA"),
    )


@pytest.fixture
def secure_etcd(tmp_path: Path, pki: Pki) -> Iterator[SecureEtcd]:
    client, peer = free_port(), free_port()
    url, peer_url = f"https://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
    argv = [
        "/usr/bin/etcd", "--name", "sec", "--data-dir", str(tmp_path / "etcd"),
        "--listen-client-urls", url, "--advertise-client-urls", url,
        "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
        "--initial-cluster", f"sec={peer_url}", "--log-level", "warn",
        "--cert-file", pki.server.cert, "--key-file", pki.server.key,
        "--trusted-ca-file", pki.ca.cert, "--client-cert-auth",
    ]  # fmt: skip
    with open(tmp_path / "etcd.log", "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        with _ctx(pki) as http:

            def up() -> bool:
                try:
                    return http.get(f"{url}/health", timeout=2).status_code == 200
                except httpx.HTTPError:
                    return False

            poll_for(up, 60, "the TLS etcd to answer")
            for call, body in (
                ("user/add", {"name": "root", "password": ROOT_PW}),
                ("user/grant", {"user": "root", "role": "root"}),
                ("user/add", {"name": "dynamo", "password": "unused-by-dynamo-91"}),
                ("user/grant", {"user": "dynamo", "role": "root"}),
                ("enable", {}),
            ):
                http.post(f"{url}/v3/auth/{call}", json=body, timeout=10).raise_for_status()
        yield SecureEtcd(url, proc, pki)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


@pytest.fixture
def nats_servers(tmp_path: Path, pki: Pki) -> Iterator[tuple[str, str]]:
    """(plain, tls): two NATS servers with the user `dynamo`; the second requires TLS."""
    plain, secure = free_port(), free_port()
    procs = [
        subprocess.Popen(
            ["nats-server", "-c", str(_nats_conf(tmp_path / name, port, with_tls))],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            executable=_nats_binary(),
        )
        for name, port, with_tls in (("plain.conf", plain, None), ("tls.conf", secure, pki))
    ]
    try:
        yield f"nats://127.0.0.1:{plain}", f"nats://127.0.0.1:{secure}"
    finally:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def _nats_binary() -> str:
    for where in ("/usr/sbin/nats-server", "/usr/bin/nats-server"):
        if os.path.exists(where):
            return where
    return "nats-server"


def _launcher_env(etcd: SecureEtcd, nats: str) -> dict[str, str]:
    pki = etcd.pki
    return {
        "ETCD_ENDPOINTS": etcd.url,
        "NATS_SERVER": nats,
        # Dynamo's logins: a certificate whose common name is its etcd user; NATS user/password.
        "ETCD_AUTH_CA": pki.ca.cert,
        "ETCD_AUTH_CLIENT_CERT": pki.dynamo.cert,
        "ETCD_AUTH_CLIENT_KEY": pki.dynamo.key,
        "NATS_AUTH_USERNAME": "dynamo",
        "NATS_AUTH_PASSWORD": NATS_PW,
        # dynlaunch's own etcd login.
        "DYNLAUNCH_INFRA__ETCD__USERNAME": "root",
        "DYNLAUNCH_INFRA__ETCD__PASSWORD": ROOT_PW,
        "DYNLAUNCH_INFRA__ETCD__CA": pki.ca.cert,
        "DYNLAUNCH_INFRA__ETCD__CLIENT_CERT": pki.launcher.cert,
        "DYNLAUNCH_INFRA__ETCD__CLIENT_KEY": pki.launcher.key,
    }


def _clear_env(etcd: SecureEtcd, **over: str) -> dict[str, str]:
    """`clear-namespace`'s login: Dynamo's variables, as a user of the CLI sets them."""
    pki = etcd.pki
    env = {
        "ETCD_AUTH_USERNAME": "root",
        "ETCD_AUTH_PASSWORD": ROOT_PW,
        "ETCD_AUTH_CA": pki.ca.cert,
        "ETCD_AUTH_CLIENT_CERT": pki.launcher.cert,
        "ETCD_AUTH_CLIENT_KEY": pki.launcher.key,
        "NATS_AUTH_USERNAME": "dynamo",
        "NATS_AUTH_PASSWORD": NATS_PW,
        "NATS_TLS_CA": pki.ca.cert,
    }
    return env | over


def _clear(home: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "launcher", "clear-namespace", *args], cwd=REPO,
        env=up_env(home, env), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def _leases(gateway: Gateway, ns: str) -> set[int]:
    """The leases of the namespace's workers (their `generate` instances)."""
    return {kv[2] for kv in gateway.dump(f"v1/instances/{ns}/backend/generate/")}


def test_up_serves_fences_and_clears_with_secured_external_infra(
    started: list[Launcher], tmp_path: Path, secure_etcd: SecureEtcd,
    nats_servers: tuple[str, str],
) -> None:  # fmt: skip
    plain, _ = nats_servers
    launcher, port = up_mocker(
        started, tmp_path, "--workers", "2", tag="ext", env=_launcher_env(secure_etcd, plain)
    )
    launcher.wait_ready(180)
    assert chat_ok(port)
    ns = str(launcher.info()["namespace"])
    gateway = secure_etcd.gateway()
    poll_for(lambda: len(_leases(gateway, ns)) == 2, 60, "two workers registered")
    assert gateway.get(f"dynlaunch/locks/{ns}") is not None  # the lock, taken with root's login
    # Fencing: a SIGKILLed worker's lease is revoked by dynlaunch (its log line), gone in etcd.
    before = _leases(gateway, ns)
    fenced = launcher.kill_and_fenced_lease(timeout=60)
    assert fenced in before
    assert gateway.lease_ttl(fenced) == -1  # revoked
    # clear-namespace: a dead worker's keys (its ports refuse connections) go, live ones stay.
    lease = gateway.lease_grant(60)
    stale = put_worker_1x(gateway, ns, lease, free_port(), free_port())
    home = tmp_path / "cli"
    home.mkdir()
    env = _clear_env(secure_etcd, NATS_TLS_CA="")  # this NATS speaks no TLS
    done = _clear(home, env, "--namespace", ns, "--etcd", secure_etcd.url, "--nats", plain)
    assert done.returncode == 0, done.stderr
    assert all(gateway.get(key) is None for key in stale)
    assert lease not in _leases(gateway, ns)
    assert len(_leases(gateway, ns)) >= 1  # the live worker kept its registrations
    assert chat_ok(port)
    assert launcher.stop() == 0, launcher.dump()


@pytest.mark.parametrize(
    ("over", "says"),
    [
        ({"ETCD_AUTH_PASSWORD": "not-the-pw-5b"}, "authentication failed for user 'root'"),
        ("stranger", "TLS certificate is not trusted"),
        ({"ETCD_AUTH_CLIENT_CERT": "", "ETCD_AUTH_CLIENT_KEY": ""}, "TLS handshake failed"),
    ],
)
def test_etcd_login_failures_are_named(
    tmp_path: Path, secure_etcd: SecureEtcd, over: dict[str, str] | str, says: str
) -> None:
    if over == "stranger":
        over = {"ETCD_AUTH_CA": secure_etcd.pki.stranger.cert}
    assert isinstance(over, dict)
    env = _clear_env(secure_etcd, **over)
    done = _clear(tmp_path, env, "--namespace", "ns1", "--etcd", secure_etcd.url)
    line = cli_errors.one_error_line(done, 3)
    assert says in line
    assert secure_etcd.url in line
    for secret in (ROOT_PW, env["ETCD_AUTH_PASSWORD"]):
        assert secret not in done.stderr + done.stdout


def test_nats_login_and_tls_failures_are_named(
    tmp_path: Path, secure_etcd: SecureEtcd, nats_servers: tuple[str, str]
) -> None:
    _, secure = nats_servers
    args = ("--namespace", "ns1", "--etcd", secure_etcd.url, "--nats", secure)
    ok = _clear(tmp_path, _clear_env(secure_etcd), *args)
    assert ok.returncode == 0, ok.stderr  # TLS with the right CA, the right user
    wrong = _clear(tmp_path, _clear_env(secure_etcd, NATS_AUTH_PASSWORD="nope-4d"), *args)
    assert "login refused" in cli_errors.one_error_line(wrong, 3)
    stranger = _clear(tmp_path, _clear_env(secure_etcd, NATS_TLS_CA=secure_etcd.pki.stranger.cert),
                      *args)  # fmt: skip
    assert "TLS certificate is not trusted" in cli_errors.one_error_line(stranger, 3)
    for done in (ok, wrong, stranger):
        assert NATS_PW not in done.stdout + done.stderr


def test_up_refuses_a_nats_that_requires_tls(
    tmp_path: Path, secure_etcd: SecureEtcd, nats_servers: tuple[str, str]
) -> None:
    """A NATS that requires TLS and no CA given: say so at once instead of timing out (Dynamo
    1.6+, the default, speaks TLS to NATS with the CA: tests/security/test_nats_tls_16.py; 1.4.2
    cannot at all: tests/dynamo14/test_tls_14.py)."""
    _, secure = nats_servers
    env = _launcher_env(secure_etcd, secure) | {"XDG_CACHE_HOME": os.environ["XDG_CACHE_HOME"]}
    port = str(free_port())
    argv = ["up", "mocker", "--namespace", "tlsnats", "--http-port", port]
    done = cli_errors.run_cli([*argv, "--state-dir", str(tmp_path / "state")], tmp_path, env, 120)
    line = cli_errors.one_error_line(done, 3)
    assert "requires TLS: set NATS_TLS_CA (infra.nats.ca)" in line
