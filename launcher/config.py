"""Configuration: models, layered loading and one-line error messages.

Precedence, lowest first: built-in defaults of the backend < config file < ``DYNLAUNCH_*``
environment < command-line flags. Each layer is a nested dict; they are deep-merged, then validated
once. When validation fails, the error names the layer that gave the bad value (file and key,
variable or flag).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from launcher.errors import ConfigError
from launcher.k8s.config import K8sConfig
from launcher.names import NAMESPACE_MAX, is_namespace, is_secret_name

BACKENDS = ("sglang", "mocker")
ENV_PREFIX = "DYNLAUNCH_"
# DYNLAUNCH_* variables that are not config keys (set by dynlaunch itself on its children).
ENV_NOT_CONFIG = frozenset({"DYNLAUNCH_RUN_ID"})
# Each worker is a process with up to 4 ports of 20000-32767; more than this is a typo.
WORKERS_MAX = 256
# CUDA_VISIBLE_DEVICES entries: an index, or a GPU/MIG UUID as nvidia-smi -L prints it.
GPU_ID_RE = re.compile(r"^(\d+|(GPU|MIG)-[A-Za-z0-9/-]+)$")
ENDPOINT_SCHEMES = {"etcd": ("http", "https"), "nats": ("nats", "tls")}
USERINFO_RE = re.compile(r"(?<=://)[^/@\s]*@")
HF_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9._-]+$")


def _gpu_id(value: object) -> object:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


GpuId = Annotated[str, BeforeValidator(_gpu_id)]


def mask_userinfo(text: str) -> str:
    """`nats://user:pass@host:4222` -> `nats://***@host:4222`: never print credentials."""
    return USERINFO_RE.sub("***@", text)


def check_endpoints(value: str, kind: Literal["etcd", "nats"]) -> str:
    """Comma-separated `scheme://host:port` URLs, as Dynamo reads ETCD_ENDPOINTS / NATS_SERVER;
    raise ValueError naming the first bad entry."""
    schemes = ENDPOINT_SCHEMES[kind]
    form = " or ".join(f"{scheme}://HOST:PORT" for scheme in schemes)
    for entry in value.split(","):
        shown = mask_userinfo(entry.strip())
        url = urlsplit(entry.strip())
        if not entry.strip():
            raise ValueError(f"an empty entry; expected comma-separated {form}")
        if url.scheme not in schemes or not url.hostname or any(c.isspace() for c in entry.strip()):
            raise ValueError(f"{shown!r} is not {form}")
        try:
            port = url.port
        except ValueError:
            port = 0
        if not port:
            raise ValueError(f"{shown!r}: the port must be a number from 1 to 65535 ({form})")
        if url.path not in ("", "/") or url.query or url.fragment:
            raise ValueError(f"{shown!r}: no path, query or fragment is allowed ({form})")
    return value


Port = Annotated[int, Field(ge=1, le=65535)]


def check_gpus(value: list[str] | None) -> list[str] | None:
    for gpu in value or ():
        if not GPU_ID_RE.fullmatch(gpu):
            raise ValueError(f"GPU {gpu!r} is not an index (0, 1, ...) or a GPU-/MIG- UUID")
    if value is not None and len(set(value)) < len(value):
        raise ValueError("a GPU is listed twice")
    return value


class _Section(BaseModel):
    # coerce_numbers_to_str: DYNLAUNCH_NAMESPACE=123 or version: 0.5 are strings where one is wanted
    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)


class ModelConfig(_Section):
    path: str = Field(description="Model directory or Hugging Face id (org/name).")
    served_name: str | None = Field(None, description="Name clients ask for; default: the path.")
    # JSON-schema / regex constrained outputs: SGLang needs its tokenizer for a grammar backend.
    structured_output: bool = False


RouterMode = Literal["round-robin", "random", "kv"]


class FrontendConfig(_Section):
    http_host: str = "127.0.0.1"
    http_port: Port = 8000
    # auto: kv when a model has 2+ workers (its prefix cache is then worth routing to), else
    # round-robin. One frontend routes every model the same way (Dynamo's --router-mode).
    router_mode: Literal["auto", "round-robin", "random", "kv"] = "auto"
    migration_limit: int = Field(3, ge=0)
    extra_args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)


class WorkersConfig(_Section):
    count: int = Field(1, ge=1, le=WORKERS_MAX)
    tp: int = Field(1, ge=1)
    gpus: list[GpuId] | None = None
    page_size: int = Field(16, ge=1)
    trust_remote_code: bool = True
    skip_tokenizer_init: bool = True
    # 0.5.x still ships `dynamo.sglang.worker` as a deprecated alias; ask for it here.
    legacy_module: bool = False
    # First of the fixed per-worker ports (system, request plane, KV events); None = pick free ones.
    port_base: int | None = Field(None, ge=1024, le=32700)
    extra_args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)

    @field_validator("gpus")
    @classmethod
    def _gpus(cls, value: list[str] | None) -> list[str] | None:
        return check_gpus(value)


class ModelEntry(_Section):
    """One model of a `models:` list. Unset keys take the `workers:` section's value (its
    defaults for every model); `path` defaults to `model.path` (the backend's default model)."""

    name: str | None = Field(None, min_length=1, max_length=24, pattern=r"^[a-z0-9][a-z0-9-]*$")
    path: str | None = None
    served_name: str | None = None
    workers: int | None = Field(None, ge=1, le=WORKERS_MAX)
    tp: int | None = Field(None, ge=1)
    page_size: int | None = Field(None, ge=1)
    gpus: list[GpuId] | None = None
    router_mode: RouterMode | None = None  # must agree with the other models' and the frontend's
    # JSON-schema / regex constrained outputs: SGLang needs its tokenizer for a grammar backend.
    structured_output: bool = False
    extra_args: list[str] | None = None
    env: dict[str, str] = Field(default_factory=dict)  # over workers.env

    @field_validator("gpus")
    @classmethod
    def _gpus(cls, value: list[str] | None) -> list[str] | None:
        return check_gpus(value)


class EtcdConfig(_Section):
    endpoints: str | None = None  # external etcd (http://HOST:PORT,...); None = an embedded one
    port: Port | None = None  # embedded etcd's client port; None = a free one
    binary: str = "etcd"
    # External etcd's credentials (ETCD_AUTH_* override them); files are paths.
    username: str | None = None
    password: str | None = None
    ca: str | None = None  # CA file that signed etcd's server certificate (https://)
    client_cert: str | None = None  # client certificate file (etcd's --client-cert-auth)
    client_key: str | None = None

    @field_validator("endpoints")
    @classmethod
    def _endpoints(cls, value: str | None) -> str | None:
        return None if value is None else check_endpoints(value, "etcd")


class NatsConfig(_Section):
    url: str | None = None  # external NATS (nats://HOST:PORT); None = start an embedded one
    port: Port | None = None
    binary: str = "nats-server"
    # External NATS's credentials (NATS_AUTH_* / NATS_TLS_* override them); files are paths.
    username: str | None = None
    password: str | None = None
    token: str | None = None
    credentials_file: str | None = None  # a .creds file (JWT and NKey seed)
    ca: str | None = None
    client_cert: str | None = None
    client_key: str | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else check_endpoints(value, "nats")


class InfraConfig(_Section):
    etcd: EtcdConfig = Field(default_factory=EtcdConfig)
    nats: NatsConfig = Field(default_factory=NatsConfig)
    connect_timeout_s: float = Field(15.0, gt=0)
    # Embedded etcd and NATS require the credentials generated for the state dir (false: open,
    # as before, to any local user).
    auth: bool = True
    # The embedded etcd serves TLS only and wants a client certificate (launcher.tlsfiles: a CA
    # and certificates made once per state dir). The embedded NATS too where Dynamo speaks TLS to
    # NATS (1.6+); on older lines it stays without TLS (warned).
    tls: bool = False


class DynamoConfig(_Section):
    version: str | None = None  # None = read ai-dynamo's installed metadata
    python: str | None = None  # interpreter that runs Dynamo; None = dynlaunch's own


RestartPolicy = Literal["always", "on-failure", "never"]


class RestartConfig(_Section):
    # Dynamo processes exit 0 when they lose their etcd lease: "always" restarts those too.
    frontend: RestartPolicy = "always"
    workers: RestartPolicy = "always"
    infra: RestartPolicy = "always"
    startsecs: float = Field(10.0, ge=0)  # up this long = started well; the backoff starts afresh
    max_restarts: int = Field(5, ge=0)  # more restarts than this within window_s = crash loop
    window_s: float = Field(60.0, gt=0)
    backoff_base_s: float = Field(1.0, gt=0)
    backoff_cap_s: float = Field(30.0, gt=0)
    # A worker that crash-loops: left stopped while another worker of its model serves
    # (keep-serving), or the whole stack stops (stop-all).
    crash_loop: Literal["keep-serving", "stop-all"] = "keep-serving"
    # `dynlaunch restart`: how long a replaced worker may finish its in-flight requests after
    # SIGTERM before it is SIGKILLed
    drain_s: float = Field(30.0, ge=0)


class LivenessConfig(_Section):
    """Is the frontend / each worker still answering at all (not: is it ready)? Any HTTP answer
    from its /live endpoint within timeout_s counts as alive; a busy engine answers 503 and is
    alive. failure_threshold misses in a row: fenced, SIGTERM, SIGKILL after grace_s, restarted."""

    enabled: bool = True
    interval_s: float = Field(5.0, gt=0)
    timeout_s: float = Field(4.0, gt=0)
    failure_threshold: int = Field(3, ge=1)
    grace_s: float = Field(5.0, ge=0)


class Config(_Section):
    namespace: str = "dynamo"
    model: ModelConfig
    # Several models behind one frontend (launcher/models.py); None: the one `model:`.
    models: list[ModelEntry] | None = Field(None, min_length=1)
    frontend: FrontendConfig = Field(default_factory=FrontendConfig)
    workers: WorkersConfig = Field(default_factory=WorkersConfig)
    infra: InfraConfig = Field(default_factory=InfraConfig)
    dynamo: DynamoConfig = Field(default_factory=DynamoConfig)
    state_dir: str | None = None  # a leading ~ is the user's home
    startup_timeout_s: float = Field(600.0, gt=0)
    stop_timeout_s: float = Field(15.0, gt=0)
    restart: RestartConfig = Field(default_factory=RestartConfig)
    liveness: LivenessConfig = Field(default_factory=LivenessConfig)
    k8s: K8sConfig = Field(default_factory=K8sConfig)

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        if not is_namespace(value):
            raise ValueError("use letters, digits, '-' and '_' only (Dynamo's rule), not empty")
        if len(value) > NAMESPACE_MAX:
            raise ValueError(f"at most {NAMESPACE_MAX} characters (a DNS label), not {len(value)}")
        return value

    @field_validator("state_dir")
    @classmethod
    def _state_dir(cls, value: str | None) -> str | None:
        return None if value is None else os.path.expanduser(value)

    @property
    def served_model_name(self) -> str:
        return self.model.served_name or self.model.path


def tiny_model_dir(environ: Mapping[str, str]) -> str:
    """Where `dynlaunch up mocker` keeps its tiny offline model (made on first use)."""
    cache = environ.get("XDG_CACHE_HOME") or os.path.join(environ.get("HOME", "/tmp"), ".cache")
    return os.path.join(cache, "dynlaunch", "tiny-model")


def backend_defaults(backend: str, environ: Mapping[str, str]) -> dict[str, Any]:
    """Built-in defaults. `sglang` is the reference deployment; `mocker` needs nothing but a CPU."""
    if backend == "sglang":
        model = "deepseek-ai/DeepSeek-R1-Distill-Llama-8B"
        return {"namespace": "sglang", "model": {"path": model, "served_name": model}}
    return {
        "namespace": "dynamo",
        "model": {"path": tiny_model_dir(environ), "served_name": "tiny"},
    }


@dataclass(frozen=True)
class Layer:
    """One source of settings. ``flags`` maps a dotted key to the flag that set it."""

    source: str  # "defaults", "file", "env", "flags"
    data: dict[str, Any]
    path: str | None = None
    flags: Mapping[str, str] | None = None

    def describe(self, key: str) -> str:
        if self.source == "file":
            return f"{self.path}: {key}"
        if self.source == "env":
            return ENV_PREFIX + key.upper().replace(".", "__")
        if self.source == "flags" and self.flags and key in self.flags:
            return self.flags[key]
        return key


def read_config_file(path: str) -> Layer:
    file = Path(path)
    if file.is_dir():
        raise ConfigError(f"--config {path}: a directory, not a YAML file")
    if not file.is_file():
        raise ConfigError(f"--config {path}: no such file")
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start}), so not YAML") from None
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise ConfigError(f"{path}{line}: not valid YAML") from None
    except OSError as err:
        raise ConfigError(f"--config {path}: cannot read it ({err.strerror})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of config keys")
    return Layer("file", data, path=path)


def env_layer(environ: Mapping[str, str]) -> Layer:
    """`DYNLAUNCH_WORKERS__COUNT=2` -> {"workers": {"count": 2}}; values are parsed as YAML."""
    data: dict[str, Any] = {}
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or name in ENV_NOT_CONFIG:
            continue
        keys = _env_keys(name[len(ENV_PREFIX) :].split("__"))
        try:
            value = yaml.safe_load(raw) if raw else raw
        except yaml.YAMLError:
            value = raw
        node = data
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{name}: conflicts with another DYNLAUNCH_ variable")
        node[keys[-1]] = value
    return Layer("env", data)


def _env_keys(parts: list[str]) -> list[str]:
    """Config keys are lower case; names below an `env` section keep theirs (HF_TOKEN)."""
    keys: list[str] = []
    for part in parts:
        keys.append(part if keys and keys[-1] == "env" else part.lower())
    return keys


def deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _has_key(data: Mapping[str, Any], keys: tuple[str, ...]) -> bool:
    node: Any = data
    for key in keys:
        if not isinstance(node, Mapping) or key not in node:
            return False
        node = node[key]
    return True


def _origin(layers: list[Layer], loc: tuple[str, ...]) -> str:
    """The most specific description of where the value at ``loc`` came from."""
    for depth in range(len(loc), 0, -1):
        for layer in reversed(layers):
            if _has_key(layer.data, loc[:depth]):
                return layer.describe(".".join(loc[:depth]))
    return ".".join(loc)


def format_validation_error(err: ValidationError, layers: list[Layer]) -> str:
    first = err.errors()[0]
    loc = tuple(str(part) for part in first["loc"])
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        return f"{_origin(layers, loc)}: unknown config key (see `dynlaunch up --help` or README)"
    shown = first.get("input")
    secret = any(is_secret_name(part) for part in loc)
    hidden = secret or isinstance(shown, dict) or first["type"] == "missing"
    text = mask_userinfo(repr(shown))
    text = text if len(text) <= 80 else f"{text[:60]}... ({len(text)} characters)"
    got = "" if hidden else f" (got {text})"
    return f"{_origin(layers, loc)}: {msg}{got}"


def load_config(
    backend: str,
    *,
    path: str | None,
    environ: Mapping[str, str],
    flags: dict[str, Any],
    flag_names: Mapping[str, str],
) -> Config:
    """Resolve one `Config` from all layers; raise `ConfigError` with a one-line message."""
    if backend not in BACKENDS:
        raise ConfigError(
            f"BACKEND {backend!r}: unknown backend; choose one of: {', '.join(BACKENDS)}"
        )
    layers = [Layer("defaults", backend_defaults(backend, environ))]
    if path is not None:
        layers.append(read_config_file(path))
    layers.append(env_layer(environ))
    layers.append(Layer("flags", flags, flags=flag_names))
    merged: dict[str, Any] = {}
    for layer in layers:
        merged = deep_merge(merged, layer.data)
    # Engine args from the command line add to the config's instead of replacing them.
    extra = _get(flags, ("workers", "extra_args"))
    if extra:
        before: dict[str, Any] = {}
        for layer in layers[:-1]:
            before = deep_merge(before, layer.data)
        merged["workers"]["extra_args"] = [*(_get(before, ("workers", "extra_args")) or []), *extra]
    if merged.get("models") is not None:
        for layer in layers[1:]:
            if "model" in layer.data:
                raise ConfigError(
                    f"{layer.describe('model')}: set together with models:; put every model in "
                    "models: (its entries take path, served_name, workers, tp, page_size, ...)"
                )
    try:
        return Config.model_validate(merged)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, layers)) from None


def _get(data: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    node: Any = data
    for key in keys:
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return node


def check_model_path(
    cfg: Config, origin: str = "model.path (--model-path)", path: str | None = None
) -> None:
    """A model is an existing directory or a plausible Hugging Face id (org/name)."""
    path = cfg.model.path if path is None else path
    if os.path.isdir(path) or (HF_ID_RE.fullmatch(path) and not os.path.exists(path)):
        return
    raise ConfigError(
        f"{origin} {path!r}: neither an existing directory nor a Hugging Face id like org/name"
    )
