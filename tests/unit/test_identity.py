"""A pid alone is not an identity, and dynlaunch deletes only what it created: real processes
(`sleep`), real files, the real state dir; the answers are checked against /proc and the disk."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launcher import control, procid
from launcher.errors import ConfigError, NotRunningError
from launcher.registrations import lock
from launcher.statedir import INFRA_DIR, MARKER, StateDir
from testkit import procs
from testkit.net import poll_for


def _proc_start(pid: int) -> int:
    """Field 22 of /proc/PID/stat, read by the test kit independently of procid."""
    start = procs.start_time(pid)
    assert start is not None, pid
    return start


def test_start_time_is_field_22_and_a_zombie_has_none() -> None:
    assert procid.start_time(os.getpid()) == _proc_start(os.getpid())
    assert procid.same_process(os.getpid(), _proc_start(os.getpid()))
    # A name with spaces and ')' must not shift the fields: parse after the last ')'.
    code = "import sys, time; open('/proc/self/comm', 'w').write('a) b c'); print(); time.sleep(30)"
    odd = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        assert odd.stdout is not None
        assert odd.stdout.readline()
        assert Path(f"/proc/{odd.pid}/comm").read_text() == "a) b c\n"
        assert procid.start_time(odd.pid) == _proc_start(odd.pid)
    finally:
        odd.kill()
    # killed, not reaped: a zombie is not alive
    poll_for(lambda: procs.state(odd.pid) == "Z", 30, "the killed child to be a zombie")
    assert Path(f"/proc/{odd.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    assert procid.start_time(odd.pid) is None
    odd.wait(10)
    odd.stdout.close()
    assert procid.start_time(odd.pid) is None
    assert procid.start_time(0) is None


def test_same_pid_other_start_time_is_not_the_same_process(
    sleeper: subprocess.Popen[bytes],
) -> None:
    real = _proc_start(sleeper.pid)
    assert procid.same_process(sleeper.pid, real)
    assert not procid.same_process(sleeper.pid, real - 1)
    assert not procid.same_process(sleeper.pid, None)  # an old record: cannot verify
    assert not procid.same_process(str(sleeper.pid), real)


def _launcher_json(state: Path, pid: int, start: int | None) -> None:
    state.mkdir(parents=True, exist_ok=True)
    info: dict[str, object] = {"pid": pid, "run_id": "r", "namespace": "ns", "url": "u"}
    if start is not None:
        info["start"] = start
    (state / "launcher.json").write_text(json.dumps(info))


def test_read_info_and_stop_refuse_a_reused_pid(
    sleeper: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    real = _proc_start(sleeper.pid)
    _launcher_json(tmp_path, sleeper.pid, real + 7)
    assert control.read_info(tmp_path) is None
    _launcher_json(tmp_path, sleeper.pid, None)  # written before start times were recorded
    assert control.read_info(tmp_path) is None
    with pytest.raises(NotRunningError):
        control.stop({"pid": sleeper.pid, "start": real + 7}, timeout=2)
    time.sleep(0.3)
    assert sleeper.poll() is None, "an unrelated process got the signal"
    _launcher_json(tmp_path, sleeper.pid, real)  # the matching identity is found and stopped
    info = control.read_info(tmp_path)
    assert info is not None
    assert control.stop(info, timeout=10)
    assert sleeper.wait(10) == -15


def _holder(pid: int, start: int, host: str | None = None) -> str:
    return (
        f"{host or socket.gethostname()} pid {pid} start {start} "
        f"pidns {procid.pid_namespace()} run r1"
    )


def test_a_lock_holder_is_dead_only_when_this_host_proves_it(
    sleeper: subprocess.Popen[bytes],
) -> None:
    real = _proc_start(sleeper.pid)
    assert not lock.holder_is_dead(_holder(sleeper.pid, real))
    assert lock.holder_is_dead(_holder(sleeper.pid, real + 1))  # the pid was reused
    assert not lock.holder_is_dead(_holder(sleeper.pid, real + 1, host="other-host"))
    other_ns = f"{socket.gethostname()} pid {sleeper.pid} start {real + 1} pidns pid:[1] run r"
    assert not lock.holder_is_dead(other_ns)  # another container with our hostname
    assert not lock.holder_is_dead(f"{socket.gethostname()} pid {sleeper.pid}")  # old, alive
    assert lock.holder_is_dead(f"{socket.gethostname()} pid {2**22 + 1}")  # old, gone
    assert not lock.holder_is_dead("")
    mine = lock.lock_holder("abc")
    assert mine.split()[:2] == [socket.gethostname(), "pid"]
    assert not lock.holder_is_dead(mine)


def test_infra_data_is_wiped_only_in_our_marked_dir(tmp_path: Path) -> None:
    state = tmp_path / "state"
    infra = state / INFRA_DIR
    with StateDir(state, "ns", "run-1", ["etcd", "nats"]):
        assert json.loads((infra / MARKER).read_text())["created_by"] == "dynlaunch"
    (infra / "etcd" / "member").mkdir(parents=True)
    (infra / "nats" / "jetstream").mkdir(parents=True)
    (state / "logs" / "frontend.log").write_text("kept\n")
    with StateDir(state, "ns", "run-2", ["etcd"]):  # NATS external this time
        assert not (infra / "etcd").exists()
        assert (infra / "nats" / "jetstream").is_dir()
    with StateDir(state, "ns", "run-3", []):  # all external: nothing is touched
        assert (infra / "nats" / "jetstream").is_dir()
    assert (state / "logs" / "frontend.log").read_text() == "kept\n"


def test_an_unmarked_infra_dir_is_refused_and_left_alone(tmp_path: Path) -> None:
    state = tmp_path / "state"
    (state / INFRA_DIR / "etcd").mkdir(parents=True)
    (state / INFRA_DIR / "etcd" / "keep").write_text("theirs")
    (state / "etcd").mkdir()  # an older layout's, or someone else's: never ours to delete
    (state / "etcd" / "keep").write_text("theirs")
    with (
        pytest.raises(ConfigError, match="not created by dynlaunch"),
        StateDir(state, "ns", "r", ["etcd"]),
    ):
        pass
    assert (state / INFRA_DIR / "etcd" / "keep").read_text() == "theirs"
    assert (state / "etcd" / "keep").read_text() == "theirs"
    assert not (state / "launcher.pid").exists()
    with StateDir(state, "ns", "r", []):  # external infra: no refusal, nothing touched
        pass
    assert (state / INFRA_DIR / "etcd" / "keep").read_text() == "theirs"
