"""The pure config -> plan function, as tables. Inputs are passed explicitly: no host facts."""

from __future__ import annotations

import json
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from launcher import gpus, ports
from launcher.config import Config, load_config
from launcher.errors import ConfigError
from launcher.plan import (
    SYSTEM_PORT_MAX,
    Host,
    Plan,
    ProcessSpec,
    build_plan,
    external_infra,
    mask_argv,
    port_slots,
)

REPO = Path(__file__).resolve().parents[2]
SGLANG_YAML = REPO / "configs" / "sglang.yaml"
REF_MODEL = "deepseek-ai/DeepSeek-R1-Distill-Llama-8B"


def sglang_cfg(flags: dict[str, Any] | None = None, path: Path | None = SGLANG_YAML) -> Config:
    return load_config(
        "sglang",
        path=None if path is None else str(path),
        environ={},
        flags=flags or {},
        flag_names={},
    )


def mocker_cfg(flags: dict[str, Any] | None = None) -> Config:
    return load_config("mocker", path=None, environ={}, flags=flags or {}, flag_names={})


def distinct_ports(
    cfg: Config,
    *,
    embedded_etcd: bool = True,
    embedded_nats: bool = True,
    nccl: bool = False,
    backend: str = "sglang",
) -> dict[str, int]:
    """Every slot a distinct port: fixed slots keep theirs, the others count up from 20000."""
    slots = port_slots(
        cfg, embedded_etcd=embedded_etcd, embedded_nats=embedded_nats, nccl=nccl, backend=backend
    )
    fixed = {s.fixed for s in slots if s.fixed is not None}
    out: dict[str, int] = {}
    nxt = 20000
    for slot in slots:
        if slot.fixed is not None:
            out[slot.name] = slot.fixed
            continue
        while nxt in fixed:
            nxt += 1
        out[slot.name] = nxt
        nxt += 1
    return out


def make_host(
    cfg: Config,
    *,
    version: str = "1.4.2",
    gpu_ids: Sequence[str] = ("0",),
    gpu_source: str = "test",
    etcd: str | None = None,
    nats: str | None = None,
    port_map: Mapping[str, int] | None = None,
) -> Host:
    if port_map is None:
        port_map = distinct_ports(cfg, embedded_etcd=etcd is None, embedded_nats=nats is None)
    return Host(
        dynamo_version=version,
        python="python3",
        gpus=tuple(gpu_ids),
        gpu_source=gpu_source,
        ports=port_map,
        state_dir="/tmp/s",
        etcd_endpoints=etcd,
        nats_url=nats,
    )


def worker(plan: Plan, index: int = 0) -> ProcessSpec:
    return plan.by_role("worker")[index]


def frontend(plan: Plan) -> ProcessSpec:
    return plan.by_role("frontend")[0]


def flag_value(argv: Sequence[str], flag: str) -> str:
    """The value after ``flag`` (which must occur exactly once)."""
    assert list(argv).count(flag) == 1, argv
    return argv[list(argv).index(flag) + 1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -- the reference deployment -------------------------------------------------------------------


@pytest.fixture
def ref_plan() -> Plan:
    cfg = sglang_cfg()
    return build_plan(cfg, "sglang", make_host(cfg))


def test_reference_worker_argv(ref_plan: Plan) -> None:
    assert list(worker(ref_plan).argv) == [
        "python3", "-m", "dynamo.sglang",
        "--model-path", REF_MODEL,
        "--served-model-name", REF_MODEL,
        "--page-size", "16",
        "--tp", "1",
        "--trust-remote-code",
        "--skip-tokenizer-init",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "value"),
    [("CUDA_VISIBLE_DEVICES", "0"), ("DYN_NAMESPACE", "sglang")],
)
def test_reference_worker_env(ref_plan: Plan, name: str, value: str) -> None:
    assert worker(ref_plan).env[name] == value


@pytest.mark.parametrize(("flag", "value"), [("--http-port", "8000"), ("--namespace", "sglang")])
def test_reference_frontend_argv(ref_plan: Plan, flag: str, value: str) -> None:
    argv = frontend(ref_plan).argv
    assert argv[:3] == ("python3", "-m", "dynamo.frontend")
    assert flag_value(argv, flag) == value


def test_reference_processes_in_start_order(ref_plan: Plan) -> None:
    assert [(p.name, p.role) for p in ref_plan.processes] == [
        ("etcd", "etcd"),
        ("nats", "nats"),
        ("frontend", "frontend"),
        ("worker-0", "worker"),
    ]
    assert worker(ref_plan).gpus == ("0",)
    assert ref_plan.url == "http://127.0.0.1:8000"
    assert ref_plan.served_model == REF_MODEL


@pytest.mark.parametrize(
    ("http_host", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:8000"),
        ("0.0.0.0", "http://127.0.0.1:8000"),
        ("::", "http://127.0.0.1:8000"),
        ("::1", "http://[::1]:8000"),
        ("10.1.2.3", "http://10.1.2.3:8000"),
    ],
)
def test_url_a_client_on_this_host_reaches(http_host: str, url: str) -> None:
    cfg = sglang_cfg({"frontend": {"http_host": http_host}})
    plan = build_plan(cfg, "sglang", make_host(cfg))
    assert plan.url == url
    assert flag_value(frontend(plan).argv, "--http-host") == http_host


# -- GPUs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gpu_ids", "count", "tp", "masks"),
    [
        (("0",), 1, 1, ["0"]),
        (("0", "1", "2", "3"), 2, 2, ["0,1", "2,3"]),
        (("0", "1", "2", "3"), 4, 1, ["0", "1", "2", "3"]),
        (("0", "1", "2", "3"), 1, 4, ["0,1,2,3"]),
        (("0", "1", "2", "3", "4", "5", "6", "7"), 2, 2, ["0,1", "2,3"]),  # spare GPUs stay unused
        (("4", "5", "6", "7"), 2, 2, ["4,5", "6,7"]),
    ],
)
def test_workers_get_consecutive_gpu_slices(
    gpu_ids: tuple[str, ...], count: int, tp: int, masks: list[str]
) -> None:
    cfg = sglang_cfg({"workers": {"count": count, "tp": tp}})
    plan = build_plan(cfg, "sglang", make_host(cfg, gpu_ids=gpu_ids))
    workers = plan.by_role("worker")
    assert [w.env["CUDA_VISIBLE_DEVICES"] for w in workers] == masks
    assert [",".join(w.gpus) for w in workers] == masks
    assert [flag_value(w.argv, "--tp") for w in workers] == [str(tp)] * count


def test_callers_cuda_mask_is_sliced() -> None:
    usable, source = gpus.available(None, {"CUDA_VISIBLE_DEVICES": "4,5,6,7"}, ())
    cfg = sglang_cfg({"workers": {"count": 2, "tp": 2}})
    plan = build_plan(cfg, "sglang", make_host(cfg, gpu_ids=usable, gpu_source=source))
    assert [w.env["CUDA_VISIBLE_DEVICES"] for w in plan.by_role("worker")] == ["4,5", "6,7"]


@pytest.mark.parametrize(
    ("gpu_ids", "count", "tp", "need", "have"),
    [
        ((), 1, 1, 1, 0),
        (("0",), 2, 1, 2, 1),
        (("0", "1"), 2, 2, 4, 2),
        (("0", "1", "2"), 1, 4, 4, 3),
    ],
)
def test_too_few_gpus(gpu_ids: tuple[str, ...], count: int, tp: int, need: int, have: int) -> None:
    cfg = sglang_cfg({"workers": {"count": count, "tp": tp}})
    host = make_host(cfg, gpu_ids=gpu_ids, gpu_source="CUDA_VISIBLE_DEVICES")
    with pytest.raises(ConfigError) as err:
        build_plan(cfg, "sglang", host)
    msg = str(err.value)
    for part in (f"--workers {count}", f"--tp {tp}", f"needs {need} GPU", f"{have} available"):
        assert part in msg
    assert "CUDA_VISIBLE_DEVICES" in msg
    assert "\n" not in msg


# -- Dynamo versions -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "legacy", "module"),
    [
        ("0.4.1", False, "dynamo.sglang.worker"),
        ("0.4.1", True, "dynamo.sglang.worker"),
        ("0.5.0", False, "dynamo.sglang"),
        ("0.5.0", True, "dynamo.sglang.worker"),
        ("0.5.1rc1", True, "dynamo.sglang.worker"),
        ("1.4.2", False, "dynamo.sglang"),
    ],
)
def test_version_picks_the_worker_module(version: str, legacy: bool, module: str) -> None:
    cfg = sglang_cfg({"workers": {"legacy_module": legacy}})
    plan = build_plan(cfg, "sglang", make_host(cfg, version=version))
    assert worker(plan).argv[:3] == ("python3", "-m", module)
    assert plan.dynamo_version == version


@pytest.mark.parametrize("version", ["0.6.0", "1.4.2"])
def test_legacy_module_only_up_to_0_5(version: str) -> None:
    cfg = sglang_cfg({"workers": {"legacy_module": True}})
    with pytest.raises(ConfigError, match=r"workers\.legacy_module") as err:
        build_plan(cfg, "sglang", make_host(cfg, version=version))
    assert version in str(err.value)


@pytest.mark.parametrize(
    ("version", "is_1x"),
    [("0.4.1", False), ("0.5.0", False), ("0.5.1", False), ("1.0.0", True), ("1.4.2", True)],
)
def test_1x_frontend_flags_and_env(version: str, is_1x: bool) -> None:
    cfg = sglang_cfg()
    plan = build_plan(cfg, "sglang", make_host(cfg, version=version))
    fe = frontend(plan)
    assert ("--migration-limit" in fe.argv) is is_1x
    assert fe.env.get("DYN_TCP_RESPONSE_STREAM_HOST") == ("lo" if is_1x else None)
    if is_1x:
        assert flag_value(fe.argv, "--migration-limit") == "3"
        assert fe.env["DYN_TCP_RESPONSE_STREAM_PORT"] == str(fe.ports["response"])
    else:
        assert "DYN_TCP_RESPONSE_STREAM_PORT" not in fe.env


# -- engine args ---------------------------------------------------------------------------------


def _config_with_extra(tmp_path: Path, extra: list[str]) -> Path:
    text = SGLANG_YAML.read_text(encoding="utf-8").replace(
        "workers:\n", f"workers:\n  extra_args: {json.dumps(extra)}\n", 1
    )
    path = tmp_path / "extra.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("file_extra", "flag_extra"),
    [
        ([], ["--max-total-tokens", "32768"]),
        (["--mem-fraction-static", "0.8"], []),
        (["--mem-fraction-static", "0.8"], ["--max-total-tokens", "32768"]),
        (["--log-level", "debug"], ["--chunked-prefill-size=-1", "a b", "", "--", "--tp", "1"]),
    ],
)
def test_extra_engine_args_are_appended_verbatim(
    tmp_path: Path, file_extra: list[str], flag_extra: list[str]
) -> None:
    path = _config_with_extra(tmp_path, file_extra)
    flags: dict[str, Any] = {"workers": {"extra_args": flag_extra}} if flag_extra else {}
    cfg = sglang_cfg(flags, path=path)
    argv = list(worker(build_plan(cfg, "sglang", make_host(cfg))).argv)
    tail = [*file_extra, *flag_extra]
    base = argv[: len(argv) - len(tail)]
    assert argv[len(base) :] == tail
    assert base[-2:] == ["--trust-remote-code", "--skip-tokenizer-init"]


# -- mocker --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "namespace", "page_size", "count"),
    [
        ({}, "dynamo", 16, 1),
        ({"namespace": "ns-1", "workers": {"page_size": 32, "count": 3}}, "ns-1", 32, 3),
        ({"workers": {"count": 2, "tp": 4}}, "dynamo", 16, 2),
    ],
)
def test_mocker_workers(flags: dict[str, Any], namespace: str, page_size: int, count: int) -> None:
    cfg = mocker_cfg(flags)
    plan = build_plan(cfg, "mocker", make_host(cfg, gpu_ids=()))  # no GPUs needed
    workers = plan.by_role("worker")
    assert len(workers) == count
    for spec in workers:
        assert list(spec.argv) == [
            "python3", "-m", "dynamo.mocker",
            "--model-path", cfg.model.path,
            "--model-name", "tiny",
            "--block-size", str(page_size),
            "--endpoint", f"dyn://{namespace}.backend.generate",
        ]  # fmt: skip
        assert "CUDA_VISIBLE_DEVICES" not in spec.env
        assert spec.gpus == ()
        assert spec.env["DYN_NAMESPACE"] == namespace


# -- ports ---------------------------------------------------------------------------------------


def _all_ports(plan: Plan) -> list[int]:
    found: list[int] = []
    for spec in plan.processes:
        found += spec.ports.values()
    return found


PORT_CASES: list[tuple[str, str, dict[str, Any], str | None, str | None]] = [
    ("sglang", "ref", {}, None, None),
    ("sglang", "kv", {"frontend": {"router_mode": "kv"}, "workers": {"count": 1}}, None, None),
    ("mocker", "4-workers", {"workers": {"count": 4}}, None, None),
    ("mocker", "kv", {"workers": {"count": 3}, "frontend": {"router_mode": "kv"}}, None, None),
    ("mocker", "port-base", {"workers": {"count": 3, "port_base": 32700}}, None, None),
    (
        "mocker",
        "external",
        {"workers": {"count": 2}},
        "http://10.0.0.5:2379",
        "nats://10.0.0.5:4222",
    ),
]


@pytest.mark.parametrize(
    ("backend", "flags", "etcd", "nats"),
    [(b, f, e, n) for b, _, f, e, n in PORT_CASES],
    ids=[f"{b}-{i}" for b, i, *_ in PORT_CASES],
)
@pytest.mark.parametrize("allocator", ["table", "ports.allocate"])
def test_ports_distinct_and_system_port_in_range(
    backend: str, flags: dict[str, Any], etcd: str | None, nats: str | None, allocator: str
) -> None:
    flags = {**flags, "frontend": {**flags.get("frontend", {}), "http_port": free_port()}}
    cfg = sglang_cfg(flags) if backend == "sglang" else mocker_cfg(flags)
    gpu_ids = tuple(str(i) for i in range(cfg.workers.count * cfg.workers.tp))
    own_etcd, own_nats, nccl = etcd is None, nats is None, backend == "sglang"
    if allocator == "table":
        port_map = distinct_ports(
            cfg, embedded_etcd=own_etcd, embedded_nats=own_nats, nccl=nccl, backend=backend
        )
    else:
        slots = port_slots(
            cfg, embedded_etcd=own_etcd, embedded_nats=own_nats, nccl=nccl, backend=backend
        )
        port_map = ports.allocate(slots, seed="test-unit-plan", bind_hosts={}, reserve_for=None)
    plan = build_plan(
        cfg, backend, make_host(cfg, gpu_ids=gpu_ids, etcd=etcd, nats=nats, port_map=port_map)
    )
    used = _all_ports(plan)
    assert len(used) == len(set(used)), used
    for spec in plan.by_role("worker"):
        system = int(spec.env["DYN_SYSTEM_PORT"])
        assert system <= SYSTEM_PORT_MAX
        assert system == spec.ports["system"]
        assert int(spec.env["DYN_TCP_RPC_PORT"]) == spec.ports["rpc"]
        assert spec.health_url == f"http://127.0.0.1:{system}/health"
        if nccl:  # its own rendezvous port, so that two SGLang workers never race for one
            at = spec.argv.index("--nccl-port")
            assert int(spec.argv[at + 1]) == spec.ports["nccl"]
        else:
            assert "--nccl-port" not in spec.argv


@pytest.mark.parametrize(
    ("etcd", "nats", "roles"),
    [
        (None, None, ["etcd", "nats", "frontend", "worker"]),
        ("http://10.0.0.5:2379", None, ["nats", "frontend", "worker"]),
        (None, "nats://10.0.0.5:4222", ["etcd", "frontend", "worker"]),
        (
            "http://10.0.0.5:2379,http://10.0.0.6:2379",
            "nats://10.0.0.5:4222",
            ["frontend", "worker"],
        ),
    ],
)
def test_external_infra_is_passed_through(
    etcd: str | None, nats: str | None, roles: list[str]
) -> None:
    cfg = mocker_cfg()
    host = make_host(cfg, gpu_ids=(), etcd=etcd, nats=nats)
    plan = build_plan(cfg, "mocker", host)
    assert [p.role for p in plan.processes] == roles
    want_etcd = etcd or f"http://127.0.0.1:{host.ports['etcd.client']}"
    want_nats = nats or f"nats://127.0.0.1:{host.ports['nats.client']}"
    assert (plan.etcd_endpoints, plan.nats_url) == (want_etcd, want_nats)
    for spec in [*plan.by_role("frontend"), *plan.by_role("worker")]:
        assert spec.env["ETCD_ENDPOINTS"] == want_etcd
        assert spec.env["NATS_SERVER"] == want_nats


@pytest.mark.parametrize(
    ("environ", "file_infra", "want"),
    [
        ({}, {}, (None, None)),
        ({"ETCD_ENDPOINTS": "http://e:1"}, {}, ("http://e:1", None)),
        ({"NATS_SERVER": "nats://n:2"}, {}, (None, "nats://n:2")),
        (
            {},
            {"etcd": {"endpoints": "http://c:1"}, "nats": {"url": "nats://c:2"}},
            ("http://c:1", "nats://c:2"),
        ),
        (
            {"ETCD_ENDPOINTS": "http://e:1", "NATS_SERVER": "nats://n:2"},
            {"etcd": {"endpoints": "http://c:1"}, "nats": {"url": "nats://c:2"}},
            ("http://e:1", "nats://n:2"),
        ),
    ],
)
def test_external_infra_from_dynamo_variables_else_config(
    environ: dict[str, str], file_infra: dict[str, Any], want: tuple[str | None, str | None]
) -> None:
    cfg = mocker_cfg({"infra": file_infra} if file_infra else {})
    assert external_infra(cfg, environ) == want


# -- secrets -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "masked"),
    [
        (("--api-key", "sk-123"), ["--api-key", "***"]),
        (("--hf-token=abc",), ["--hf-token=***"]),
        (("--password", "p", "--port", "1"), ["--password", "***", "--port", "1"]),
        (("-api_key=x", "--client-secret", "y"), ["-api_key=***", "--client-secret", "***"]),
        (("--tp", "2", "--page-size=16"), ["--tp", "2", "--page-size=16"]),
        (("--api-key",), ["--api-key"]),
    ],
)
def test_mask_argv(argv: tuple[str, ...], masked: list[str]) -> None:
    assert mask_argv(argv) == masked


SECRET_ENV = {"HF_TOKEN": "hf_secret", "OPENAI_API_KEY": "sk-env-secret", "MY_KEY": "k-secret"}
SECRET_ARGS = ["--api-key", "sk-123", "--hf-token=abc"]


@pytest.mark.parametrize(
    ("backend", "where"),
    [("sglang", "workers"), ("sglang", "frontend"), ("mocker", "workers"), ("mocker", "frontend")],
)
def test_secret_env_never_in_json(backend: str, where: str) -> None:
    flags = {where: {"env": SECRET_ENV}}
    cfg = sglang_cfg(flags) if backend == "sglang" else mocker_cfg(flags)
    plan = build_plan(cfg, backend, make_host(cfg))
    spec = frontend(plan) if where == "frontend" else worker(plan)
    assert spec.env["HF_TOKEN"] == "hf_secret"  # the child still gets it
    shown = spec.to_json()
    assert {k: shown["env"][k] for k in SECRET_ENV} == dict.fromkeys(SECRET_ENV, "***")
    dumped = json.dumps(plan.to_json())
    for value in SECRET_ENV.values():
        assert value not in dumped


@pytest.mark.parametrize(
    ("backend", "where"),
    [("sglang", "frontend"), ("sglang", "workers"), ("mocker", "workers"), ("mocker", "frontend")],
)
def test_secret_args_never_in_json(backend: str, where: str) -> None:
    flags = {where: {"extra_args": SECRET_ARGS}}
    cfg = sglang_cfg(flags) if backend == "sglang" else mocker_cfg(flags)
    plan = build_plan(cfg, backend, make_host(cfg))
    spec = frontend(plan) if where == "frontend" else worker(plan)
    assert list(spec.argv[-3:]) == SECRET_ARGS  # the child still gets them
    assert spec.to_json()["argv"][-3:] == ["--api-key", "***", "--hf-token=***"]
    dumped = json.dumps(plan.to_json())
    for value in ("sk-123", "abc"):
        assert value not in dumped


# -- KV routing ----------------------------------------------------------------------------------


@pytest.mark.parametrize("count", [1, 2])
def test_kv_router_adds_kv_events_config(count: int) -> None:
    cfg = sglang_cfg({"frontend": {"router_mode": "kv"}, "workers": {"count": count}})
    gpu_ids = tuple(str(i) for i in range(count))
    host = make_host(cfg, gpu_ids=gpu_ids)
    plan = build_plan(cfg, "sglang", host)
    assert flag_value(frontend(plan).argv, "--router-mode") == "kv"
    endpoints = []
    for i, spec in enumerate(plan.by_role("worker")):
        kv = json.loads(flag_value(spec.argv, "--kv-events-config"))
        port = host.ports[f"worker-{i}.kv_events"]
        assert kv["endpoint"] == f"tcp://*:{port}"  # SGLang binds only a wildcard
        assert spec.ports["kv_events"] == port
        # Dynamo's subscriber connects to SGLang's local IP, not the endpoint's host
        assert spec.env["SGLANG_HOST_IP"] == "127.0.0.1"
        endpoints.append(kv["endpoint"])
    assert len(set(endpoints)) == count


@pytest.mark.parametrize("mode", ["round-robin", "random"])
def test_other_router_modes_have_no_kv_events(mode: str) -> None:
    cfg = sglang_cfg({"frontend": {"router_mode": mode}})
    plan = build_plan(cfg, "sglang", make_host(cfg))
    assert "--kv-events-config" not in worker(plan).argv
    assert "kv_events" not in worker(plan).ports
    assert "SGLANG_HOST_IP" not in worker(plan).env


def test_tokenizer_flags_are_not_secrets() -> None:
    argv = ("--skip-tokenizer-init", "--api-key", "sk-123", "--tokenizer-path", "/m")
    assert mask_argv(argv) == [
        "--skip-tokenizer-init",
        "--api-key",
        "***",
        "--tokenizer-path",
        "/m",
    ]
