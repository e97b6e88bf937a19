"""The pure classification: snapshots in, decisions out (no servers)."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest

from launcher.errors import ConfigError
from launcher.registrations.decide import Item, LeaseFacts, Probe, Snapshot, decide
from launcher.registrations.layouts import Entry, addresses, namespace_stream, slugify
from testkit.dynamo import worker_1x

A, B, C = 0x390DA21B1A92F613, 0x390DA21B1A92F61A, 0x390DA21B1A92F700


def entries(
    ns: str, lease: int, rpc: int, system: int | None, stored_lease: int | None = None
) -> list[Entry]:
    """A worker's keys as entries; ``stored_lease`` overrides the lease they are stored on."""
    on = lease if stored_lease is None else stored_lease
    return [
        Entry(key, json.dumps(value).encode(), on, revision=100 + i)
        for i, (key, value) in enumerate(sorted(worker_1x(ns, lease, rpc, system).items()))
    ]


def facts(*workers: list[Entry], ttl: int = 20) -> dict[int, LeaseFacts | None]:
    out: dict[int, LeaseFacts | None] = {}
    for group in workers:
        out[group[0].lease] = LeaseFacts(ttl, tuple(e.key for e in group))
    return out


def keys(items: tuple[Item, ...]) -> set[str]:
    return {i.key for i in items}


def test_dead_owner_with_live_lease_is_revoked_and_the_live_one_kept() -> None:
    dead, live = entries("ns", A, 28522, 28521), entries("ns", B, 28512, 28511)
    probes = {"127.0.0.1:28522": Probe.REFUSED, "127.0.0.1:28521": Probe.REFUSED,
              "127.0.0.1:28512": Probe.ANSWERS, "127.0.0.1:28511": Probe.ANSWERS}  # fmt: skip
    got = decide(Snapshot("ns", tuple(dead + live), leases=facts(dead, live), probes=probes))
    assert got.revoke == (A,)
    assert got.delete_keys == ()  # the revoke takes every key of the lease
    assert keys(got.removed) == {e.key for e in dead} | {f"lease {A:x}"}
    assert keys(got.kept) == {e.key for e in live} | {f"lease {B:x}"}
    lease_item = next(i for i in got.removed if i.kind == "leases")
    assert "127.0.0.1:28522 and system port 127.0.0.1:28521 refuse connections" in lease_item.reason
    counts = got.counts()
    assert counts["instances"] == {"removed": 2, "kept": 2}
    assert counts["model cards"] == {"removed": 1, "kept": 1}
    assert counts["event channels"] == {"removed": 2, "kept": 2}
    assert counts["leases"] == {"removed": 1, "kept": 1}


@pytest.mark.parametrize(
    ("rpc", "system", "alive"),
    [
        (Probe.REFUSED, Probe.ANSWERS, True),  # the system port still answers
        (Probe.ANSWERS, Probe.REFUSED, True),
        (Probe.UNKNOWN, Probe.REFUSED, True),  # no answer in time is not a refusal
        (None, Probe.REFUSED, True),  # never probed
        (Probe.REFUSED, Probe.REFUSED, False),
        (Probe.REFUSED, None, True),  # the system port was not probed
    ],
)
def test_liveness_needs_every_address_to_refuse(
    rpc: Probe | None, system: Probe | None, alive: bool
) -> None:
    group = entries("ns", A, 28522, 28521)
    probes = {a: p for a, p in (("127.0.0.1:28522", rpc), ("127.0.0.1:28521", system)) if p}
    got = decide(Snapshot("ns", tuple(group), leases=facts(group), probes=probes))
    assert bool(got.revoke) is not alive
    assert len(got.kept) == (len(group) + 1 if alive else 0)


def test_card_without_system_port_dies_with_its_transport() -> None:
    group = entries("ns", A, 28522, None)
    got = decide(Snapshot("ns", tuple(group), leases=facts(group),
                          probes={"127.0.0.1:28522": Probe.REFUSED}))  # fmt: skip
    assert got.revoke == (A,)


def test_keys_whose_lease_is_gone_are_deleted_by_key_at_their_revision() -> None:
    group = entries("ns", A, 28522, 28521)
    got = decide(Snapshot("ns", tuple(group), leases={A: None}))
    assert got.revoke == ()
    assert {(d.key, d.revision) for d in got.delete_keys} == {(e.key, e.revision) for e in group}
    assert all(f"lease {A:x} is gone" in i.reason for i in got.removed)


def test_a_lease_that_also_holds_other_keys_is_never_revoked() -> None:
    group = entries("ns", A, 28522, 28521)
    other = "v1/instances/ns2/backend/generate/" + f"{A:x}"
    leases = {A: LeaseFacts(20, (*(e.key for e in group), other))}
    probes = {"127.0.0.1:28522": Probe.REFUSED, "127.0.0.1:28521": Probe.REFUSED}
    got = decide(Snapshot("ns", tuple(group), leases=leases, probes=probes))
    assert got.revoke == ()
    assert {d.key for d in got.delete_keys} == {e.key for e in group}
    assert other not in {d.key for d in got.delete_keys}


def test_a_frontend_lease_is_never_revoked_even_with_all() -> None:
    router = Entry("kv_routers/ns/backend/0218aa", b'{"overlap_score_weight":1.0}', C, 7)
    leases = {C: LeaseFacts(8, (router.key,))}
    kept = decide(Snapshot("ns", (router,), leases=leases))
    assert keys(kept.kept) == {router.key}
    assert kept.revoke == ()
    everything = decide(Snapshot("ns", (router,), leases=leases), everything=True)
    assert everything.revoke == ()
    assert [d.key for d in everything.delete_keys] == [router.key]


def test_lease_less_keys_go_unless_a_live_owner_claims_them() -> None:
    live = entries("ns", B, 28512, 28511)
    orphan = entries("ns", A, 28522, 28521, stored_lease=0)
    claimed = Entry(f"v1/mdc/ns/backend/generate/{B:x}/lora1", b"{}", 0, 9)  # owner B by its path
    nobody = Entry("v1/event_channels/namespace/ns/component/backend/x/1", b"{}", 0, 10)
    probes = {"127.0.0.1:28512": Probe.ANSWERS, "127.0.0.1:28522": Probe.REFUSED,
              "127.0.0.1:28521": Probe.REFUSED}  # fmt: skip
    snap = Snapshot("ns", (*live, *orphan, claimed, nobody), leases=facts(live), probes=probes)
    got = decide(snap)
    assert keys(got.removed) == {e.key for e in orphan} | {nobody.key}
    assert claimed.key in keys(got.kept)
    assert {d.key: d.revision for d in got.delete_keys}[nobody.key] == 10


def test_all_takes_live_instances_too_and_says_which() -> None:
    live = entries("ns", B, 28512, 28511)
    snap = Snapshot(
        "ns", tuple(live), leases=facts(live), probes={"127.0.0.1:28512": Probe.ANSWERS}
    )
    got = decide(snap, everything=True)
    assert got.revoke == (B,)
    assert len(got.live_instances) == 2
    assert all(i.reason.startswith("--all") for i in got.removed)
    assert got.kept == ()


@pytest.mark.parametrize("bad", ["", "/", "a/b", "a b", "a.b", "ns*", "ümlaut", "a\n"])
def test_invalid_namespaces_are_refused(bad: str) -> None:
    with pytest.raises(ConfigError, match="letters, digits, - and _"):
        decide(Snapshot(bad))


def test_neighbours_with_colliding_prefixes_are_never_taken() -> None:
    neighbours = [e for ns in ("sglang2", "sglang-agg", "sglang_x", "sglan", "SGLANG")
                  for e in entries(ns, A, 28522, 28521, stored_lease=0)]  # fmt: skip
    probes = {"127.0.0.1:28522": Probe.REFUSED, "127.0.0.1:28521": Probe.REFUSED}
    got = decide(Snapshot("sglang", tuple(neighbours), probes=probes), everything=True)
    assert got.removed == ()
    assert got.kept == ()
    assert got.delete_keys == ()


@pytest.mark.parametrize(
    ("name", "ns", "ours"),
    [
        ("namespace-sglang-component-backend-kv-events", "sglang", True),
        ("OBJ_namespace-sglang-component-backend-radix-bucket", "sglang", True),
        ("namespace-sglang2-component-backend-kv-events", "sglang", False),
        ("namespace-sglang-agg-component-backend-kv-events", "sglang", False),
        ("namespace-sglang_x-component-backend-kv-events", "sglang", False),
        ("namespace-sglang-component-x-component-backend-kv-events", "sglang", False),
        ("namespace-sglang-component-x-component-backend-kv-events", "sglang-component-x", True),
        ("namespace-sglang-component-", "sglang", False),
        ("OBJ_tiny", "sglang", False),
    ],
)
def test_stream_names(name: str, ns: str, ours: bool) -> None:
    assert namespace_stream(name, ns) is ours


def test_namespace_streams_go_only_when_nothing_of_it_lives() -> None:
    live = entries("ns", B, 28512, 28511)
    streams = (
        "namespace-ns-component-backend-kv-events",
        "namespace-ns2-component-backend-kv-events",
    )
    alive = Snapshot("ns", tuple(live), leases=facts(live), streams=streams)
    assert decide(alive).delete_streams == ()
    assert "namespace-ns-component-backend-kv-events" in keys(decide(alive).kept)
    empty = Snapshot("ns", streams=streams)
    assert decide(empty).delete_streams == ("namespace-ns-component-backend-kv-events",)


def file_entry(bucket: str, key: str, value: object, mtime: float) -> Entry:
    return Entry(f"v1/{bucket}/{quote(key, safe='')}", json.dumps(value).encode(), mtime=mtime)


def test_file_store_entries_go_when_stale_or_when_their_owner_is_dead() -> None:
    now = 1000.0
    files = []
    for owner, port, mtime in ((A, 28522, now - 1), (B, 28512, now - 1), (C, 28532, now - 30)):
        for key, value in worker_1x("ns", owner, port, port - 1).items():
            bucket, rest = key.split("/", 2)[1:]
            files.append(file_entry(bucket, rest, value, mtime))
    files.append(file_entry("instances", f"ns2/backend/generate/{A:x}", {}, now - 99))
    probes = {"127.0.0.1:28522": Probe.REFUSED, "127.0.0.1:28521": Probe.REFUSED,
              "127.0.0.1:28512": Probe.ANSWERS}  # fmt: skip
    got = decide(Snapshot("ns", files=tuple(files), probes=probes, now=now))
    removed = {d[0] for d in got.delete_files}
    assert len(removed) == 10  # A's five (dead owner) and C's five (not refreshed for 30 s)
    assert all(f"{B:x}" not in key for key in removed)
    assert not any("ns2" in key for key in removed)
    assert got.counts()["files"] == {"removed": 10, "kept": 5}
    stale = next(i for i in got.removed if f"{C:x}" in i.key)
    assert "not refreshed for 30s" in stale.reason


def model(ns: str, name: str, lease: int, uuid: str) -> Entry:
    value = {
        "name": name,
        "endpoint": {"namespace": ns, "component": "backend", "name": "generate"},
    }
    return Entry(f"models/{uuid}", json.dumps(value).encode(), lease, 50)


def card(slug: str, name: str) -> Entry:
    return Entry(f"mdc/{slug}", json.dumps({"display_name": name, "slug": slug}).encode(), 0, 60)


def test_05_cards_go_when_no_live_model_entry_uses_them() -> None:
    shared = [model("ns", "tiny", A, "u1"), model("other", "tiny", B, "u2")]
    mine = [model("ns", "Tiny Dup", A, "u3")]
    elsewhere_dead = [model("other", "tiny-else", C, "u4")]
    cards = [card("tiny", "tiny"), card("tiny_dup", "Tiny Dup"), card("orphan", "orphan"),
             card("tiny-else", "tiny-else")]  # fmt: skip
    snap = Snapshot(
        "ns",
        (*shared, *mine, *elsewhere_dead, *cards),
        leases={A: None, B: LeaseFacts(5, ("models/u2",)), C: None},
        streams=("OBJ_tiny", "OBJ_tiny_dup", "OBJ_orphan", "OBJ_tiny-else", "OBJ_unrelated"),
    )
    got = decide(snap)
    assert keys(got.removed) == {
        "models/u1", "models/u3",  # this namespace's entries of a gone lease
        "mdc/tiny_dup", "OBJ_tiny_dup",  # used only by this namespace's dead entry
        "mdc/orphan", "OBJ_orphan",  # used by nobody
    }  # fmt: skip
    assert {"mdc/tiny", "OBJ_tiny"} <= keys(got.kept)  # another namespace's live entry uses it
    assert got.delete_streams[:2] == ("OBJ_orphan", "OBJ_tiny_dup")
    card_delete = next(d for d in got.delete_keys if d.key == "mdc/orphan")
    assert card_delete.guard == "models/"  # not if a model entry appeared since the snapshot
    assert slugify("Tiny Dup") == "tiny_dup"


def test_json_report_has_every_kind() -> None:
    got = decide(Snapshot("ns")).to_json(dry_run=True)
    assert got["namespace"] == "ns"
    assert got["dry_run"] is True
    assert got["removed"] == []
    assert got["kept"] == []
    assert set(got["counts"]) == {
        "instances", "model cards", "event channels", "routers", "leases", "streams",
        "object stores", "files",
    }  # fmt: skip


def test_addresses_are_string_members_of_objects_at_any_depth() -> None:
    card = "http://10.0.0.5:9090/v1/metadata/ns/backend/generate/tiny/_base/config.json"
    value = {
        "transport": {"tcp": "10.0.0.5:4000/abc/generate"},
        "card_json": {"model_info": {"hf_config_json": {"path": card}}},
        "more": [{"tcp": "10.0.0.6:4001/x"}, [{"deep": "https://h:1/v1/metadata/"}]],
        "tcp": "no-port-here",  # not an address: no ":"
        "listed": ["http://10.0.0.9:1/v1/metadata/x", {"tcp": 5}],  # strings in arrays: no
        "other": "http://10.0.0.7:1/v1/models",  # not a system port URL
    }
    assert addresses(value) == (("10.0.0.5:4000", "10.0.0.6:4001"), ("10.0.0.5:9090", "h:1"))
    assert addresses(None) == addresses("10.0.0.5:1") == addresses([]) == ((), ())
