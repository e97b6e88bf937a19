"""Config -> Kubernetes manifests: the ConfigMap that ships the config to the pods, and the
DynamoGraphDeployment (the Dynamo operator's CRD) with a `Frontend` and an `SGLangWorker` (or
`MockerWorker`) service, as the targeted operator release reads it (`launcher.k8s.releases`). A
`models:` list renders one worker service per model, `SGLangWorker-<name>` (`MockerWorker-...`):
its replicas are the model's workers, its GPUs its tp, its pods serve only it (role mode: `up
--role worker --model NAME`; plain mode: its own `--endpoint dyn://NS.<name>.generate`).

Pure: `render` builds plain dicts from the config; `dump_yaml` is the only place they become text.
Default (role mode): each pod runs `dynlaunch up sglang --role ROLE --config /etc/dynlaunch/...`
from the image the repo's Dockerfile builds. `plain=True`: the bare Dynamo commands (the same argv
`dynlaunch plan` prints), for images without dynlaunch.
"""

from __future__ import annotations

import hashlib
import inspect
import math
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import yaml

from launcher.compat import for_version
from launcher.config import Config, tiny_model_dir
from launcher.errors import ConfigError
from launcher.k8s import worker_ready
from launcher.k8s.config import DNS_LABEL_RE, NAME_MAX, Toleration
from launcher.k8s.dgd import CONFIG_DIR, Service, graph_deployment
from launcher.k8s.releases import Release, release
from launcher.model_select import select_model
from launcher.models import ModelSpec, model_specs, router_mode
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
FRONTEND = "Frontend"
WORKERS = {"sglang": "SGLangWorker", "mocker": "MockerWorker"}
SERVICES_MAX = 25  # the CRD's maxProperties (v1alpha1) / maxItems (v1beta1) of services
RESOURCE_NAME_MAX = 63  # the operator names a service's resources `<dgd name>-<service, lower>`
WORKER_HASH = len("-0123abcd")  # 1.x operators may append a worker hash to worker resources
# Set by the 1.x operator (the Dynamo namespace it computes, the frontend's prefix, the workers'
# suffix, the discovery backend): a manifest that sets them breaks discovery there.
OPERATOR_ENV = (
    "DYN_NAMESPACE",
    "DYN_NAMESPACE_PREFIX",
    "DYN_NAMESPACE_WORKER_SUFFIX",
    "DYN_DISCOVERY_BACKEND",
)
# What the operator injects on workers (and what dynlaunch sets too, in case it does not): the
# worker's /health is 200 once its generate endpoint serves, not when the process starts.
ENDPOINT_HEALTH = {"DYN_SYSTEM_USE_ENDPOINT_HEALTH_STATUS": '["generate"]'}
# The module's text from its first import on (the probe command shows in `kubectl describe`).
_SOURCE = inspect.getsource(worker_ready)
WORKER_READY_PY = (
    "# dynlaunch: launcher/k8s/worker_ready.py\n" + _SOURCE[_SOURCE.index("from __future__") :]
)
# A mocker worker needs little; its defaults when the config does not set k8s.worker.*.
MOCKER_WORKER = {"cpu": "2", "memory": "4Gi"}
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
# 1.x answer "healthy" with no worker at all. Exit 0 only when a worker is registered and a
# served model is listed (with several models: any of them; see _frontend_ready).
PLAIN_READY_PY = """\
import json, sys, urllib.request
url, models = sys.argv[1], sys.argv[2:]
def get(path):
    with urllib.request.urlopen(url + path, timeout=5) as resp:
        return json.load(resp)
health = get("/health")
ok = health.get("status") == "healthy" and bool(health.get("instances") or health.get("endpoints"))
ok = ok and any(m.get("id") in models for m in get("/v1/models").get("data", []))
sys.exit(0 if ok else 1)
"""
# A plain worker of a `models:` list on 1.x: its own component in the namespace Dynamo itself
# would register it in (DYN_NAMESPACE plus -DYN_NAMESPACE_WORKER_SUFFIX when the operator sets
# one, common/utils/namespace.py). The operator gives every worker service of a deployment the
# same suffix, so without --endpoint each model's workers would share `backend.generate`, where
# Dynamo serves one model. Kubernetes expands $(VAR), not ${VAR}: the shell reads these.
SUFFIXED_NS = (
    "${DYN_NAMESPACE:-dynamo}${DYN_NAMESPACE_WORKER_SUFFIX:+-$DYN_NAMESPACE_WORKER_SUFFIX}"
)


def role_args(role: str, backend: str = "sglang", model: str | None = None) -> list[str]:
    """The container args of a role pod (the command is ENTRYPOINT); ``model``: the `models:`
    entry a worker pod serves."""
    which = ["--model", model] if model is not None else []
    return ["up", backend, "--role", role, *which, "--config", CONFIG_PATH]


def worker_service(backend: str, spec: ModelSpec, several: bool) -> str:
    """`SGLangWorker`, or with a `models:` list `SGLangWorker-<name>` (the model's own)."""
    return f"{WORKERS[backend]}-{spec.component}" if several else WORKERS[backend]


def stop_budget_s(cfg: Config) -> float:
    """The longest a pod's dynlaunch takes to stop: each tier gets stop_timeout_s, plus a margin."""
    return stop_budget(STOP_TIERS, cfg.stop_timeout_s)


def target(cfg: Config) -> tuple[str, Release]:
    """The operator release the manifests target (version, row); its API version must exist."""
    k8s = cfg.k8s
    version = k8s.target_version()
    row = release(version)
    if k8s.api_version not in row.api_versions:
        raise ConfigError(
            f"k8s.api_version {k8s.api_version}: operator {version} (row {row.row}) serves only "
            f"{', '.join(row.api_versions)}; v1beta1 needs k8s.dynamo_version 1.3 or later"
        )
    return version, row


def render(
    cfg: Config, *, plain: bool, environ: Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
    """The ConfigMap (role mode) and the DGD for ``cfg``. Flags of `render k8s` are a config
    layer (`k8s.*`), validated like any other key. ``environ`` is the one the config was loaded
    with (it places the mocker's default tiny model, which the pods make for themselves)."""
    k8s = cfg.k8s
    version, row = target(cfg)
    name = k8s.resource_name(cfg.namespace)
    if not (len(name) <= NAME_MAX and DNS_LABEL_RE.fullmatch(name)):
        raise ConfigError(
            f"namespace {cfg.namespace!r} does not make a Kubernetes name: set k8s.name (--name)"
        )
    _refuse_secrets(cfg)
    _refuse_operator_env(cfg, row)
    _check_model_services(cfg, row, name)
    tiny = tiny_model_dir(environ or {}) if k8s.backend == "mocker" else None
    docs: list[dict[str, Any]] = []
    meta: dict[str, Any] = {
        "name": name,
        "namespace": k8s.k8s_namespace,
        "labels": {MANAGED_BY: "dynlaunch"},
    }
    if plain:
        services = _plain_services(cfg, version, row, tiny)
        if parse(version) < (0, 6):
            meta["annotations"] = {CLEAR_NOTE_KEY: CLEAR_NOTE}
    else:
        text = dump_yaml([pod_config(cfg, version, tiny)])
        config_map = f"{name}-dynlaunch"
        docs.append(_config_map(config_map, k8s.k8s_namespace, text))
        digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        services = _role_services(cfg, version, row, config_map, {CONFIG_HASH_KEY: digest})
    grace = max(row.grace_s, math.ceil(stop_budget_s(cfg)))
    docs.append(graph_deployment(meta, services, k8s, cfg.namespace, (version, row), grace))
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


def pod_config(cfg: Config, version: str, tiny_model: str | None = None) -> dict[str, Any]:
    """The config the role pods run: this host's choices (GPUs, ports, state dir, interpreter,
    Dynamo version, the mocker's tiny model at ``tiny_model``) left to the pod; one worker per
    pod; the frontend on the Service's port."""
    data = cfg.model_dump(mode="json", exclude={"k8s", "state_dir", "dynamo"}, exclude_none=True)
    # The deployment's router mode, not a pod's (each pod has one worker: auto would say
    # round-robin).
    kv_migrates = for_version(version).kv_router_migrates  # the targeted Dynamo's
    routing = router_mode(cfg, model_specs(cfg), kv_migrates=kv_migrates)
    data["frontend"] |= {"http_host": "0.0.0.0", "http_port": HTTP_PORT, "router_mode": routing}
    data["workers"]["count"] = 1
    for key in ("gpus", "port_base"):
        data["workers"].pop(key, None)
    if tiny_model is not None and cfg.model.path == tiny_model:
        data["model"].pop("path")  # the pod makes its own (~/.cache/dynlaunch/tiny-model)
    if cfg.models is not None:
        # One worker per pod; a worker pod picks its entry by name. Each entry says its model
        # (a config with models: takes no model: section).
        del data["model"]
        for entry, spec in zip(data["models"], model_specs(cfg), strict=True):
            entry |= {"name": spec.component, "path": spec.path, "served_name": spec.served}
            entry["workers"] = 1
            entry.pop("gpus", None)
            if tiny_model is not None and spec.path == tiny_model:
                entry.pop("path")
    return data


def _sections(cfg: Config) -> list[tuple[str, Mapping[str, str], Sequence[str]]]:
    """(where, env, extra_args) of the frontend, the workers and each `models:` entry."""
    out: list[tuple[str, Mapping[str, str], Sequence[str]]] = [
        ("frontend", cfg.frontend.env, cfg.frontend.extra_args),
        ("workers", cfg.workers.env, cfg.workers.extra_args),
    ]
    for i, entry in enumerate(cfg.models or ()):
        out.append((f"models[{i}]", entry.env, entry.extra_args or ()))
    return out


def _refuse_operator_env(cfg: Config, row: Release) -> None:
    """On 1.x the user's env overrides the operator's: these would break discovery."""
    if not row.user_env_wins:
        return
    for section, env, _ in _sections(cfg):
        for key in OPERATOR_ENV:
            if key in env:
                raise ConfigError(
                    f"{section}.env.{key}: the Dynamo {row.row} operator sets it (the manifest "
                    "would override it and workers and frontend would not find each other); "
                    "remove it"
                )


def _refuse_secrets(cfg: Config) -> None:
    """Manifests and ConfigMaps are stored in plain text: secrets belong in a Secret."""
    where = f"the Secret k8s.hf_secret ({cfg.k8s.hf_secret})" if cfg.k8s.hf_secret else "a Secret"
    infra_secrets = (
        ("infra.etcd.password", cfg.infra.etcd.password, "ETCD_AUTH_PASSWORD"),
        ("infra.etcd.client_key", cfg.infra.etcd.client_key, "ETCD_AUTH_CLIENT_KEY"),
        ("infra.nats.password", cfg.infra.nats.password, "NATS_AUTH_PASSWORD"),
        ("infra.nats.token", cfg.infra.nats.token, "NATS_AUTH_TOKEN"),
        ("infra.nats.client_key", cfg.infra.nats.client_key, "NATS_TLS_KEY"),
    )
    for key, value, var in infra_secrets:
        if value:
            raise ConfigError(
                f"{key}: a secret is not rendered into manifests (stored in plain text); give "
                f"the pods {var} from a Secret instead"
            )
    for section, env, args in _sections(cfg):
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


def _check_model_services(cfg: Config, row: Release, name: str) -> None:
    """A `models:` list: one worker service per model, each a name the CRD and the operator's
    resource names take."""
    if cfg.models is None:
        return
    specs = model_specs(cfg)
    if len(specs) + 1 > SERVICES_MAX:
        raise ConfigError(
            f"models: {len(specs)} models make {len(specs) + 1} services; the operator's CRD "
            f"takes at most {SERVICES_MAX}: split them over several deployments"
        )
    if cfg.k8s.worker.replicas is not None:
        raise ConfigError(
            "k8s.worker.replicas: with a models: list each model's workers (models[].workers) "
            "is its service's replicas; remove k8s.worker.replicas"
        )
    budget = RESOURCE_NAME_MAX - (WORKER_HASH if row.computed_namespace else 0)
    for spec in specs:
        resource = f"{name}-{worker_service(cfg.k8s.backend, spec, True).lower()}"
        if not DNS_LABEL_RE.fullmatch(resource) or len(resource) > budget:
            hashed = "-<hash>" if row.computed_namespace else ""
            raise ConfigError(
                f"{spec.origin}: the operator would name its worker resources "
                f"{resource}{hashed}, not a DNS label of at most {RESOURCE_NAME_MAX} characters; "
                "shorten k8s.name (--name) or the model's name (ending in a letter or digit)"
            )


def _config_map(name: str, namespace: str, text: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": {MANAGED_BY: "dynlaunch"}},
        "data": {CONFIG_FILE: text},
    }


def _role_services(
    cfg: Config, version: str, row: Release, config_map: str, annotations: dict[str, str]
) -> list[Service]:
    url = f"http://127.0.0.1:{HTTP_PORT}"
    backend, specs = cfg.k8s.backend, model_specs(cfg)
    checks = [["dynlaunch", "health", "--url", url, "--model", s.served] for s in specs]
    ready = checks[0] if len(checks) == 1 else _frontend_ready(checks)
    front = _frontend(cfg, version, row, [*ENTRYPOINT], role_args("frontend", backend), ready, {})
    services = [front]
    for spec in specs:
        model = spec.component if cfg.models is not None else None
        args = role_args("worker", backend, model)
        services.append(_worker(cfg, row, spec, [*ENTRYPOINT], args, {}))
    return [replace(s, config_map=config_map, annotations=dict(annotations)) for s in services]


def _frontend_ready(checks: list[list[str]]) -> list[str]:
    """Several models: the frontend pod is ready when any of them is listed and answers. Each
    model's workers are their own service; when one model has no worker, the others must keep
    their frontend (every frontend pod sees the same workers, so requiring all would take every
    frontend out of the Service at once)."""
    return ["sh", "-c", " || ".join(shlex.join(check) for check in checks)]


def _plain_services(cfg: Config, version: str, row: Release, tiny: str | None) -> list[Service]:
    """The argv `dynlaunch up BACKEND --role frontend|worker` would run in these pods."""
    specs = model_specs(cfg)
    if cfg.k8s.backend == "mocker":
        _plain_mocker_ok(cfg, version, tiny, specs)
    fe = _pod_plan(cfg, version, "frontend").by_role("frontend")[0]
    url = f"http://127.0.0.1:{HTTP_PORT}"
    ready = ["python3", "-c", PLAIN_READY_PY, url, *(s.served for s in specs)]
    front_args = list(fe.argv[1:])
    if row.computed_namespace:
        # The operator's DYN_NAMESPACE_PREFIX decides what the frontend watches.
        front_args = _drop_flag(front_args, "--namespace")
    front = _frontend(cfg, version, row, [fe.argv[0]], front_args, ready, cfg.frontend.env)
    services = [front]
    for spec in specs:
        pod = cfg if cfg.models is None else select_model(cfg, spec.component, "worker")
        wk = _pod_plan(pod, version, "worker").by_role("worker")[0]
        command, args = [wk.argv[0]], list(wk.argv[1:])
        if row.computed_namespace:
            # The operator's DYN_NAMESPACE and the workers' suffix decide the namespace: none of
            # ours in the argv (the mocker's --endpoint would bypass the suffix). A model of a
            # list keeps its own component, in the namespace the shell computes.
            args = _drop_flag(args, "--endpoint")
            if cfg.models is not None:
                endpoint = f"dyn://{SUFFIXED_NS}.{spec.endpoint}"
                script = f'exec "$@" --endpoint "{endpoint}"'
                command, args = ["sh", "-c", script, "sh"], [*command, *args]
        env = cfg.workers.env if cfg.models is None else dict(spec.env)
        services.append(_worker(cfg, row, spec, command, args, env))
    return services


def _plain_mocker_ok(
    cfg: Config, version: str, tiny: str | None, specs: Sequence[ModelSpec]
) -> None:
    if parse(version) < (1, 0):
        raise ConfigError(
            f"--plain with the mocker needs Dynamo 1.0 or later, not {version} (0.5's mocker "
            "reads its settings from a file dynlaunch writes): render without --plain"
        )
    for spec in specs:
        if spec.path == tiny:
            where = "model.path" if spec.origin == "model" else f"{spec.origin}.path"
            raise ConfigError(
                f"--plain with the mocker: {where} must be a Hugging Face id (the tiny model "
                f"exists only where dynlaunch makes it): set {where}, or render without --plain"
            )


def _drop_flag(args: list[str], flag: str) -> list[str]:
    out: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg == flag:
            skip = True
            continue
        if not arg.startswith(f"{flag}="):
            out.append(arg)
    return out


def _pod_plan(cfg: Config, version: str, role: str) -> Plan:
    """`dynlaunch plan BACKEND --role ROLE` for one pod of the deployment (pure: the pod's facts
    are fixed here): one worker on the pod's GPUs, etcd/NATS from the pod's environment."""
    data = pod_config(cfg, version) | {"k8s": cfg.k8s.model_dump(mode="json")}
    data.setdefault("model", cfg.model.model_dump(mode="json"))  # the loader's default, in a pod
    pod = Config.model_validate(data)
    backend = cfg.k8s.backend
    spec = model_specs(pod)[0]  # a worker pod's (its config has one model)
    first = f"{spec.prefix}-0"
    fixed = {"frontend.http": HTTP_PORT, f"{first}.system": SYSTEM_PORT}
    fixed[f"{first}.kv_events"] = KV_EVENTS_PORT
    slots = port_slots(
        pod, embedded_etcd=False, embedded_nats=False, role=role, dynamo_version=version,
        backend=backend,
    )  # fmt: skip
    host = Host(
        dynamo_version=version,
        python="python3",
        gpus=tuple(str(i) for i in range(spec.tp)) if backend == "sglang" else (),
        gpu_source="the pod's GPUs" if backend == "sglang" else backend,
        ports={slot.name: fixed.get(slot.name, 0) for slot in slots},
        state_dir="/tmp/dynlaunch",
        etcd_endpoints="$(ETCD_ENDPOINTS)",
        nats_url="$(NATS_SERVER)",
    )
    return build_plan(pod, backend, host, role=role)


def _frontend(
    cfg: Config,
    version: str,
    row: Release,
    command: list[str],
    args: list[str],
    ready: list[str],
    env: Mapping[str, str],
) -> Service:
    k8s, timing = cfg.k8s, cfg.k8s.frontend.readiness
    old = parse(version) < (0, 5)
    own = {"DYN_NAMESPACE": cfg.namespace} if row.sets_dyn_namespace else {}
    return Service(
        name=FRONTEND,
        component_type=row.frontend_type,  # `main` on 0.4.0 (0.4.1 on: `frontend`)
        replicas=k8s.frontend.replicas,
        command=command,
        args=args,
        env={**own, **env},
        field_env={},
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


def _worker(
    cfg: Config,
    row: Release,
    spec: ModelSpec,
    command: list[str],
    args: list[str],
    env: Mapping[str, str],
) -> Service:
    """The worker service of model ``spec`` (the only one without a `models:` list)."""
    k8s = cfg.k8s
    wk = k8s.worker
    budget = wk.startup_probe_budget_s
    own = {"DYN_NAMESPACE": cfg.namespace} if row.sets_dyn_namespace else {}
    system = {"DYN_SYSTEM_ENABLED": "true", "DYN_SYSTEM_HOST": "0.0.0.0"}
    system |= {"DYN_SYSTEM_PORT": str(SYSTEM_PORT), **ENDPOINT_HEALTH}
    if row.computed_namespace:
        # The address the worker advertises (and fencing matches): the pod's own.
        system["DYN_TCP_RPC_HOST"] = "$(POD_IP)"
    ready = ["python3", "-c", WORKER_READY_PY, f"http://127.0.0.1:{SYSTEM_PORT}"]
    resources, tolerations, node_selector, secret = _worker_placement(cfg, spec.tp)
    return Service(
        name=worker_service(k8s.backend, spec, cfg.models is not None),
        component_type="worker",
        replicas=wk.replicas or spec.count,
        command=command,
        args=args,
        env={**own, **system, **env},
        field_env={"POD_IP": "status.podIP"},  # the readiness probe finds its instance by it
        resources=resources,
        node_selector=node_selector,
        tolerations=tolerations,
        liveness=_http_probe("/live", SYSTEM_PORT),
        # Routable: registered in the pod's discovery and answering (worker_ready.py).
        readiness=_exec_probe(ready),
        # httpGet like the operator's own default, so older operators that merge the two field
        # by field still get one handler. Until it passes, liveness does not run.
        startup=_http_probe("/health", SYSTEM_PORT, failure=math.ceil(budget / PROBE_PERIOD_S)),
        secret=secret,
    )


def _worker_placement(
    cfg: Config, tp: int
) -> tuple[dict[str, str], list[dict[str, Any]], dict[str, str], str | None]:
    """Resources, tolerations, node selector and secret of the worker pods. The mocker runs on
    CPUs: no GPU, no GPU toleration, the frontend's nodes and no HF token unless configured."""
    k8s, wk = cfg.k8s, cfg.k8s.worker
    tolerations = [_toleration(t) for t in wk.tolerations]
    if k8s.backend == "sglang":
        resources = {"cpu": wk.cpu, "memory": wk.memory, "gpu": str(tp)}
        return resources, tolerations, dict(wk.node_selector), k8s.hf_secret
    given = wk.model_fields_set
    resources = {key: getattr(wk, key) if key in given else MOCKER_WORKER[key]
                 for key in ("cpu", "memory")}  # fmt: skip
    if "tolerations" not in given:
        tolerations = []
    selector = wk.node_selector if "node_selector" in given else k8s.frontend.node_selector
    secret = k8s.hf_secret if "hf_secret" in k8s.model_fields_set else None
    return resources, tolerations, dict(selector), secret


def _exec_probe(command: list[str]) -> dict[str, Any]:
    return {
        "exec": {"command": command},
        "periodSeconds": PROBE_PERIOD_S,
        "timeoutSeconds": 15,  # etcd and the endpoint, 4 s each at most
        "failureThreshold": 3,
    }


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
