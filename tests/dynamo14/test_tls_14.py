"""On Dynamo 1.4.2 an external NATS that requires TLS is refused at once (exit 3, one line that
says 1.4.2 cannot speak TLS to NATS, no secret shown), with or without the CA given: 1.4.2's NATS
client has no TLS settings and panics on such a server (measured; 1.6.1 connects:
tests/security/test_nats_tls_16.py). Real etcd and a TLS-only nats-server; no Dynamo process
starts, which the server's own /connz confirms."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from launcher_run import REPO, up_env

from testkit.etcd import PrivateEtcd
from testkit.net import free_port
from testkit.secured import SecuredNats, make_pki

pytestmark = pytest.mark.integration

NATS_PW = "nats-tls14-pw-2b7d90"


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[PrivateEtcd]:
    kit = PrivateEtcd(tmp_path / "etcd").start(60)
    try:
        yield kit
    finally:
        kit.stop()


@pytest.fixture
def tls_nats(tmp_path: Path) -> Iterator[SecuredNats]:
    nats = SecuredNats(make_pki(tmp_path / "pki"), NATS_PW).start(tmp_path / "nats.conf")
    try:
        yield nats
    finally:
        nats.stop()


@pytest.mark.parametrize("with_ca", [True, False])
def test_a_nats_that_requires_tls_is_one_line_exit_3(
    tmp_path: Path, dynamo14_python: Path, etcd: PrivateEtcd, tls_nats: SecuredNats, with_ca: bool
) -> None:
    env = {
        "ETCD_ENDPOINTS": etcd.url,
        "NATS_SERVER": tls_nats.url,
        "NATS_AUTH_USERNAME": "dynamo",
        "NATS_AUTH_PASSWORD": NATS_PW,
        "DYNLAUNCH_DYNAMO__PYTHON": str(dynamo14_python),
    }
    if with_ca:
        env |= {"NATS_TLS_CA": tls_nats.pki.ca.cert, "NATS_TLS_CERT": tls_nats.pki.launcher.cert,
                "NATS_TLS_KEY": tls_nats.pki.launcher.key}  # fmt: skip
    argv = ["up", "mocker", "--namespace", "tls14", "--http-port", str(free_port()),
            "--state-dir", str(tmp_path / "state")]  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "launcher", *argv], cwd=REPO, env=up_env(tmp_path, env),
        capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert done.returncode == 3, done.stderr
    errors = [x for x in done.stderr.splitlines() if x.startswith("dynlaunch: error")]
    assert len(errors) == 1, done.stderr
    assert "requires TLS" in errors[0]
    assert "Dynamo 1.4.2 cannot speak" in errors[0]
    assert NATS_PW not in done.stdout + done.stderr
    assert not tls_nats.dynamo_tls_clients()  # no Dynamo process got in
