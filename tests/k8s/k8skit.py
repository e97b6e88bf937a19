"""Shared by the tests/k8s tests: configs, rendering as kubectl reads it, and K8s field rules."""

from __future__ import annotations

import functools
import lzma
import re
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from launcher.config import Config, load_config
from launcher.k8s.render import dump_yaml, render

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"
SGLANG = CONFIGS / "sglang.yaml"
SGLANG_P5 = CONFIGS / "sglang-p5.yaml"
GOLDEN = Path(__file__).resolve().parent / "golden"
REF_MODEL = "deepseek-ai/DeepSeek-R1-Distill-Llama-8B"

QUANTITY_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?\d+)?$")
ENV_NAME_RE = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
LABEL_NAME_RE = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
# Fields of corev1.PodSpec and corev1.Container that the renderer may use (all real fields).
POD_SPEC_FIELDS = {
    "terminationGracePeriodSeconds", "nodeSelector", "tolerations", "volumes", "affinity",
    "containers", "initContainers", "serviceAccountName", "imagePullSecrets",
}  # fmt: skip
CONTAINER_FIELDS = {
    "name", "image", "workingDir", "command", "args", "env", "envFrom", "resources",
    "livenessProbe", "readinessProbe", "startupProbe", "volumeMounts", "ports",
}  # fmt: skip
PROBE_HANDLERS = {"exec", "httpGet", "tcpSocket", "grpc"}
PROBE_FIELDS = PROBE_HANDLERS | {
    "initialDelaySeconds", "periodSeconds", "timeoutSeconds", "failureThreshold",
    "successThreshold", "terminationGracePeriodSeconds",
}  # fmt: skip
PROBE_KINDS = ("liveness", "readiness", "startup")
TOLERATION_FIELDS = {"key", "operator", "value", "effect", "tolerationSeconds"}


def load(
    path: Path | None = SGLANG,
    flags: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
) -> Config:
    return load_config(
        "sglang",
        path=None if path is None else str(path),
        environ=environ or {},
        flags=flags or {},
        flag_names={},
    )


def as_kubectl_reads(cfg: Config, *, plain: bool = False) -> list[dict[str, Any]]:
    """The manifests after the YAML round trip: what kubectl and the API server see."""
    return list(yaml.safe_load_all(dump_yaml(render(cfg, plain=plain))))


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def dgd_of(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (dgd,) = by_kind(docs, "DynamoGraphDeployment")
    return dgd


def pods(dgd: dict[str, Any]) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """Service name -> (pod spec fields, main container), for either API version."""
    out: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    if dgd["apiVersion"].endswith("v1alpha1"):
        for name, svc in dgd["spec"]["services"].items():
            pod = dict(svc["extraPodSpec"])
            main = pod.pop("mainContainer")
            out[name] = pod, main
    else:
        for comp in dgd["spec"]["components"]:
            pod = dict(comp["podTemplate"]["spec"])
            (main,) = pod.pop("containers")
            out[comp["name"]] = pod, main
    return out


def probes(dgd: dict[str, Any], service: str) -> dict[str, dict[str, Any]]:
    """kind (liveness, readiness, startup) -> probe, wherever the API version puts it."""
    _, main = pods(dgd)[service]
    found: dict[str, dict[str, Any]] = {}
    if dgd["apiVersion"].endswith("v1alpha1"):
        svc = dgd["spec"]["services"][service]
        found |= {k: svc[f"{k}Probe"] for k in ("liveness", "readiness") if f"{k}Probe" in svc}
    found |= {k: main[f"{k}Probe"] for k in PROBE_KINDS if f"{k}Probe" in main}
    return found


def env_of(dgd: dict[str, Any], service: str) -> list[dict[str, Any]]:
    if dgd["apiVersion"].endswith("v1alpha1"):
        return list(dgd["spec"]["services"][service].get("envs", []))
    return list(pods(dgd)[service][1].get("env", []))


def resources_of(dgd: dict[str, Any], service: str) -> dict[str, dict[str, Any]]:
    if dgd["apiVersion"].endswith("v1alpha1"):
        return dict(dgd["spec"]["services"][service]["resources"])
    return dict(pods(dgd)[service][1]["resources"])


def label_key_ok(key: str) -> bool:
    prefix, slash, name = key.rpartition("/")
    prefix_ok = not slash or bool(re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", prefix))
    return prefix_ok and len(name) <= 63 and bool(LABEL_NAME_RE.fullmatch(name))


# -- the operator's CRDs -----------------------------------------------------------------------

# The DynamoGraphDeployment CRDs exactly as the operator's repository ships them (copied from
# shared/reference/k8s-crds, xz-compressed), by the operator version they first apply to: v0.5.0's
# (v0.4.1's is byte-identical), 1.3.0's (v1beta1 first served), the 1.4.0 branch cut's
# (runtimeVersionOverride first).
CRDS = Path(__file__).resolve().parent / "crds"
CRD_FILES = (
    ((0, 4, 1), "dgd-v0.5.0.yaml.xz"),
    ((1, 3, 0), "dgd-1.3.0-5b4bc1dd.yaml.xz"),
    ((1, 4, 0), "dgd-1.4.0cut-e147ceea.yaml.xz"),
)


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


@functools.cache
def crd_schemas(name: str) -> dict[str, dict[str, Any]]:
    """API version -> its openAPIV3Schema, of the CRD file ``name`` in tests/k8s/crds."""
    with lzma.open(CRDS / name, "rt", encoding="utf-8") as f:
        (crd,) = [doc for doc in yaml.load_all(f, Loader=yaml.CSafeLoader) if doc]
    assert crd["spec"]["names"]["kind"] == "DynamoGraphDeployment"
    return {v["name"]: v["schema"]["openAPIV3Schema"] for v in crd["spec"]["versions"]}


def crd_for(target_version: str, api_version: str) -> str:
    """The CRD of the oldest operator that the manifest targets and that serves its API version:
    the one whose schema it must pass."""
    want = _version(target_version)
    fits = [name for since, name in CRD_FILES if since <= want] or [CRD_FILES[0][1]]
    later = [name for _, name in CRD_FILES if name not in fits]
    for name in [fits[-1], *later]:
        if api_version in crd_schemas(name):
            return name
    raise AssertionError(f"no CRD serves {api_version}")


def structural(schema: dict[str, Any]) -> dict[str, Any]:
    """A CRD's OpenAPI v3 schema as JSON Schema, as the API server applies it: unknown fields are
    refused wherever `properties` are listed (unless x-kubernetes-preserve-unknown-fields),
    x-kubernetes-int-or-string takes either, `nullable` takes null. CEL rules are not checked."""
    out = {k: v for k, v in schema.items() if not k.startswith("x-kubernetes-")}
    if schema.get("x-kubernetes-int-or-string") and "anyOf" not in out:
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if out.pop("nullable", False) and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    if "properties" in out:
        out["properties"] = {k: structural(v) for k, v in out["properties"].items()}
        if not schema.get("x-kubernetes-preserve-unknown-fields"):
            out.setdefault("additionalProperties", False)
    if isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = structural(out["additionalProperties"])
    if isinstance(out.get("items"), dict):
        out["items"] = structural(out["items"])
    for key in ("allOf", "anyOf", "oneOf"):
        if key in out:
            out[key] = [structural(s) for s in out[key]]
    return out


def crd_errors(dgd: dict[str, Any], target_version: str) -> list[str]:
    """Where ``dgd`` breaks the schema of the CRD it targets ("path: message"); empty if none."""
    api = dgd["apiVersion"].split("/")[1]
    name = crd_for(target_version, api)
    validator = jsonschema.Draft7Validator(structural(crd_schemas(name)[api]))
    return [
        f"{name} {api} {'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in validator.iter_errors(dgd)
    ]
