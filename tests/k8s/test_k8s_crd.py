"""Every DynamoGraphDeployment dynlaunch renders (each config in configs/, role and plain mode,
each API version, each operator row of launcher.k8s.releases) and every golden file passes the
operator's own CRDs for the release it targets: JSON Schema with unknown fields refused, list-map
keys, and the CEL rules (tests/k8s/crdcheck.py). Negative controls show each part refuses what the
API server refuses."""

from __future__ import annotations

import copy
import lzma
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from launcher.config import Config
from launcher.errors import ConfigError
from launcher.k8s import render as k8s
from launcher.k8s.releases import ROWS, release

from .crdcheck import CRDS, CRDS_FOR_ROW, MAIN, V05, V13, V14, crd_errors, errors_against
from .k8skit import CONFIGS, GOLDEN, SGLANG, dgd_of, hf_flags, load
from .test_k8s_render import GOLDEN_CASES

REFERENCE_CRDS = Path(__file__).resolve().parents[3] / "shared" / "reference" / "k8s-crds"
# One version per operator row, and the image tags that make >= 1.4 need runtimeVersionOverride.
ROW_VERSIONS = {"0.4.0": "0.4.0", "0.4.1": "0.4.1", "0.5.x": "0.5.0", "1.0-1.2": "1.2.0",
                "1.3": "1.3.0", ">=1.4": "1.4.2"}  # fmt: skip
ODD_TAGS = ("latest", "1.4", "1.4.0.post1", "v1.4.2")


def _configs() -> list[Path]:
    return sorted(CONFIGS.glob("*.yaml"))


def _load_any(path: Path, flags: dict[str, Any]) -> Config:
    """As `render k8s` loads: with the backend the config's k8s.backend names."""
    cfg = load(path, flags)
    if cfg.k8s.backend == "sglang":
        return cfg
    from launcher.config import load_config

    return load_config(cfg.k8s.backend, path=str(path), environ={}, flags=flags, flag_names={})


def _variants() -> list[Any]:
    out = []
    for path in _configs():
        for row, version in ROW_VERSIONS.items():
            for api in release(version).api_versions:
                for plain in (False, True):
                    flags = {"k8s": {"dynamo_version": version, "api_version": api}}
                    tag = f"{path.stem}-{'plain' if plain else 'role'}-{api}-{row}"
                    out.append(pytest.param(path, plain, flags, row, id=tag))
        for odd in ODD_TAGS:
            for api in ("v1alpha1", "v1beta1"):
                image = f"registry.example/dynlaunch:{odd}"
                flags = {"k8s": {"dynamo_version": "1.4.2", "api_version": api, "image": image}}
                out.append(pytest.param(path, False, flags, ">=1.4", id=f"{path.stem}-{api}-{odd}"))
    return out


def _render(cfg: Config, plain: bool) -> dict[str, Any]:
    text = k8s.dump_yaml(k8s.render(cfg, plain=plain, environ={}))
    return dgd_of(list(yaml.safe_load_all(text)))


@pytest.mark.parametrize(("path", "plain", "flags", "row"), _variants())
def test_every_variant_passes_its_crds(
    path: Path, plain: bool, flags: dict[str, Any], row: str
) -> None:
    cfg = _load_any(path, flags)
    if plain and cfg.k8s.backend == "mocker":
        if row in ("0.4.0", "0.4.1", "0.5.x"):
            with pytest.raises(ConfigError, match=re.escape("needs Dynamo 1.0 or later")):
                k8s.render(cfg, plain=True, environ={})
            return
        cfg = _load_any(path, flags | hf_flags(path))
    assert release(cfg.k8s.target_version()).row == row
    dgd = _render(cfg, plain)
    assert crd_errors(dgd, row) == []
    if row == ">=1.4":
        tag = cfg.k8s.image_tag()
        overrides = {
            s.get("runtimeVersionOverride") for s in _services(dgd)
        }  # the webhook needs it for a tag that is not exactly 1.4.2
        assert overrides == ({None} if tag == "1.4.2" else {"1.4.2"}), tag


def _services(dgd: dict[str, Any]) -> list[dict[str, Any]]:
    spec = dgd["spec"]
    return list(spec["services"].values()) if "services" in spec else list(spec["components"])


@pytest.mark.parametrize(
    ("golden", "config", "flags"),
    [pytest.param(g, c, f, id=g) for g, c, _plain, f in GOLDEN_CASES],
)
def test_golden_dgd_passes_its_crds(golden: str, config: Path, flags: dict[str, Any]) -> None:
    """The file as committed, read back as kubectl reads it."""
    docs = list(yaml.safe_load_all((GOLDEN / golden).read_text(encoding="utf-8")))
    row = release(_load_any(config, flags).k8s.target_version()).row
    assert crd_errors(dgd_of(docs), row) == []


def test_each_row_has_crds_and_every_crd_is_used() -> None:
    assert {row.row for _, row in ROWS} == set(CRDS_FOR_ROW)
    used = {crd for crds in CRDS_FOR_ROW.values() for crd in crds}
    assert used == {p.name for p in CRDS.glob("*.xz")} == {V05, V13, V14, MAIN}


@pytest.mark.skipif(not REFERENCE_CRDS.is_dir(), reason="no shared/reference next to the repo")
def test_crd_copies_are_the_reference_files() -> None:
    for path in CRDS.glob("*.xz"):
        ours = lzma.decompress(path.read_bytes())
        assert ours == lzma.decompress((REFERENCE_CRDS / path.name).read_bytes()), path.name


# -- negative controls: each part of the check refuses what the API server refuses ---------------


def _beta() -> dict[str, Any]:
    return _render(load(SGLANG, {"k8s": {"api_version": "v1beta1"}}), plain=False)


def test_schema_refuses_unknown_fields_and_wrong_types() -> None:
    dgd = _render(load(SGLANG), plain=False)
    frontend = dgd["spec"]["services"]["Frontend"]
    frontend["extraPodSpec"]["mainContainer"]["imagePullPolicyy"] = "Always"
    frontend["replicas"] = "1"
    errors = crd_errors(dgd, "0.5.x")
    assert any("mainContainer: Additional properties" in e and "imagePullPolicyy" in e
               for e in errors), errors  # fmt: skip
    assert any("Frontend.replicas: '1' is not of type 'integer'" in e for e in errors), errors


def test_field_of_a_later_operator_is_refused() -> None:
    """runtimeVersionOverride (1.4 on) on the 1.3 CRD; backendFramework on 0.4.0's."""
    flags = {
        "k8s": {"api_version": "v1beta1", "image": "r.example/x:latest", "dynamo_version": "1.4.2"}
    }
    beta = _render(load(SGLANG, flags), plain=False)
    assert crd_errors(beta, ">=1.4") == []
    assert any("runtimeVersionOverride" in e for e in crd_errors(beta, "1.3"))
    alpha = _render(load(SGLANG, {"k8s": {"dynamo_version": "0.4.1"}}), plain=False)
    assert crd_errors(alpha, "0.4.1") == []
    assert any("backendFramework" in e for e in crd_errors(alpha, "0.4.0"))
    assert crd_errors(_beta(), "0.5.x") == [f"{V05}: v1beta1 is not served"]


def test_cel_rules_are_evaluated() -> None:
    """Component names unique case-insensitively, at most one epp, the annotation enum, and a
    rule with the quantity() library function."""
    dgd = _beta()
    dupe = copy.deepcopy(dgd)
    dupe["spec"]["components"][1]["name"] = "frontend"
    assert any("component names must be unique" in e for e in crd_errors(dupe, ">=1.4"))
    epp = copy.deepcopy(dgd)
    for comp in epp["spec"]["components"]:
        comp["type"] = "epp"
    assert any("at most one component may have type epp" in e for e in crd_errors(epp, "1.3"))
    note = copy.deepcopy(dgd)
    annotations = note["spec"]["components"][0]["podTemplate"]["metadata"]["annotations"]
    annotations["nvidia.com/vllm-distributed-executor-backend"] = "MP"
    assert crd_errors(note, ">=1.4") == []  # lowerAscii: MP is mp
    annotations["nvidia.com/vllm-distributed-executor-backend"] = "slurm"
    assert any("must be mp or ray" in e for e in crd_errors(note, ">=1.4"))
    alpha = _render(load(SGLANG, {"k8s": {"dynamo_version": "1.3.0"}}), plain=False)
    worker = alpha["spec"]["services"]["SGLangWorker"]
    worker["sharedMemory"] = {"size": "0"}
    assert any("size is required when disabled is false" in e for e in errors_against(alpha, V13))
    worker["sharedMemory"] = {"size": "8Gi"}
    assert errors_against(alpha, V13) == []


def test_list_map_keys_are_unique() -> None:
    dgd = _beta()
    container = dgd["spec"]["components"][1]["podTemplate"]["spec"]["containers"][0]
    container["ports"] = [{"containerPort": 9090, "protocol": "TCP"}] * 2
    assert any("duplicate entries for list-map keys" in e for e in crd_errors(dgd, ">=1.4"))
