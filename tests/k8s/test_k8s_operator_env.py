"""The operator's env merge, modelled from its code (shared/reference/k8s-operator-notes.md), on
the rendered manifests: after the merge, the namespace the frontend watches and the one the
workers register in must match, or no model ever appears.

- 0.5: DYN_NAMESPACE = the service's dynamoNamespace, ETCD_ENDPOINTS and NATS_SERVER injected;
  the operator's values override the user's `envs`.
- 1.x: DYN_NAMESPACE = "<k8s namespace>-<dgd name>" on every pod, DYN_NAMESPACE_PREFIX on the
  frontend, DYN_NAMESPACE_WORKER_SUFFIX on workers (one hash of all worker services' specs:
  `ComputeWorkerSpecHash`), DYN_DISCOVERY_BACKEND from the platform (etcd/NATS only where it has
  them); `MergeEnvs(operator, user)`: the user's values win.

Dynamo then decides (its code): a frontend with DYN_NAMESPACE_PREFIX watches that prefix, else
its --namespace (or DYN_NAMESPACE) exactly; a worker registers in its --endpoint's namespace, else
DYN_NAMESPACE plus `-suffix`. Plain pods run the rendered argv (a `sh -c` wrapper runs for real,
with a stand-in python3 that prints the argv it gets); role pods run what the real `dynlaunch plan`
with the pod's args (`up` -> `plan`, with the merged env and the shipped config) prints, each
child inheriting the pod's env under the plan's. With a `models:` list every model's worker
service must land where the frontend watches, each on its own endpoint, serving its own model."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from launcher.config import Config, load_config
from launcher.k8s import render as k8s
from launcher.k8s import worker_ready
from launcher.k8s.releases import Release, release
from launcher.models import model_specs
from testkit.net import free_port

from .k8skit import (
    CONFIGS,
    SGLANG,
    TWO_MODELS,
    by_kind,
    dgd_of,
    env_of,
    hf_flags,
    pods,
    resources_of,
    worker_services,
)
from .test_k8s_cli import run_cli

PLATFORMS = {
    "etcd": {"ETCD_ENDPOINTS": "http://etcd.ops:2379", "NATS_SERVER": "nats://nats.ops:4222"},
    "kubernetes": {},
}
STAND_IN = "import json, sys; print(json.dumps(sys.argv[1:]))"  # python3 of a wrapped plain pod


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
            base["DYN_NAMESPACE_WORKER_SUFFIX"] = worker_hash(dgd)
    else:
        base["DYN_NAMESPACE"] = dgd["spec"]["services"][service]["dynamoNamespace"]
    if kind == "worker":
        base["DYN_SYSTEM_USE_ENDPOINT_HEALTH_STATUS"] = '["generate"]'
    return base


def worker_hash(dgd: dict[str, Any]) -> str:
    """`ComputeWorkerSpecHash`: one hash of every worker service's spec, so every worker service
    of a deployment gets the same suffix (and so the same namespace)."""
    specs = {name: pods(dgd)[name] for name in worker_services(dgd)}
    return hashlib.sha256(json.dumps(specs, sort_keys=True).encode()).hexdigest()[:8]


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
    return worker_endpoint(argv, env)[0]


def worker_endpoint(argv: list[str], env: dict[str, str]) -> tuple[str, str]:
    """(namespace, component) of the worker's generate endpoint; the last --endpoint wins."""
    given = [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "--endpoint"]
    if given:
        namespace, component, _ = given[-1].removeprefix("dyn://").split(".")
        return namespace, component
    namespace = env.get("DYN_NAMESPACE") or "dynamo"
    suffix = env.get("DYN_NAMESPACE_WORKER_SUFFIX")
    return (f"{namespace}-{suffix}" if suffix else namespace), "backend"


def served_name(argv: list[str]) -> str | None:
    return _flag(argv, "--served-model-name") or _flag(argv, "--model-name")


def plain_argv(main: dict[str, Any], env: dict[str, str], tmp: Path) -> list[str]:
    """The Dynamo argv (after python3) a plain pod runs; a shell wrapper is run for real."""
    command, args = main["command"], main["args"]
    if command == ["python3"]:
        return list(args)
    assert command[0] == "sh", command
    assert args[0] == "python3", args
    bin_dir = tmp / "bin"
    bin_dir.mkdir(exist_ok=True)
    stand_in = bin_dir / "python3"
    stand_in.write_text(f"#!{sys.executable}\n{STAND_IN}\n", encoding="utf-8")
    stand_in.chmod(0o755)
    path = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}"
    run = subprocess.run(
        [*command, *args], env=env | {"PATH": path}, capture_output=True, text=True, timeout=30
    )
    assert run.returncode == 0, run.stderr
    return list(json.loads(run.stdout))


def finds(watch: tuple[str, str], registered: str) -> bool:
    kind, value = watch
    return registered.startswith(value) if kind == "prefix" else registered == value


def _role_process(
    dgd: dict[str, Any],
    service: str,
    shipped: Path,
    pod_env: dict[str, str],
    version: str,
    home: Path,
) -> tuple[list[str], dict[str, str]]:
    """The argv and env of the pod's Dynamo process, as the real `dynlaunch plan` decides from
    the pod's own args."""
    limits = resources_of(dgd, service)["limits"]
    gpus = ",".join(map(str, range(int(limits.get("gpu") or limits.get("nvidia.com/gpu") or 0))))
    environ = pod_env | {"DYNLAUNCH_DYNAMO__VERSION": version, "CUDA_VISIBLE_DEVICES": gpus}
    args = list(pods(dgd)[service][1]["args"])
    assert args[:2] == ["up", cfg_backend(args)], args
    if args[args.index("--role") + 1] == "worker":
        environ.setdefault("DYN_SYSTEM_PORT", "9090")
    else:  # the pod's port 8000 may be taken on this host; the namespace does not depend on it
        args += ["--http-port", str(free_port())]
    args[args.index("--config") + 1] = str(shipped)
    result = run_cli(["plan", *args[1:], "--json"], home, environ)
    assert result.returncode == 0, result.stderr
    (proc,) = json.loads(result.stdout)["processes"]
    return list(proc["argv"]), pod_env | proc["env"]


def _load(path: Path, flags: dict[str, Any]) -> Config:
    cfg = load_config("sglang", path=str(path), environ={}, flags=flags, flag_names={})
    if cfg.k8s.backend == "sglang":
        return cfg
    return load_config(cfg.k8s.backend, path=str(path), environ={}, flags=flags, flag_names={})


def cfg_backend(args: list[str]) -> str:
    return args[1] if args[1] in k8s.WORKERS else "?"


def _mocker(path: Path) -> bool:
    return _load(path, {}).k8s.backend == "mocker"


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
    if not (plain and _mocker(path) and version.startswith("0."))
]  # fmt: skip


@pytest.mark.parametrize(("path", "version", "api", "platform", "plain"), CASES)
def test_frontend_finds_the_workers_after_the_merge(
    path: Path, version: str, api: str, platform: str, plain: bool, tmp_path: Path
) -> None:
    flags: dict[str, Any] = {"k8s": {"dynamo_version": version, "api_version": api}}
    if plain and _mocker(path):
        flags |= hf_flags(path)
    _frontend_finds_every_model(_load(path, flags), version, platform, plain, tmp_path)


@pytest.mark.parametrize(
    ("version", "api", "platform", "plain"),
    [pytest.param(*case, id=f"{case[0]}-{case[1]}-{case[2]}-{'plain' if case[3] else 'role'}")
     for case in (("0.5.0", "v1alpha1", "etcd", True), ("0.5.0", "v1alpha1", "etcd", False),
                  ("1.2.0", "v1alpha1", "kubernetes", True), ("1.4.2", "v1alpha1", "etcd", True),
                  ("1.4.2", "v1beta1", "kubernetes", True), ("1.4.2", "v1beta1", "etcd", False))],
)  # fmt: skip
def test_sglang_models_each_find_the_frontend(
    version: str, api: str, platform: str, plain: bool, tmp_path: Path
) -> None:
    """configs/two-models.yaml as an SGLang deployment (k8s.backend sglang)."""
    k8s_flags = {"dynamo_version": version, "api_version": api, "backend": "sglang"}
    cfg = _load(TWO_MODELS, {"k8s": k8s_flags})
    assert cfg.k8s.backend == "sglang"
    _frontend_finds_every_model(cfg, version, platform, plain, tmp_path)


def _frontend_finds_every_model(
    cfg: Config, version: str, platform: str, plain: bool, tmp_path: Path
) -> None:
    row = release(version)
    docs = list(yaml.safe_load_all(k8s.dump_yaml(k8s.render(cfg, plain=plain, environ={}))))
    dgd = dgd_of(docs)
    workers = worker_services(dgd)
    assert len(workers) == len(model_specs(cfg))  # one worker service per model
    env = {s: merged_env(row, dgd, s, platform) for s in (k8s.FRONTEND, *workers)}
    if row.computed_namespace:  # the operator's values reach the pods untouched
        for name in k8s.OPERATOR_ENV:
            for service in env:
                assert name not in {v["name"] for v in env_of(dgd, service)}, (service, name)
    placed: dict[str, tuple[list[str], dict[str, str]]] = {}
    if plain:
        front, front_env = pods(dgd)[k8s.FRONTEND][1]["args"], env[k8s.FRONTEND]
        for w in workers:
            placed[w] = plain_argv(pods(dgd)[w][1], env[w], tmp_path), env[w]
    else:
        (cm,) = by_kind(docs, "ConfigMap")
        shipped = tmp_path / "config.yaml"
        shipped.write_text(cm["data"]["config.yaml"], encoding="utf-8")
        front, front_env = _role_process(
            dgd, k8s.FRONTEND, shipped, env[k8s.FRONTEND], version, tmp_path
        )
        for w in workers:
            placed[w] = _role_process(dgd, w, shipped, env[w], version, tmp_path)
            if platform == "kubernetes":
                assert "ETCD_ENDPOINTS" not in placed[w][1]  # the pod has none and needs none
                assert placed[w][1]["DYN_DISCOVERY_BACKEND"] == "kubernetes"  # the operator's
    watch = frontend_watches(front, front_env)
    endpoints = {w: worker_endpoint(argv, work_env) for w, (argv, work_env) in placed.items()}
    for w, (namespace, _) in endpoints.items():
        assert finds(watch, namespace), (w, watch, namespace)
        # where the pod's readinessProbe (worker_ready.py, the pod's env) looks for it
        assert namespace == worker_ready.registration_namespace(env[w]), (w, namespace)
        assert placed[w][1].get("DYN_SYSTEM_STARTING_HEALTH_STATUS") != "ready"
    assert len(set(endpoints.values())) == len(workers), endpoints  # one model per endpoint
    served = sorted(str(served_name(argv)) for argv, _ in placed.values())
    assert served == sorted(s.served for s in model_specs(cfg))  # each model's own workers


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
