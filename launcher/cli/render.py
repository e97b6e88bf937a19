"""`dynlaunch render k8s`: flags -> the `k8s:` config layer -> `k8s.render` -> YAML."""

from __future__ import annotations

import os
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from launcher.errors import ConfigError

render_app = typer.Typer(
    help=(
        "Render deployment manifests from a dynlaunch config (nothing is applied).\n\n"
        "  dynlaunch render k8s -c configs/sglang.yaml -o dgd.yaml && kubectl apply -f dgd.yaml"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


class ApiVersion(str, Enum):
    v1alpha1 = "v1alpha1"
    v1beta1 = "v1beta1"


class Backend(str, Enum):
    sglang = "sglang"
    mocker = "mocker"


# Flag -> dotted config key (and the flag's name for error messages).
FLAG_KEYS = {
    "name": ("k8s.name", "--name"),
    "k8s_namespace": ("k8s.k8s_namespace", "--k8s-namespace"),
    "image": ("k8s.image", "--image"),
    "dynamo_version": ("k8s.dynamo_version", "--dynamo-version"),
    "api_version": ("k8s.api_version", "--api-version"),
    "backend": ("k8s.backend", "--backend"),
}


def _flags(given: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    section: dict[str, Any] = {}
    names: dict[str, str] = {}
    for param, value in given.items():
        if value is None:
            continue
        key, flag = FLAG_KEYS[param]
        section[key.split(".", 1)[1]] = value.value if isinstance(value, Enum) else value
        names[key] = flag
    return ({"k8s": section} if section else {}), names


@render_app.command("k8s")
def render_k8s(
    config: Annotated[
        str | None, typer.Option("--config", "-c", help="YAML config file (see configs/).")
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(help="DynamoGraphDeployment name (default: the Dynamo namespace)."),
    ] = None,
    k8s_namespace: Annotated[
        str | None, typer.Option(help="Kubernetes namespace (default dynamo-cloud).")
    ] = None,
    image: Annotated[
        str | None,
        typer.Option(
            help="Container image (default nvcr.io/nvidia/ai-dynamo/sglang-runtime:0.5.0; "
            "with --api-version v1beta1, :1.4.2)."
        ),
    ] = None,
    dynamo_version: Annotated[
        str | None,
        typer.Option(
            help="Dynamo operator release the manifests target (default: the image tag, else "
            "0.5.0; with v1beta1, 1.4.2)."
        ),
    ] = None,
    api_version: Annotated[
        ApiVersion | None,
        typer.Option(
            help="DGD API version: v1alpha1 (default) or v1beta1 (operators 1.3 and later)."
        ),
    ] = None,
    backend: Annotated[
        Backend | None,
        typer.Option(help="sglang (default) or mocker (CPU only; default: k8s.backend)."),
    ] = None,
    plain: Annotated[
        bool,
        typer.Option("--plain", help="Bare Dynamo commands, for images without dynlaunch."),
    ] = False,
    output: Annotated[
        str | None, typer.Option("--output", "-o", help="Write to FILE instead of stdout.")
    ] = None,
) -> None:
    """Print a DynamoGraphDeployment (Frontend + SGLangWorker or MockerWorker) for the Dynamo
    operator, and the ConfigMap that ships the config to its pods, as YAML.

    By default each pod runs `dynlaunch up sglang --role frontend|worker --config
    /etc/dynlaunch/config.yaml` (an image built from the repo's Dockerfile). --plain runs
    `python3 -m dynamo.frontend` / `python3 -m dynamo.sglang` instead (no ConfigMap). Every value
    comes from the config (the `k8s:` section: node pools, resources, image, probes' budgets).

    Examples:\n
      dynlaunch render k8s -c configs/sglang.yaml -o dgd.yaml\n
      kubectl apply -f dgd.yaml\n
      dynlaunch render k8s -c configs/sglang-p5.yaml --image REGISTRY/dynlaunch:0.5.0\n
      dynlaunch render k8s -c configs/sglang.yaml --plain --dynamo-version 0.5.0\n
      dynlaunch render k8s -c configs/mocker.yaml --api-version v1beta1\n
      kubectl apply --dry-run=server -f dgd.yaml   (check against your cluster's CRD)
    """
    from launcher.config import load_config
    from launcher.k8s import render as k8s  # pydantic and the planner: only for this command

    given = {k: v for k, v in locals().items() if k in FLAG_KEYS}
    flags, names = _flags(given)
    cfg = load_config("sglang", path=config, environ=os.environ, flags=flags, flag_names=names)
    if cfg.k8s.backend != "sglang":  # load again with that backend's defaults (model, namespace)
        cfg = load_config(
            cfg.k8s.backend, path=config, environ=os.environ, flags=flags, flag_names=names
        )
    text = k8s.dump_yaml(k8s.render(cfg, plain=plain, environ=os.environ))
    if output is None:
        typer.echo(text, nl=False)
        return
    try:
        Path(output).write_text(text, encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"--output {output}: {err.strerror or err}") from None
    typer.echo(f"dynlaunch: wrote {output}", err=True)
