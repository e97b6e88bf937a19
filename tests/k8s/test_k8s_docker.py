"""The Dockerfile (it cannot be built here): its base is the manifests' default image, it installs
this package (not ai-dynamo), and its ENTRYPOINT/CMD are the program and config path the
rendered manifests run, parsed by the real CLI."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import typer
from typer.core import TyperGroup

from launcher.cli import app
from launcher.k8s import render as k8s
from launcher.k8s.config import DEFAULT_IMAGE

from .k8skit import REPO, SGLANG, as_kubectl_reads, dgd_of, load, pods

DOCKERFILE = REPO / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, rest) pairs, comments dropped and continuation lines joined."""
    joined = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    out = []
    for line in joined.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def only(word: str) -> str:
    (rest,) = [rest for w, rest in instructions() if w == word]
    return rest


def exec_form(word: str) -> list[str]:
    value = json.loads(only(word))
    assert isinstance(value, list), word
    assert all(isinstance(v, str) for v in value), word
    return value


def parse_cli(args: list[str]) -> tuple[str, dict[str, Any]]:
    """What the real CLI makes of ``args`` (subcommand and parameters), without running it."""
    group = typer.main.get_command(app)
    assert isinstance(group, TyperGroup)
    with group.make_context("dynlaunch", list(args)) as ctx:
        command = group.get_command(ctx, args[0])
        assert command is not None, args[0]
        with command.make_context(args[0], list(args[1:]), parent=ctx) as sub:
            return args[0], dict(sub.params)


def test_base_is_the_manifests_default_image() -> None:
    assert only("ARG") == f"BASE={DEFAULT_IMAGE}"
    assert only("FROM") == "${BASE}"
    assert instructions()[0][0] == "ARG"  # before FROM: usable in FROM


def test_entrypoint_and_cmd_match_the_rendered_manifests() -> None:
    entrypoint, cmd = exec_form("ENTRYPOINT"), exec_form("CMD")
    assert entrypoint == list(k8s.ENTRYPOINT)
    for _, main in pods(dgd_of(as_kubectl_reads(load(SGLANG)))).values():
        assert main["command"] == entrypoint  # the pods run the image's own program
        args = main["args"]
        assert args[:2] == cmd[:2] == ["up", "sglang"]
        assert args[args.index("--config") + 1] == cmd[cmd.index("--config") + 1] == k8s.CONFIG_PATH


@pytest.mark.parametrize("role", ["frontend", "worker"])
def test_the_cli_accepts_cmd_and_role_args(role: str) -> None:
    assert parse_cli(exec_form("CMD"))[1]["config"] == k8s.CONFIG_PATH
    name, params = parse_cli(k8s.role_args(role))
    assert (name, params["backend"], params["role"], params["config"]) == (
        "up", "sglang", role, k8s.CONFIG_PATH,
    )  # fmt: skip


def pyproject_value(key: str) -> str:
    """A one-line `key = value` of pyproject.toml (tomllib is 3.11+; dynlaunch supports 3.10)."""
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    match = re.search(rf"^{re.escape(key)} = (.+)$", text, re.M)
    assert match is not None, key
    return match[1].strip()


def test_image_installs_this_package_not_dynamo() -> None:
    assert pyproject_value("dynlaunch") == '"launcher.cli:main"'  # [project.scripts]
    readme = json.loads(pyproject_value("readme"))
    # [tool.setuptools.packages.find] include = ["launcher*"]: the package and its subpackages
    packages = [p.rstrip("*") for p in json.loads(pyproject_value("include"))]
    copies = [rest.split() for word, rest in instructions() if word == "COPY"]
    copied = {src.rstrip("/"): dest for *srcs, dest in copies for src in srcs}
    needed = {"pyproject.toml", readme, *packages}
    assert needed <= copied.keys()
    assert all((REPO / src).exists() for src in copied)
    (run,) = [rest for word, rest in instructions() if word == "RUN"]
    src_dir = copied["pyproject.toml"].rstrip("/")
    assert f"install --no-cache-dir {src_dir}" in run or "install --no-cache --python" in run
    assert src_dir in run
    assert "ai-dynamo" not in run  # the base image has it; never replace it
    assert "dynlaunch --version" in run  # the build fails if the entrypoint does not start


def test_build_context_holds_what_copy_needs() -> None:
    lines = (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert patterns[0] == "*"  # an allowlist: no .venv or caches in the context
    allowed = {p.removeprefix("!").rstrip("/") for p in patterns if p.startswith("!")}
    copies = [rest.split()[:-1] for word, rest in instructions() if word == "COPY"]
    assert {src.rstrip("/") for srcs in copies for src in srcs} <= allowed
