"""`dynlaunch scale` and `dynlaunch reload` (and SIGHUP) against the real stack (etcd, NATS,
frontend, mockers) under a steady request stream: scaling 1 -> 3 -> 1 fails no request and etcd
holds the right number of generate instances each time, each added worker serving requests (its
own metrics); a reload that changes a worker engine argument replaces only the workers (their new
argv read from /proc, the frontend's pid the same); a reload that changes the etcd endpoint is
refused (exit 2) and changes nothing; SIGHUP reloads the config file `up` was given."""

from __future__ import annotations

import os
import re
import signal
from functools import partial
from pathlib import Path

import httpx
import pytest
from launcher_run import Launcher, Load, up_mocker

from testkit import procs
from testkit.etcd import Gateway
from testkit.net import poll_for

pytestmark = pytest.mark.integration
GENERATE = re.compile(r'^dynamo_component_requests_total\{.*dynamo_endpoint="generate".*\} (\S+)$')


def _instances(launcher: Launcher) -> int:
    """Generate instances in etcd, read with etcd's own JSON gateway."""
    ns = str(launcher.info()["namespace"])
    return len(Gateway.of_run(launcher.state_dir).dump(f"v1/instances/{ns}/backend/generate/"))


def _workers(launcher: Launcher) -> dict[str, int]:
    return {c["name"]: c["pid"] for c in launcher.status()["children"] if c["role"] == "worker"}


def _requests_served(launcher: Launcher, name: str) -> float:
    child = next(c for c in launcher.status()["children"] if c["name"] == name)
    text = httpx.get(f"http://127.0.0.1:{child['ports']['system']}/metrics", timeout=10).text
    return sum(float(m.group(1)) for line in text.splitlines() if (m := GENERATE.match(line)))


def _serves(launcher: Launcher, name: str) -> bool:
    return _requests_served(launcher, name) > 0


def _counts_show(launcher: Launcher, names: list[str]) -> None:
    """launcher.json lists the model's workers as they run now, and `status` counts them."""
    recorded = launcher.info()["models"]
    assert isinstance(recorded, dict)
    assert recorded["tiny"]["workers"] == names, recorded
    report = launcher.status()["models"][0]
    assert (report["workers"], report["running"], report["instances"]) == (len(names),) * 3


def _more_requests(load: Load, n: int = 10) -> None:
    after = len(load.results)
    poll_for(lambda: len(load.results) >= after + n, 120, f"{n} more requests")


def test_scale_1_to_3_to_1_under_load_fails_no_request(
    started: list[Launcher], tmp_path: Path
) -> None:
    launcher, port = up_mocker(started, tmp_path, "--workers", "1", tag="sc")
    launcher.wait_ready()
    first = launcher.child_pid("worker-0")
    load = Load(port, clients=3)
    _more_requests(load)
    up = launcher.cli(tmp_path, "scale", "--workers", "3")
    assert up.returncode == 0, up.stdout + up.stderr + launcher.dump()
    workers = _workers(launcher)
    assert set(workers) == {"worker-0", "worker-1", "worker-2"}, workers
    for name in ("worker-1", "worker-2"):
        assert procs.ppid(workers[name]) == launcher.proc.pid  # /proc: live children of the run
        assert f"{name} pid={workers[name]} added" in up.stdout, up.stdout
    assert _instances(launcher) == 3  # registered before the command reported them
    _counts_show(launcher, ["worker-0", "worker-1", "worker-2"])
    # the frontend routes to the new ones: their own counters grow
    for name in ("worker-1", "worker-2"):
        poll_for(partial(_serves, launcher, name), 60, f"{name} serving")
    down = launcher.cli(tmp_path, "scale", "--workers", "1")
    assert down.returncode == 0, down.stdout + down.stderr + launcher.dump()
    # highest index first
    assert down.stdout.index("remove worker-2") < down.stdout.index("remove worker-1"), down.stdout
    assert _instances(launcher) == 1
    assert _workers(launcher) == {"worker-0": first}
    _counts_show(launcher, ["worker-0"])
    for name in ("worker-1", "worker-2"):
        assert procs.state(workers[name]) is None  # stopped and reaped
    _more_requests(load)
    results = load.stop()
    assert Load.failed(results) == 0, f"{Load.failed(results)} of {len(results)} failed"
    same = launcher.cli(tmp_path, "scale", "--workers", "1")
    assert same.returncode == 0, same.stdout + same.stderr
    assert "already" in same.stdout, same.stdout
    assert launcher.stop() == 0


def test_scale_refuses_bad_input_with_exit_2_and_changes_nothing(
    started: list[Launcher], tmp_path: Path
) -> None:
    launcher, _port = up_mocker(started, tmp_path, tag="sc")
    launcher.wait_ready()
    before = _workers(launcher)
    bad = [(["--workers", "0"], "at least 1"),
           (["--workers", "2", "--model", "other"], "this run serves tiny")]  # fmt: skip
    for args, text in bad:
        done = launcher.cli(tmp_path, "scale", *args)
        assert done.returncode == 2, done.stdout + done.stderr
        assert text in done.stderr, done.stderr
        assert "Traceback" not in done.stderr, done.stderr
    assert _workers(launcher) == before
    assert launcher.stop() == 0


def _config(path: Path, ratio: str, etcd: str | None = None) -> Path:
    infra = f"infra:\n  etcd:\n    endpoints: {etcd}\n" if etcd else ""
    path.write_text(f"workers:\n  count: 2\n  extra_args: ['--speedup-ratio', '{ratio}']\n{infra}")
    return path


@pytest.mark.parametrize("how", ["cli", "sighup"])
def test_reload_of_a_worker_argument_replaces_only_the_workers(
    started: list[Launcher], tmp_path: Path, how: str
) -> None:
    config = _config(tmp_path / "dynlaunch.yaml", "1.0")
    launcher, port = up_mocker(started, tmp_path, "-c", str(config), tag="rl")
    launcher.wait_ready()
    frontend = launcher.child_pid("frontend")
    old = _workers(launcher)
    assert all(procs.cmdline(pid)[-2:] == ["--speedup-ratio", "1.0"] for pid in old.values())
    load = Load(port, clients=3)
    _more_requests(load)
    _config(config, "5.0")
    if how == "cli":
        done = launcher.cli(tmp_path, "reload")
        assert done.returncode == 0, done.stdout + done.stderr + launcher.dump()
        assert "worker-0: argv: --speedup-ratio 1.0 -> 5.0" in done.stdout, done.stdout
    else:
        os.kill(launcher.proc.pid, signal.SIGHUP)
        poll_for(lambda: launcher.stderr_has("reload of dynlaunch.yaml done"), 180, "the reload")
    new = _workers(launcher)
    assert set(new) == {"worker-0.g2", "worker-1.g2"}, new
    for pid in new.values():
        assert procs.cmdline(pid)[-2:] == ["--speedup-ratio", "5.0"]  # /proc: the new argv
        assert procs.ppid(pid) == launcher.proc.pid
    assert all(procs.state(pid) is None for pid in old.values())
    assert launcher.child_pid("frontend") == frontend
    assert launcher.starts("frontend") == 1
    assert procs.ppid(frontend) == launcher.proc.pid  # the same frontend process serves on
    _more_requests(load)
    results = load.stop()
    assert Load.failed(results) == 0, f"{Load.failed(results)} of {len(results)} failed"
    assert _instances(launcher) == 2
    assert launcher.proc.poll() is None  # SIGHUP no longer stops the run
    assert launcher.stop() == 0


def test_reload_changing_the_etcd_endpoint_is_refused_and_changes_nothing(
    started: list[Launcher], tmp_path: Path
) -> None:
    config = _config(tmp_path / "dynlaunch.yaml", "1.0")
    launcher, _port = up_mocker(started, tmp_path, "-c", str(config), tag="rl")
    launcher.wait_ready()
    pids = {c["name"]: c["pid"] for c in launcher.status()["children"]}
    other = _config(tmp_path / "other.yaml", "5.0", etcd="http://127.0.0.1:2379")
    done = launcher.cli(tmp_path, "reload", "--config", str(other))
    assert done.returncode == 2, done.stdout + done.stderr + launcher.dump()
    error = done.stderr.strip()
    assert error.startswith("dynlaunch: error: "), error
    assert "\n" not in error, error
    assert "the etcd endpoints" in error, error
    assert "embedded -> http://127.0.0.1:2379" in error, error
    assert "dynlaunch down" in error, error
    assert "nothing was changed" in error, error
    assert {c["name"]: c["pid"] for c in launcher.status()["children"]} == pids
    assert all(procs.ppid(pid) == launcher.proc.pid for pid in pids.values())
    assert launcher.starts("worker-0.g2") == 0
    # SIGHUP with the same refusal in the run's file: logged, nothing changed, the run goes on
    _config(config, "5.0", etcd="http://127.0.0.1:2379")
    os.kill(launcher.proc.pid, signal.SIGHUP)
    poll_for(lambda: launcher.stderr_has("refused: reload of"), 120, "the refusal")
    assert {c["name"]: c["pid"] for c in launcher.status()["children"]} == pids
    assert launcher.proc.poll() is None
    assert launcher.stop() == 0
