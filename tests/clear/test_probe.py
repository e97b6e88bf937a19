"""The liveness probe of a registration's owner, against real sockets: only a refusal is dead.

`runner.probe` decides whether clear-namespace (and `up`'s stale-only clear before its frontend
starts) may revoke a worker's lease. A busy worker whose accept queue is full, a network that
cannot be reached, a host that is not this one: all "could not be probed", so the owner is kept.
Then the whole path: a live lease whose worker's port never accepts survives `clear-namespace`;
the same worker with refusing ports is revoked. And fencing's choice of lease (`up` revokes the
lease of the worker it restarts, found by its RPC port): the newest of this namespace at exactly
that host and port, never a neighbour's.
"""

from __future__ import annotations

import select
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from launcher.registrations.decide import Probe
from launcher.registrations.lock import lease_of_rpc_port
from launcher.registrations.runner import Endpoints, probe, run
from testkit.dynamo import put_worker_1x
from testkit.etcd import Gateway

REPO = Path(__file__).resolve().parents[2]


@contextmanager
def refusing_port() -> Iterator[int]:
    """A port bound but never listened on: a connect is answered with RST (refused), and the
    bind keeps anyone else from taking the port while the block runs."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


@contextmanager
def never_accepting_port() -> Iterator[int]:
    """A listener with backlog 0 whose accept queue is filled with connections nobody accepts:
    the kernel then drops new SYNs, so a connect neither succeeds nor is refused (it times out),
    as with a worker too busy to accept."""
    with ExitStack() as stack:
        srv = stack.enter_context(socket.socket())
        srv.bind(("127.0.0.1", 0))
        srv.listen(0)
        port = int(srv.getsockname()[1])
        for _ in range(16):
            client = stack.enter_context(socket.socket())
            client.setblocking(False)
            if client.connect_ex(("127.0.0.1", port)) == 0:
                continue
            _, writable, _ = select.select([], [client], [], 2.0)
            if not writable:  # this handshake never completed: the queue is full
                break
        else:
            pytest.fail("the accept queue never filled: every handshake completed")
        yield port


def test_a_listening_port_answers() -> None:
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(8)
        assert probe(f"127.0.0.1:{srv.getsockname()[1]}") is Probe.ANSWERS


def test_a_port_nobody_listens_on_is_refused() -> None:
    with refusing_port() as port:
        assert probe(f"127.0.0.1:{port}") is Probe.REFUSED
        assert probe(f"localhost:{port}") is Probe.REFUSED


def test_a_socket_that_never_accepts_is_unknown_not_refused() -> None:
    with never_accepting_port() as port:
        # Independent check: a raw connect to it really times out (it is not refused).
        with socket.socket() as raw:
            raw.settimeout(0.5)
            with pytest.raises(TimeoutError):
                raw.connect(("127.0.0.1", port))
        assert probe(f"127.0.0.1:{port}", timeout=0.5) is Probe.UNKNOWN


UNREACHABLE = """
import errno, socket, sys
sys.path.insert(0, sys.argv[1])
from launcher.registrations.runner import probe
with socket.socket() as raw:
    got = raw.connect_ex(("127.0.0.1", 9))
print(errno.errorcode.get(got, got), probe("127.0.0.1:9").name)
"""


def test_an_unreachable_network_is_unknown_not_refused() -> None:
    """In a network namespace of its own, loopback is down: a connect to 127.0.0.1 fails with
    ENETUNREACH (no packet leaves anything)."""
    done = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--net", sys.executable, "-c", UNREACHABLE,
         str(REPO)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ENETUNREACH", "UNKNOWN"]


@pytest.mark.parametrize(
    "addr",
    [
        "192.0.2.1:2379",  # TEST-NET-1: not an address of this host
        "[2001:db8::1]:2379",  # the IPv6 documentation range
        "example.invalid:80",  # a name other than localhost: never resolved
        "127.0.0.1:http",  # not a port number
        "127.0.0.1:",
    ],
)
def test_a_host_that_is_not_this_one_is_never_probed(addr: str) -> None:
    assert probe(addr) is Probe.UNKNOWN


# -- the whole path: probe -> decide -> apply --------------------------------------------------


def _lease(etcd_url: str) -> int:
    return Gateway(etcd_url).lease_grant(60)


def test_clear_keeps_a_live_lease_whose_worker_never_accepts(etcd_url: str, ns: str) -> None:
    gateway = Gateway(etcd_url)
    with never_accepting_port() as rpc, refusing_port() as system:
        lease = _lease(etcd_url)
        keys = put_worker_1x(etcd_url, ns, lease, rpc, system)
        decision = run(ns, Endpoints("etcd", etcd=etcd_url))
    assert decision.revoke == ()
    assert lease in gateway.leases()
    left = [kv[0] for kv in gateway.dump(f"v1/instances/{ns}/", f"v1/mdc/{ns}/")]
    assert left == sorted(k for k in keys if k.startswith(("v1/instances/", "v1/mdc/")))


def test_clear_revokes_a_live_lease_whose_worker_refuses(etcd_url: str, ns: str) -> None:
    """The control: the same worker whose ports refuse is dead, and its lease goes."""
    gateway = Gateway(etcd_url)
    with refusing_port() as rpc, refusing_port() as system:
        lease = _lease(etcd_url)
        put_worker_1x(etcd_url, ns, lease, rpc, system)
        decision = run(ns, Endpoints("etcd", etcd=etcd_url))
    assert decision.revoke == (lease,)
    assert lease not in gateway.leases()
    assert gateway.dump(f"v1/instances/{ns}/") == []


# -- fencing: which lease `up` revokes for a worker it restarts ----------------------------------


def test_fencing_picks_the_newest_lease_of_this_namespace_at_that_port(
    etcd_url: str, ns: str
) -> None:
    port, other_port = 23001, 23002
    old, new, elsewhere, neighbour = (_lease(etcd_url) for _ in range(4))
    put_worker_1x(etcd_url, ns, old, port, None)
    put_worker_1x(etcd_url, ns, new, port, None)  # the restarted worker's previous life
    put_worker_1x(etcd_url, ns, elsewhere, other_port, None)
    put_worker_1x(etcd_url, f"{ns}2", neighbour, port, None)  # `ns2` is not `ns`
    assert lease_of_rpc_port(etcd_url, ns, port) == new
    assert lease_of_rpc_port(etcd_url, ns, other_port) == elsewhere
    assert lease_of_rpc_port(etcd_url, f"{ns}2", port) == neighbour
    assert lease_of_rpc_port(etcd_url, ns, 23003) is None
    assert lease_of_rpc_port(etcd_url, ns, port, host="127.0.0.2") is None
    # A port that is a prefix of another (2300 vs 23001) is not the same port.
    assert lease_of_rpc_port(etcd_url, ns, 2300) is None
