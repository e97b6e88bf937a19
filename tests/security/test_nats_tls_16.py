"""On Dynamo 1.6.1, an external NATS that *requires* TLS (and a client certificate, and a user and
password) serves: `up mocker` hands Dynamo's processes NATS_TLS_CA_CERT_PATH,
NATS_TLS_CLIENT_CERT_PATH and NATS_TLS_CLIENT_KEY_PATH and a tls:// NATS_SERVER
(launcher/credentials.py, nats_tls). Checked from outside: nats-server's own /connz lists the
frontend's and workers' connections with their TLS version and user; fencing revokes a SIGKILLed
worker's lease; `clear-namespace` clears. An untrusted CA, or no CA at all, is one line, exit 3.
Real etcd (plain), nats-server 2.9, frontend and mockers of 1.6.1; certificates made here."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from launcher_run import REPO, Launcher, chat_ok, up_env, up_mocker

from testkit import procs
from testkit.dynamo import put_worker_1x
from testkit.etcd import Gateway, PrivateEtcd
from testkit.net import free_port, poll_for
from testkit.secured import SecuredNats, make_pki

pytestmark = pytest.mark.integration

NATS_PW = "nats-tls-pw-5e0c2a"


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[PrivateEtcd]:
    kit = PrivateEtcd(tmp_path / "etcd").start(60)
    try:
        yield kit
    finally:
        kit.stop()


@pytest.fixture
def tls_nats(tmp_path: Path) -> Iterator[SecuredNats]:
    """A nats-server that requires TLS, a client certificate from the test's CA, and a user."""
    nats = SecuredNats(make_pki(tmp_path / "pki"), NATS_PW).start(tmp_path / "nats.conf")
    try:
        yield nats
    finally:
        nats.stop()


def _env(etcd: PrivateEtcd, nats: SecuredNats, python: Path, **over: str) -> dict[str, str]:
    env = {
        "ETCD_ENDPOINTS": etcd.url,
        "NATS_SERVER": nats.url,
        "NATS_AUTH_USERNAME": "dynamo",
        "NATS_AUTH_PASSWORD": NATS_PW,
        "NATS_TLS_CA": nats.pki.ca.cert,
        "NATS_TLS_CERT": nats.pki.launcher.cert,
        "NATS_TLS_KEY": nats.pki.launcher.key,
        "DYNLAUNCH_DYNAMO__PYTHON": str(python),
    }
    return env | over


def _leases(gateway: Gateway, ns: str) -> set[int]:
    return {kv[2] for kv in gateway.dump(f"v1/instances/{ns}/backend/generate/")}


def test_up_serves_fences_and_clears_through_a_tls_only_nats(
    started: list[Launcher], tmp_path: Path, dynamo16_python: Path, etcd: PrivateEtcd,
    tls_nats: SecuredNats,
) -> None:  # fmt: skip
    env = _env(etcd, tls_nats, dynamo16_python)
    launcher, port = up_mocker(started, tmp_path, "--workers", "2", tag="ntls", env=env)
    launcher.wait_ready(240)
    assert chat_ok(port)
    assert not launcher.stderr_has("connect without TLS"), launcher.dump()
    # What Dynamo's processes were given, read from /proc: paths and a tls:// server.
    worker = procs.environ(launcher.child_pid("worker-0"))
    assert worker["NATS_SERVER"] == tls_nats.url.replace("nats://", "tls://")
    assert worker["NATS_TLS_CA_CERT_PATH"] == tls_nats.pki.ca.cert
    assert worker["NATS_TLS_CLIENT_KEY_PATH"] == tls_nats.pki.launcher.key
    # nats-server's own view: the frontend and both workers are on TLS, as user dynamo.
    poll_for(lambda: len(tls_nats.dynamo_tls_clients()) >= 3, 60, "3 Dynamo TLS connections")
    for pid in (launcher.child_pid(n) for n in ("frontend", "worker-0", "worker-1")):
        assert NATS_PW not in Path(f"/proc/{pid}/cmdline").read_text(errors="replace")
    ns = str(launcher.info()["namespace"])
    gateway = etcd.gateway()
    poll_for(lambda: len(_leases(gateway, ns)) == 2, 60, "two workers registered")
    # Fencing: a SIGKILLed worker's lease is revoked (dynlaunch's line, and etcd says so).
    before = _leases(gateway, ns)
    fenced = launcher.kill_and_fenced_lease()
    assert fenced in before
    assert gateway.lease_ttl(fenced) == -1
    # clear-namespace, through the same TLS-only NATS: a dead worker's keys go, live ones stay.
    lease = gateway.lease_grant(60)
    stale = put_worker_1x(gateway, ns, lease, free_port(), free_port())
    home = tmp_path / "cli"
    home.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "launcher", "clear-namespace", "--namespace", ns,
         "--etcd", etcd.url, "--nats", tls_nats.url],
        cwd=REPO, env=up_env(home, _env(etcd, tls_nats, dynamo16_python)), capture_output=True,
        text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert all(gateway.get(key) is None for key in stale)
    assert len(_leases(gateway, ns)) >= 1
    assert chat_ok(port)
    assert NATS_PW not in launcher.dump()
    assert launcher.stop() == 0, launcher.dump()


@pytest.mark.parametrize(
    ("over", "says"),
    [
        ("stranger", "TLS certificate is not trusted"),
        (
            {"NATS_TLS_CA": "", "NATS_TLS_CERT": "", "NATS_TLS_KEY": ""},
            "requires TLS: set NATS_TLS_CA",
        ),
    ],
)
def test_an_untrusted_or_missing_nats_ca_is_one_line_exit_3(
    tmp_path: Path, dynamo16_python: Path, etcd: PrivateEtcd, tls_nats: SecuredNats,
    over: dict[str, str] | str, says: str,
) -> None:  # fmt: skip
    if over == "stranger":
        over = {"NATS_TLS_CA": tls_nats.pki.stranger.cert}
    assert isinstance(over, dict)
    env = _env(etcd, tls_nats, dynamo16_python, **over)
    argv = ["up", "mocker", "--namespace", "ntlsbad", "--http-port", str(free_port()),
            "--state-dir", str(tmp_path / "state")]  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "launcher", *argv], cwd=REPO, env=up_env(tmp_path, env),
        capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert done.returncode == 3, done.stderr
    errors = [x for x in done.stderr.splitlines() if x.startswith("dynlaunch: error")]
    assert len(errors) == 1, done.stderr
    assert says in errors[0]
    assert tls_nats.url in errors[0]
    assert NATS_PW not in done.stdout + done.stderr
    assert not tls_nats.dynamo_tls_clients()  # no Dynamo process got in
