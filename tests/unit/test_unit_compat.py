"""What each Dynamo line takes (launcher.compat), and that the plan follows it: module choice,
mocker flags, ports and env per line, as tables. Pure: no host facts."""

from __future__ import annotations

import json
from typing import Any

import pytest

from launcher import compat
from launcher.config import Config, load_config
from launcher.errors import ConfigError
from launcher.plan import Host, Plan, build_plan, port_slots, start_tiers
from launcher.registrations import card05, layouts


def cfg_for(backend: str, flags: dict[str, Any] | None = None) -> Config:
    return load_config(backend, path=None, environ={}, flags=flags or {}, flag_names={})


def plan_for(backend: str, version: str, flags: dict[str, Any] | None = None) -> Plan:
    cfg = cfg_for(backend, flags)
    slots = port_slots(
        cfg,
        embedded_etcd=True,
        embedded_nats=True,
        nccl=backend == "sglang",
        backend=backend,
        dynamo_version=version,
    )
    host = Host(
        dynamo_version=version,
        python="python3",
        gpus=tuple(str(i) for i in range(cfg.workers.count)),
        gpu_source="test",
        ports={slot.name: 20000 + i for i, slot in enumerate(slots)},
        state_dir="/tmp/s",
        etcd_endpoints=None,
        nats_url=None,
    )
    return build_plan(cfg, backend, host)


LINES = [
    # version, line, module, legacy alias, mocker flags, tcp rpc + response port, layout
    ("0.4.1", "0.4", "dynamo.sglang.worker", True, False, False, "0.5"),
    ("0.5.0", "0.5", "dynamo.sglang", True, False, False, "0.5"),
    ("0.5.1rc1", "0.5", "dynamo.sglang", True, False, False, "0.5"),
    ("0.6.0", "0.6", "dynamo.sglang", False, False, False, "0.5"),
    ("1.0.0", "1.x", "dynamo.sglang", False, True, True, "v1"),
    ("1.4.2", "1.x", "dynamo.sglang", False, True, True, "v1"),
]


@pytest.mark.parametrize(
    ("version", "line", "module", "alias", "mocker_flags", "tcp", "layout"), LINES
)
def test_lines(
    version: str, line: str, module: str, alias: bool, mocker_flags: bool, tcp: bool, layout: str
) -> None:
    got = compat.for_version(version)
    assert (got.line, got.sglang_module, got.legacy_sglang_module) == (line, module, alias)
    assert (got.mocker_flags, got.tcp_rpc, got.response_stream_env) == (mocker_flags, tcp, tcp)
    assert got.layout == layout
    assert got.fence_by == ("rpc-port" if tcp else "nats-subject")


@pytest.mark.parametrize(("version", "line", "module", "alias", "_m", "_t", "_l"), LINES)
def test_plan_keeps_the_module_choice(
    version: str, line: str, module: str, alias: bool, _m: bool, _t: bool, _l: str
) -> None:
    plan = plan_for("sglang", version)
    assert plan.by_role("worker")[0].argv[:3] == ("python3", "-m", module)
    legacy = {"workers": {"legacy_module": True}}
    if alias:
        argv = plan_for("sglang", version, legacy).by_role("worker")[0].argv
        assert argv[2] == "dynamo.sglang.worker"
    else:
        with pytest.raises(ConfigError, match=r"workers\.legacy_module"):
            plan_for("sglang", version, legacy)


def all_ports(plan: Plan) -> dict[str, dict[str, int]]:
    return {p.name: dict(p.ports) for p in plan.processes}


@pytest.mark.parametrize("version", ["0.4.1", "0.5.0", "0.5.1"])
def test_pre_1_plan_shows_only_ports_dynamo_uses(version: str) -> None:
    for backend in ("mocker", "sglang"):
        plan = plan_for(backend, version, {"workers": {"count": 2}})
        fe = plan.by_role("frontend")[0]
        assert fe.ports == {"http": 8000}  # 0.5 picks its response port itself
        for wk in plan.by_role("worker"):
            assert "rpc" not in wk.ports  # requests go over NATS
            assert not {"DYN_TCP_RPC_PORT", "DYN_TCP_RPC_HOST"} & set(wk.env)
            assert not {"DYN_EVENT_PLANE", "DYN_EVENT_PLANE_HOST"} & set(wk.env)
            assert wk.env["DYN_SYSTEM_PORT"] == str(wk.ports["system"])
            assert wk.env["DYN_SYSTEM_HOST"] == "127.0.0.1"
            assert wk.env["DYN_SYSTEM_STARTING_HEALTH_STATUS"] == "ready"
        assert not {"DYN_TCP_RESPONSE_STREAM_HOST", "DYN_TCP_RESPONSE_STREAM_PORT"} & set(fe.env)
        assert "--migration-limit" not in fe.argv


def test_1x_plan_keeps_its_ports() -> None:
    plan = plan_for("mocker", "1.4.2", {"workers": {"count": 2}})
    fe = plan.by_role("frontend")[0]
    assert set(fe.ports) == {"http", "response"}
    assert fe.env["DYN_TCP_RESPONSE_STREAM_PORT"] == str(fe.ports["response"])
    for wk in plan.by_role("worker"):
        assert set(wk.ports) == {"system", "rpc"}
        assert wk.env["DYN_TCP_RPC_PORT"] == str(wk.ports["rpc"])
    assert plan.files == ()


@pytest.mark.parametrize(("version", "flags"), [("0.5.0", False), ("1.4.2", True)])
def test_mocker_engine_args(version: str, flags: bool) -> None:
    plan = plan_for("mocker", version, {"workers": {"count": 2, "page_size": 32}})
    for wk in plan.by_role("worker"):
        argv = list(wk.argv)
        assert ("--block-size" in argv) is flags
        assert ("--extra-engine-args" in argv) is not flags
        if not flags:
            path = argv[argv.index("--extra-engine-args") + 1]
            assert path == "/tmp/s/" + compat.MOCKER_ENGINE_ARGS_FILE
            assert dict(plan.files) == {path: json.dumps({"block_size": 32}) + "\n"}
            assert plan.to_json()["files"] == {path: json.dumps({"block_size": 32}) + "\n"}


def entry(key: str, value: Any, lease: int = 0) -> layouts.Entry:
    return layouts.Entry(key, json.dumps(value).encode(), lease)


def model(ns: str, name: str) -> dict[str, Any]:
    return {"name": name, "endpoint": {"namespace": ns, "component": "backend", "name": "generate"}}


def test_counts_05_counts_one_namespace() -> None:
    inst = {"transport": {"nats_tcp": "dyn_backend.generate-1a"}}
    entries = [
        entry("instances/dyn/backend/generate:1a", inst, 0x1A),
        entry("instances/dyn/backend/load_metrics:1a", inst, 0x1A),
        entry("instances/dyn2/backend/generate:2b", inst, 0x2B),
        entry("models/u1", model("dyn", "tiny"), 0x1A),
        entry("models/u2", model("dyn2", "other"), 0x2B),
        entry("mdc/tiny", {"display_name": "tiny"}),
        entry("mdc/other", {"display_name": "other"}),
        entry("kv_routers/dyn/backend/r1", {}, 7),
    ]
    got = layouts.counts_05(entries, "dyn")
    assert got == {"instances": 2, "models": 1, "model_cards": 1, "routers": 1}


def test_nats_subjects() -> None:
    assert layouts.nats_subjects({"transport": {"nats_tcp": "a_b.c-1"}}) == ("a_b.c-1",)
    assert layouts.nats_subjects({"transport": {"tcp": "127.0.0.1:1/x"}}) == ()
    assert layouts.nats_subjects(None) == ()


@pytest.mark.parametrize(
    ("version", "external", "tiers"),
    [
        ("1.4.2", False, [["etcd", "nats", "frontend", "worker"]]),
        ("1.4.2", True, [["etcd", "nats"], ["frontend", "worker"]]),
        ("0.5.0", False, [["etcd", "nats", "worker"], ["frontend"]]),
        ("0.5.0", True, [["etcd", "nats"], ["worker"], ["frontend"]]),
    ],
)
def test_start_order(version: str, external: bool, tiers: list[list[str]]) -> None:
    """0.5's frontend starts once the workers registered and the card holds the migration limit
    (it reads the card once); 1.x starts both at once."""
    cfg = cfg_for("mocker", {"workers": {"count": 2}})
    slots = port_slots(cfg, embedded_etcd=not external, embedded_nats=not external,
                       nccl=False, dynamo_version=version, backend="mocker")  # fmt: skip
    host = Host(
        dynamo_version=version, python="python3", gpus=(), gpu_source="test",
        ports={slot.name: 20000 + i for i, slot in enumerate(slots)}, state_dir="/tmp/s",
        etcd_endpoints="http://127.0.0.1:1" if external else None,
        nats_url="nats://127.0.0.1:2" if external else None,
    )  # fmt: skip
    plan = build_plan(cfg, "mocker", host)
    assert plan.to_json()["start_order"] == tiers
    assert [list(t) for t in start_tiers(plan)] == tiers


@pytest.mark.parametrize(
    ("version", "in_card"), [("0.4.1", True), ("0.5.0", True), ("1.4.2", False)]
)
def test_migration_limit_where_each_line_reads_it(version: str, in_card: bool) -> None:
    """1.x: the frontend's flag. 0.5: the card (set by `up`), and SGLang's worker flag, which
    fills a card it creates; the 0.5 mocker has no such flag."""
    flags = {"frontend": {"migration_limit": 5}}
    for backend in ("mocker", "sglang"):
        plan = plan_for(backend, version, flags)
        fe_argv = list(plan.by_role("frontend")[0].argv)
        wk_argv = list(plan.by_role("worker")[0].argv)
        assert ("--migration-limit" in fe_argv) is not in_card
        assert plan.card_migration_limit == (5 if in_card else None)
        assert ("model_card" in plan.to_json()) is in_card
        in_worker = backend == "sglang" and in_card
        assert ("--migration-limit" in wk_argv) is in_worker
        if in_worker:
            assert wk_argv[wk_argv.index("--migration-limit") + 1] == "5"


def test_card_migration_limit_changes_one_field_only() -> None:
    card = {"display_name": "tiny", "slug": "tiny", "migration_limit": 0, "context_length": 2048}
    raw = json.dumps(card).encode()
    new = card05.with_migration_limit(raw, 3)
    assert new is not None
    assert json.loads(new) == {**card, "migration_limit": 3}
    assert card05.with_migration_limit(new, 3) is None  # already so: nothing to write
    assert card05.with_migration_limit(b"not json", 3) is None
    assert card05.with_migration_limit(b"[1]", 3) is None


def test_registered_counts_one_model_of_one_namespace() -> None:
    entries = [
        entry("models/u1", model("dyn", "tiny"), 0x1A),
        entry("models/u2", model("dyn", "tiny"), 0x2B),
        entry("models/u3", model("dyn2", "tiny"), 0x3C),
        entry("models/u4", model("dyn", "other"), 0x4D),
        entry("mdc/tiny", {"display_name": "tiny"}),
    ]
    assert card05.registered(entries, "dyn", "tiny") == 2
    assert card05.registered(entries, "dyn", "none") == 0


@pytest.mark.parametrize(
    ("version", "migrates"),
    [("0.5.0", False), ("1.4.2", False), ("1.5.1", False), ("1.6.0", True), ("1.6.1", True)],
)
def test_auto_router_is_kv_only_where_kv_migrates(version: str, migrates: bool) -> None:
    """auto with 2 workers: kv where a dead worker's requests still migrate under kv (measured
    1.6.1), round-robin where they fail (1.4.2, 0.5.0); one worker: round-robin everywhere."""
    assert compat.for_version(version).kv_router_migrates is migrates
    two = plan_for("mocker", version, {"workers": {"count": 2}})
    assert two.router_mode == ("kv" if migrates else "round-robin")
    assert plan_for("mocker", version, {"workers": {"count": 1}}).router_mode == "round-robin"
    frontend = two.by_role("frontend")[0].argv
    assert frontend[frontend.index("--router-mode") + 1] == two.router_mode
