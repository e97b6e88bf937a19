"""`launcher.k8s.render`: golden files, the reference DGD's shape, and what the operator and
Kubernetes need from every variant (role and plain, both configs, both API versions)."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from launcher.errors import ConfigError
from launcher.k8s import render as k8s

from .k8skit import (
    CONTAINER_FIELDS,
    ENV_NAME_RE,
    GOLDEN,
    MOCKER,
    POD_SPEC_FIELDS,
    PROBE_FIELDS,
    PROBE_HANDLERS,
    QUANTITY_RE,
    REF_MODEL,
    SGLANG,
    SGLANG_P5,
    TOLERATION_FIELDS,
    TWO_MODELS,
    as_kubectl_reads,
    by_kind,
    dgd_of,
    env_of,
    hf_flags,
    label_key_ok,
    load,
    pods,
    probes,
    resources_of,
    values_of,
)

GOLDEN_CASES = [
    ("sglang.yaml", SGLANG, False, {}),
    ("sglang-plain.yaml", SGLANG, True, {}),
    ("sglang-p5.yaml", SGLANG_P5, False, {}),
    ("sglang-p5-plain.yaml", SGLANG_P5, True, {}),
    ("sglang-v1beta1.yaml", SGLANG, False, {"k8s": {"api_version": "v1beta1"}}),
    ("mocker-v1beta1.yaml", MOCKER, False, {"k8s": {"api_version": "v1beta1"}}),
    ("mocker-plain-1.4.yaml", MOCKER, True,
     {"k8s": {"dynamo_version": "1.4.2"}, "model": {"path": "Qwen/Qwen3-0.6B"}}),
    ("two-models.yaml", TWO_MODELS, False, {}),
    ("two-models-plain-1.4.yaml", TWO_MODELS, True,
     {"k8s": {"dynamo_version": "1.4.2"}, **hf_flags(TWO_MODELS)}),
    ("two-models-sglang-plain.yaml", TWO_MODELS, True, {"k8s": {"backend": "sglang"}}),
]  # fmt: skip
VARIANTS = [
    pytest.param(path, plain, flags, id=f"{path.stem}-{'plain' if plain else 'role'}-{tag}")
    for path in (SGLANG, SGLANG_P5)
    for plain in (False, True)
    for tag, flags in (
        ("v1alpha1", {}),
        ("v1beta1", {"k8s": {"api_version": "v1beta1"}}),
        ("dynamo0.4", {"k8s": {"dynamo_version": "0.4.1"}}),
        ("dynamo1.4", {"k8s": {"dynamo_version": "1.4.2"}}),
    )
]

# The ai-on-eks SGLang DGD (v0.5.0 shape) with the README's nodeSelector and toleration: every key
# must be in ours, with a value of the same type. Probes: any single handler (theirs: `exit 0`).
REFERENCE: dict[str, Any] = {
    "apiVersion": "nvidia.com/v1alpha1",
    "kind": "DynamoGraphDeployment",
    "metadata": {"name": "sglang", "namespace": "dynamo-cloud"},
    "spec": {
        "services": {
            "Frontend": {
                "livenessProbe": {"httpGet": {"path": "/health", "port": 8000}},
                "readinessProbe": {"exec": {"command": ["/bin/sh", "-c", "exit 0"]}},
                "dynamoNamespace": "sglang",
                "componentType": "frontend",
                "replicas": 1,
                "resources": {
                    "requests": {"cpu": "5", "memory": "10Gi"},
                    "limits": {"cpu": "5", "memory": "10Gi"},
                },
                "extraPodSpec": {
                    "nodeSelector": {"karpenter.sh/nodepool": "cpu-karpenter"},
                    "mainContainer": {
                        "image": "nvcr.io/nvidia/ai-dynamo/sglang-runtime:0.5.0",
                        "workingDir": "/workspace/components/backends/sglang",
                        "command": ["sh", "-c"],
                        "args": ["python3 -m dynamo.frontend --http-port=8000"],
                    },
                },
            },
            "SGLangWorker": {
                "envFromSecret": "hf-token-secret",
                "livenessProbe": {"exec": {"command": ["/bin/sh", "-c", "exit 0"]}},
                "readinessProbe": {"exec": {"command": ["/bin/sh", "-c", "exit 0"]}},
                "dynamoNamespace": "sglang",
                "componentType": "worker",
                "replicas": 1,
                "resources": {
                    "requests": {"cpu": "10", "memory": "20Gi", "gpu": "1"},
                    "limits": {"cpu": "10", "memory": "20Gi", "gpu": "1"},
                },
                "extraPodSpec": {
                    "nodeSelector": {"karpenter.sh/nodepool": "g5-gpu-karpenter"},
                    "tolerations": [
                        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
                    ],
                    "mainContainer": {
                        "image": "nvcr.io/nvidia/ai-dynamo/sglang-runtime:0.5.0",
                        "workingDir": "/workspace/components/backends/sglang",
                        "args": ["python3", "-m", "dynamo.sglang", "--model-path", REF_MODEL],
                    },
                },
            },
        }
    },
}
# Values ours must equal (the rest are commands and probes, which dynlaunch chooses).
SAME_VALUES = [
    ("metadata", "name"), ("metadata", "namespace"),
    *[
        ("spec", "services", svc, *key)
        for svc in ("Frontend", "SGLangWorker")
        for key in (
            ("dynamoNamespace",), ("componentType",), ("replicas",), ("resources",),
            ("extraPodSpec", "nodeSelector"), ("extraPodSpec", "mainContainer", "image"),
            ("extraPodSpec", "mainContainer", "workingDir"),
        )
    ],
    ("spec", "services", "SGLangWorker", "envFromSecret"),
    ("spec", "services", "SGLangWorker", "extraPodSpec", "tolerations"),
]  # fmt: skip


@pytest.mark.parametrize(("golden", "config", "plain", "flags"), GOLDEN_CASES)
def test_golden(
    golden: str, config: Path, plain: bool, flags: dict[str, Any], update_golden: bool
) -> None:
    text = k8s.dump_yaml(k8s.render(load(config, flags), plain=plain))
    path = GOLDEN / golden
    if update_golden:  # a rewrite is not a comparison: never a pass
        if path.read_text(encoding="utf-8") == text:
            pytest.skip(f"{path} unchanged (--update-golden compares nothing)")
        path.write_text(text, encoding="utf-8")
        pytest.fail(f"{path} rewritten: review the diff, then run without --update-golden")
    assert path.read_text(encoding="utf-8") == text, (
        f"{path} differs: run `pytest tests/k8s --update-golden` and review the diff"
    )


def _walk(ref: Any, ours: Any, where: str) -> None:
    if where.endswith("Probe"):
        assert isinstance(ours, dict), where
        assert len(PROBE_HANDLERS & ours.keys()) == 1, where
        return
    assert type(ours) is type(ref), f"{where}: {type(ours).__name__}, not {type(ref).__name__}"
    if isinstance(ref, dict):
        for key, value in ref.items():
            assert key in ours, f"{where}.{key} missing"
            _walk(value, ours[key], f"{where}.{key}")
    elif isinstance(ref, list) and ref:
        assert ours, where
        for item in ours:
            _walk(ref[0], item, f"{where}[]")


@pytest.mark.parametrize("plain", [False, True], ids=["role", "plain"])
def test_reference_keys_and_values(plain: bool) -> None:
    dgd = dgd_of(as_kubectl_reads(load(SGLANG), plain=plain))
    _walk(REFERENCE, dgd, "dgd")
    for path in SAME_VALUES:
        ref, ours = REFERENCE, dgd
        for key in path:
            ref, ours = ref[key], ours[key]
        assert ours == ref, ".".join(path)


@pytest.mark.parametrize(("config", "plain", "flags"), VARIANTS)
def test_what_kubernetes_and_the_operator_need(
    config: Path, plain: bool, flags: dict[str, Any]
) -> None:
    cfg = load(config, flags)
    docs = as_kubectl_reads(cfg, plain=plain)
    dgd = dgd_of(docs)
    assert set(pods(dgd)) == {"Frontend", "SGLangWorker"}
    for service, (pod, main) in pods(dgd).items():
        assert set(pod) <= POD_SPEC_FIELDS, service
        assert set(main) <= CONTAINER_FIELDS, service
        assert all(isinstance(a, str) for a in [*main["command"], *main["args"]])
        assert main["command"], service
        assert main["args"], "the operator fills in empty args with its own"
        for kind in ("requests", "limits"):
            for name, quantity in resources_of(dgd, service)[kind].items():
                assert isinstance(quantity, str), name
                assert QUANTITY_RE.fullmatch(quantity), name
        for var in env_of(dgd, service):
            assert set(var) in ({"name", "value"}, {"name", "valueFrom"}), var
            assert isinstance(var["value"], str) if "value" in var else var["valueFrom"], var
            assert ENV_NAME_RE.fullmatch(var["name"]), var
        assert all(isinstance(v, str) for v in pod.get("nodeSelector", {}).values())
        assert all(label_key_ok(key) for key in pod.get("nodeSelector", {}))
        for tol in pod.get("tolerations", []):
            assert set(tol) <= TOLERATION_FIELDS, tol
            assert tol["operator"] in ("Exists", "Equal"), tol
            assert tol.get("effect") in (None, "NoSchedule", "PreferNoSchedule", "NoExecute")
        for kind, probe in probes(dgd, service).items():
            assert set(probe) <= PROBE_FIELDS, kind
            assert len(PROBE_HANDLERS & probe.keys()) == 1, kind
            assert all(isinstance(probe[k], int) for k in probe.keys() - PROBE_HANDLERS)
        assert pod["terminationGracePeriodSeconds"] >= k8s.stop_budget_s(cfg)
    worker = resources_of(dgd, "SGLangWorker")
    gpu = worker["limits"].get("gpu") or worker["limits"]["nvidia.com/gpu"]
    assert gpu == str(cfg.workers.tp)
    assert [m["image"] for _, m in pods(dgd).values()] == [cfg.k8s.image_ref()] * 2
    if not plain:
        _check_config_mount(docs, dgd)


def _check_config_mount(docs: list[dict[str, Any]], dgd: dict[str, Any]) -> None:
    """The ConfigMap the render emits is mounted where the command reads its config."""
    (cm,) = by_kind(docs, "ConfigMap")
    assert cm["metadata"]["namespace"] == dgd["metadata"]["namespace"]
    for service, (pod, main) in pods(dgd).items():
        args = main["args"]
        path = args[args.index("--config") + 1]
        directory, _, key = path.rpartition("/")
        (mount,) = [m for m in main["volumeMounts"] if m["mountPath"] == directory]
        (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
        assert volume["configMap"]["name"] == cm["metadata"]["name"], service
        assert isinstance(cm["data"][key], str), service


@pytest.mark.parametrize("config", [SGLANG, SGLANG_P5])
def test_shipped_config_is_a_valid_pod_config(config: Path, tmp_path: Path) -> None:
    cfg = load(config)
    (cm,) = by_kind(as_kubectl_reads(cfg), "ConfigMap")
    (shipped,) = cm["data"].values()
    path = tmp_path / "config.yaml"
    path.write_text(shipped, encoding="utf-8")
    pod = load(path)
    assert (pod.frontend.http_host, pod.frontend.http_port) == ("0.0.0.0", k8s.HTTP_PORT)
    assert (pod.workers.count, pod.workers.gpus, pod.workers.tp) == (1, None, cfg.workers.tp)
    assert (pod.dynamo.version, pod.dynamo.python) == (None, None)  # the image's own
    assert (pod.model, pod.namespace) == (cfg.model, cfg.namespace)
    assert pod.stop_timeout_s == cfg.stop_timeout_s


def test_role_commands_and_probes() -> None:
    cfg = load(SGLANG_P5)
    dgd = dgd_of(as_kubectl_reads(cfg))
    for service, role in (("Frontend", "frontend"), ("SGLangWorker", "worker")):
        _, main = pods(dgd)[service]
        assert main["command"] == ["dynlaunch"]
        assert main["args"] == ["up", "sglang", "--role", role, "--config", k8s.CONFIG_PATH]
    ready = probes(dgd, "Frontend")["readiness"]["exec"]["command"]
    assert ready == ["dynlaunch", "health", "--url", "http://127.0.0.1:8000", "--model", REF_MODEL]
    assert dgd["spec"]["services"]["SGLangWorker"]["replicas"] == 2
    annotations = {
        svc["extraPodMetadata"]["annotations"][k8s.CONFIG_HASH_KEY]
        for svc in dgd["spec"]["services"].values()
    }
    changed = load(SGLANG_P5, {"workers": {"page_size": 32}})
    other = dgd_of(as_kubectl_reads(changed))["spec"]["services"]["Frontend"]
    assert len(annotations) == 1
    assert other["extraPodMetadata"]["annotations"][k8s.CONFIG_HASH_KEY] not in annotations


def test_worker_probes_allow_the_startup_budget() -> None:
    cfg = load(SGLANG, {"k8s": {"worker": {"startup_probe_budget_s": 3605}}})
    found = probes(dgd_of(as_kubectl_reads(cfg)), "SGLangWorker")
    startup = found["startup"]
    assert startup["httpGet"] == {"path": "/health", "port": k8s.SYSTEM_PORT}
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 3605
    assert found["liveness"]["failureThreshold"] > 1  # one slow answer must not kill a GPU worker
    env = {v["name"]: v["value"] for v in values_of(dgd_of(as_kubectl_reads(cfg)), "SGLangWorker")}
    assert (env["DYN_SYSTEM_HOST"], env["DYN_SYSTEM_PORT"]) == ("0.0.0.0", str(k8s.SYSTEM_PORT))


def test_grace_period_covers_the_stop_budget() -> None:
    cfg = load(SGLANG, {"stop_timeout_s": 47.5})
    for pod, _ in pods(dgd_of(as_kubectl_reads(cfg))).values():
        assert pod["terminationGracePeriodSeconds"] == math.ceil(2 * 47.5 + 5)


@pytest.mark.parametrize(
    ("version", "module", "component", "annotated"),
    [
        ("0.4.0", "dynamo.sglang.worker", "main", True),
        ("0.4.1", "dynamo.sglang.worker", "frontend", True),
        ("0.5.0", "dynamo.sglang", "frontend", True),
        ("0.6.1", "dynamo.sglang", "frontend", False),
        ("1.4.2", "dynamo.sglang", "frontend", False),
    ],
)
def test_plain_commands_per_target(
    version: str, module: str, component: str, annotated: bool
) -> None:
    cfg = load(SGLANG, {"k8s": {"dynamo_version": version}})
    dgd = dgd_of(as_kubectl_reads(cfg, plain=True))
    front, worker = pods(dgd)["Frontend"][1], pods(dgd)["SGLangWorker"][1]
    assert front["command"] == worker["command"] == ["python3"]
    assert front["args"][:2] == ["-m", "dynamo.frontend"]
    assert front["args"][2:6] == ["--http-host", "0.0.0.0", "--http-port", "8000"]
    assert worker["args"][:2] == ["-m", module]
    assert worker["args"][worker["args"].index("--tp") + 1] == "1"
    assert ("--migration-limit" in front["args"]) is version.startswith("1.")
    assert dgd["spec"]["services"]["Frontend"]["componentType"] == component
    commands = [" ".join([*m["command"], *m["args"]]) for _, m in pods(dgd).values()]
    assert not any("clear" in command for command in commands)
    assert (k8s.CLEAR_NOTE_KEY in dgd["metadata"].get("annotations", {})) is annotated
    ready = probes(dgd, "Frontend")["readiness"]["exec"]["command"]
    assert ready[:2] == ["python3", "-c"]
    assert ready[3:] == ["http://127.0.0.1:8000", REF_MODEL]


def test_target_version_follows_the_image_tag_unless_given() -> None:
    tagged = load(SGLANG, {"k8s": {"image": "registry.example/dynlaunch-sglang:v0.4.0"}})
    assert tagged.k8s.target_version() == "0.4.0"
    dgd = dgd_of(as_kubectl_reads(tagged))
    assert dgd["spec"]["services"]["Frontend"]["componentType"] == "main"
    assert "backendFramework" not in dgd["spec"]
    newer = dgd_of(as_kubectl_reads(load(SGLANG, {"k8s": {"dynamo_version": "0.4.1"}})))
    assert newer["spec"]["services"]["Frontend"]["componentType"] == "frontend"
    assert newer["spec"]["backendFramework"] == "sglang"
    given = load(SGLANG, {"k8s": {"image": "registry.example/x:latest", "dynamo_version": "1.4.2"}})
    assert given.k8s.target_version() == "1.4.2"
    assert load(SGLANG, {"k8s": {"image": "registry.example/x"}}).k8s.target_version() == "0.5.0"


def test_v1beta1_shape() -> None:
    cfg = load(SGLANG, {"k8s": {"api_version": "v1beta1", "image": "registry.example/x:latest"}})
    dgd = dgd_of(as_kubectl_reads(cfg))
    assert dgd["apiVersion"] == "nvidia.com/v1beta1"
    assert "services" not in dgd["spec"]
    front, worker = dgd["spec"]["components"]
    assert (front["name"], front["type"], worker["name"], worker["type"]) == (
        "Frontend", "frontend", "SGLangWorker", "worker",
    )  # fmt: skip
    assert front["runtimeVersionOverride"] == "1.4.2"  # the tag `latest` does not tell
    main = worker["podTemplate"]["spec"]["containers"][0]
    assert main["name"] == "main"
    assert main["envFrom"] == [{"secretRef": {"name": "hf-token-secret"}}]
    assert main["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert "dynamoNamespace" not in worker


def test_p5_variant_is_a_config_change() -> None:
    dgd = dgd_of(as_kubectl_reads(load(SGLANG_P5)))
    worker = dgd["spec"]["services"]["SGLangWorker"]
    assert worker["extraPodSpec"]["nodeSelector"] == {
        "karpenter.sh/nodepool": "p5-gpu-karpenter",
        "node.kubernetes.io/instance-type": "p5.48xlarge",
    }
    assert (worker["replicas"], worker["resources"]["limits"]["gpu"]) == (2, "2")
    explicit = load(SGLANG_P5, {"k8s": {"worker": {"replicas": 3}}})
    assert dgd_of(as_kubectl_reads(explicit))["spec"]["services"]["SGLangWorker"]["replicas"] == 3


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        ({"workers": {"env": {"HF_TOKEN": "hf_x"}}}, "workers.env.HF_TOKEN"),
        ({"frontend": {"extra_args": ["--api-key=abc"]}}, "frontend.extra_args --api-key"),
        ({"namespace": "Big_NS_" + "x" * 50}, "set k8s.name (--name)"),
    ],
)
def test_refused(flags: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(words)) as err:
        k8s.render(load(SGLANG, flags), plain=False)
    assert "hf_x" not in str(err.value)  # the secret's value is never echoed
    assert "abc" not in str(err.value)


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"k8s": {"name": "Bad_Name"}}, "k8s.name"),
        ({"k8s": {"worker": {"cpu": "ten"}}}, "k8s.worker.cpu"),
        ({"k8s": {"worker": {"node_selector": {"bad key!": "x"}}}}, "k8s.worker.node_selector"),
        ({"k8s": {"worker": {"tolerations": [{"key": "a", "operator": "Exists", "value": "v"}]}}},
         "k8s.worker.tolerations: operator Exists takes no value"),
        ({"k8s": {"dynamo_version": "latest"}}, "k8s.dynamo_version"),
        ({"k8s": {"api_version": "v2"}}, "k8s.api_version"),
        ({"k8s": {"nodes": 3}}, "k8s.nodes"),
    ],
)  # fmt: skip
def test_bad_k8s_keys_name_the_file_and_key(data: dict[str, Any], key: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape(f"{path}: {key}")):
        load(path)


def test_environment_layer_reaches_the_k8s_section() -> None:
    cfg = load(SGLANG, environ={"DYNLAUNCH_K8S__WORKER__CPU": "12", "DYNLAUNCH_K8S__NAME": "ref"})
    dgd = dgd_of(as_kubectl_reads(cfg))
    assert dgd["metadata"]["name"] == "ref"
    assert dgd["spec"]["services"]["SGLangWorker"]["resources"]["limits"]["cpu"] == "12"


def test_plain_pods_carry_the_config_env_and_kv_events() -> None:
    flags = {
        "frontend": {"router_mode": "kv", "env": {"DYN_LOG": "debug"}},
        "workers": {
            "env": {"SGLANG_ALLOW_OVERWRITE": "1"},
            "extra_args": ["--max-total-tokens", "4096"],
        },
    }
    dgd = dgd_of(as_kubectl_reads(load(SGLANG, flags), plain=True))
    worker_env = {v["name"]: v["value"] for v in values_of(dgd, "SGLangWorker")}
    front_env = {v["name"]: v["value"] for v in values_of(dgd, "Frontend")}
    assert (worker_env["SGLANG_ALLOW_OVERWRITE"], front_env["DYN_LOG"]) == ("1", "debug")
    args = pods(dgd)["SGLangWorker"][1]["args"]
    assert args[-2:] == ["--max-total-tokens", "4096"]
    # SGLang binds only a wildcard endpoint (a 127.0.0.1 one makes it connect: no events flow)
    assert "tcp://*:5557" in args[args.index("--kv-events-config") + 1]
    assert pods(dgd)["Frontend"][1]["args"][-2:] == ["--router-mode", "kv"]
