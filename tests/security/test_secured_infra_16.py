"""On Dynamo 1.6.1, both external infra servers locked down at once: an etcd 3.4 with auth and
client-certificate TLS, and a nats-server 2.9 that requires TLS, a client certificate and a user
and password (testkit/secured.py; certificates made here). `up mocker --workers 2` serves through
both; checked from outside dynlaunch: nats-server's /connz lists Dynamo's connections on TLS as
user dynamo, etcd (read as root over TLS with testkit's Gateway) holds the workers' leases and
shows a SIGKILLed worker's lease revoked; the real `clear-namespace` CLI, with the environment a
user would set, removes planted stale keys and keeps the live worker."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from launcher_run import REPO, Launcher, chat_ok, up_env, up_mocker

from testkit.dynamo import put_worker_1x
from testkit.etcd import Gateway
from testkit.net import free_port, poll_for
from testkit.secured import Pki, SecuredEtcd, SecuredNats, make_pki

pytestmark = pytest.mark.integration

ROOT_PW = "root-pw-16-b7e2c4"  # dynlaunch's (and this test's) etcd login
NATS_PW = "nats-pw-16-41d9aa"


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path)


@pytest.fixture
def etcd(tmp_path: Path, pki: Pki) -> Iterator[SecuredEtcd]:
    server = SecuredEtcd(pki, ROOT_PW)
    try:
        yield server.start(tmp_path / "etcd")
    finally:
        server.stop()


@pytest.fixture
def nats(tmp_path: Path, pki: Pki) -> Iterator[SecuredNats]:
    server = SecuredNats(pki, NATS_PW)
    try:
        yield server.start(tmp_path / "nats.conf")
    finally:
        server.stop()


def _up_env(etcd: SecuredEtcd, nats: SecuredNats, python: Path) -> dict[str, str]:
    pki = etcd.pki
    return {
        "ETCD_ENDPOINTS": etcd.url,
        "NATS_SERVER": nats.url,
        # Dynamo's etcd login: the certificate whose common name is its user, no username.
        "ETCD_AUTH_CA": pki.ca.cert,
        "ETCD_AUTH_CLIENT_CERT": pki.dynamo.cert,
        "ETCD_AUTH_CLIENT_KEY": pki.dynamo.key,
        # NATS: user and password, the CA and a client certificate.
        "NATS_AUTH_USERNAME": "dynamo",
        "NATS_AUTH_PASSWORD": NATS_PW,
        "NATS_TLS_CA": pki.ca.cert,
        "NATS_TLS_CERT": pki.launcher.cert,
        "NATS_TLS_KEY": pki.launcher.key,
        # dynlaunch's own etcd login (lock, fencing).
        "DYNLAUNCH_INFRA__ETCD__USERNAME": "root",
        "DYNLAUNCH_INFRA__ETCD__PASSWORD": ROOT_PW,
        "DYNLAUNCH_INFRA__ETCD__CA": pki.ca.cert,
        "DYNLAUNCH_INFRA__ETCD__CLIENT_CERT": pki.launcher.cert,
        "DYNLAUNCH_INFRA__ETCD__CLIENT_KEY": pki.launcher.key,
        "DYNLAUNCH_DYNAMO__PYTHON": str(python),
    }


def _clear_env(pki: Pki) -> dict[str, str]:
    """What a user of `clear-namespace` sets: the variables Dynamo reads, with root's login."""
    return {
        "ETCD_AUTH_USERNAME": "root",
        "ETCD_AUTH_PASSWORD": ROOT_PW,
        "ETCD_AUTH_CA": pki.ca.cert,
        "ETCD_AUTH_CLIENT_CERT": pki.launcher.cert,
        "ETCD_AUTH_CLIENT_KEY": pki.launcher.key,
        "NATS_AUTH_USERNAME": "dynamo",
        "NATS_AUTH_PASSWORD": NATS_PW,
        "NATS_TLS_CA": pki.ca.cert,
        "NATS_TLS_CERT": pki.launcher.cert,
        "NATS_TLS_KEY": pki.launcher.key,
    }


def _leases(gateway: Gateway, ns: str) -> set[int]:
    """The leases of the namespace's workers (their `generate` instances)."""
    return {kv[2] for kv in gateway.dump(f"v1/instances/{ns}/backend/generate/")}


def test_up_serves_fences_and_clears_through_secured_etcd_and_tls_nats(
    started: list[Launcher], tmp_path: Path, dynamo16_python: Path, etcd: SecuredEtcd,
    nats: SecuredNats,
) -> None:  # fmt: skip
    env = _up_env(etcd, nats, dynamo16_python)
    launcher, port = up_mocker(started, tmp_path, "--workers", "2", tag="sec16", env=env)
    launcher.wait_ready(240)
    assert chat_ok(port)
    # NATS, nats-server's own view: the frontend and both workers are on TLS, as user dynamo.
    poll_for(lambda: len(nats.dynamo_tls_clients()) >= 3, 60, "3 Dynamo TLS connections")
    # etcd, read as root over TLS: both workers registered under leases.
    ns = str(launcher.info()["namespace"])
    gateway = etcd.gateway()
    poll_for(lambda: len(_leases(gateway, ns)) == 2, 60, "two workers registered")
    before = _leases(gateway, ns)
    for lease in before:
        assert gateway.lease_ttl(lease) > 0
    for pid in (launcher.child_pid(n) for n in ("frontend", "worker-0", "worker-1")):
        argv = Path(f"/proc/{pid}/cmdline").read_text(errors="replace")
        assert NATS_PW not in argv
        assert ROOT_PW not in argv
    # Fencing: a SIGKILLed worker's lease is revoked (dynlaunch's line; etcd says TTL -1).
    fenced = launcher.kill_and_fenced_lease()
    assert fenced in before
    assert gateway.lease_ttl(fenced) == -1
    # clear-namespace through both secured servers: a dead worker's keys go, live ones stay.
    lease = gateway.lease_grant(60)
    stale = put_worker_1x(gateway, ns, lease, free_port(), free_port())
    home = tmp_path / "cli"
    home.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "launcher", "clear-namespace", "--namespace", ns,
         "--etcd", etcd.url, "--nats", nats.url],
        cwd=REPO, env=up_env(home, _clear_env(etcd.pki)), capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert all(gateway.get(key) is None for key in stale)
    live = _leases(gateway, ns)
    assert lease not in live
    assert live  # the live worker kept its registration
    assert live <= before
    assert chat_ok(port)
    for secret in (NATS_PW, ROOT_PW):
        assert secret not in launcher.dump() + done.stdout + done.stderr
    assert launcher.stop() == 0, launcher.dump()
