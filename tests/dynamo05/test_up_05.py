"""`dynlaunch up mocker` against the real Dynamo 0.5.0 runtime (frontend and mockers from the 0.5
venv, dynlaunch from this one through `dynamo.python`), in the leg's network namespace."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from launcher_run import REPO, Launcher, Load, chat

from testkit import procs
from testkit.etcd import Gateway
from testkit.net import free_port, poll_for

pytestmark = pytest.mark.integration


def up05(started: list[Launcher], tmp: Path, python: Path, *args: str) -> tuple[Launcher, int]:
    port = free_port()
    ns = f"d05-{uuid.uuid4().hex[:8]}"
    env = {"DYNLAUNCH_DYNAMO__PYTHON": str(python)}
    launcher = Launcher(["mocker", "--namespace", ns, "--http-port", str(port), *args], tmp, env)
    started.append(launcher)
    return launcher, port


def ready(launcher: Launcher) -> None:
    """Wait for the ready line; on a time-out, say what dynlaunch and its children printed."""
    try:
        launcher.wait_ready()
    except AssertionError as err:
        raise AssertionError(f"{err}\n{launcher.dump()}") from None


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def status_json(launcher: Launcher) -> dict[str, object]:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "launcher",
            "status",
            "--json",
            "--state-dir",
            str(launcher.state_dir),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    data = json.loads(out)
    assert isinstance(data, dict)
    return data


def test_two_workers_serve_status_counts_then_sigterm_leaves_nothing(
    started: list[Launcher], tmp_path: Path, dynamo05_python: Path
) -> None:
    launcher, port = up05(started, tmp_path, dynamo05_python, "--workers", "2")
    ready(launcher)
    info = launcher.info()
    assert (info["dynamo_version"], info["layout"]) == ("0.5.0", "0.5")
    engine_args = json.loads((launcher.state_dir / "mocker-engine-args.json").read_text())
    assert engine_args == {"block_size": 16}

    plain = chat(port, stream=False)
    assert plain.status_code == 200, plain.text
    assert plain.json()["usage"]["completion_tokens"] == 8
    streamed = chat(port, stream=True)
    assert streamed.status_code == 200, streamed.text
    events = [line[6:] for line in streamed.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["choices"][0]["finish_reason"] == "length"

    # Every port the run shows is one something listens on (0.5 picks its response port itself).
    report = status_json(launcher)
    children = report["children"]
    assert isinstance(children, list)
    shown = [p for child in children for p in child["ports"].values()]
    assert len(shown) == 2 + 2 + 1 + 2, shown  # etcd, nats, frontend http, worker system ports
    assert all(listening(p) for p in shown), shown
    # Counted in the 0.5 layout, as etcd holds it (read here through etcd's own gateway).
    ns, gateway = str(info["namespace"]), Gateway.of_run(launcher.state_dir)
    instances = gateway.dump(f"instances/{ns}/")
    mine = [
        kv for kv in gateway.dump("models/") if json.loads(kv[1])["endpoint"]["namespace"] == ns
    ]
    assert len({kv[2] for kv in instances}) == len(mine) == 2
    routers = gateway.dump(f"kv_routers/{ns}/")  # a KV-routing frontend registers one
    assert report["registrations"] == {
        "instances": len(instances),
        "models": len(mine),
        "model_cards": 1,
        "routers": len(routers),
    }

    run_id = str(info["run_id"])
    tagged = procs.tagged_pids(run_id)
    assert len(tagged) >= 5, launcher.dump()
    assert launcher.stop(signal.SIGTERM) == 0, launcher.dump()
    assert procs.tagged_pids(run_id) == set()
    assert not any(procs.alive(pid) for pid in tagged)


def test_sigkilled_worker_is_fenced_at_once_and_no_request_fails(
    started: list[Launcher], tmp_path: Path, dynamo05_python: Path
) -> None:
    launcher, port = up05(started, tmp_path, dynamo05_python, "--workers", "2")
    ready(launcher)
    info = launcher.info()
    gateway = Gateway.of_run(launcher.state_dir)
    ns = str(info["namespace"])

    def worker_leases() -> set[int]:
        return {kv[2] for kv in gateway.dump(f"instances/{ns}/")}

    before = worker_leases()
    assert len(before) == 2
    # 0.5's frontend migrates a request whose worker died only if the model card says so.
    card = gateway.get("mdc/tiny")
    assert card is not None
    assert json.loads(card[1])["migration_limit"] == 3, card
    load = Load(port, clients=4)
    time.sleep(3)
    victim = launcher.child_pid("worker-0")
    killed = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    poll_for(lambda: launcher.stderr_has(f"worker-0 pid={victim}: fenced"), 30, "the fenced line")
    gone = before - gateway.leases()
    fenced_after = time.monotonic() - killed
    # Revoked, not expired: its instance keys went with the lease well within the 10 s TTL.
    assert len(gone) == 1, (before, gateway.leases(), launcher.dump())
    assert gone.isdisjoint(worker_leases())

    def restarted() -> bool:
        starts = [line for line in list(launcher.err) if " worker-0 pid=" in line]
        return sum(": started" in line for line in starts) >= 2 and chat(port, False).is_success

    poll_for(restarted, 60, "a restarted worker-0 and a served chat")
    time.sleep(2)
    results = load.stop()
    print(
        f"0.5 fencing: lease revoked {fenced_after:.2f} s after SIGKILL; "
        f"{Load.failed(results)} of {len(results)} requests failed"
    )
    assert Load.failed(results) == 0, launcher.dump()
    assert launcher.stop(signal.SIGTERM) == 0, launcher.dump()
