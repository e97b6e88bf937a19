"""Two models behind one frontend (a `models:` config), real etcd, NATS, frontend and mockers:
both listed, each request reaches only its own model's workers (counted by the workers' own
metrics), and a SIGKILLed worker of one model is fenced and replaced while the other model does
not fail a request."""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from launcher_run import Launcher, Load

from testkit.etcd import Gateway
from testkit.net import free_port, poll_for

pytestmark = pytest.mark.integration

CONFIG = """
models:
  - name: alpha
    served_name: alpha
    workers: 2
  - name: beta
    served_name: beta
    workers: 1
    page_size: 32
"""
GENERATE = re.compile(
    r"^dynamo_component_requests_total"
    r'\{dynamo_component="(\w+)",dynamo_endpoint="generate".*\} (\S+)$'
)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[Launcher, int]]:
    config = tmp_path / "two.yaml"
    config.write_text(CONFIG)
    port = free_port()
    ns = f"two-{os.getpid()}-{time.monotonic_ns() % 10**6}"
    launcher = Launcher(
        ["mocker", "-c", str(config), "--namespace", ns, "--http-port", str(port)], tmp_path
    )
    try:
        launcher.wait_ready()
        yield launcher, port
    finally:
        launcher.kill()


def chat(port: int, model: str) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    return httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body, timeout=30)


def served(launcher: Launcher) -> dict[str, tuple[str, float]]:
    """Each worker's own count of generate requests: name -> (its component, count)."""
    children = launcher.status()["children"]
    out = {}
    for child in children:
        if child["role"] != "worker":
            continue
        text = httpx.get(f"http://127.0.0.1:{child['ports']['system']}/metrics", timeout=10).text
        found = [m.groups() for line in text.splitlines() if (m := GENERATE.match(line))]
        assert len(found) == 1, (child["name"], found)
        out[child["name"]] = (found[0][0], float(found[0][1]))
    return out


def test_each_model_reaches_only_its_own_workers(stack: tuple[Launcher, int]) -> None:
    launcher, port = stack
    listed = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=10).json()["data"]
    assert sorted(m["id"] for m in listed) == ["alpha", "beta"]
    before = served(launcher)
    assert {name: comp for name, (comp, _) in before.items()} == {
        "alpha-0": "alpha", "alpha-1": "alpha", "beta-0": "beta",
    }  # fmt: skip
    for _ in range(12):
        assert chat(port, "alpha").status_code == 200
    for _ in range(7):
        assert chat(port, "beta").status_code == 200
    after = served(launcher)
    got = {name: after[name][1] - before[name][1] for name in after}
    assert got["alpha-0"] + got["alpha-1"] == 12, got
    assert got["beta-0"] == 7, got
    # status: per model, and each model's instances as etcd holds them (read here directly)
    gateway = Gateway.of_run(launcher.state_dir)
    ns = str(launcher.info()["namespace"])
    models = {m["model"]: m for m in launcher.status()["models"]}
    for name, workers in (("alpha", 2), ("beta", 1)):
        in_etcd = len(gateway.dump(f"v1/instances/{ns}/{name}/generate/"))
        assert in_etcd == workers
        assert models[name]["instances"] == in_etcd
        assert (models[name]["workers"], models[name]["running"]) == (workers, workers)
        assert models[name]["listed"] is True


def test_a_killed_worker_of_one_model_leaves_the_other_untouched(
    stack: tuple[Launcher, int],
) -> None:
    launcher, port = stack
    beta = Load(port, clients=2, model="beta")
    alpha = Load(port, clients=2, model="alpha")
    time.sleep(2)
    victim = launcher.child_pid("alpha-0")
    os.kill(victim, signal.SIGKILL)
    poll_for(lambda: launcher.stderr_has(f"alpha-0 pid={victim}: fenced"), 30, "alpha-0 fenced")
    poll_for(lambda: launcher.starts("alpha-0") >= 2, 60, "alpha-0 restarted")
    poll_for(lambda: chat(port, "alpha").status_code == 200, 60, "alpha served again")
    time.sleep(2)
    beta_results, alpha_results = beta.stop(), alpha.stop()
    assert beta_results
    assert Load.failed(beta_results) == 0, launcher.dump()
    print(f"alpha: {Load.failed(alpha_results)} of {len(alpha_results)} failed; "
          f"beta: 0 of {len(beta_results)}")  # fmt: skip
    assert launcher.stop(signal.SIGTERM) == 0, launcher.dump()
