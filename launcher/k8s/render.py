"""Config -> Kubernetes manifests: the ConfigMap that ships the config to the pods, and the
DynamoGraphDeployment (the Dynamo operator's CRD) with a `Frontend` and an `SGLangWorker` service.

Pure: `render` builds plain dicts from the config; `dump_yaml` is the only place they become text.
Default (role mode): each pod runs `dynlaunch up sglang --role ROLE --config /etc/dynlaunch/...`
from the image the repo's Dockerfile builds. `plain=True`: the bare Dynamo commands (the same argv
`dynlaunch plan` prints), for images without dynlaunch.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import yaml

from launcher.config import Config
from launcher.errors import ConfigError
from launcher.k8s.config import DNS_LABEL_RE, NAME_MAX, Toleration
from launcher.k8s.dgd import CONFIG_DIR, Service, graph_deployment
from launcher.names import is_secret_flag, is_secret_name
from launcher.plan import Host, Plan, build_plan, port_slots
from launcher.statedir import stop_budget
from launcher.versions import parse

CONFIG_FILE = "config.yaml"
CONFIG_PATH = f"{CONFIG_DIR}/{CONFIG_FILE}"
ENTRYPOINT = ("dynlaunch",)  # the Dockerfile's ENTRYPOINT
HTTP_PORT = 8000  # the operator's frontend Service targets this port (consts.DynamoServicePort)
SYSTEM_PORT = 9090  # the operator's worker system port (consts.DynamoSystemPort)
KV_EVENTS_PORT = 5557  # SGLang -> Dynamo KV events, loopback inside the worker pod
STOP_TIERS = 2  # a pod's dynlaunch stops in tiers (workers, then the frontend)
PROBE_PERIOD_S = 10
FRONTEND, WORKER = "Frontend", "SGLangWorker"
MANAGED_BY = "app.kubernetes.io/managed-by"
CONFIG_HASH_KEY = "dynlaunch/config-sha256"  # pods roll when the shipped config changes
CLEAR_NOTE_KEY = "dynlaunch/clear-namespace"
CLEAR_NOTE = (
    "omitted on purpose. Dynamo < 0.6 `clear_namespace` deletes /NS/, but 0.5 keys have no "
    "leading slash: it deletes nothing. A clear when the frontend pod (re)starts would delete the "
    "live worker pods' registrations, which they never rewrite. Worker keys (instances/, models/) "
    "are bound to the workers' etcd leases and expire by themselves; mdc/ cards are "
    "create-if-absent. The dynlaunch image (role mode) clears only stale registrations."
)
# Plain-mode frontend readiness (python3 is in every Dynamo runtime image; curl and jq may not be).
# /health alone is not enough: older frontends answer 200 with "status": "unhealthy", and 0.5 and
# 1.x answer "healthy" with no worker at all. Exit 0 only when a worker is registered and the
# served model is listed.
PLAIN_READY_PY = """\
import json, sys, urllib.request
url, model = sys.argv[1], sys.argv[2]
def get(path):
    with urllib.request.urlopen(url + path, timeout=5) as resp:
        return json.load(resp)
health = get("/health")
ok = health.get("status") == "healthy" and bool(health.get("instances") or health.get("endpoints"))
ok = ok and any(m.get("id") == model for m in get("/v1/models").get("data", []))
sys.exit(0 if ok else 1)
"""


def role_args(role: str) -> list[str]:
    """The container args of a role pod (the command is ENTRYPOINT)."""
    return ["up", "sglang", "--role", role, "--config", CONFIG_PATH]


def stop_budget_s(cfg: Config) -> float:
    """The longest a pod's dynlaunch takes to stop: each tier gets stop_timeout_s, plus a margin."""
    return stop_budget(STOP_TIERS, cfg.stop_timeout_s)


def render(cfg: Config, *, plain: bool) -> list[dict[str, Any]]:
    """The ConfigMap (role mode) and the DGD for ``cfg``. Flags of `render k8s` are a config
    layer (`k8s.*`), validated like any other key."""
    k8s = cfg.k8s
    version = k8s.target_version()
    release = parse(version)
    name = k8s.resource_name(cfg.namespace)
    if not (len(name) <= NAME_MAX and DNS_LABEL_RE.fullmatch(name)):
        raise ConfigError(
            f"namespace {cfg.namespace!r} does not make a Kubernetes name: set k8s.name (--name)"
        )
    _refuse_secrets(cfg)
    docs: list[dict[str, Any]] = []
    meta: dict[str, Any] = {
        "name": name,
        "namespace": k8s.k8s_namespace,
        "labels": {MANAGED_BY: "dynlaunch"},
    }
    if plain:
        services = _plain_services(cfg, version)
        if release < (0, 6):
            meta["annotations"] = {CLEAR_NOTE_KEY: CLEAR_NOTE}
    else:
        text = dump_yaml([pod_config(cfg)])
        config_map = f"{name}-dynlaunch"
        docs.append(_config_map(config_map, k8s.k8s_namespace, text))
        digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        services = _role_services(cfg, version, config_map, {CONFIG_HASH_KEY: digest})
    grace = math.ceil(stop_budget_s(cfg))
    docs.append(graph_deployment(meta, services, k8s, cfg.namespace, version, grace))
    return docs


class _Dumper(yaml.SafeDumper):
    """Safe YAML; multi-line strings (the shipped config, probe scripts) as literal blocks; no
    anchors and aliases (a value used twice is written twice)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar(
        "tag:yaml.org,2002:str", value, style="|" if "\n" in value else None
    )


_Dumper.add_representer(str, _represent_str)


def dump_yaml(docs: Sequence[Mapping[str, Any]]) -> str:
    """The only place manifests become text: one YAML stream, keys in the order built."""
    return yaml.dump_all(
        docs, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=4096
    )


def pod_config(cfg: Config) -> dict[str, Any]:
    """The config the role pods run: this host's choices (GPUs, ports, state dir, interpreter,
    Dynamo version) left to the pod; one worker per pod; the frontend on the Service's port."""
    data = cfg.model_dump(mode="json", exclude={"k8s", "state_dir", "dynamo"}, exclude_none=True)
    data["frontend"] |= {"http_host": "0.0.0.0", "http_port": HTTP_PORT}
    data["workers"]["count"] = 1
    for key in ("gpus", "port_base"):
        data["workers"].pop(key, None)
    return data


def _refuse_secrets(cfg: Config) -> None:
    """Manifests and ConfigMaps are stored in plain text: secrets belong in a Secret."""
    where = f"the Secret k8s.hf_secret ({cfg.k8s.hf_secret})" if cfg.k8s.hf_secret else "a Secret"
    for section, env, args in (
        ("frontend", cfg.frontend.env, cfg.frontend.extra_args),
        ("workers", cfg.workers.env, cfg.workers.extra_args),
    ):
        for key in env:
            if is_secret_name(key):
                raise ConfigError(
                    f"{section}.env.{key}: a secret is not rendered into manifests (stored in "
                    f"plain text); put it in {where}"
                )
        for arg in args:
            if is_secret_flag(arg.partition("=")[0]):
                raise ConfigError(
                    f"{section}.extra_args {arg.partition('=')[0]}: a secret is not rendered "
                    f"into manifests (stored in plain text); put it in {where}"
                )


def _config_map(name: str, namespace: str, text: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": {MANAGED_BY: "dynlaunch"}},
        "data": {CONFIG_FILE: text},
    }


def _role_services(
    cfg: Config, version: str, config_map: str, annotations: dict[str, str]
) -> list[Service]:
    url = f"http://127.0.0.1:{HTTP_PORT}"
    ready = ["dynlaunch", "health", "--url", url, "--model", cfg.served_model_name]
    front = _frontend(cfg, version, [*ENTRYPOINT], role_args("frontend"), ready, {})
    work = _worker(cfg, [*ENTRYPOINT], role_args("worker"), {})
    return [replace(s, config_map=config_map, annotations=dict(annotations)) for s in (front, work)]


def _plain_services(cfg: Config, version: str) -> list[Service]:
    """The argv `dynlaunch up sglang --role frontend|worker` would run in these pods."""
    fe = _pod_plan(cfg, version, "frontend").by_role("frontend")[0]
    wk = _pod_plan(cfg, version, "worker").by_role("worker")[0]
    url = f"http://127.0.0.1:{HTTP_PORT}"
    ready = ["python3", "-c", PLAIN_READY_PY, url, cfg.served_model_name]
    health = {
        k: v
        for k, v in wk.env.items()
        if k.startswith("DYN_SYSTEM_") and k not in ("DYN_SYSTEM_HOST", "DYN_SYSTEM_PORT")
    }
    front = _frontend(cfg, version, [fe.argv[0]], list(fe.argv[1:]), ready, cfg.frontend.env)
    work = _worker(cfg, [wk.argv[0]], list(wk.argv[1:]), health | cfg.workers.env)
    return [front, work]


def _pod_plan(cfg: Config, version: str, role: str) -> Plan:
    """`dynlaunch plan sglang --role ROLE` for one pod of the deployment (pure: the pod's facts
    are fixed here): one worker on the pod's GPUs, etcd/NATS from the pod's environment."""
    data = pod_config(cfg) | {"k8s": cfg.k8s.model_dump(mode="json")}
    pod = Config.model_validate(data)
    fixed = {"frontend.http": HTTP_PORT, "worker-0.system": SYSTEM_PORT}
    fixed["worker-0.kv_events"] = KV_EVENTS_PORT
    slots = port_slots(
        pod, embedded_etcd=False, embedded_nats=False, role=role, dynamo_version=version
    )
    host = Host(
        dynamo_version=version,
        python="python3",
        gpus=tuple(str(i) for i in range(cfg.workers.tp)),
        gpu_source="the pod's GPUs",
        ports={slot.name: fixed.get(slot.name, 0) for slot in slots},
        state_dir="/tmp/dynlaunch",
        etcd_endpoints="$(ETCD_ENDPOINTS)",
        nats_url="$(NATS_SERVER)",
    )
    return build_plan(pod, "sglang", host, role=role)


def _frontend(
    cfg: Config,
    version: str,
    command: list[str],
    args: list[str],
    ready: list[str],
    env: Mapping[str, str],
) -> Service:
    k8s, timing = cfg.k8s, cfg.k8s.frontend.readiness
    old = parse(version) < (0, 5)
    return Service(
        name=FRONTEND,
        # 0.4.x operators call the frontend `main`; v1beta1 has no such type.
        component_type="main" if old and k8s.api_version == "v1alpha1" else "frontend",
        replicas=k8s.frontend.replicas,
        command=command,
        args=args,
        env={"DYN_NAMESPACE": cfg.namespace, **env},
        resources={"cpu": k8s.frontend.cpu, "memory": k8s.frontend.memory},
        node_selector=dict(k8s.frontend.node_selector),
        tolerations=[_toleration(t) for t in k8s.frontend.tolerations],
        # /live answers while the process serves HTTP (0.5+; newer /health says 503 without
        # workers, which must not restart the frontend).
        liveness=_http_probe("/health" if old else "/live", HTTP_PORT, initial=30),
        readiness={
            "exec": {"command": ready},
            "initialDelaySeconds": timing.initial_delay_s,
            "periodSeconds": timing.period_s,
            "timeoutSeconds": timing.timeout_s,
            "failureThreshold": timing.failure_threshold,
        },
    )


def _worker(cfg: Config, command: list[str], args: list[str], env: Mapping[str, str]) -> Service:
    k8s = cfg.k8s
    budget = k8s.worker.startup_probe_budget_s
    system = {"DYN_SYSTEM_ENABLED": "true", "DYN_SYSTEM_HOST": "0.0.0.0"}
    return Service(
        name=WORKER,
        component_type="worker",
        replicas=k8s.worker.replicas or cfg.workers.count,
        command=command,
        args=args,
        env={"DYN_NAMESPACE": cfg.namespace, **system, "DYN_SYSTEM_PORT": str(SYSTEM_PORT), **env},
        resources={"cpu": k8s.worker.cpu, "memory": k8s.worker.memory, "gpu": str(cfg.workers.tp)},
        node_selector=dict(k8s.worker.node_selector),
        tolerations=[_toleration(t) for t in k8s.worker.tolerations],
        liveness=_http_probe("/live", SYSTEM_PORT),
        readiness=_http_probe("/health", SYSTEM_PORT),
        # httpGet like the operator's own default, so older operators that merge the two field
        # by field still get one handler. Until it passes, liveness does not run.
        startup=_http_probe("/health", SYSTEM_PORT, failure=math.ceil(budget / PROBE_PERIOD_S)),
        secret=k8s.hf_secret,
    )


def _http_probe(path: str, port: int, *, failure: int = 3, initial: int = 0) -> dict[str, Any]:
    probe: dict[str, Any] = {"httpGet": {"path": path, "port": port}}
    if initial:
        probe["initialDelaySeconds"] = initial
    return probe | {
        "periodSeconds": PROBE_PERIOD_S,
        "timeoutSeconds": 5,
        "failureThreshold": failure,
    }


def _toleration(tol: Toleration) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if tol.key is not None:
        out["key"] = tol.key
    out["operator"] = tol.operator
    if tol.value is not None:
        out["value"] = tol.value
    if tol.effect is not None:
        out["effect"] = tol.effect
    if tol.toleration_seconds is not None:
        out["tolerationSeconds"] = tol.toleration_seconds
    return out
