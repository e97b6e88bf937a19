"""A DynamoGraphDeployment as data: the services `launcher.k8s.render` builds, spelled in the
operator's v1alpha1 (`spec.services`, `extraPodSpec.mainContainer`) or v1beta1 (`spec.components`,
`podTemplate` with a container named `main`) API. Pure."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from launcher.k8s.config import K8sConfig
from launcher.k8s.releases import Release, runtime_version_override

CONFIG_DIR = "/etc/dynlaunch"  # where a role pod's ConfigMap is mounted
CONFIG_VOLUME = "dynlaunch-config"


@dataclass(frozen=True)
class Service:
    """One DGD service, independent of the CRD version that spells it."""

    name: str
    component_type: str
    replicas: int
    command: list[str]
    args: list[str]
    env: dict[str, str]
    field_env: dict[str, str]  # name -> pod field (downward API), listed before `env`
    resources: dict[str, str]  # cpu, memory and, for workers, gpu
    node_selector: dict[str, str]
    tolerations: list[dict[str, Any]]
    liveness: dict[str, Any]
    readiness: dict[str, Any]
    startup: dict[str, Any] | None = None
    secret: str | None = None
    config_map: str | None = None  # mounted at CONFIG_DIR
    annotations: dict[str, str] = field(default_factory=dict)


def graph_deployment(
    meta: dict[str, Any],
    services: list[Service],
    k8s: K8sConfig,
    dynamo_namespace: str,
    target: tuple[str, Release],
    grace: int,
) -> dict[str, Any]:
    """The DGD for ``services``, in the API version the config asks for, as operator release
    ``target`` (version, row) reads it."""
    version, row = target
    override = runtime_version_override(row, k8s.image_tag(), version)
    # 0.4.0 predates backendFramework; the mocker is none of its values (sglang, vllm, trtllm).
    spec: dict[str, Any] = {}
    if row.backend_framework and k8s.backend == "sglang":
        spec["backendFramework"] = "sglang"
    if k8s.api_version == "v1beta1":
        spec["components"] = [_v1beta1(s, k8s, override, grace) for s in services]
    else:
        # 1.x operators compute the Dynamo namespace and ignore (and warn about) this field.
        namespace = None if row.computed_namespace else dynamo_namespace
        spec["services"] = {s.name: _v1alpha1(s, k8s, namespace, override, grace) for s in services}
    return {
        "apiVersion": f"nvidia.com/{k8s.api_version}",
        "kind": "DynamoGraphDeployment",
        "metadata": meta,
        "spec": spec,
    }


def _env_list(s: Service) -> list[dict[str, Any]]:
    fields: list[dict[str, Any]] = [
        {"name": key, "valueFrom": {"fieldRef": {"fieldPath": path}}}
        for key, path in s.field_env.items()
    ]
    return fields + [{"name": key, "value": value} for key, value in s.env.items()]


def _container(s: Service, k8s: K8sConfig, *, beta: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"name": "main"} if beta else {}
    out |= {"image": k8s.image_ref(), "workingDir": k8s.working_dir}
    out |= {"command": list(s.command), "args": list(s.args)}
    if beta:
        out["env"] = _env_list(s)
        if s.secret:
            out["envFrom"] = [{"secretRef": {"name": s.secret}}]
        quantities = {("nvidia.com/gpu" if k == "gpu" else k): v for k, v in s.resources.items()}
        out["resources"] = {"requests": quantities, "limits": dict(quantities)}
        out |= {"livenessProbe": s.liveness, "readinessProbe": s.readiness}
    if s.startup is not None:
        out["startupProbe"] = s.startup
    if s.config_map:
        out["volumeMounts"] = [{"name": CONFIG_VOLUME, "mountPath": CONFIG_DIR, "readOnly": True}]
    return out


def _pod_spec(s: Service, grace: int) -> dict[str, Any]:
    pod: dict[str, Any] = {"terminationGracePeriodSeconds": grace}
    if s.node_selector:
        pod["nodeSelector"] = s.node_selector
    if s.tolerations:
        pod["tolerations"] = s.tolerations
    if s.config_map:
        pod["volumes"] = [{"name": CONFIG_VOLUME, "configMap": {"name": s.config_map}}]
    return pod


def _v1alpha1(
    s: Service, k8s: K8sConfig, dynamo_namespace: str | None, override: str | None, grace: int
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if dynamo_namespace is not None:
        out["dynamoNamespace"] = dynamo_namespace
    out |= {"componentType": s.component_type, "replicas": s.replicas}
    if override is not None:
        out["runtimeVersionOverride"] = override
    if s.secret:
        out["envFromSecret"] = s.secret
    out["envs"] = _env_list(s)
    out["resources"] = {"requests": dict(s.resources), "limits": dict(s.resources)}
    out |= {"livenessProbe": s.liveness, "readinessProbe": s.readiness}
    if s.annotations:
        out["extraPodMetadata"] = {"annotations": s.annotations}
    out["extraPodSpec"] = _pod_spec(s, grace) | {"mainContainer": _container(s, k8s, beta=False)}
    return out


def _v1beta1(s: Service, k8s: K8sConfig, override: str | None, grace: int) -> dict[str, Any]:
    out: dict[str, Any] = {"name": s.name, "type": s.component_type, "replicas": s.replicas}
    if override is not None:
        out["runtimeVersionOverride"] = override
    template: dict[str, Any] = {}
    if s.annotations:
        template["metadata"] = {"annotations": s.annotations}
    pod = _pod_spec(s, grace)
    template["spec"] = pod | {"containers": [_container(s, k8s, beta=True)]}
    out["podTemplate"] = template
    return out
