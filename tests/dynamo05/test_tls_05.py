"""`infra.tls: true` with Dynamo 0.5.0: its frontend and mockers reach the embedded etcd over TLS
with ETCD_AUTH_CA/CLIENT_CERT/CLIENT_KEY (PEM text, certificate CN root, no username) and serve;
etcd refuses a TLS client without a certificate (checked with Python's ssl, outside dynlaunch)."""

from __future__ import annotations

import http.client
import ssl
import uuid
from pathlib import Path

import pytest
import yaml
from launcher_run import Launcher, chat

from testkit.etcd import Gateway
from testkit.net import free_port

pytestmark = pytest.mark.integration


def _health(url: str, context: ssl.SSLContext) -> int:
    host, port = url.removeprefix("https://").rsplit(":", 1)
    conn = http.client.HTTPSConnection(host, int(port), timeout=10, context=context)
    try:
        conn.request("GET", "/health")
        return conn.getresponse().status
    finally:
        conn.close()


def test_dynamo_05_serves_through_an_etcd_that_wants_client_certificates(
    started: list[Launcher], tmp_path: Path, dynamo05_python: Path
) -> None:
    config = tmp_path / "tls.yaml"
    config.write_text(yaml.safe_dump({"infra": {"tls": True}}))
    port, ns = free_port(), f"d05tls-{uuid.uuid4().hex[:8]}"
    env = {"DYNLAUNCH_DYNAMO__PYTHON": str(dynamo05_python)}
    argv = ["mocker", "--namespace", ns, "--http-port", str(port), "-c", str(config)]
    launcher = Launcher(argv, tmp_path, env)
    started.append(launcher)
    launcher.wait_ready(240)
    answer = chat(port, stream=False)
    assert answer.status_code == 200, answer.text
    info = launcher.info()
    etcd, state = str(info["etcd"]), launcher.state_dir
    assert (info["dynamo_version"], etcd[:8]) == ("0.5.0", "https://")
    assert Gateway.of_run(state).dump(f"instances/{ns}/")  # the 0.5 worker registered over TLS
    no_cert = ssl.create_default_context(cafile=str(state / "tls" / "ca.pem"))
    with pytest.raises((ssl.SSLError, OSError)):
        _health(etcd, no_cert)
    assert launcher.stop() == 0, launcher.dump()
