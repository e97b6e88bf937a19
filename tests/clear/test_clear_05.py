"""The Dynamo 0.5 layout, written as the 0.5 field notes show it, in a real etcd and a real NATS
with JetStream: instances/NS/..., models/<uuid> naming NS, kv_routers/NS/..., the lease-less
mdc/<slug> card and its object store OBJ_<slug>, and the namespace-NS-component-* streams."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator

import pytest
from clearkit import NatsServices, cli_json, make_streams, removed_keys

from launcher.registrations import natsjs
from launcher.registrations.etcd import Etcd
from testkit.etcd import Gateway, dump

pytestmark = pytest.mark.integration


def card(slug: str, name: str, nats_url: str) -> str:
    files = {"model_info": {"hf_config_json": f"{nats_url}/{slug}/config.json"}}
    return json.dumps({"display_name": name, "slug": slug, **files, "context_length": 2048})


def model_entry(ns: str, name: str) -> str:
    endpoint = {"namespace": ns, "component": "backend", "name": "generate"}
    return json.dumps({"name": name, "endpoint": endpoint, "model_type": "Backend"})


def instance(ns: str, endpoint: str, lease: int) -> tuple[str, str]:
    value = {"component": "backend", "endpoint": endpoint, "namespace": ns, "instance_id": lease,
             "transport": {"nats_tcp": f"{ns}_backend.{endpoint}-{lease:x}"}}  # fmt: skip
    return f"instances/{ns}/backend/{endpoint}:{lease:x}", json.dumps(value)


def worker_05(etcd: Etcd, ns: str, name: str, lease: int) -> list[str]:
    """What one 0.5 mocker writes on its lease: two instances and its models/<uuid> entry."""
    written = []
    for endpoint in ("generate", "load_metrics"):
        key, value = instance(ns, endpoint, lease)
        etcd.put(key, value, lease)
        written.append(key)
    key = f"models/{uuid.uuid4()}"
    etcd.put(key, model_entry(ns, name), lease)
    return [*written, key]


@pytest.fixture
def services(nats_url: str) -> Iterator[Callable[[str, int], object]]:
    """Start a real NATS micro service that serves a worker's subjects, as a live 0.5 worker
    does (tests/children/nats_service.py)."""
    kit = NatsServices(nats_url)
    yield lambda ns, lease: kit.start(f"{ns}_backend", f"{lease:x}")
    kit.stop()


@pytest.fixture
def frontend_lease(etcd: Etcd) -> Iterator[int]:
    lease = etcd.lease_grant(60)
    yield lease
    etcd.lease_revoke(lease)


def test_05_layout_is_cleared_and_neighbours_stay(
    etcd: Etcd,
    gateway: Gateway,
    etcd_url: str,
    nats_url: str,
    ns: str,
    frontend_lease: int,
    services: Callable[[str, int], object],
) -> None:
    other = f"{ns}2"
    slug, dead_slug, other_slug, orphan = f"{ns}-tiny", f"{ns}-dup", f"{ns}-other", f"{ns}-gone"
    for s in (slug, dead_slug, other_slug, orphan):
        etcd.put(f"mdc/{s}", card(s, s, nats_url))  # lease-less, as 0.5 writes them
    live = etcd.lease_grant(60)
    live_keys = worker_05(etcd, ns, slug, live)
    services(ns, live)  # its NATS subjects are served
    # SIGKILLed within its lease's TTL: the lease lives on, nothing answers on its subjects.
    killed = etcd.lease_grant(60)
    killed_keys = worker_05(etcd, ns, slug, killed)
    neighbour = etcd.lease_grant(60)
    worker_05(etcd, other, other_slug, neighbour)
    # Left behind by a worker whose lease expired after a SIGKILL, and by a dead KV frontend:
    dead_model = f"models/{uuid.uuid4()}"
    etcd.put(dead_model, model_entry(ns, dead_slug))  # lease gone: written here without one
    leftover, value = instance(ns, "generate", 0x390DA21A87241698)
    etcd.put(leftover, value)
    etcd.put(f"kv_routers/{ns}/backend/0218aa", '{"use_kv_events":true}')
    etcd.put(f"kv_routers/{ns}/backend/live-router", "{}", frontend_lease)
    etcd.put(f"kv_routers/{other}/backend/0218bb", "{}")
    streams = [f"namespace-{ns}-component-backend-kv-events",
               f"namespace-{other}-component-backend-kv-events"]  # fmt: skip
    make_streams(nats_url, [slug, dead_slug, other_slug, orphan, f"{ns}-unrelated"], streams)

    mine = {dead_model, leftover, f"kv_routers/{ns}/backend/0218aa", f"mdc/{dead_slug}",
            f"mdc/{orphan}", *killed_keys}  # fmt: skip
    before = [kv for kv in dump(etcd) if kv[0] not in mine]
    try:
        report = cli_json(
            "clear-namespace", "--namespace", ns, "--etcd", etcd_url, "--nats", nats_url
        )
        assert removed_keys(report) == mine | {
            f"OBJ_{dead_slug}",
            f"OBJ_{orphan}",
            f"lease {killed:x}",
        }
        why = {i["key"]: i["reason"] for i in report["removed"]}[f"lease {killed:x}"]
        assert "has no responder on NATS" in why, why
        assert [kv for kv in dump(etcd) if kv[0] not in mine] == before  # byte for byte
        left = set(natsjs.list_streams(nats_url))
        assert {f"OBJ_{slug}", f"OBJ_{other_slug}", f"OBJ_{ns}-unrelated", *streams} <= left
        assert not {f"OBJ_{dead_slug}", f"OBJ_{orphan}"} & left
        counts = report["counts"]
        assert counts["instances"] == {"removed": 3, "kept": 2}
        assert counts["model cards"] == {"removed": 4, "kept": 2}  # models/ and mdc/ entries
        assert counts["routers"] == {"removed": 1, "kept": 1}
        assert counts["object stores"] == {"removed": 2, "kept": 1}
        assert counts["streams"] == {"removed": 0, "kept": 1}  # a worker of ns is alive

        # The live worker stops; its lease ends. Now its card, store and the stream go too.
        etcd.lease_revoke(live)
        assert not any(gateway.get(k) for k in live_keys)
        second = cli_json(
            "clear-namespace", "--namespace", ns, "--etcd", etcd_url, "--nats", nats_url
        )
        assert removed_keys(second) == {f"mdc/{slug}", f"OBJ_{slug}", streams[0]}
        left = set(natsjs.list_streams(nats_url))
        assert {f"OBJ_{other_slug}", f"OBJ_{ns}-unrelated", streams[1]} <= left
        assert gateway.get(f"mdc/{other_slug}") is not None
        third = cli_json(
            "clear-namespace", "--namespace", ns, "--etcd", etcd_url, "--nats", nats_url
        )
        assert third["removed"] == []
    finally:
        etcd.lease_revoke(neighbour)
        etcd.delete_key(f"mdc/{other_slug}")  # an orphan now: any later clear would take it
        natsjs.delete_streams(nats_url, [f"OBJ_{other_slug}", f"OBJ_{ns}-unrelated", streams[1]])


def test_05_card_stays_while_another_namespace_uses_it(
    etcd: Etcd, etcd_url: str, nats_url: str, ns: str
) -> None:
    slug = f"{ns}-shared"
    etcd.put(f"mdc/{slug}", card(slug, slug, nats_url))
    make_streams(nats_url, [slug], [])
    etcd.put(f"models/{uuid.uuid4()}", model_entry(ns, slug))  # ns's, without a lease: stale
    elsewhere = etcd.lease_grant(60)
    try:
        worker_05(etcd, f"{ns}-b", slug, elsewhere)
        report = cli_json(
            "clear-namespace", "--namespace", ns, "--etcd", etcd_url, "--nats", nats_url
        )
        assert [i["kind"] for i in report["removed"]] == ["model cards"]  # ns's models/ entry
        kept = {i["key"]: i["reason"] for i in report["kept"]}
        assert f"namespace {ns}-b" in kept[f"mdc/{slug}"]
        assert f"OBJ_{slug}" in natsjs.list_streams(nats_url)
    finally:
        etcd.lease_revoke(elsewhere)
    gone = cli_json("clear-namespace", "--namespace", ns, "--etcd", etcd_url, "--nats", nats_url)
    assert removed_keys(gone) == {f"mdc/{slug}", f"OBJ_{slug}"}
