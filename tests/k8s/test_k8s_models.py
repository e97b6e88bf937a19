"""`render k8s` of a `models:` config (issue 16): one worker service per model with the model's
replicas, GPUs, args and env; role pods pick their model with `up --role worker --model NAME`;
plain pods carry their own endpoint; names the CRD and the operator take. Whether the frontend
finds every model after the operator's env merge: test_k8s_operator_env.py; the CRDs:
test_k8s_crd.py (every config in configs/, two-models.yaml among them)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest

from launcher.errors import ConfigError
from launcher.k8s import render as k8s

from .k8skit import (
    TWO_MODELS,
    as_kubectl_reads,
    by_kind,
    dgd_of,
    load,
    pods,
    probes,
    resources_of,
    values_of,
    worker_services,
)
from .test_k8s_cli import error_line, run_cli

# two-models.yaml as an SGLang deployment with each model's own path, tp, args and env
SGLANG_MODELS: dict[str, Any] = {
    "k8s": {"backend": "sglang"},
    "workers": {"env": {"SHARED": "1", "WHO": "workers"}},
    "models": [
        {"name": "alpha", "path": "org/alpha-7b", "served_name": "alpha", "workers": 2, "tp": 2,
         "page_size": 16, "extra_args": ["--mem-fraction-static", "0.8"],
         "env": {"WHO": "alpha"}},
        {"name": "beta", "path": "org/beta-1b", "served_name": "beta", "workers": 1,
         "page_size": 32},
    ],
}  # fmt: skip


def _arg(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def test_one_worker_service_per_model_role_mode() -> None:
    dgd = dgd_of(as_kubectl_reads(load(TWO_MODELS, SGLANG_MODELS)))
    assert list(dgd["spec"]["services"]) == ["Frontend", "SGLangWorker-alpha", "SGLangWorker-beta"]
    assert worker_services(dgd) == ["SGLangWorker-alpha", "SGLangWorker-beta"]
    services = dgd["spec"]["services"]
    assert (
        services["SGLangWorker-alpha"]["replicas"],
        services["SGLangWorker-beta"]["replicas"],
    ) == (2, 1)
    for name, model, gpus in (
        ("SGLangWorker-alpha", "alpha", "2"),
        ("SGLangWorker-beta", "beta", "1"),
    ):
        _, main = pods(dgd)[name]
        assert main["args"] == ["up", "sglang", "--role", "worker", "--model", model,
                                "--config", k8s.CONFIG_PATH]  # fmt: skip
        assert resources_of(dgd, name)["limits"]["gpu"] == gpus
    assert pods(dgd)["Frontend"][1]["args"] == k8s.role_args("frontend", "sglang")
    notes = {
        svc["extraPodMetadata"]["annotations"][k8s.CONFIG_HASH_KEY] for svc in services.values()
    }
    assert len(notes) == 1  # one shipped config for every pod


def test_frontend_is_ready_when_any_model_answers() -> None:
    """Role mode: `dynlaunch health` per model, joined with ||; plain: every served name."""
    role = dgd_of(as_kubectl_reads(load(TWO_MODELS)))
    command = probes(role, "Frontend")["readiness"]["exec"]["command"]
    assert command[:2] == ["sh", "-c"]
    checks = [shlex.split(part) for part in command[2].split(" || ")]
    url = f"http://127.0.0.1:{k8s.HTTP_PORT}"
    assert checks == [
        ["dynlaunch", "health", "--url", url, "--model", m] for m in ("alpha", "beta")
    ]
    plain = dgd_of(as_kubectl_reads(load(TWO_MODELS, SGLANG_MODELS), plain=True))
    ready = probes(plain, "Frontend")["readiness"]["exec"]["command"]
    assert ready[:2] == ["python3", "-c"]
    assert ready[3:] == [url, "alpha", "beta"]


def test_plain_workers_carry_their_model_on_0_5() -> None:
    dgd = dgd_of(as_kubectl_reads(load(TWO_MODELS, SGLANG_MODELS), plain=True))
    alpha, beta = pods(dgd)["SGLangWorker-alpha"][1], pods(dgd)["SGLangWorker-beta"][1]
    for main, name, path, page in (
        (alpha, "alpha", "org/alpha-7b", "16"),
        (beta, "beta", "org/beta-1b", "32"),
    ):
        assert main["command"] == ["python3"]
        args = main["args"]
        assert (_arg(args, "--model-path"), _arg(args, "--served-model-name")) == (path, name)
        assert _arg(args, "--endpoint") == f"dyn://dynamo.{name}.generate"
        assert (_arg(args, "--page-size"), _arg(args, "--tp")) == (
            page,
            "2" if name == "alpha" else "1",
        )
    assert alpha["args"][-2:] == ["--mem-fraction-static", "0.8"]
    assert "--mem-fraction-static" not in beta["args"]
    env = {s: {v["name"]: v["value"] for v in values_of(dgd, s)} for s in worker_services(dgd)}
    assert (env["SGLangWorker-alpha"]["WHO"], env["SGLangWorker-beta"]["WHO"]) == (
        "alpha",
        "workers",
    )
    assert env["SGLangWorker-beta"]["SHARED"] == "1"
    assert "--namespace" in pods(dgd)["Frontend"][1]["args"]  # 0.5: the frontend's namespace


def test_plain_workers_on_1x_compute_their_namespace() -> None:
    """1.x: the operator's namespace and suffix, through a shell; the model's own component."""
    flags = SGLANG_MODELS | {"k8s": {"backend": "sglang", "dynamo_version": "1.4.2"}}
    dgd = dgd_of(as_kubectl_reads(load(TWO_MODELS, flags), plain=True))
    main = pods(dgd)["SGLangWorker-beta"][1]
    assert main["command"][:2] == ["sh", "-c"]
    assert main["command"][2].endswith(f'--endpoint "dyn://{k8s.SUFFIXED_NS}.beta.generate"')
    assert main["args"][:3] == ["python3", "-m", "dynamo.sglang"]
    assert "--endpoint" not in main["args"]  # none of ours: the shell's wins, and only it
    assert "$(" not in main["command"][2]  # Kubernetes would expand $(VAR) itself


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        ({"k8s": {"name": "a" * 45}}, "models[0] (alpha): the operator would name its worker "
         f"resources {'a' * 45}-mockerworker-alpha, not a DNS label"),
        ({"k8s": {"name": "a" * 40, "dynamo_version": "1.4.2"}},
         f"{'a' * 40}-mockerworker-alpha-<hash>"),
        ({"k8s": {"worker": {"replicas": 3}}}, "k8s.worker.replicas: with a models: list"),
        ({"models": [{"name": f"m{i}", "served_name": f"m{i}"} for i in range(25)]},
         "models: 25 models make 26 services"),
        ({"models": [{"name": "alpha", "env": {"HF_TOKEN": "hf_x"}}]},
         "models[0].env.HF_TOKEN: a secret is not rendered"),
        ({"models": [{"name": "alpha", "env": {"DYN_NAMESPACE": "x"}}],
          "k8s": {"dynamo_version": "1.4.2"}}, "models[0].env.DYN_NAMESPACE: the Dynamo >=1.4"),
    ],
)  # fmt: skip
def test_refused(flags: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(words)) as err:
        k8s.render(load(TWO_MODELS, flags), plain=False, environ={})
    assert "hf_x" not in str(err.value)


def test_a_name_that_fits_passes() -> None:
    """40 + len('-mockerworker-alpha') = 59 <= 63 on 0.5 (no worker hash there)."""
    assert k8s.render(load(TWO_MODELS, {"k8s": {"name": "a" * 40}}), plain=False, environ={})


# -- `--model NAME`: a worker pod of one model --------------------------------------------------


def _shipped(tmp_path: Path) -> Path:
    (cm,) = by_kind(k8s.render(load(TWO_MODELS), plain=False, environ={}), "ConfigMap")
    path = tmp_path / "config.yaml"
    path.write_text(cm["data"]["config.yaml"], encoding="utf-8")
    return path


POD = {
    "ETCD_ENDPOINTS": "http://etcd.ops:2379",
    "NATS_SERVER": "nats://nats.ops:4222",
    "DYN_NAMESPACE": "dynamo",
    "DYN_SYSTEM_PORT": "9090",
    "DYNLAUNCH_DYNAMO__VERSION": "1.4.2",
}


@pytest.mark.parametrize(("model", "page"), [("alpha", "16"), ("beta", "32")])
def test_worker_pod_runs_only_its_model(model: str, page: str, tmp_path: Path) -> None:
    args = ["plan", "mocker", "--role", "worker", "--model", model, "--json"]
    result = run_cli([*args, "--config", str(_shipped(tmp_path))], tmp_path, POD)
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    (proc,) = plan["processes"]
    assert (proc["name"], proc["model"]) == (f"{model}-0", model)
    assert _arg(proc["argv"], "--endpoint") == f"dyn://dynamo.{model}.generate"
    assert _arg(proc["argv"], "--block-size") == page


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--role", "worker", "--model", "gamma"],
         "--model gamma: not a model of this config (models: has alpha, beta)"),
        (["--role", "frontend", "--model", "alpha"], "--model alpha: selects the model of a"),
    ],
)  # fmt: skip
def test_bad_model_is_one_line(args: list[str], words: str, tmp_path: Path) -> None:
    result = run_cli(["plan", "mocker", *args, "--config", str(_shipped(tmp_path))], tmp_path, POD)
    assert words in error_line(result, 2)


def test_model_needs_a_models_list(tmp_path: Path) -> None:
    result = run_cli(["plan", "mocker", "--role", "worker", "--model", "alpha"], tmp_path, POD)
    assert "--model alpha: not a model of this config (no models: list)" in error_line(result, 2)
