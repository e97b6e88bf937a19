"""The `k8s:` config section: what `dynlaunch render k8s` needs beyond the stack itself.

Defaults reproduce the ai-on-eks SGLang DynamoGraphDeployment (image, resources, node pools, GPU
toleration, HF token secret), so other node pools (g6, p5 with an instance type) are a config
change. Validated here (pydantic, no I/O); rendered by `launcher.k8s.render`.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

# The image (and so the Dynamo release) when none is given: 0.5.0 for the v1alpha1 API that every
# operator serves; a 1.x release for v1beta1, which only 1.3 and later operators serve.
IMAGE_REPOSITORY = "nvcr.io/nvidia/ai-dynamo/sglang-runtime"
DEFAULT_IMAGES = {"v1alpha1": f"{IMAGE_REPOSITORY}:0.5.0", "v1beta1": f"{IMAGE_REPOSITORY}:1.4.2"}
DEFAULT_IMAGE = DEFAULT_IMAGES["v1alpha1"]
DEFAULT_DYNAMO_VERSIONS = {"v1alpha1": "0.5.0", "v1beta1": "1.4.2"}
# Same rule as `name`: the operator derives Deployment/Service names `NAME-sglangworker` (<= 63).
NAME_MAX = 63 - len("-sglangworker")
DNS_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# Kubernetes resource.Quantity: a number with an optional binary/decimal SI suffix or exponent.
QUANTITY_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?\d+)?$")
LABEL_NAME_RE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
DNS_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
VERSION_RE = re.compile(r"^v?(\d+)\.(\d+)(\.\d+)?([-.+]?[0-9A-Za-z.]*)?$")


def _quantity(value: str) -> str:
    if not QUANTITY_RE.fullmatch(value):
        raise ValueError("not a Kubernetes quantity (e.g. 500m, 5, 10Gi)")
    return value


def _label_key(value: str) -> str:
    prefix, slash, name = value.rpartition("/")
    if (slash and not (len(prefix) <= 253 and DNS_SUBDOMAIN_RE.fullmatch(prefix))) or not (
        len(name) <= 63 and LABEL_NAME_RE.fullmatch(name)
    ):
        raise ValueError(f"{value!r} is not a label key (e.g. karpenter.sh/nodepool)")
    return value


def _label_value(value: str) -> str:
    if value and not (len(value) <= 63 and LABEL_NAME_RE.fullmatch(value)):
        raise ValueError(f"{value!r} is not a label value (<= 63 of A-Z a-z 0-9 - _ .)")
    return value


def _dns_label(value: str) -> str:
    if not (len(value) <= 63 and DNS_LABEL_RE.fullmatch(value)):
        raise ValueError("use lower-case letters, digits and '-' (a DNS-1123 label)")
    return value


Quantity = Annotated[str, AfterValidator(_quantity)]
LabelKey = Annotated[str, AfterValidator(_label_key)]
LabelValue = Annotated[str, AfterValidator(_label_value)]
DnsLabel = Annotated[str, AfterValidator(_dns_label)]


class _K8sSection(BaseModel):
    # The same rules as launcher.config's sections: unknown keys refused, immutable, cpu: 5 -> "5".
    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)


class Toleration(_K8sSection):
    """A PodSpec toleration (snake_case here; `tolerationSeconds` in the manifest)."""

    key: str | None = None
    operator: Literal["Exists", "Equal"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> Toleration:
        if self.operator == "Exists" and self.value:
            raise ValueError("operator Exists takes no value")
        if self.key is None and self.operator != "Exists":
            raise ValueError("a toleration without a key needs operator Exists")
        if self.toleration_seconds is not None and self.effect != "NoExecute":
            raise ValueError("toleration_seconds applies to effect NoExecute only")
        return self


def _gpu_toleration() -> list[Toleration]:
    return [Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")]


class ReadinessTimings(_K8sSection):
    """The frontend's readiness probe. The role-mode probe runs `dynlaunch health` (a one-token
    completion, up to 30 s under load), hence the long timeout."""

    initial_delay_s: int = Field(10, ge=0)
    period_s: int = Field(10, ge=1)
    timeout_s: int = Field(30, ge=1)
    failure_threshold: int = Field(3, ge=1)


class FrontendK8s(_K8sSection):
    replicas: int = Field(1, ge=1)
    cpu: Quantity = "5"
    memory: Quantity = "10Gi"
    node_selector: dict[LabelKey, LabelValue] = Field(
        default_factory=lambda: {"karpenter.sh/nodepool": "cpu-karpenter"}
    )
    tolerations: list[Toleration] = Field(default_factory=list)
    readiness: ReadinessTimings = Field(default_factory=ReadinessTimings)


class WorkerK8s(_K8sSection):
    replicas: int | None = Field(None, ge=1)  # None: workers.count (one worker per pod)
    cpu: Quantity = "10"
    memory: Quantity = "20Gi"
    node_selector: dict[LabelKey, LabelValue] = Field(
        default_factory=lambda: {"karpenter.sh/nodepool": "g5-gpu-karpenter"}
    )
    tolerations: list[Toleration] = Field(default_factory=_gpu_toleration)
    # Large models download and load for many minutes: the startup probe allows this long.
    startup_probe_budget_s: int = Field(1800, ge=10)


class K8sConfig(_K8sSection):
    name: str | None = None  # the DGD's name; None: the Dynamo namespace, '_' -> '-'
    k8s_namespace: DnsLabel = "dynamo-cloud"
    # What the pods run: `sglang` or `mocker` (Dynamo's mock engine, CPU only). `render k8s`
    # loads the config with this backend's defaults.
    backend: Literal["sglang", "mocker"] = "sglang"
    image: str | None = Field(None, min_length=1)  # None: see image_ref
    # The Dynamo release the manifests target (the row of launcher.k8s.releases).
    # None: the image's tag when it is a version, else DEFAULT_DYNAMO_VERSIONS[api_version].
    dynamo_version: str | None = None
    working_dir: str = "/workspace/components/backends/sglang"
    hf_secret: str | None = "hf-token-secret"  # None: no envFromSecret on the worker
    api_version: Literal["v1alpha1", "v1beta1"] = "v1alpha1"
    frontend: FrontendK8s = Field(default_factory=FrontendK8s)
    worker: WorkerK8s = Field(default_factory=WorkerK8s)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and not (len(value) <= NAME_MAX and DNS_LABEL_RE.fullmatch(value)):
            raise ValueError(
                f"use lower-case letters, digits and '-', at most {NAME_MAX} characters"
            )
        return value

    @field_validator("dynamo_version")
    @classmethod
    def _version(cls, value: str | None) -> str | None:
        if value is not None and not VERSION_RE.fullmatch(value):
            raise ValueError("expected a Dynamo version like 0.5.0 or 1.4.2")
        return value

    @field_validator("hf_secret")
    @classmethod
    def _secret(cls, value: str | None) -> str | None:
        if value is not None and not (len(value) <= 253 and DNS_SUBDOMAIN_RE.fullmatch(value)):
            raise ValueError("not a Secret name (lower-case letters, digits, '-' and '.')")
        return value

    def image_ref(self) -> str:
        """`image`, else NVIDIA's SGLang runtime of `dynamo_version`, else of the API's default."""
        if self.image:
            return self.image
        if self.dynamo_version:
            return f"{IMAGE_REPOSITORY}:{self.dynamo_version.removeprefix('v')}"
        return DEFAULT_IMAGES[self.api_version]

    def image_tag(self) -> str | None:
        """The image's tag ('0.5.0', 'latest'), or None (no tag, or a digest)."""
        ref = self.image_ref()
        if "@" in ref:
            return None
        _, colon, tag = ref.rpartition(":")
        return tag if colon and "/" not in tag else None

    def image_version(self) -> str | None:
        """The image tag as a version ('0.5.0' from ...:0.5.0 or ...:v0.5.0), or None."""
        tag = self.image_tag()
        return tag.removeprefix("v") if tag and VERSION_RE.fullmatch(tag) else None

    def target_version(self) -> str:
        version = (
            self.dynamo_version or self.image_version() or DEFAULT_DYNAMO_VERSIONS[self.api_version]
        )
        return version.removeprefix("v")

    def resource_name(self, dynamo_namespace: str) -> str:
        """The DGD's name: `name`, else the Dynamo namespace made a DNS label."""
        return self.name or dynamo_namespace.lower().replace("_", "-").strip("-")
