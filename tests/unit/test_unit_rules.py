"""Core rules the other tables leave out: the exit codes a child's end gives the launcher (from
real processes' wait statuses), and the port allocator never handing out a port twice (not one
another live launcher reserved, not one a fixed slot of the same plan holds)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
import zlib
from collections.abc import Iterator

import pytest

from launcher import ports
from launcher.errors import EXIT_FAILED, EXIT_SIGNAL_BASE
from launcher.plan import PortSlot
from launcher.supervision.lifecycle import exit_code, failed, run_exit_code, signal_exit_code


def _status_of(code: str, sig: signal.Signals | None = None) -> int:
    """The wait status of a real child that runs ``code`` (and gets ``sig`` once started)."""
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE)
    if sig is not None:
        os.kill(proc.pid, sig)
    _, status = os.waitpid(proc.pid, 0)
    proc.returncode = 0  # reaped above: keep Popen from waiting again
    assert proc.stdin is not None
    proc.stdin.close()
    return status


BLOCK = "import sys; sys.stdin.read()"


@pytest.mark.parametrize(
    ("code", "sig", "child", "run"),
    [
        ("import sys; sys.exit(3)", None, 3, 3),
        ("import sys; sys.exit(1)", None, 1, 1),
        # Dynamo exits 0 after losing its etcd lease: the run still ends as a failure.
        ("pass", None, 0, EXIT_FAILED),
        (BLOCK, signal.SIGKILL, EXIT_SIGNAL_BASE + 9, EXIT_SIGNAL_BASE + 9),
        (BLOCK, signal.SIGTERM, EXIT_SIGNAL_BASE + 15, EXIT_SIGNAL_BASE + 15),
    ],
)
def test_exit_codes_from_real_wait_statuses(
    code: str, sig: signal.Signals | None, child: int, run: int
) -> None:
    status = _status_of(code, sig)
    assert exit_code(status) == child
    assert failed(status) is (child != 0)
    assert run_exit_code(status) == run


def test_a_signal_ends_the_launcher_with_128_plus_its_number() -> None:
    assert signal_exit_code(signal.SIGTERM) == 143
    assert signal_exit_code(signal.SIGINT) == 130


# -- ports -------------------------------------------------------------------------------------


@pytest.fixture
def other_launcher() -> Iterator[int]:
    """A live process standing in for another running dynlaunch; its reservation is removed."""
    proc = subprocess.Popen([sys.executable, "-c", BLOCK], stdin=subprocess.PIPE)
    try:
        yield proc.pid
    finally:
        ports.release(proc.pid)
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(30)


def _slots(count: int) -> list[PortSlot]:
    return [PortSlot(f"rules.{n}", None, "tests/unit", 32767) for n in range(count)]


def test_a_port_another_live_launcher_reserved_is_not_handed_out(other_launcher: int) -> None:
    seed = uuid.uuid4().hex  # the same seed: both start looking at the same port
    theirs = ports.allocate(_slots(4), seed=seed, bind_hosts={}, reserve_for=other_launcher)
    # Independent check: the reservation file names the other launcher and its ports.
    held = json.loads((ports.reservation_dir() / f"{other_launcher}.json").read_text())
    assert (held["pid"], sorted(held["ports"])) == (other_launcher, sorted(theirs.values()))
    mine = ports.allocate(_slots(4), seed=seed, bind_hosts={}, reserve_for=None)
    assert set(mine.values()).isdisjoint(theirs.values())


def test_a_fixed_port_of_the_plan_is_not_handed_to_another_slot() -> None:
    """The port an automatic slot would pick first is taken by a fixed slot of the same plan."""
    low, high = ports.AUTO_RANGE
    for _ in range(50):
        seed = uuid.uuid4().hex
        first = low + zlib.crc32(seed.encode()) % (high - low) + 1
        if first < high and ports.is_free(first) and ports.is_free(first + 1):
            break
    else:
        pytest.fail("no free pair of ports found")
    slots = [PortSlot("rules.fixed", first, "tests/unit"), *_slots(2)]
    got = ports.allocate(slots, seed=seed, bind_hosts={}, reserve_for=None)
    assert got["rules.fixed"] == first
    assert len(set(got.values())) == 3, got
