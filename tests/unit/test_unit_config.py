"""Config layers and their error messages; GPU slicing, versions, fixed ports."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from launcher import gpus, ports, versions
from launcher.config import (
    HF_ID_RE,
    Config,
    backend_defaults,
    check_model_path,
    env_layer,
    load_config,
    tiny_model_dir,
)
from launcher.errors import ConfigError
from launcher.plan import SYSTEM_PORT_MAX, PortSlot
from testkit.net import held_port as kit_held_port

REPO = Path(__file__).resolve().parents[2]
SGLANG_YAML = REPO / "configs" / "sglang.yaml"
MOCKER_YAML = REPO / "configs" / "mocker.yaml"


def load(
    backend: str = "mocker",
    *,
    path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    flags: dict[str, Any] | None = None,
    flag_names: Mapping[str, str] | None = None,
) -> Config:
    return load_config(
        backend,
        path=None if path is None else str(path),
        environ=environ or {},
        flags=flags or {},
        flag_names=flag_names or {},
    )


def write_yaml(tmp_path: Path, data: Any, name: str = "dynlaunch.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def load_error(**kwargs: Any) -> str:
    with pytest.raises(ConfigError) as err:
        load(**kwargs)
    msg = str(err.value)
    assert "\n" not in msg
    return msg


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port this test process listens on (127.0.0.1)."""
    with kit_held_port() as port:
        yield port


# -- precedence: defaults < file < DYNLAUNCH_* env < flags ---------------------------------------

FILE = {"namespace": "file-ns", "workers": {"count": 2}}
ENV = {"DYNLAUNCH_NAMESPACE": "env-ns", "DYNLAUNCH_WORKERS__COUNT": "3"}
FLAGS: dict[str, Any] = {"namespace": "flag-ns", "workers": {"count": 4}}


@pytest.mark.parametrize(
    ("use_file", "environ", "flags", "namespace", "count"),
    [
        (False, {}, {}, "dynamo", 1),
        (True, {}, {}, "file-ns", 2),
        (True, ENV, {}, "env-ns", 3),
        (True, ENV, FLAGS, "flag-ns", 4),
        (False, ENV, {}, "env-ns", 3),
        (False, {}, FLAGS, "flag-ns", 4),
        (True, {}, FLAGS, "flag-ns", 4),
        # layers that set one key only leave the other to the layer below
        (True, {"DYNLAUNCH_WORKERS__COUNT": "3"}, {}, "file-ns", 3),
        (True, {"DYNLAUNCH_NAMESPACE": "env-ns"}, {"workers": {"count": 4}}, "env-ns", 4),
        (True, {}, {"namespace": "flag-ns"}, "flag-ns", 2),
    ],
)
def test_precedence(
    tmp_path: Path,
    use_file: bool,
    environ: dict[str, str],
    flags: dict[str, Any],
    namespace: str,
    count: int,
) -> None:
    path = write_yaml(tmp_path, FILE) if use_file else None
    cfg = load(path=path, environ=environ, flags=flags)
    assert (cfg.namespace, cfg.workers.count) == (namespace, count)
    assert cfg.workers.page_size == 16  # untouched keys keep their defaults


def test_env_values_are_parsed_as_yaml_scalars() -> None:
    cfg = load(
        environ={
            "DYNLAUNCH_WORKERS__COUNT": "3",
            "DYNLAUNCH_WORKERS__TRUST_REMOTE_CODE": "false",
            "DYNLAUNCH_STARTUP_TIMEOUT_S": "12.5",
            "DYNLAUNCH_FRONTEND__ROUTER_MODE": "kv",
            "DYNLAUNCH_RUN_ID": "not-a-config-key",  # set by dynlaunch on its children
        }
    )
    assert cfg.workers.count == 3
    assert isinstance(cfg.workers.count, int)
    assert cfg.workers.trust_remote_code is False
    assert cfg.startup_timeout_s == 12.5
    assert cfg.frontend.router_mode == "kv"


def test_flag_extra_args_add_to_the_files(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, {"workers": {"extra_args": ["--a", "1"]}})
    environ = {"DYNLAUNCH_WORKERS__EXTRA_ARGS": "[--b, '2']"}
    assert load(path=path).workers.extra_args == ["--a", "1"]
    assert load(path=path, environ=environ).workers.extra_args == ["--b", "2"]
    flags = {"workers": {"extra_args": ["--c", "3"]}}
    assert load(path=path, flags=flags).workers.extra_args == ["--a", "1", "--c", "3"]
    assert load(path=path, environ=environ, flags=flags).workers.extra_args == [
        "--b",
        "2",
        "--c",
        "3",
    ]


# -- error messages name the source --------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"bogus": 1}, "bogus"),
        ({"workers": {"bogus": 1}}, "workers.bogus"),
        ({"infra": {"etcd": {"endpoint": "http://x"}}}, "infra.etcd.endpoint"),
        ({"model": {"path": "a/b", "name": "x"}}, "model.name"),
    ],
)
def test_unknown_key_in_file(tmp_path: Path, data: dict[str, Any], key: str) -> None:
    path = write_yaml(tmp_path, data)
    msg = load_error(path=path)
    assert msg.startswith(f"{path}: {key}:")
    assert "unknown config key" in msg


@pytest.mark.parametrize(
    ("data", "key", "shown"),
    [
        ({"workers": {"count": "three"}}, "workers.count", "'three'"),
        ({"workers": {"tp": 0}}, "workers.tp", "0"),
        ({"frontend": {"http_port": 70000}}, "frontend.http_port", "70000"),
        ({"frontend": {"router_mode": "nearest"}}, "frontend.router_mode", "'nearest'"),
        ({"workers": {"gpus": [0, [1]]}}, "workers.gpus", "[1]"),
        ({"namespace": "a/b"}, "namespace", "'a/b'"),
    ],
)
def test_wrong_type_in_file(tmp_path: Path, data: dict[str, Any], key: str, shown: str) -> None:
    path = write_yaml(tmp_path, data)
    msg = load_error(path=path)
    assert msg.startswith(f"{path}: {key}")
    assert f"(got {shown})" in msg


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DYNLAUNCH_WORKERS__COUNT", "abc"),
        ("DYNLAUNCH_WORKERS__COUNT", "0"),
        ("DYNLAUNCH_WORKERS__BOGUS", "1"),
        ("DYNLAUNCH_FRONTEND__HTTP_PORT", "-1"),
        ("DYNLAUNCH_NAMESPACE", "a b"),
    ],
)
def test_bad_env_names_the_variable(tmp_path: Path, name: str, value: str) -> None:
    path = write_yaml(tmp_path, {"workers": {"count": 2}, "frontend": {"http_port": 9000}})
    msg = load_error(path=path, environ={name: value})
    assert msg.startswith(f"{name}:")
    assert str(path) not in msg


@pytest.mark.parametrize(
    ("flags", "flag_names", "flag"),
    [
        ({"workers": {"count": 0}}, {"workers.count": "--workers"}, "--workers"),
        ({"workers": {"count": "abc"}}, {"workers.count": "--workers"}, "--workers"),
        ({"workers": {"tp": 0}}, {"workers.tp": "--tp"}, "--tp"),
        ({"frontend": {"http_port": 70000}}, {"frontend.http_port": "--http-port"}, "--http-port"),
        ({"namespace": "bad/ns"}, {"namespace": "--namespace"}, "--namespace"),
        ({"workers": {"page_size": 0}}, {"workers.page_size": "--page-size"}, "--page-size"),
    ],
)
def test_bad_flag_names_the_flag(
    tmp_path: Path, flags: dict[str, Any], flag_names: dict[str, str], flag: str
) -> None:
    # the same key is also set (validly) by the file and the environment
    path = write_yaml(tmp_path, {"workers": {"count": 2, "tp": 1}, "namespace": "ok"})
    environ = {"DYNLAUNCH_WORKERS__COUNT": "3", "DYNLAUNCH_NAMESPACE": "ok2"}
    msg = load_error(path=path, environ=environ, flags=flags, flag_names=flag_names)
    assert msg.startswith(f"{flag}:")


def test_bad_value_below_a_good_override_is_not_an_error(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, {"workers": {"count": "three"}})
    assert load(path=path, environ={"DYNLAUNCH_WORKERS__COUNT": "2"}).workers.count == 2
    assert load(path=path, flags={"workers": {"count": 5}}).workers.count == 5


@pytest.mark.parametrize(
    ("content", "needles"),
    [
        ("workers: [1,\n", ("line",)),
        ("- a\n- b\n", ("top level must be a mapping",)),
        ("just a string\n", ("top level must be a mapping",)),
    ],
)
def test_unreadable_file(tmp_path: Path, content: str, needles: tuple[str, ...]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(content, encoding="utf-8")
    msg = load_error(path=path)
    assert msg.startswith(str(path))
    for needle in needles:
        assert needle in msg


def test_empty_file_is_no_settings(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing\n", encoding="utf-8")
    assert load(path=path) == load()


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    msg = load_error(path=path)
    assert str(path) in msg
    assert "no such file" in msg


def test_unknown_backend() -> None:
    msg = load_error(backend="foo")
    assert "'foo'" in msg
    assert "sglang" in msg
    assert "mocker" in msg


@pytest.mark.parametrize("namespace", ["", "a/b", "a b", "ns.x", "ns:1", "ns/", "ns\n"])
def test_invalid_namespace(namespace: str) -> None:
    msg = load_error(flags={"namespace": namespace}, flag_names={"namespace": "--namespace"})
    assert msg.startswith("--namespace:")


@pytest.mark.parametrize("namespace", ["sglang", "my-ns_2", "A", "0", "dynamo"])
def test_valid_namespace(namespace: str) -> None:
    assert load(flags={"namespace": namespace}).namespace == namespace


# -- built-in defaults ---------------------------------------------------------------------------


def test_sglang_defaults_are_the_reference_deployment() -> None:
    model = "deepseek-ai/DeepSeek-R1-Distill-Llama-8B"
    assert backend_defaults("sglang", {}) == {
        "namespace": "sglang",
        "model": {"path": model, "served_name": model},
    }
    ref = yaml.safe_load(SGLANG_YAML.read_text(encoding="utf-8"))
    assert {k: ref[k] for k in ("namespace", "model")} == backend_defaults("sglang", {})
    from_defaults, from_file = load("sglang"), load("sglang", path=SGLANG_YAML)
    for section in ("namespace", "model", "frontend", "workers", "infra", "dynamo"):
        assert getattr(from_defaults, section) == getattr(from_file, section)


def test_mocker_config_file_loads() -> None:
    cfg = load("mocker", path=MOCKER_YAML, environ={"HOME": "/home/u"})
    assert (cfg.namespace, cfg.workers.count, cfg.served_model_name) == ("dynamo", 2, "tiny")
    assert cfg.model.path == "/home/u/.cache/dynlaunch/tiny-model"


@pytest.mark.parametrize(
    ("environ", "path"),
    [
        ({"HOME": "/home/u"}, "/home/u/.cache/dynlaunch/tiny-model"),
        ({"HOME": "/home/u", "XDG_CACHE_HOME": "/c"}, "/c/dynlaunch/tiny-model"),
        ({}, "/tmp/.cache/dynlaunch/tiny-model"),
    ],
)
def test_tiny_model_dir(environ: dict[str, str], path: str) -> None:
    assert tiny_model_dir(environ) == path


# -- model path ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "ok"),
    [
        ("deepseek-ai/DeepSeek-R1-Distill-Llama-8B", True),
        ("Qwen/Qwen3-0.6B", True),
        ("org/name", True),
        ("./no/such/dir/x", False),
        ("no/such/dir", False),
        ("justaname", False),
        ("/abs/org/name", False),
        ("", False),
    ],
)
def test_model_path(path: str, ok: bool) -> None:
    cfg = load(flags={"model": {"path": path}})
    if ok:
        check_model_path(cfg)
    else:
        with pytest.raises(ConfigError, match=r"model\.path") as err:
            check_model_path(cfg)
        assert repr(path) in str(err.value)


def test_model_path_existing_dir_and_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    check_model_path(load(flags={"model": {"path": str(tmp_path)}}))
    # an existing file that looks like org/name is not a model
    (tmp_path / "org").mkdir()
    (tmp_path / "org" / "name").write_text("x", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert HF_ID_RE.match("org/name")
    with pytest.raises(ConfigError):
        check_model_path(load(flags={"model": {"path": "org/name"}}))


# -- GPUs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gpu_ids", "workers", "tp", "want"),
    [
        (["0"], 1, 1, [("0",)]),
        (["0", "1", "2", "3"], 2, 2, [("0", "1"), ("2", "3")]),
        (["0", "1", "2", "3"], 3, 1, [("0",), ("1",), ("2",)]),
        (["3", "1"], 2, 1, [("3",), ("1",)]),  # in the order given
        (["GPU-abc", "GPU-def"], 1, 2, [("GPU-abc", "GPU-def")]),
    ],
)
def test_slices(gpu_ids: list[str], workers: int, tp: int, want: list[tuple[str, ...]]) -> None:
    assert gpus.slices(gpu_ids, workers, tp, "test") == want


@pytest.mark.parametrize(
    ("gpu_ids", "workers", "tp", "source", "needles"),
    [
        ([], 1, 1, "nvidia-smi", ("needs 1 GPU", "0 available", "nvidia-smi: none")),
        (["0", "1"], 2, 2, "CUDA_VISIBLE_DEVICES", ("needs 4", "2 available", "0,1")),
        (["0"], 1, 2, "--gpus", ("--workers 1 x --tp 2", "--gpus: 0")),
    ],
)
def test_slices_too_few(
    gpu_ids: list[str], workers: int, tp: int, source: str, needles: tuple[str, ...]
) -> None:
    with pytest.raises(ConfigError) as err:
        gpus.slices(gpu_ids, workers, tp, source)
    for needle in needles:
        assert needle in str(err.value)


@pytest.mark.parametrize(
    ("asked", "environ", "listed", "want"),
    [
        (None, {}, ("0", "1"), (("0", "1"), "nvidia-smi")),
        (None, {}, (), ((), "nvidia-smi")),
        (
            None,
            {"CUDA_VISIBLE_DEVICES": "4,5,6,7"},
            (),
            (("4", "5", "6", "7"), "CUDA_VISIBLE_DEVICES"),
        ),
        (None, {"CUDA_VISIBLE_DEVICES": " 2 , 3 ,"}, ("0",), (("2", "3"), "CUDA_VISIBLE_DEVICES")),
        (None, {"CUDA_VISIBLE_DEVICES": ""}, ("0", "1"), ((), "CUDA_VISIBLE_DEVICES")),
        (["1"], {"CUDA_VISIBLE_DEVICES": "0"}, ("0", "1"), (("1",), "workers.gpus (--gpus)")),
        (
            ["5"],
            {},
            (),
            (("5",), "workers.gpus (--gpus)"),
        ),  # nothing listed: nothing to check against
    ],
)
def test_available(
    asked: list[str] | None,
    environ: dict[str, str],
    listed: tuple[str, ...],
    want: tuple[tuple[str, ...], str],
) -> None:
    assert gpus.available(asked, environ, listed) == want


def test_available_asked_gpu_missing() -> None:
    with pytest.raises(ConfigError) as err:
        gpus.available(["0", "7"], {}, ("0", "1"))
    msg = str(err.value)
    assert msg.startswith("workers.gpus (--gpus) 0,7:")
    assert "GPU 7 does not exist" in msg
    assert "0,1" in msg


# -- versions ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "want"),
    [
        ("1.4.2", (1, 4)),
        ("0.5.0", (0, 5)),
        ("0.5.0rc1", (0, 5)),
        ("0.10.1", (0, 10)),
        (" 2.0", (2, 0)),
        ("1.4.2.post1+local", (1, 4)),
    ],
)
def test_parse(version: str, want: tuple[int, int]) -> None:
    assert versions.parse(version) == want


@pytest.mark.parametrize("version", ["", "1", "v1.4.2", "latest", "one.two"])
def test_parse_rejects(version: str) -> None:
    with pytest.raises(ConfigError, match=r"dynamo\.version") as err:
        versions.parse(version)
    assert repr(version) in str(err.value)


@pytest.mark.parametrize(
    ("version", "want"), [("0.4.1", False), ("0.9.9", False), ("1.0.0", True), ("1.4.2", True)]
)
def test_is_1x(version: str, want: bool) -> None:
    assert versions.is_1x(version) is want


# -- ports ---------------------------------------------------------------------------------------


def test_fixed_port_in_use_names_the_pid(held_port: int) -> None:
    slots = [PortSlot("frontend.http", held_port, "--http-port (frontend.http_port)")]
    with pytest.raises(ConfigError) as err:
        ports.allocate(slots, seed="test-unit-config", bind_hosts={}, reserve_for=None)
    msg = str(err.value)
    assert msg.startswith("--http-port (frontend.http_port):")
    assert str(held_port) in msg
    assert f"pid {os.getpid()}" in msg


def test_owner_of_a_listening_port(held_port: int) -> None:
    who = ports.owner(held_port)
    assert who is not None
    assert who.startswith(f"pid {os.getpid()} (")
    assert not ports.is_free(held_port)


def test_fixed_free_port_is_kept(held_port: int) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        free = sock.getsockname()[1]
    slots = [
        PortSlot("frontend.http", free, "--http-port"),
        PortSlot("a", None, "a"),
        PortSlot("b", None, "b", SYSTEM_PORT_MAX),
    ]
    got = ports.allocate(slots, seed="test-unit-config", bind_hosts={}, reserve_for=None)
    assert got["frontend.http"] == free
    assert len(set(got.values())) == 3
    low, high = ports.AUTO_RANGE
    for name in ("a", "b"):
        assert low <= got[name] <= high
        assert got[name] != held_port
    assert got["b"] <= SYSTEM_PORT_MAX


@pytest.mark.parametrize(
    ("slots", "needles"),
    [
        (
            [PortSlot("worker-0.system", 40000, "workers.port_base", SYSTEM_PORT_MAX)],
            ("workers.port_base", "40000", f"above {SYSTEM_PORT_MAX}"),
        ),
        (
            [PortSlot("a", 30001, "x.port"), PortSlot("b", 30001, "y.port")],
            ("y.port", "30001", "twice"),
        ),
    ],
)
def test_fixed_port_errors(slots: Sequence[PortSlot], needles: tuple[str, ...]) -> None:
    with pytest.raises(ConfigError) as err:
        ports.allocate(slots, seed="test-unit-config", bind_hosts={}, reserve_for=None)
    for needle in needles:
        assert needle in str(err.value)


def test_env_section_keeps_variable_case() -> None:
    layer = env_layer({"DYNLAUNCH_WORKERS__ENV__HF_TOKEN": "x", "DYNLAUNCH_WORKERS__COUNT": "2"})
    assert layer.data == {"workers": {"env": {"HF_TOKEN": "x"}, "count": 2}}


def test_numeric_looking_strings_stay_strings() -> None:
    layer = env_layer({"DYNLAUNCH_NAMESPACE": "123", "DYNLAUNCH_DYNAMO__VERSION": "0.5"})
    cfg = load_config("mocker", path=None, environ={}, flags=layer.data, flag_names={})
    assert (cfg.namespace, cfg.dynamo.version) == ("123", "0.5")
