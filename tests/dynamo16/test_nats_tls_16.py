"""On Dynamo 1.6.1, an external NATS that *requires* TLS (and a client certificate, and a user and
password) serves: `up mocker` hands Dynamo's processes NATS_TLS_CA_CERT_PATH,
NATS_TLS_CLIENT_CERT_PATH and NATS_TLS_CLIENT_KEY_PATH and a tls:// NATS_SERVER
(launcher/credentials.py, nats_tls). Checked from outside: nats-server's own /connz lists the
frontend's and workers' connections with their TLS version and user; fencing revokes a SIGKILLed
worker's lease; `clear-namespace` clears. An untrusted CA, or no CA at all, is one line, exit 3.
Real etcd (plain), nats-server 2.9, frontend and mockers of 1.6.1; certificates made here."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from launcher_run import REPO, Launcher, chat_ok, up_env, up_mocker

from testkit import tls
from testkit.dynamo import worker_1x
from testkit.etcd import Gateway, PrivateEtcd
from testkit.net import free_port, poll_for

pytestmark = pytest.mark.integration

NATS_PW = "nats-tls-pw-5e0c2a"


@dataclass(frozen=True)
class TlsNats:
    url: str  # nats://: dynlaunch's own client upgrades; Dynamo gets tls://
    monitor: str  # nats-server's HTTP monitoring port (plain, loopback)
    ca: tls.Authority
    client: tls.CertFiles
    stranger: tls.Authority

    def connections(self) -> list[dict[str, object]]:
        got = httpx.get(f"{self.monitor}/connz?auth=1", timeout=10, trust_env=False).json()
        return list(got.get("connections") or [])


def _binary() -> str:
    for where in ("/usr/sbin/nats-server", "/usr/bin/nats-server"):
        if os.path.exists(where):
            return where
    return "nats-server"


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[PrivateEtcd]:
    kit = PrivateEtcd(tmp_path / "etcd").start(60)
    try:
        yield kit
    finally:
        kit.stop()


@pytest.fixture
def tls_nats(tmp_path: Path) -> Iterator[TlsNats]:
    """A nats-server that requires TLS, a client certificate from the test's CA, and a user."""
    where = tmp_path / "pki"
    ca = tls.make_ca(where)
    server, client = tls.issue(ca, where, "server"), tls.issue(ca, where, "client")
    port, http = free_port(), free_port()
    conf = tmp_path / "nats.conf"
    conf.write_text(
        f"listen: 127.0.0.1:{port}\nhttp: 127.0.0.1:{http}\n"
        f'authorization {{\n  user: "dynamo"\n  password: "{NATS_PW}"\n}}\n'
        f'tls {{\n  cert_file: "{server.cert}"\n  key_file: "{server.key}"\n'
        f'  ca_file: "{ca.cert}"\n  verify: true\n}}\n'
    )
    proc = subprocess.Popen(
        [_binary(), "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    nats = TlsNats(f"nats://127.0.0.1:{port}", f"http://127.0.0.1:{http}", ca, client,
                   tls.make_ca(tmp_path / "stranger", "someone else's CA"))  # fmt: skip

    def up() -> bool:
        try:
            return httpx.get(f"{nats.monitor}/healthz", timeout=2, trust_env=False).is_success
        except httpx.HTTPError:
            return False

    try:
        poll_for(up, 60, "the TLS nats-server to answer")
        yield nats
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def _env(etcd: PrivateEtcd, nats: TlsNats, python: Path, **over: str) -> dict[str, str]:
    env = {
        "ETCD_ENDPOINTS": etcd.url,
        "NATS_SERVER": nats.url,
        "NATS_AUTH_USERNAME": "dynamo",
        "NATS_AUTH_PASSWORD": NATS_PW,
        "NATS_TLS_CA": nats.ca.cert,
        "NATS_TLS_CERT": nats.client.cert,
        "NATS_TLS_KEY": nats.client.key,
        "DYNLAUNCH_DYNAMO__PYTHON": str(python),
    }
    return env | over


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace").split("\0")
    return dict(item.split("=", 1) for item in raw if "=" in item)


def _leases(gateway: Gateway, ns: str) -> set[int]:
    return {kv[2] for kv in gateway.dump(f"v1/instances/{ns}/backend/generate/")}


def _tls_dynamo_clients(nats: TlsNats) -> list[dict[str, object]]:
    """Connections nats-server says came over TLS from Dynamo's (Rust) client as user dynamo."""
    return [
        c for c in nats.connections()
        if c.get("lang") == "rust" and c.get("tls_version") and c.get("authorized_user") == "dynamo"
    ]  # fmt: skip


def test_up_serves_fences_and_clears_through_a_tls_only_nats(
    started: list[Launcher], tmp_path: Path, dynamo16_python: Path, etcd: PrivateEtcd,
    tls_nats: TlsNats,
) -> None:  # fmt: skip
    env = _env(etcd, tls_nats, dynamo16_python)
    launcher, port = up_mocker(started, tmp_path, "--workers", "2", tag="ntls", env=env)
    launcher.wait_ready(240)
    assert chat_ok(port)
    assert not launcher.stderr_has("connect without TLS"), launcher.dump()
    # What Dynamo's processes were given, read from /proc: paths and a tls:// server.
    worker = _environ(launcher.child_pid("worker-0"))
    assert worker["NATS_SERVER"] == tls_nats.url.replace("nats://", "tls://")
    assert worker["NATS_TLS_CA_CERT_PATH"] == tls_nats.ca.cert
    assert worker["NATS_TLS_CLIENT_KEY_PATH"] == tls_nats.client.key
    # nats-server's own view: the frontend and both workers are on TLS, as user dynamo.
    poll_for(lambda: len(_tls_dynamo_clients(tls_nats)) >= 3, 60, "3 Dynamo TLS connections")
    for pid in (launcher.child_pid(n) for n in ("frontend", "worker-0", "worker-1")):
        assert NATS_PW not in Path(f"/proc/{pid}/cmdline").read_text(errors="replace")
    ns = str(launcher.info()["namespace"])
    gateway = etcd.gateway()
    poll_for(lambda: len(_leases(gateway, ns)) == 2, 60, "two workers registered")
    # Fencing: a SIGKILLed worker's lease is revoked (dynlaunch's line, and etcd says so).
    before = _leases(gateway, ns)
    os.kill(launcher.child_pid("worker-0"), signal.SIGKILL)
    poll_for(lambda: launcher.stderr_has("fenced: revoked its etcd lease"), 90, "the fence")
    line = next(x for x in launcher.err if "fenced: revoked its etcd lease" in x)
    fenced = int(line.rsplit(" ", 1)[1], 16)
    assert fenced in before
    assert int(gateway.call("/v3/lease/timetolive", {"ID": str(fenced)}).get("TTL", -1)) == -1
    # clear-namespace, through the same TLS-only NATS: a dead worker's keys go, live ones stay.
    lease = gateway.lease_grant(60)
    stale = worker_1x(ns, lease, free_port(), free_port())
    for key, value in stale.items():
        gateway.put(key, json.dumps(value), lease)
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
    tmp_path: Path, dynamo16_python: Path, etcd: PrivateEtcd, tls_nats: TlsNats,
    over: dict[str, str] | str, says: str,
) -> None:  # fmt: skip
    if over == "stranger":
        over = {"NATS_TLS_CA": tls_nats.stranger.cert}
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
    assert not _tls_dynamo_clients(tls_nats)  # no Dynamo process got in
