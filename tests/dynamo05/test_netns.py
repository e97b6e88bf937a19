"""testkit.netns: the command runs in a namespace of its own with 127.0.0.2 as its only global
address, and the host's network is left as it was (checked from outside: /proc and `ip`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from testkit import netns

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(netns.available() is not None, reason=str(netns.available()))


def test_command_runs_in_its_own_namespace() -> None:
    host_ns, host_addrs = netns.net_ns_id(), netns.global_ipv4()
    code = (
        "from testkit import netns; import os; "
        "print(netns.net_ns_id(), netns.global_ipv4(), netns.inside(), os.getpid())"
    )
    out = subprocess.run(
        netns.wrap([sys.executable, "-c", code]),
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split(maxsplit=1)
    assert int(out[0]) != host_ns
    assert "['127.0.0.2'] True" in out[1]
    assert netns.net_ns_id() == host_ns
    assert netns.global_ipv4() == host_addrs  # nothing added to the host
    assert netns.inside() is (netns.ADDRESS in host_addrs)  # the 0.5 leg runs inside one


def test_exit_status_and_route() -> None:
    assert netns.main(["--", "sh", "-c", "exit 7"]) == 7
    route = subprocess.run(
        netns.wrap(["ip", "route", "show", "default"]), capture_output=True, text=True, check=True
    ).stdout
    assert route.split()[:3] == ["default", "dev", "lo"]
    assert f"src {netns.ADDRESS}" in route


def test_empty_command_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        netns.wrap([])
    assert netns.main([]) == 2
