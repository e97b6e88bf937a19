"""Every DynamoGraphDeployment dynlaunch renders, and every golden file, passes the schema of the
operator's own CRD for the version it targets (tests/k8s/crds: the CRDs as the operator's
repository ships them): facts from outside the renderer, not its own snapshots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from launcher.config import Config

from .k8skit import GOLDEN, SGLANG, SGLANG_P5, as_kubectl_reads, crd_errors, crd_for, dgd_of, load
from .test_k8s_render import GOLDEN_CASES

LATEST = "registry.example/dynamo:latest"  # not semver: 1.4's webhook needs runtimeVersionOverride
TARGETS = [
    pytest.param(path, flags, id=f"{path.stem}-{tag}")
    for path in (SGLANG, SGLANG_P5)
    for tag, flags in (
        ("v1alpha1", {}),
        ("v1beta1", {"k8s": {"api_version": "v1beta1"}}),
        ("dynamo0.4", {"k8s": {"dynamo_version": "0.4.1"}}),
        ("dynamo1.3", {"k8s": {"dynamo_version": "1.3.0"}}),
        ("dynamo1.4", {"k8s": {"dynamo_version": "1.4.2"}}),
        ("v1beta1-dynamo1.4", {"k8s": {"api_version": "v1beta1", "dynamo_version": "1.4.2"}}),
        (
            "v1beta1-latest",
            {"k8s": {"api_version": "v1beta1", "image": LATEST, "dynamo_version": "1.4.2"}},
        ),
    )
]


def _dgd(cfg: Config) -> dict[str, Any]:
    return dgd_of(as_kubectl_reads(cfg))


@pytest.mark.parametrize(("path", "flags"), TARGETS)
def test_rendered_dgd_passes_its_crd(path: Path, flags: dict[str, Any]) -> None:
    cfg = load(path, flags)
    assert crd_errors(_dgd(cfg), cfg.k8s.target_version()) == []


@pytest.mark.parametrize(
    ("golden", "config", "flags"),
    [pytest.param(g, c, f, id=g) for g, c, plain, f in GOLDEN_CASES if not plain],
)
def test_golden_dgd_passes_its_crd(golden: str, config: Path, flags: dict[str, Any]) -> None:
    """The file as committed, read back as kubectl reads it."""
    docs = list(yaml.safe_load_all((GOLDEN / golden).read_text(encoding="utf-8")))
    target = load(config, flags).k8s.target_version()
    assert crd_errors(dgd_of(docs), target) == []


def test_the_check_refuses_what_the_api_server_refuses() -> None:
    """Unknown fields, wrong types and a field of a later operator are caught."""
    cfg = load(SGLANG)
    target = cfg.k8s.target_version()
    dgd = _dgd(cfg)
    frontend = dgd["spec"]["services"]["Frontend"]
    frontend["extraPodSpec"]["mainContainer"]["imagePullPolicyy"] = "Always"
    frontend["replicas"] = "1"
    errors = crd_errors(dgd, target)
    assert any("mainContainer: Additional properties" in e and "imagePullPolicyy" in e
               for e in errors), errors  # fmt: skip
    assert any("Frontend.replicas: '1' is not of type 'integer'" in e for e in errors), errors
    k8s = {"api_version": "v1beta1", "image": LATEST, "dynamo_version": "1.4.2"}
    beta = _dgd(load(SGLANG, {"k8s": k8s}))
    assert "runtimeVersionOverride" in str(beta)
    assert crd_errors(beta, "1.4.2") == []
    assert crd_for("1.3.0", "v1beta1").startswith("dgd-1.3.0")
    assert any("runtimeVersionOverride" in e for e in crd_errors(beta, "1.3.0"))
