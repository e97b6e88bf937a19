"""The operator's env merge, modelled from its code (shared/reference/k8s-operator-notes.md), on
the rendered manifests: after the merge, the namespace the frontend watches and the one the
workers register in must match, or no model ever appears.

- 0.5: DYN_NAMESPACE = the service's dynamoNamespace, ETCD_ENDPOINTS and NATS_SERVER injected;
  the operator's values override the user's `envs`.
- 1.x: DYN_NAMESPACE = "<k8s namespace>-<dgd name>" on every pod, DYN_NAMESPACE_PREFIX on the
  frontend, DYN_NAMESPACE_WORKER_SUFFIX on workers, DYN_DISCOVERY_BACKEND from the platform
  (etcd/NATS only where it has them); `MergeEnvs(operator, user)`: the user's values win.

Dynamo then decides (its code): a frontend with DYN_NAMESPACE_PREFIX watches that prefix, else
its --namespace (or DYN_NAMESPACE) exactly; a worker registers in its --endpoint's namespace, else
DYN_NAMESPACE plus `-suffix`. Plain pods run the rendered argv; role pods run what the real
`dynlaunch plan BACKEND --role ROLE` (a subprocess, with the merged env and the shipped config)
prints, each child inheriting the pod's env under the plan's."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from launcher.config import Config, load_config
from launcher.k8s import render as k8s
from launcher.k8s.releases import Release, release

from .k8skit import CONFIGS, SGLANG, by_kind, dgd_of, env_of, pods
from .test_k8s_cli import run_cli

PLATFORMS = {
    "etcd": {"ETCD_ENDPOINTS": "http://etcd.ops:2379", "NATS_SERVER": "nats://nats.ops:4222"},
    "kubernetes": {},
}
HF_MODEL = "Qwen/Qwen3-0.6B"


def operator_env(
    row: Release, dgd: dict[str, Any], service: str, kind: str, platform: str
) -> dict[str, str]:
    """What the operator sets on the pod of ``service`` before it merges the user's envs."""
    meta = dgd["metadata"]
    base = dict(PLATFORMS[platform])
    if row.computed_namespace:
        namespace = f"{meta['namespace']}-{meta['name'].replace('.', '-')}"
        base |= {"DYN_NAMESPACE": namespace, "DYN_DISCOVERY_BACKEND": platform}
        if kind == "frontend":
            base["DYN_NAMESPACE_PREFIX"] = namespace
        else:
            base["DYN_NAMESPACE_WORKER_SUFFIX"] = hashlib.sha256(service.encode()).hexdigest()[:8]
    else:
        base["DYN_NAMESPACE"] = dgd["spec"]["services"][service]["dynamoNamespace"]
    if kind == "worker":
        base["DYN_SYSTEM_USE_ENDPOINT_HEALTH_STATUS"] = '["generate"]'
    return base


def merged_env(row: Release, dgd: dict[str, Any], service: str, platform: str) -> dict[str, str]:
    kind = "frontend" if service == k8s.FRONTEND else "worker"
    base = operator_env(row, dgd, service, kind, platform)
    user = {v["name"]: v["value"] for v in env_of(dgd, service) if "value" in v}
    return base | user if row.user_env_wins else user | base


def _flag(argv: list[str], flag: str) -> str | None:
    return argv[argv.index(flag) + 1] if flag in argv else None


def frontend_watches(argv: list[str], env: dict[str, str]) -> tuple[str, str]:
    prefix = env.get("DYN_NAMESPACE_PREFIX")
    if prefix:
        return "prefix", prefix
    return "exact", _flag(argv, "--namespace") or env.get("DYN_NAMESPACE") or "dynamo"


def worker_registers(argv: list[str], env: dict[str, str]) -> str:
    endpoint = _flag(argv, "--endpoint")
    if endpoint:
        return endpoint.removeprefix("dyn://").split(".")[0]
    namespace = env.get("DYN_NAMESPACE") or "dynamo"
    suffix = env.get("DYN_NAMESPACE_WORKER_SUFFIX")
    return f"{namespace}-{suffix}" if suffix else namespace


def finds(watch: tuple[str, str], registered: str) -> bool:
    kind, value = watch
    return registered.startswith(value) if kind == "prefix" else registered == value


def _role_process(
    role: str, cfg: Config, shipped: Path, pod_env: dict[str, str], version: str, home: Path
) -> tuple[list[str], dict[str, str]]:
    """The argv and env of the pod's Dynamo process, as the real `dynlaunch plan` decides."""
    gpus = ",".join(map(str, range(cfg.workers.tp)))  # the pod's GPUs
    environ = pod_env | {"DYNLAUNCH_DYNAMO__VERSION": version, "CUDA_VISIBLE_DEVICES": gpus}
    backend = cfg.k8s.backend
    if role == "worker":
        environ.setdefault("DYN_SYSTEM_PORT", "9090")
    args = ["plan", backend, "--role", role, "--config", str(shipped), "--json"]
    result = run_cli(args, home, environ)
    assert result.returncode == 0, result.stderr
    (proc,) = json.loads(result.stdout)["processes"]
    return list(proc["argv"]), pod_env | proc["env"]


def _load(path: Path, flags: dict[str, Any]) -> Config:
    cfg = load_config("sglang", path=str(path), environ={}, flags=flags, flag_names={})
    if cfg.k8s.backend == "sglang":
        return cfg
    return load_config(cfg.k8s.backend, path=str(path), environ={}, flags=flags, flag_names={})


CASES = [
    pytest.param(path, version, api, platform, plain,
                 id=f"{path.stem}-{version}-{api}-{platform}-{'plain' if plain else 'role'}")
    for path in sorted(CONFIGS.glob("*.yaml"))
    for version, api, platform in (
        ("0.5.0", "v1alpha1", "etcd"),
        ("1.2.0", "v1alpha1", "kubernetes"),
        ("1.4.2", "v1alpha1", "etcd"),
        ("1.4.2", "v1beta1", "kubernetes"),
    )
    for plain in (False, True)
    if not (plain and path.stem == "mocker" and version.startswith("0."))
]  # fmt: skip


@pytest.mark.parametrize(("path", "version", "api", "platform", "plain"), CASES)
def test_frontend_finds_the_workers_after_the_merge(
    path: Path, version: str, api: str, platform: str, plain: bool, tmp_path: Path
) -> None:
    flags: dict[str, Any] = {"k8s": {"dynamo_version": version, "api_version": api}}
    if plain and path.stem == "mocker":
        flags["model"] = {"path": HF_MODEL}
    cfg = _load(path, flags)
    row = release(version)
    docs = list(yaml.safe_load_all(k8s.dump_yaml(k8s.render(cfg, plain=plain, environ={}))))
    dgd = dgd_of(docs)
    worker = k8s.WORKERS[cfg.k8s.backend]
    env = {s: merged_env(row, dgd, s, platform) for s in (k8s.FRONTEND, worker)}
    if row.computed_namespace:  # the operator's values reach the pods untouched
        for name in k8s.OPERATOR_ENV:
            for service in env:
                assert name not in {v["name"] for v in env_of(dgd, service)}, (service, name)
    if plain:
        front = pods(dgd)[k8s.FRONTEND][1]["args"]
        work = pods(dgd)[worker][1]["args"]
        front_env, work_env = env[k8s.FRONTEND], env[worker]
    else:
        (cm,) = by_kind(docs, "ConfigMap")
        shipped = tmp_path / "config.yaml"
        shipped.write_text(cm["data"]["config.yaml"], encoding="utf-8")
        front, front_env = _role_process(
            "frontend", cfg, shipped, env[k8s.FRONTEND], version, tmp_path
        )
        work, work_env = _role_process("worker", cfg, shipped, env[worker], version, tmp_path)
        if platform == "kubernetes":
            assert "ETCD_ENDPOINTS" not in work_env  # the pod has none and needs none
            assert work_env["DYN_DISCOVERY_BACKEND"] == "kubernetes"  # the operator's stands
    watch, registered = frontend_watches(front, front_env), worker_registers(work, work_env)
    assert finds(watch, registered), (watch, registered)
    assert work_env.get("DYN_SYSTEM_STARTING_HEALTH_STATUS") != "ready"


def test_a_manifest_that_sets_dyn_namespace_on_1x_is_caught() -> None:
    """The negative control: what dynlaunch rendered before (DYN_NAMESPACE=sglang on 1.x) wins
    the merge there, and the model sees the frontend miss the workers."""
    cfg = _load(SGLANG, {"k8s": {"dynamo_version": "1.4.2"}})
    dgd = dgd_of(k8s.render(cfg, plain=True))
    for service in dgd["spec"]["services"].values():
        service["envs"].append({"name": "DYN_NAMESPACE", "value": "sglang"})
    row = release("1.4.2")
    front = merged_env(row, dgd, k8s.FRONTEND, "kubernetes")
    work = merged_env(row, dgd, "SGLangWorker", "kubernetes")
    watch = frontend_watches(pods(dgd)[k8s.FRONTEND][1]["args"], front)
    registered = worker_registers(pods(dgd)["SGLangWorker"][1]["args"], work)
    assert not finds(watch, registered), (watch, registered)
    # and the renderer refuses a config that asks for it
    bad = _load(
        SGLANG, {"k8s": {"dynamo_version": "1.4.2"}, "workers": {"env": {"DYN_NAMESPACE": "x"}}}
    )
    with pytest.raises(Exception, match=re.escape("the Dynamo >=1.4 operator sets it")):
        k8s.render(bad, plain=True)
