"""Session fixtures for the clear-namespace tests: a real etcd and a real nats-server (JetStream),
each on reserved loopback ports in a temporary directory, stopped at teardown."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from clearkit import Server

from launcher import ports
from launcher.plan import PortSlot
from launcher.registrations.etcd import Etcd
from testkit.etcd import Gateway, PrivateEtcd
from testkit.net import poll_for

SPARE_PORTS = 16


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="session")
def port_pool() -> Iterator[list[int]]:
    """Ports in 20000-32767 reserved for this test process (concurrent `up` runs skip them)."""
    slots = [
        PortSlot(f"clear-test.{i}", None, "tests/clear", 32767) for i in range(SPARE_PORTS + 4)
    ]
    got = ports.allocate(slots, seed=uuid.uuid4().hex, bind_hosts={}, reserve_for=os.getpid())
    yield list(got.values())
    ports.release(os.getpid())


@pytest.fixture(scope="session")
def free_ports(port_pool: list[int]) -> list[int]:
    """Reserved ports nothing listens on, for tests to hand out (after etcd's and NATS's)."""
    return port_pool[4:]


@pytest.fixture(scope="session")
def etcd_url(tmp_path_factory: pytest.TempPathFactory, port_pool: list[int]) -> Iterator[str]:
    if shutil.which("etcd", path="/usr/bin:" + os.environ.get("PATH", "")) is None:
        pytest.fail("etcd is not installed: apt-get install etcd-server")
    root = tmp_path_factory.mktemp("etcd")
    server = PrivateEtcd(root, (port_pool[0], port_pool[1]), name="cleartest").start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def nats_url(tmp_path_factory: pytest.TempPathFactory, port_pool: list[int]) -> Iterator[str]:
    binary = shutil.which("nats-server", path="/usr/sbin:/usr/bin:" + os.environ.get("PATH", ""))
    if binary is None:
        pytest.fail("nats-server is not installed: apt-get install nats-server")
    root = tmp_path_factory.mktemp("nats")
    client, monitor = port_pool[2], port_pool[3]
    url = f"nats://127.0.0.1:{client}"
    server = Server(
        [binary, "-a", "127.0.0.1", "-p", str(client), "-m", str(monitor),
         "-js", "-sd", str(root / "js")],
        root / "nats.log",
    )  # fmt: skip
    try:
        healthz = f"http://127.0.0.1:{monitor}/healthz"
        poll_for(lambda: answers(healthz) or not server.alive(), 20, "nats-server to answer")
        assert server.alive(), server.tail()
        yield url
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def _etcd_left_as_found(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test that uses the session etcd leaves it as it found it: keys created while it ran are
    deleted and leases granted while it ran revoked (over etcd's gateway), so no later test sees
    them, whatever the order."""
    if "etcd_url" not in request.fixturenames:
        yield
        return
    gateway = Gateway(request.getfixturevalue("etcd_url"))
    start, leases = gateway.revision(), gateway.leases()
    yield
    for lease in gateway.leases() - leases:
        gateway.lease_revoke(lease)
    for key, *_, created in gateway.dump():
        if created > start:
            gateway.delete(key)


@pytest.fixture
def gateway(etcd_url: str) -> Gateway:
    """The session etcd's own JSON gateway: tests check through it, apart from launcher's client."""
    return Gateway(etcd_url)


@pytest.fixture
def etcd(etcd_url: str) -> Iterator[Etcd]:
    with Etcd(etcd_url) as client:
        yield client


@pytest.fixture
def ns() -> str:
    """A fresh namespace per test, so tests never see each other's keys."""
    return f"t{uuid.uuid4().hex[:8]}"


@pytest.fixture
def tmp_state(tmp_path: Path) -> Path:
    """A state dir with no running launcher: the CLI must not find endpoints there."""
    return tmp_path / "state"


@pytest.fixture
def leases(etcd: Etcd) -> Iterator[list[int]]:
    """Leases a test grants (60 s, longer than any test); revoked at teardown."""
    granted: list[int] = []
    yield granted
    for lease in granted:
        etcd.lease_revoke(lease)
