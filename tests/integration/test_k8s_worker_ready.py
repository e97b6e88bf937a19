"""The worker pods' readinessProbe (launcher/k8s/worker_ready.py) as `dynlaunch render k8s` renders
it, run as kubelet runs it (a subprocess with only the pod's environment) against a real etcd
(with auth on, as issue 17's deployments have it) and a real Dynamo 1.x mocker worker started by
`dynlaunch up mocker --role worker`, as in a worker pod of a DynamoGraphDeployment whose platform
has etcd discovery. Each verdict is checked against what etcdctl and raw HTTP show."""

from __future__ import annotations

import base64
import functools
import json
import os
import secrets
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from launcher_run import REPO, Launcher

from testkit.etcd import PrivateEtcd
from testkit.net import accepts, free_port, poll_for

pytestmark = pytest.mark.integration

NS, SUFFIX = "ns-dgd", "a1b2c3"  # what the 1.x operator injects: DYN_NAMESPACE, worker suffix
REGISTERED = f"{NS}-{SUFFIX}"  # where the worker registers
RENDERED_URL = "http://127.0.0.1:9090"  # the system port the operator gives worker pods


@functools.cache
def probe_command() -> tuple[str, ...]:
    """The worker's readinessProbe command of a real `render k8s` (v1beta1, the mocker config)."""
    argv = [sys.executable, "-m", "launcher", "render", "k8s", "-c", "configs/mocker.yaml",
            "--api-version", "v1beta1"]  # fmt: skip
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=120, check=True)
    found: list[tuple[str, ...]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            command = node.get("readinessProbe", {}).get("exec", {}).get("command")
            if command and "worker_ready.py" in " ".join(command):
                found.append(tuple(command))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for doc in yaml.safe_load_all(done.stdout):
        walk(doc)
    assert len(found) == 1, found
    return found[0]


class Pod:
    """One worker pod: its environment (as the operator sets it) and its running dynlaunch."""

    def __init__(
        self, infra: Mapping[str, str], tmp: Path, namespace: str = NS, config: str = "{}\n"
    ) -> None:
        self.registered = f"{namespace}-{SUFFIX}"  # tests sharing one etcd use their own
        self.env = dict(infra) | {
            "DYN_NAMESPACE": namespace,
            "DYN_NAMESPACE_WORKER_SUFFIX": SUFFIX,
            "DYN_DISCOVERY_BACKEND": "etcd",
            "POD_IP": "127.0.0.1",
        }
        # A pod's Dynamo finds its own IP; on this host everything stays on loopback.
        loopback = {
            "DYN_TCP_RPC_HOST": "127.0.0.1",
            "DYN_SYSTEM_HOST": "127.0.0.1",
            "DYN_TCP_RESPONSE_STREAM_HOST": "lo",
            "DYN_EVENT_PLANE_HOST": "127.0.0.1",
        }
        tmp.mkdir(parents=True, exist_ok=True)
        (tmp / "config.yaml").write_text(config)
        args = ["mocker", "--role", "worker", "-c", str(tmp / "config.yaml")]
        self.launcher = Launcher(args, tmp, env=self.env | loopback)
        poll_for(self._ports_known, 120, "the worker's ports in `dynlaunch status --json`")
        self.url = f"http://127.0.0.1:{self.ports['system']}"

    def _ports_known(self) -> bool:
        if self.launcher.proc.poll() is not None:
            raise AssertionError("dynlaunch exited:\n" + self.launcher.dump())
        if not (self.launcher.state_dir / "status.json").exists():
            return False
        children = self.launcher.status()["children"]
        self.ports: dict[str, int] = children[0]["ports"] if children else {}
        return "system" in self.ports and "rpc" in self.ports

    def probe(self, **changes: str | None) -> tuple[int, str]:
        """The rendered probe with the pod's environment (``changes``: None drops a variable)."""
        env = {"PATH": os.environ["PATH"]} | self.env
        for name, value in changes.items():
            env.pop(name, None)
            if value is not None:
                env[name] = value
        command = [sys.executable if a == "python3" else a for a in probe_command()]
        command = [self.url if a == RENDERED_URL else a for a in command]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
        assert not done.stderr, done.stderr  # never a traceback
        return done.returncode, done.stdout.strip()


def etcdctl(url: str, *args: str, user: str | None = None) -> str:
    env = {"PATH": os.environ["PATH"], "ETCDCTL_API": "3"}
    if user is not None:
        env["ETCDCTL_USER"] = user
    argv = ["etcdctl", "--endpoints", url, *args]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30,
                          check=True).stdout  # fmt: skip


def instances(infra: Mapping[str, str], namespace: str = REGISTERED) -> list[dict[str, Any]]:
    """The generate instances under ``namespace``, read by etcdctl: key, lease and value."""
    user = f"{infra['ETCD_AUTH_USERNAME']}:{infra['ETCD_AUTH_PASSWORD']}"
    prefix = f"v1/instances/{namespace}/backend/generate/"
    out = etcdctl(infra["ETCD_ENDPOINTS"], "get", prefix, "--prefix", "-w", "json", user=user)
    return [
        {"lease": int(kv.get("lease", 0)), "value": json.loads(_unb64(kv["value"]))}
        for kv in json.loads(out).get("kvs", [])
    ]


def _unb64(text: str) -> str:
    return base64.b64decode(text).decode()


def health(url: str) -> int:
    """The HTTP status of the worker's /health, by a raw request."""
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


@pytest.fixture(scope="module")
def infra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A real etcd with auth on (user root) and a nats-server, on loopback."""
    tmp = tmp_path_factory.mktemp("infra")
    etcd = PrivateEtcd(tmp / "etcd", name="default").start()
    password = secrets.token_hex(12)
    nats = free_port()
    nats_argv = ["nats-server", "-a", "127.0.0.1", "-p", str(nats), "-js", "-sd", str(tmp / "nats")]
    server = subprocess.Popen(nats_argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        etcdctl(etcd.url, "user", "add", f"root:{password}", "--interactive=false")
        etcdctl(etcd.url, "auth", "enable")
        poll_for(lambda: accepts(nats), 20, "NATS")
        yield {
            "ETCD_ENDPOINTS": etcd.url,
            "NATS_SERVER": f"nats://127.0.0.1:{nats}",
            "ETCD_AUTH_USERNAME": "root",
            "ETCD_AUTH_PASSWORD": password,
        }
    finally:
        etcd.stop()
        server.terminate()
        server.wait(10)


@pytest.fixture(scope="module")
def pod(infra: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pod]:
    """One serving worker pod, shared by the tests that leave it as it is."""
    worker = Pod(infra, tmp_path_factory.mktemp("pod"))
    try:
        worker.launcher.wait_ready()
        yield worker
    finally:
        worker.launcher.kill()


def test_ready_when_registered_and_serving(pod: Pod, infra: dict[str, str]) -> None:
    (instance,) = instances(infra)
    assert instance["value"]["transport"]["tcp"].startswith(f"127.0.0.1:{pod.ports['rpc']}/")
    assert health(pod.url) == 200
    assert accepts(pod.ports["rpc"])
    assert pod.probe() == (0, "ready")
    # POD_IP is what the operator sets; without it the advertised DYN_TCP_RPC_HOST counts.
    assert pod.probe(POD_IP=None, DYN_TCP_RPC_HOST="127.0.0.1") == (0, "ready")


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"DYN_NAMESPACE": "ns-other"}, "no generate instance registered in namespace 'ns-other-"),
        # The frontend's namespace (the operator's prefix): workers register with the suffix.
        ({"DYN_NAMESPACE_WORKER_SUFFIX": None}, f"namespace '{NS}'"),
        ({"DYN_NAMESPACE_WORKER_SUFFIX": "ffffff"}, f"namespace '{NS}-ffffff'"),
        # A namespace the registered one starts with is another namespace.
        ({"DYN_NAMESPACE_WORKER_SUFFIX": SUFFIX[:-1]}, f"namespace '{REGISTERED[:-1]}'"),
        ({"POD_IP": "10.1.2.3"}, f"no generate instance of this pod in namespace '{REGISTERED}'"),
        ({"ETCD_AUTH_USERNAME": None, "ETCD_AUTH_PASSWORD": None}, "etcd at http://127.0.0.1:"),
        ({"ETCD_AUTH_PASSWORD": "wrong"}, "(user root)"),
        ({"ETCD_ENDPOINTS": f"http://127.0.0.1:{free_port()}"}, "does not answer"),
        ({"ETCD_ENDPOINTS": None}, "no ETCD_ENDPOINTS"),
    ],
    ids=["other-namespace", "no-suffix", "other-suffix", "namespace-prefix", "other-pod-ip",
         "no-login", "wrong-password", "no-etcd", "no-etcd-endpoints"],
)  # fmt: skip
def test_not_ready_for_another_pod(pod: Pod, changes: dict[str, str | None], why: str) -> None:
    """The same serving worker, probed with the environment of a pod it is not."""
    code, said = pod.probe(**changes)
    assert code == 1, said
    assert said.startswith("not ready: "), said
    assert why in said, said
    assert "wrong" not in said
    assert pod.env["ETCD_AUTH_PASSWORD"] not in said
    assert pod.probe() == (0, "ready")  # the worker itself is still ready


def test_status_names_the_pods_etcd_discovery(pod: Pod) -> None:
    """`status --json` of the pod's run: the discovery the operator gave it (etcd here)."""
    found = pod.launcher.status()["launcher"]["discovery"]
    assert found == f"etcd (DYN_DISCOVERY_BACKEND), namespace {REGISTERED}"


def test_a_proxy_in_the_pod_environment_is_not_used(pod: Pod) -> None:
    """Pods often carry HTTP_PROXY; the probe's requests are for loopback and etcd directly."""
    dead = f"http://127.0.0.1:{free_port()}"
    proxies = dict.fromkeys(("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "ALL_PROXY"), dead)
    assert pod.probe(**proxies, NO_PROXY=None, no_proxy=None) == (0, "ready")


def test_credentials_for_an_etcd_without_auth(
    pod: Pod, infra: dict[str, str], tmp_path: Path
) -> None:
    """A pod may carry ETCD_AUTH_* for an etcd that has auth off: etcd then refuses the login
    (412) and allows every request; the probe reads without a token. The worker's real
    registration, copied into such an etcd, is found there."""
    (instance,) = instances(infra)
    open_etcd = PrivateEtcd(tmp_path / "etcd").start()
    try:
        key = f"v1/instances/{REGISTERED}/backend/generate/{instance['lease']:x}"
        etcdctl(open_etcd.url, "put", key, json.dumps(instance["value"]))
        assert pod.probe(ETCD_ENDPOINTS=open_etcd.url) == (0, "ready")
        assert pod.probe(ETCD_ENDPOINTS=open_etcd.url, DYN_NAMESPACE="ns-other")[0] == 1
    finally:
        open_etcd.stop()


def test_not_ready_while_health_is_not(infra: dict[str, str], tmp_path: Path) -> None:
    """Registered and answering on its port, but /health says 503 (an endpoint it waits for
    never serves): not ready."""
    never = '["generate", "never_served"]'
    config = "workers:\n  env:\n    DYN_SYSTEM_USE_ENDPOINT_HEALTH_STATUS: '" + never + "'\n"
    pod = Pod(infra, tmp_path, "ns-health", config)
    try:
        poll_for(lambda: len(instances(infra, pod.registered)) == 1, 180, "its registration")
        poll_for(lambda: accepts(pod.ports["rpc"]), 60, "the worker's request plane")
        assert health(pod.url) == 503
        assert pod.probe() == (1, "not ready: worker /health answers 503")
        assert health(pod.url) == 503
        assert len(instances(infra, pod.registered)) == 1
    finally:
        pod.launcher.kill()


def test_not_ready_until_registered_and_after_the_lease_is_gone(
    infra: dict[str, str], tmp_path: Path
) -> None:
    """From the worker's start the probe fails until its instance is in etcd; it fails again as
    soon as the instance is gone (its lease revoked, or its key deleted) while the process still
    serves /health 200; it passes again once the restarted worker registered."""
    pod = Pod(infra, tmp_path, "ns-lease")
    registered = pod.registered
    try:
        verdicts: list[tuple[int, str]] = []

        def passes() -> bool:
            verdicts.append(pod.probe())
            return verdicts[-1][0] == 0

        poll_for(passes, 180, "the probe to pass after the worker started")
        (instance,) = instances(infra, registered)  # read after the probe passed
        assert all(code == 1 and said.startswith("not ready: ") for code, said in verdicts[:-1])

        user = f"root:{infra['ETCD_AUTH_PASSWORD']}"
        etcdctl(infra["ETCD_ENDPOINTS"], "lease", "revoke", f"{instance['lease']:x}", user=user)
        assert instances(infra, registered) == []
        assert health(pod.url) == 200
        gone = f"not ready: no generate instance registered in namespace '{registered}'"
        assert pod.probe() == (1, gone)

        # Dynamo ends a worker whose lease is gone; dynlaunch restarts it and it registers anew.
        poll_for(lambda: pod.probe()[0] == 0, 180, "the restarted worker to be ready")
        (again,) = instances(infra, registered)
        assert again["lease"] != instance["lease"]

        key = f"v1/instances/{registered}/backend/generate/{again['lease']:x}"
        etcdctl(infra["ETCD_ENDPOINTS"], "del", key, user=user)
        assert instances(infra, registered) == []
        assert health(pod.url) == 200
        assert pod.probe() == (1, gone)
    finally:
        pod.launcher.kill()
