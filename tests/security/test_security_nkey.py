"""An external NATS whose only user is an NKey (nats-server 2.9's `authorization { users = [{
nkey: U... }] }`, the key made here with the `nkeys` package): `up mocker` with NATS_AUTH_NKEY
serves (Dynamo 1.4.2 takes the seed's text, measured; dynlaunch reads a seed file for it), and
`clear-namespace` logs in with it too; the seed shows nowhere but in the children's environment.
An operator-mode NATS (JWTs, testkit.natsjwt): `up mocker` with NATS_AUTH_CREDENTIALS_FILE
serves."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nkeys
import pytest
from launcher_run import REPO, Launcher, chat_ok, up_env, up_mocker

from testkit import natsjwt, procs
from testkit.etcd import PrivateEtcd
from testkit.natslogin import greets, nats_login
from testkit.net import free_port, poll_for

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class NkeyNats:
    url: str
    port: int
    seed: str  # the user's seed (secret), "SU..."
    seed_file: Path  # the same, in a 0600 file
    public: str  # "U...": what nats-server knows


def _nats_binary() -> str:
    return next((p for p in ("/usr/sbin/nats-server", "/usr/bin/nats-server")
                 if os.path.exists(p)), "nats-server")  # fmt: skip


@pytest.fixture
def nkey_nats(tmp_path: Path) -> Iterator[NkeyNats]:
    seed = nkeys.encode_seed(secrets.token_bytes(32), nkeys.PREFIX_BYTE_USER)
    public = nkeys.from_seed(bytearray(seed)).public_key.decode()
    seed_file = tmp_path / "user.nk"
    seed_file.write_bytes(seed)
    seed_file.chmod(0o600)
    users = f'authorization {{ users = [ {{ nkey: "{public}" }} ] }}\n'
    with _nats_server(tmp_path, users) as port:
        yield NkeyNats(f"nats://127.0.0.1:{port}", port, seed.decode(), seed_file, public)


@contextlib.contextmanager
def _nats_server(tmp_path: Path, auth: str) -> Iterator[int]:
    """A nats-server with JetStream on a free loopback port, its logins as ``auth`` says."""
    port = free_port()
    conf = tmp_path / "nats.conf"
    store = f'jetstream {{ store_dir: "{tmp_path / "js"}" }}\n'
    conf.write_text(f"listen: 127.0.0.1:{port}\n{store}{auth}")
    with open(tmp_path / "nats.log", "wb") as log:
        proc = subprocess.Popen([_nats_binary(), "-c", str(conf)], stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        poll_for(lambda: greets(port), 30, "nats-server to greet")
        yield port
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


@pytest.fixture
def plain_etcd(tmp_path: Path) -> Iterator[PrivateEtcd]:
    etcd = PrivateEtcd(tmp_path / "etcd").start()
    try:
        yield etcd
    finally:
        etcd.stop()


def test_up_and_clear_log_in_to_nats_with_an_nkey(
    started: list[Launcher], tmp_path: Path, nkey_nats: NkeyNats, plain_etcd: PrivateEtcd
) -> None:
    # The server refuses a client without the key, and a user/password one.
    assert b"Authorization Violation" in nats_login(nkey_nats.port)
    assert b"Authorization Violation" in nats_login(nkey_nats.port, user="u", **{"pass": "p"})
    env = {"ETCD_ENDPOINTS": plain_etcd.url, "NATS_SERVER": nkey_nats.url,
           "NATS_AUTH_NKEY": str(nkey_nats.seed_file)}  # fmt: skip
    launcher, port = up_mocker(started, tmp_path, tag="nkey", env=env)
    launcher.wait_ready(180)
    assert chat_ok(port)
    # Dynamo's processes got the seed's text (a path fails in Dynamo: "failed to create key pair
    # from nkey seed"), through their environment only.
    for child in ("frontend", "worker-0"):
        assert procs.environ(launcher.child_pid(child))["NATS_AUTH_NKEY"] == nkey_nats.seed
    ns = str(launcher.info()["namespace"])
    home = tmp_path / "cli"
    home.mkdir()
    clear = subprocess.run(
        [sys.executable, "-m", "launcher", "clear-namespace", "--namespace", ns, "--etcd",
         plain_etcd.url, "--nats", nkey_nats.url, "--dry-run"], cwd=REPO,
        env=up_env(home, {"NATS_AUTH_NKEY": nkey_nats.seed}), capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert clear.returncode == 0, clear.stdout + clear.stderr  # the seed's text works for it too
    plan = subprocess.run(
        [sys.executable, "-m", "launcher", "plan", "mocker", "--namespace", ns, "--json"],
        cwd=REPO, env=up_env(home, env), capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip
    assert '"NATS_AUTH_NKEY": "***"' in plan.stdout, plan.stdout + plan.stderr
    assert launcher.stop() == 0, launcher.dump()
    shown = [plan.stdout, plan.stderr, clear.stdout, clear.stderr, *launcher.err, *launcher.out]
    shown += [p.read_text(errors="replace") for p in (launcher.state_dir / "logs").glob("*.log")]
    assert not any(nkey_nats.seed in text for text in shown)


def test_up_logs_in_to_an_operator_mode_nats_with_a_credentials_file(
    started: list[Launcher], tmp_path: Path, plain_etcd: PrivateEtcd
) -> None:
    operator = natsjwt.make(tmp_path / "jwt")
    with _nats_server(tmp_path, operator.config) as nats_port:
        assert b"Authorization Violation" in nats_login(nats_port)
        env = {"ETCD_ENDPOINTS": plain_etcd.url, "NATS_SERVER": f"nats://127.0.0.1:{nats_port}",
               "DYNLAUNCH_INFRA__NATS__CREDENTIALS_FILE": str(operator.creds)}  # fmt: skip
        launcher, port = up_mocker(started, tmp_path, tag="creds", env=env)
        launcher.wait_ready(180)
        assert chat_ok(port)
        for child in ("frontend", "worker-0"):
            got = procs.environ(launcher.child_pid(child))
            # a path, as given; only dynlaunch hands it on (infra.nats.credentials_file)
            assert got["NATS_AUTH_CREDENTIALS_FILE"] == str(operator.creds)
        assert launcher.stop() == 0, launcher.dump()
    shown = [*launcher.err, *launcher.out]
    shown += [p.read_text(errors="replace") for p in (launcher.state_dir / "logs").glob("*.log")]
    assert not any(operator.seed in text for text in shown)
