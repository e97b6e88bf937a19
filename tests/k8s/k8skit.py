"""Shared by the tests/k8s tests: configs, rendering as kubectl reads it, and K8s field rules."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from launcher.config import Config, load_config
from launcher.k8s.render import dump_yaml, render

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"
SGLANG = CONFIGS / "sglang.yaml"
SGLANG_P5 = CONFIGS / "sglang-p5.yaml"
MOCKER = CONFIGS / "mocker.yaml"
TWO_MODELS = CONFIGS / "two-models.yaml"
GOLDEN = Path(__file__).resolve().parent / "golden"
REF_MODEL = "deepseek-ai/DeepSeek-R1-Distill-Llama-8B"
HF_MODEL = "Qwen/Qwen3-0.6B"  # plain mocker pods need a model they can fetch

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
    """As `render k8s` loads: with the defaults of the backend the config's k8s.backend names."""
    where = None if path is None else str(path)
    cfg = load_config("sglang", path=where, environ=environ or {}, flags=flags or {}, flag_names={})
    if cfg.k8s.backend == "sglang":
        return cfg
    return load_config(
        cfg.k8s.backend, path=where, environ=environ or {}, flags=flags or {}, flag_names={}
    )


def hf_flags(path: Path) -> dict[str, Any]:
    """Flags that give every model of the config at ``path`` a Hugging Face id (`model.path`, or
    each `models:` entry's path: a config with models: takes no model: section)."""
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if data.get("models") is None:
        return {"model": {"path": HF_MODEL}}
    return {"models": [entry | {"path": HF_MODEL} for entry in data["models"]]}


def worker_services(dgd: dict[str, Any]) -> list[str]:
    """The names of the DGD's worker services, in order."""
    if dgd["apiVersion"].endswith("v1alpha1"):
        items = dgd["spec"]["services"].items()
        return [name for name, svc in items if svc["componentType"] == "worker"]
    return [c["name"] for c in dgd["spec"]["components"] if c["type"] == "worker"]


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


def values_of(dgd: dict[str, Any], service: str) -> list[dict[str, Any]]:
    """The env entries with a plain value (not the downward API's)."""
    return [var for var in env_of(dgd, service) if "value" in var]


def resources_of(dgd: dict[str, Any], service: str) -> dict[str, dict[str, Any]]:
    if dgd["apiVersion"].endswith("v1alpha1"):
        return dict(dgd["spec"]["services"][service]["resources"])
    return dict(pods(dgd)[service][1]["resources"])


def label_key_ok(key: str) -> bool:
    prefix, slash, name = key.rpartition("/")
    prefix_ok = not slash or bool(re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", prefix))
    return prefix_ok and len(name) <= 63 and bool(LABEL_NAME_RE.fullmatch(name))
