"""A DynamoGraphDeployment as data: the services `launcher.k8s.render` builds, spelled in the
operator's v1alpha1 (`spec.services`, `extraPodSpec.mainContainer`) or v1beta1 (`spec.components`,
`podTemplate` with a container named `main`) API. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from launcher.k8s.config import VERSION_RE, K8sConfig
from launcher.versions import parse

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
    version: str,
    grace: int,
) -> dict[str, Any]:
    """The DGD for ``services``, in the API version the config asks for."""
    if k8s.api_version == "v1beta1":
        spec: dict[str, Any] = {
            "backendFramework": "sglang",
            "components": [_v1beta1(s, k8s, version, grace) for s in services],
        }
    else:
        # 0.4.x operators predate the field (their manifests never set it).
        spec = {"backendFramework": "sglang"} if parse(version) >= (0, 5) else {}
        spec["services"] = {s.name: _v1alpha1(s, k8s, dynamo_namespace, grace) for s in services}
    return {
        "apiVersion": f"nvidia.com/{k8s.api_version}",
        "kind": "DynamoGraphDeployment",
        "metadata": meta,
        "spec": spec,
    }


def _env_list(env: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"name": key, "value": value} for key, value in env.items()]


def _container(s: Service, k8s: K8sConfig, *, beta: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"name": "main"} if beta else {}
    out |= {"image": k8s.image, "workingDir": k8s.working_dir}
    out |= {"command": list(s.command), "args": list(s.args)}
    if beta:
        out["env"] = _env_list(s.env)
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


def _v1alpha1(s: Service, k8s: K8sConfig, dynamo_namespace: str, grace: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        "dynamoNamespace": dynamo_namespace,
        "componentType": s.component_type,
        "replicas": s.replicas,
    }
    if s.secret:
        out["envFromSecret"] = s.secret
    out["envs"] = _env_list(s.env)
    out["resources"] = {"requests": dict(s.resources), "limits": dict(s.resources)}
    out |= {"livenessProbe": s.liveness, "readinessProbe": s.readiness}
    if s.annotations:
        out["extraPodMetadata"] = {"annotations": s.annotations}
    out["extraPodSpec"] = _pod_spec(s, grace) | {"mainContainer": _container(s, k8s, beta=False)}
    return out


def _v1beta1(s: Service, k8s: K8sConfig, version: str, grace: int) -> dict[str, Any]:
    out: dict[str, Any] = {"name": s.name, "type": s.component_type, "replicas": s.replicas}
    if k8s.image_version() is None:
        # v1beta1 admission needs the runtime version when the image tag does not tell it.
        match = VERSION_RE.fullmatch(version)
        assert match is not None  # validated by K8sConfig / versions.parse
        out["runtimeVersionOverride"] = f"{match[1]}.{match[2]}.{(match[3] or '.0')[1:]}"
    template: dict[str, Any] = {}
    if s.annotations:
        template["metadata"] = {"annotations": s.annotations}
    pod = _pod_spec(s, grace)
    template["spec"] = pod | {"containers": [_container(s, k8s, beta=True)]}
    out["podTemplate"] = template
    return out
