"""`dynlaunch render k8s` through the real CLI (a subprocess), and the rendered pod config through
the role-mode command (`dynlaunch plan sglang --role ...`) with the environment a pod gets."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest
import yaml

from launcher.cli import render as cli_render
from launcher.cli import up as cli
from launcher.config import load_config
from launcher.errors import ConfigError
from launcher.k8s import render as k8s
from testkit.net import free_port

from .k8skit import GOLDEN, REPO, SGLANG, SGLANG_P5, by_kind, load

STRIPPED = (
    "XDG_STATE_HOME", "XDG_CACHE_HOME", "ETCD_ENDPOINTS", "NATS_SERVER", "DYN_NAMESPACE",
    "DYN_SYSTEM_PORT", "CUDA_VISIBLE_DEVICES",
)  # fmt: skip


def run_cli(
    args: list[str], home: Path, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    base = {
        k: v for k, v in os.environ.items() if not k.startswith("DYNLAUNCH_") and k not in STRIPPED
    }
    return subprocess.run(
        [sys.executable, "-m", "launcher", *args],
        cwd=REPO,
        env=base | {"HOME": str(home), "TMPDIR": str(home)} | dict(env or {}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def error_line(result: subprocess.CompletedProcess[str], code: int) -> str:
    assert result.returncode == code, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("dynlaunch: error")
    assert result.stdout == ""
    return line


def test_stdout_is_the_golden_manifest(tmp_path: Path) -> None:
    result = run_cli(["render", "k8s", "-c", str(SGLANG)], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == (GOLDEN / "sglang.yaml").read_text(encoding="utf-8")
    assert result.stderr == ""


def test_output_file_and_flags(tmp_path: Path) -> None:
    out = tmp_path / "dgd.yaml"
    flags = ["--name", "ref", "--k8s-namespace", "team-a", "--image", "reg.example/dl:1.4.2"]
    result = run_cli(
        ["render", "k8s", "-c", str(SGLANG_P5), "--plain", "--api-version", "v1beta1", "-o",
         str(out), *flags],
        tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    docs = list(yaml.safe_load_all(out.read_text(encoding="utf-8")))
    (dgd,) = by_kind(docs, "DynamoGraphDeployment")
    assert not by_kind(docs, "ConfigMap")  # --plain ships no config
    assert dgd["apiVersion"] == "nvidia.com/v1beta1"
    assert (dgd["metadata"]["name"], dgd["metadata"]["namespace"]) == ("ref", "team-a")
    main = dgd["spec"]["components"][0]["podTemplate"]["spec"]["containers"][0]
    assert "--migration-limit" in main["args"]  # the target follows the image tag, 1.4.2


def test_bad_flag_is_one_line_naming_it(tmp_path: Path) -> None:
    result = run_cli(["render", "k8s", "-c", str(SGLANG), "--name", "Bad_Name"], tmp_path)
    assert "--name: use lower-case letters" in error_line(result, 2)


@pytest.mark.parametrize(
    ("given", "words"),
    [
        ({"dynamo_version": "latest"}, "--dynamo-version: expected a Dynamo version"),
        ({"k8s_namespace": "Team_A"}, "--k8s-namespace: use lower-case letters"),
        ({"image": ""}, "--image: String should have at least 1 character"),
    ],
)
def test_flags_are_a_config_layer_named_in_errors(given: dict[str, str], words: str) -> None:
    flags, names = cli_render._flags({k: given.get(k) for k in cli_render.FLAG_KEYS})
    with pytest.raises(ConfigError, match=re.escape(words)):
        load_config("sglang", path=str(SGLANG), environ={}, flags=flags, flag_names=names)


def test_output_to_a_missing_directory(tmp_path: Path) -> None:
    result = run_cli(["render", "k8s", "-o", str(tmp_path / "no" / "dgd.yaml")], tmp_path)
    assert f"--output {tmp_path / 'no' / 'dgd.yaml'}: No such file" in error_line(result, 2)


@pytest.mark.parametrize("config", [SGLANG, SGLANG_P5])
def test_role_pods_accept_the_shipped_config(
    config: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`dynlaunch plan sglang --role ...` (the real command function, in this process) on the
    shipped config, with the environment the operator gives a pod. Ports are host facts (each pod
    has its own network): free ones here."""
    (cm,) = by_kind(k8s.render(load(config), plain=False), "ConfigMap")
    shipped = tmp_path / "config.yaml"
    shipped.write_text(cm["data"]["config.yaml"], encoding="utf-8")
    data = yaml.safe_load(cm["data"]["config.yaml"])
    for name in [n for n in os.environ if n.startswith("DYNLAUNCH_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("ETCD_ENDPOINTS", "http://etcd.dynamo-cloud:2379")
    monkeypatch.setenv("NATS_SERVER", "nats://nats.dynamo-cloud:4222")
    monkeypatch.setenv("DYN_NAMESPACE", data["namespace"])
    monkeypatch.setenv("DYN_SYSTEM_PORT", str(free_port()))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", ",".join(map(str, range(data["workers"]["tp"]))))
    cli.plan("sglang", config=str(shipped), role="worker", as_json=True)
    (proc,) = json.loads(capsys.readouterr().out)["processes"]
    assert proc["role"] == "worker"
    assert proc["env"]["DYN_SYSTEM_PORT"] == os.environ["DYN_SYSTEM_PORT"]
    assert proc["argv"][proc["argv"].index("--tp") + 1] == str(data["workers"]["tp"])
    assert "DYN_SYSTEM_HOST" not in proc["env"]  # the pod's DYN_SYSTEM_HOST=0.0.0.0 stands
    cli.plan("sglang", config=str(shipped), role="frontend", http_port=free_port(), as_json=True)
    (proc,) = json.loads(capsys.readouterr().out)["processes"]
    assert proc["argv"][proc["argv"].index("--http-host") + 1] == "0.0.0.0"
