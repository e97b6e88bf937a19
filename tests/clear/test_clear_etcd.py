"""clear-namespace against a real etcd (and NATS): 1.x keys written as Dynamo 1.4.2 writes them,
real leases, real listeners standing in for live workers; the real CLI in a subprocess."""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest
from clearkit import cli, cli_json, make_streams, removed_keys

from launcher import procid
from launcher.errors import ConfigError, StartupError
from launcher.registrations import layouts, natsjs, runner
from launcher.registrations import lock as ns_lock
from launcher.registrations.etcd import Etcd, prefix_end
from testkit.dynamo import put_worker_1x, worker_1x
from testkit.etcd import Gateway, dump
from testkit.net import listening

pytestmark = pytest.mark.integration


def grant(etcd: Etcd, leases: list[int], ttl: int = 60) -> int:
    lease = etcd.lease_grant(ttl)
    leases.append(lease)
    return lease


def test_etcd_client_against_a_real_etcd(etcd: Etcd, ns: str, leases: list[int]) -> None:
    assert prefix_end("a/") == b"a0"
    assert prefix_end("") == b"\0"
    lease = grant(etcd, leases, ttl=30)
    etcd.put(f"{ns}/a", "1", lease)
    etcd.put(f"{ns}/b", b"2")
    etcd.put(f"{ns}x/c", "3")
    got = etcd.get_prefix(f"{ns}/")
    assert [(kv.key, kv.value, kv.lease) for kv in got] == [
        (f"{ns}/a", b"1", lease),
        (f"{ns}/b", b"2", 0),
    ]
    info = etcd.lease_info(lease)
    assert info is not None
    assert info.keys == (f"{ns}/a",)
    assert 0 < info.ttl <= 30
    assert etcd.lease_keepalive(lease) == 30
    b = got[1]
    assert not etcd.delete_if_unchanged(b.key, b.mod_revision - 1)
    assert etcd.delete_if_unchanged(b.key, b.mod_revision)
    assert etcd.put_if_absent(f"{ns}/lock", "me") is None
    held = etcd.put_if_absent(f"{ns}/lock", "you")
    assert held is not None
    assert held.value == b"me"
    assert etcd.delete_prefix(f"{ns}/") == 2  # a and lock
    assert etcd.lease_revoke(lease)
    assert not etcd.lease_revoke(lease)
    assert etcd.lease_ttl(lease) is None
    assert etcd.lease_keepalive(lease) is None
    assert etcd.delete_key(f"{ns}x/c") == 1
    assert etcd.delete_key(f"{ns}x/c") == 0


def test_namespace_lock_is_exclusive_and_released(etcd_url: str, ns: str) -> None:
    lease = ns_lock.acquire_lock(etcd_url, ns, "host-a pid 12", ttl=30)
    with pytest.raises(
        ConfigError, match=f"namespace {ns} is already run by dynlaunch on host-a pid 12"
    ):
        ns_lock.acquire_lock(etcd_url, ns, "host-b pid 13", ttl=30)
    assert ns_lock.keep_lock(etcd_url, lease)
    ns_lock.release_lock(etcd_url, lease)
    assert not ns_lock.keep_lock(etcd_url, lease)
    again = ns_lock.acquire_lock(etcd_url, ns, "host-b pid 13", ttl=30)
    ns_lock.release_lock(etcd_url, again)


def test_helpers_for_up(
    etcd: Etcd, gateway: Gateway, etcd_url: str, ns: str, leases: list[int], free_ports: list[int]
) -> None:
    rpc, system = free_ports[0], free_ports[1]
    old, new = grant(etcd, leases), grant(etcd, leases)
    put_worker_1x(etcd, ns, old, rpc, system)
    put_worker_1x(etcd, ns, new, rpc, system, pub=0xABC)  # restarted on the same ports
    assert ns_lock.lease_of_rpc_port(etcd_url, ns, rpc) == new
    assert ns_lock.lease_of_rpc_port(etcd_url, ns, free_ports[2]) is None
    assert ns_lock.revoke(etcd_url, new)
    assert not ns_lock.revoke(etcd_url, new)
    counts = ns_lock.clear_stale(etcd_url, ns)  # nothing listens on rpc/system: old is dead
    assert counts["instances"] == {"removed": 2, "kept": 0}
    assert counts["leases"]["removed"] == 1
    assert gateway.dump(f"v1/instances/{ns}/") == []


def neighbours(base: str) -> list[str]:
    return [f"{base}2", f"{base}-agg", f"{base}_x", f"{base}-component-x", base[:-1]]


def test_neighbours_with_colliding_prefixes_stay_byte_for_byte(
    etcd: Etcd,
    gateway: Gateway,
    etcd_url: str,
    nats_url: str,
    ns: str,
    leases: list[int],
    free_ports: list[int],
) -> None:
    dead_rpc, dead_sys, live_rpc, live_sys = free_ports[:4]
    for other in neighbours(ns):
        put_worker_1x(etcd, other, grant(etcd, leases), dead_rpc, dead_sys)  # dead-looking
        put_worker_1x(etcd, other, grant(etcd, leases), live_rpc, live_sys, pub=7)  # live
        for key, value in worker_1x(other, 0x1234, dead_rpc, dead_sys).items():
            etcd.put(key, json.dumps(value))  # lease-less leftovers
        etcd.put(f"instances/{other}/backend/generate:{0x99:x}", "{}")  # 0.5 style
        etcd.put(f"kv_routers/{other}/backend/r1", "{}")
        etcd.put(
            f"models/{uuid.uuid4()}", json.dumps({"name": "m", "endpoint": {"namespace": other}})
        )
    mine = put_worker_1x(etcd, ns, grant(etcd, leases), dead_rpc, dead_sys)
    mine += list(worker_1x(ns, 0x4321, dead_rpc, dead_sys))
    for key, value in worker_1x(ns, 0x4321, dead_rpc, dead_sys).items():
        etcd.put(key, json.dumps(value))
    streams = [f"namespace-{other}-component-backend-kv-events" for other in neighbours(ns)]
    streams.append(f"namespace-{ns}-component-x-component-backend-kv-events")
    make_streams(nats_url, [], [*streams, f"namespace-{ns}-component-backend-kv-events"])

    before = [kv for kv in dump(etcd) if kv[0] not in mine]
    with listening(live_rpc):
        report = cli_json(
            "clear-namespace", "--namespace", ns, "--etcd", etcd_url, "--nats", nats_url
        )
    assert removed_keys(report) >= set(mine)
    assert f"namespace-{ns}-component-backend-kv-events" in removed_keys(report)
    assert [kv for kv in dump(etcd) if kv[0] not in mine] == before
    assert gateway.dump(*layouts.etcd_prefixes(ns)[:4]) == []
    left = natsjs.list_streams(nats_url)
    assert set(streams) <= set(left)
    assert f"namespace-{ns}-component-backend-kv-events" not in left
    natsjs.delete_streams(nats_url, streams)


def test_dry_run_deletes_nothing_then_a_run_clears_and_a_rerun_finds_nothing(
    etcd: Etcd, gateway: Gateway, etcd_url: str, ns: str, leases: list[int], free_ports: list[int]
) -> None:
    dead = grant(etcd, leases)
    dead_keys = put_worker_1x(etcd, ns, dead, free_ports[0], free_ports[1])
    live_keys = put_worker_1x(etcd, ns, grant(etcd, leases), free_ports[2], free_ports[3], pub=5)
    before = dump(etcd)
    with listening(free_ports[2]):
        dry = cli("clear-namespace", "--namespace", ns, "--etcd", etcd_url, "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert "dry run, nothing deleted" in dry.stdout
        lines = dry.stdout.splitlines()
        assert any(ln.split()[:4] == ["would", "remove", "leases", "lease"] and f"{dead:x}" in ln
                   for ln in lines)  # fmt: skip
        assert dump(etcd) == before

        real = cli_json("clear-namespace", "--namespace", ns, "--etcd", etcd_url)
        assert removed_keys(real) == set(dead_keys) | {f"lease {dead:x}"}
        assert real["counts"]["instances"] == {"removed": 2, "kept": 2}
        assert real["dry_run"] is False
        assert dead not in gateway.leases()  # revoked: every key went at once
        assert [kv[0] for kv in gateway.dump("v1/") if ns in kv[0]] == sorted(live_keys)

        again = cli_json("clear-namespace", "--namespace", ns, "--etcd", etcd_url)
        assert again["removed"] == []
        assert again["counts"]["instances"] == {"removed": 0, "kept": 2}


def test_all_refuses_without_yes_while_an_instance_looks_alive(
    etcd: Etcd, gateway: Gateway, etcd_url: str, ns: str, leases: list[int], free_ports: list[int]
) -> None:
    live = grant(etcd, leases)
    put_worker_1x(etcd, ns, live, free_ports[0], free_ports[1])
    before = dump(etcd)
    with listening(free_ports[0]):
        refused = cli("clear-namespace", "--namespace", ns, "--etcd", etcd_url, "--all")
        assert refused.returncode == 2
        assert refused.stderr.count("\n") == 1
        assert f"--all would remove 2 live-looking instances (v1/instances/{ns}/" in refused.stderr
        assert dump(etcd) == before
        done = cli_json("clear-namespace", "--namespace", ns, "--etcd", etcd_url, "--all", "--yes")
    assert done["counts"]["instances"] == {"removed": 2, "kept": 0}
    assert live not in gateway.leases()


def test_all_refuses_without_yes_while_dynlaunch_holds_the_namespace(
    etcd: Etcd, gateway: Gateway, etcd_url: str, ns: str, leases: list[int], free_ports: list[int]
) -> None:
    put_worker_1x(etcd, ns, grant(etcd, leases), free_ports[0], free_ports[1])  # dead-looking
    lock = ns_lock.acquire_lock(etcd_url, ns, "host-a pid 42", ttl=30)
    try:
        refused = cli("clear-namespace", "--namespace", ns, "--etcd", etcd_url, "--all")
        assert refused.returncode == 2
        assert refused.stderr == (
            f"dynlaunch: error: --all: namespace {ns} is run by dynlaunch on host-a pid 42; "
            f"add --yes if nothing of {ns} runs, or drop --all to remove only stale state\n"
        )
        stale_only = cli_json("clear-namespace", "--namespace", ns, "--etcd", etcd_url)
        assert stale_only["counts"]["instances"] == {"removed": 2, "kept": 0}
        assert f"namespace {ns} is held by dynlaunch on host-a pid 42" in stale_only["notes"]
        assert gateway.get(f"dynlaunch/locks/{ns}") is not None  # never touched
    finally:
        ns_lock.release_lock(etcd_url, lock)


def test_all_without_yes_is_fine_when_nothing_looks_alive(
    etcd: Etcd, etcd_url: str, ns: str, leases: list[int], free_ports: list[int]
) -> None:
    put_worker_1x(etcd, ns, grant(etcd, leases), free_ports[0], free_ports[1])
    done = cli("clear-namespace", "--namespace", ns, "--etcd", etcd_url, "--all")
    assert done.returncode == 0, done.stderr
    assert "instances                   2      0" in done.stdout


@pytest.mark.parametrize("bad", ["", "/", "a/b", "a.b", "x y"])
def test_bad_namespaces_exit_2_in_one_line(bad: str, etcd_url: str) -> None:
    done = cli("clear-namespace", "--namespace", bad, "--etcd", etcd_url)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert "letters, digits, - and _" in done.stderr


def test_unreachable_infra_exits_3_in_one_line_and_deletes_nothing(
    etcd: Etcd, etcd_url: str, ns: str, leases: list[int], free_ports: list[int]
) -> None:
    put_worker_1x(etcd, ns, grant(etcd, leases), free_ports[0], free_ports[1])
    before = dump(etcd)
    closed = f"127.0.0.1:{free_ports[2]}"
    no_etcd = cli("clear-namespace", "--namespace", ns, "--etcd", f"http://{closed}")
    assert no_etcd.returncode == 3
    refused = "ConnectError: [Errno 111] Connection refused"
    assert no_etcd.stderr == f"dynlaunch: error: etcd at http://{closed} unreachable: {refused}\n"
    no_nats = cli(
        "clear-namespace", "--namespace", ns, "--etcd", etcd_url, "--nats", f"nats://{closed}"
    )
    assert no_nats.returncode == 3
    assert no_nats.stderr.startswith(f"dynlaunch: error: NATS at nats://{closed} unreachable")
    assert no_nats.stderr.count("\n") == 1
    assert dump(etcd) == before
    no_endpoint = cli("clear-namespace", "--namespace", ns)
    assert no_endpoint.returncode == 2
    assert "no etcd to clear" in no_endpoint.stderr


def test_endpoints_come_from_a_running_dynlaunch_up(
    etcd: Etcd, etcd_url: str, nats_url: str, ns: str, tmp_state: Path, leases: list[int],
    free_ports: list[int],
) -> None:  # fmt: skip
    put_worker_1x(etcd, ns, grant(etcd, leases), free_ports[0], free_ports[1])
    tmp_state.mkdir(parents=True)
    info = {**procid.me(), "run_id": "r", "namespace": ns, "url": "http://127.0.0.1:1",
            "etcd": etcd_url, "nats": nats_url}  # fmt: skip
    (tmp_state / "launcher.json").write_text(json.dumps(info))
    found = cli_json(
        "clear-namespace", "--namespace", ns, "--state-dir", str(tmp_state), "--dry-run"
    )
    assert found["counts"]["instances"]["removed"] == 2
    assert found["notes"] == []  # NATS was found there too
    info["pid"] = 2**22 + 12345  # no such process: a stale launcher.json is ignored
    (tmp_state / "launcher.json").write_text(json.dumps(info))
    stale = cli("clear-namespace", "--namespace", ns, "--state-dir", str(tmp_state))
    assert stale.returncode == 2
    assert "no etcd to clear" in stale.stderr
    via_env = cli(
        "clear-namespace", "--namespace", ns, "--dry-run", env={"ETCD_ENDPOINTS": etcd_url}
    )
    assert via_env.returncode == 0
    assert "NATS not checked" in via_env.stdout


def test_file_store_entries_go_by_mtime_or_dead_owner_and_neighbours_stay(
    tmp_path: Path, ns: str, free_ports: list[int]
) -> None:
    root = tmp_path / "filekv"
    now = time.time()
    written: dict[Path, tuple[bytes, float]] = {}

    def write(space: str, lease: int, rpc: int, system: int, age: float) -> list[Path]:
        paths = []
        for key, value in worker_1x(space, lease, rpc, system).items():
            _, bucket, rest = key.split("/", 2)
            path = root / "v1" / bucket / quote(rest, safe="")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(value))
            os.utime(path, (now - age, now - age))
            written[path] = (path.read_bytes(), path.stat().st_mtime)
            paths.append(path)
        return paths

    dead = write(ns, 0xA1, free_ports[0], free_ports[1], age=1)  # fresh, nothing listens
    stale = write(ns, 0xA2, free_ports[2], free_ports[3], age=60)
    live = write(ns, 0xA3, free_ports[4], free_ports[5], age=1)
    others = [
        p
        for other in neighbours(ns)
        for p in write(other, 0xB1, free_ports[0], free_ports[1], age=600)
    ]
    with listening(free_ports[4]):
        report = cli_json(
            "clear-namespace", "--namespace", ns, "--discovery", "file", "--file-kv", str(root)
        )
    assert report["counts"]["files"] == {"removed": 10, "kept": 5}
    assert not any(p.exists() for p in dead + stale)
    assert all(p.exists() for p in live)
    assert all((p.read_bytes(), p.stat().st_mtime) == written[p] for p in others)
    assert any("not refreshed for 60s" in item["reason"] for item in report["removed"])
    assert any("refuse connections" in item["reason"] for item in report["removed"])


def test_runner_raises_one_line_errors(ns: str, free_ports: list[int]) -> None:
    with pytest.raises(StartupError, match="unreachable"):
        runner.run(ns, runner.Endpoints("etcd", etcd=f"http://127.0.0.1:{free_ports[0]}"))
    with pytest.raises(ConfigError, match="no etcd endpoint"):
        runner.run(ns, runner.Endpoints("etcd"))
