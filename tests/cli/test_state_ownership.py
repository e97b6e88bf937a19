"""dynlaunch deletes only what it created, and a pid alone is not an identity: the real CLI and
real etcd, nats-server, `sleep` processes; etcd is read through its raw JSON gateway, not ours."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
import test_cli_errors as cli_errors
from launcher_run import REPO, Launcher, up_env

from testkit import procs
from testkit.etcd import Gateway, PrivateEtcd
from testkit.net import free_port, poll_for

pytestmark = pytest.mark.integration
LOCK_PREFIX = "dynlaunch/locks/"


def run_cli(
    args: list[str], home: Path, env: Mapping[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """test_cli_errors' `run_cli`, with the session's cache (the tiny model, made once)."""
    cache = {"XDG_CACHE_HOME": os.environ["XDG_CACHE_HOME"]}
    return cli_errors.run_cli(args, home, cache | dict(env or {}), timeout)


def etcd_get(url: str, key: str, state: Path | None = None) -> dict[str, object] | None:
    """The key as etcd's own gateway returns it (value decoded, lease), or None; with ``state``,
    logged in with that run's generated credentials."""
    kv = (Gateway(url) if state is None else Gateway.of_run(state, url)).get(key)
    return None if kv is None else {"value": kv[1].decode(), "lease": kv[2]}


def etcd_put(url: str, key: str, value: str, state: Path | None = None) -> None:
    (Gateway(url) if state is None else Gateway.of_run(state, url)).put(key, value)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture
def etcds() -> Iterator[list[PrivateEtcd]]:
    started: list[PrivateEtcd] = []
    yield started
    for server in started:
        server.stop()


@pytest.fixture
def nats(tmp_path: Path) -> Iterator[str]:
    client, monitor = free_port(), free_port()
    argv = ["nats-server", "-a", "127.0.0.1", "-p", str(client), "-m", str(monitor), "-js",
            "-sd", str(tmp_path / "nats-js")]  # fmt: skip
    with open(tmp_path / "nats.log", "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        poll_for(lambda: _answers(f"http://127.0.0.1:{monitor}/healthz"), 30, "NATS to answer")
        yield f"nats://127.0.0.1:{client}"
    finally:
        proc.terminate()
        proc.wait(20)


def _start_of(pid: int) -> int:
    start = procs.start_time(pid)
    assert start is not None, pid
    return start


# -- deletes only what it created ---------------------------------------------------------------


def test_a_failed_up_leaves_an_external_etcd_and_its_data_dir_alone(
    tmp_path: Path, etcds: list[PrivateEtcd], nats: str
) -> None:
    state = tmp_path / "state"
    etcd = PrivateEtcd(tmp_path, data_dir=state / "etcd").start()  # its data dir is STATE/etcd
    etcds.append(etcd)
    etcd_put(etcd.url, "precious", "v1")
    (state / "nats").mkdir()
    (state / "nats" / "keep").write_text("not dynlaunch's")
    config = tmp_path / "fast.yaml"
    config.write_text("infra:\n  connect_timeout_s: 2\n")
    env = {"ETCD_ENDPOINTS": etcd.url, "NATS_SERVER": f"nats://127.0.0.1:{free_port()}"}
    common = ["up", "mocker", "--namespace", "own", "--state-dir", str(state), "-c", str(config)]
    bad_flag = run_cli([*common, "--workers", "0"], tmp_path, env)
    assert bad_flag.returncode == 2, bad_flag.stderr
    no_nats = run_cli([*common, "--http-port", str(free_port())], tmp_path, env)
    assert no_nats.returncode == 3, no_nats.stderr  # NATS unreachable: a runtime failure
    assert "NATS" in no_nats.stderr
    etcd_put(etcd.url, LOCK_PREFIX + "own", "other-host pid 1 start 1 pidns x run r")
    held = run_cli(
        [*common, "--http-port", str(free_port())], tmp_path, env | {"NATS_SERVER": nats}
    )
    assert held.returncode == 2, held.stderr  # fails after the state dir is taken: the lock
    assert "already run by dynlaunch on other-host" in held.stderr
    assert (state / "etcd" / "member").is_dir()
    assert (state / "nats" / "keep").read_text() == "not dynlaunch's"
    assert not (state / "infra").exists()  # external infra: no data dir of ours at all
    assert etcd_get(etcd.url, "precious") == {"value": "v1", "lease": 0}
    etcd.stop()  # what is on disk, not what the running etcd still holds open
    etcd.start()
    assert etcd_get(etcd.url, "precious") == {"value": "v1", "lease": 0}


def test_an_unmarked_infra_dir_is_refused_with_exit_2_and_kept(tmp_path: Path) -> None:
    state = tmp_path / "state"
    (state / "infra" / "etcd").mkdir(parents=True)
    (state / "infra" / "etcd" / "keep").write_text("theirs")
    done = run_cli(["up", "mocker", "--state-dir", str(state), "--http-port", str(free_port())],
                   tmp_path)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [done.stderr.strip()]  # one line
    assert "not created by dynlaunch" in done.stderr
    assert (state / "infra" / "etcd" / "keep").read_text() == "theirs"


def test_embedded_etcd_starts_empty_and_only_the_marked_dir_is_wiped(tmp_path: Path) -> None:
    state = tmp_path / "state"
    for name in ("etcd", "nats"):  # STATE/etcd of an older layout, or of someone else
        (state / name).mkdir(parents=True)
        (state / name / "keep").write_text("theirs")
    port = free_port()
    first = Launcher(["mocker", "--namespace", "wipe", "--http-port", str(port)], tmp_path)
    try:
        first.wait_ready()
        url = str(first.info()["etcd"])
        etcd_put(url, "stale/registration", "from run 1", first.state_dir)
        assert first.stop() == 0, first.dump()
    finally:
        first.kill()
    marker = json.loads((state / "infra" / "DYNLAUNCH-OWNED.json").read_text())
    assert marker["created_by"] == "dynlaunch"
    assert (state / "infra" / "etcd" / "member").is_dir()
    second = Launcher(["mocker", "--namespace", "wipe", "--http-port", str(port)], tmp_path)
    try:
        second.wait_ready()
        assert etcd_get(str(second.info()["etcd"]), "stale/registration", state) is None
        assert second.stop() == 0, second.dump()
    finally:
        second.kill()
    for name in ("etcd", "nats"):
        assert (state / name / "keep").read_text() == "theirs"
    assert (state / "logs" / "frontend.log").stat().st_size > 0  # logs are kept


# -- a pid alone is not an identity -------------------------------------------------------------


def test_status_and_down_do_not_take_a_reused_pid_for_the_launcher(
    tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    info = {"pid": sleeper.pid, "start": _start_of(sleeper.pid) + 3, "run_id": "dead",
            "namespace": "gone", "url": "http://127.0.0.1:1", "model": "tiny"}  # fmt: skip
    (state / "launcher.json").write_text(json.dumps(info))
    status = run_cli(["status", "--state-dir", str(state)], tmp_path)
    assert status.returncode == 1, status.stdout + status.stderr
    assert "no running dynlaunch" in status.stderr
    down = run_cli(["down", "--state-dir", str(state), "--timeout", "3"], tmp_path)
    assert down.returncode == 1, down.stdout + down.stderr
    assert sleeper.poll() is None, "down signalled a process that is not dynlaunch"
    assert procs.state(sleeper.pid) in ("S", "R")


def test_the_allocator_hands_out_ports_of_a_reused_pid(
    tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    reservations = tmp_path / f"dynlaunch-ports-{os.getuid()}"  # TMPDIR is tmp_path
    reservations.mkdir()
    port = free_port()
    mine = reservations / f"{sleeper.pid}.json"
    plan = ["plan", "mocker", "--http-port", str(port), "--json"]

    def reserve(start: int) -> None:
        held = {"pid": sleeper.pid, "start": start, "run_id": "r", "ports": [port]}
        mine.write_text(json.dumps(held))

    reserve(_start_of(sleeper.pid))  # the owner lives: its port is refused
    live = run_cli(plan, tmp_path)
    assert live.returncode == 2, live.stderr
    assert "reserved by another running dynlaunch" in live.stderr
    reserve(_start_of(sleeper.pid) + 1)  # the pid now belongs to another process
    reused = run_cli(plan, tmp_path)
    assert reused.returncode == 0, reused.stderr
    assert json.loads(reused.stdout)["url"].endswith(f":{port}")
    assert not mine.exists()  # the dead reservation was removed
    mine.write_text(json.dumps([port]))  # an old-format file: unverifiable, so dead
    old = run_cli(plan, tmp_path)
    assert old.returncode == 0, old.stderr


# -- the namespace lock of a crashed `up` --------------------------------------------------------


def _keep_alive(url: str, lease: int, stop: threading.Event) -> None:
    """Hold a dead launcher's lease alive (as its 10 s TTL does right after the crash) until
    ``stop``: the next `up` then meets the lock however slowly it starts."""
    while not stop.wait(1.0):
        try:
            httpx.post(f"{url}/v3/lease/keepalive", json={"ID": str(lease)}, timeout=5)
        except httpx.HTTPError:
            continue


def test_the_lock_of_a_sigkilled_up_is_taken_over_and_a_live_one_refuses(
    tmp_path: Path, etcds: list[PrivateEtcd], nats: str
) -> None:
    etcd = PrivateEtcd(tmp_path, data_dir=tmp_path / "etcd-data").start()
    etcds.append(etcd)
    env = {"ETCD_ENDPOINTS": etcd.url, "NATS_SERVER": nats}
    ns = f"lk-{uuid.uuid4().hex[:8]}"
    launchers: list[Launcher] = []

    def up(name: str) -> Launcher:
        (tmp_path / name).mkdir()
        args = ["mocker", "--namespace", ns, "--http-port", str(free_port())]
        launchers.append(Launcher(args, tmp_path / name, env=env))
        return launchers[-1]

    stop = threading.Event()
    try:
        crashed = up("a")
        crashed.wait_ready()
        crashed.proc.send_signal(signal.SIGKILL)  # dynlaunch only: its lease lives on
        crashed.wait(10)
        held = etcd_get(etcd.url, LOCK_PREFIX + ns)
        assert held is not None, "the dead launcher's lock expired already"
        assert f"pid {crashed.proc.pid} " in str(held["value"])
        keeper = threading.Thread(
            target=_keep_alive, args=(etcd.url, held["lease"], stop), daemon=True
        )
        keeper.start()
        second = up("b")
        second.wait_ready(timeout=180)
        assert second.stderr_has("took over namespace"), second.dump()
        now = etcd_get(etcd.url, LOCK_PREFIX + ns)
        assert now is not None
        assert f"pid {second.proc.pid} " in str(now["value"])
        stop.set()
        third = up("c")  # the second one is alive: refused, naming it
        assert third.wait(120) == 2, third.dump()
        assert any("already run by dynlaunch on" in line for line in third.err), third.dump()
        assert second.proc.poll() is None
        assert second.stop() == 0, second.dump()
    finally:
        stop.set()
        for launcher in launchers:
            launcher.kill()


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root")
def test_a_real_pid_reuse_in_a_pid_namespace(tmp_path: Path) -> None:
    """The dead launcher's pid really goes to a `sleep`: status and down see through it."""
    driver = REPO / "tests" / "children" / "pid_reuse_driver.py"
    env = up_env(tmp_path, {"PYTHONPATH": str(REPO)})
    done = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, str(driver),
         str(tmp_path / "state"), str(free_port())],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["sleep_pid"] == report["dead_pid"], report  # the pid was reused
    assert report["status"] == 1, report
    assert report["down"] == 1, report
    assert report["sleep_alive"], report
