"""The guarded bulk delete of clear-namespace, against a real etcd 3.4 (its JSON gateway): a prefix
of the namespace whose every key goes is cleared by one transaction (one request, one revision),
guarded by a compare over the whole range; anything written under the prefix after the snapshot
makes it fall back to key-by-key deletes, so the newcomer stays. Neighbours stay byte for byte."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from clearkit import cli_json, removed_keys

from launcher.registrations import layouts, runner
from launcher.registrations.decide import Decision, LeaseFacts, Probe, RangeDelete, Snapshot, decide
from launcher.registrations.etcd import Etcd
from launcher.registrations.layouts import Entry
from launcher.registrations.runner import Endpoints
from testkit.dynamo import put_worker_1x, stale_workers_1x, worker_1x
from testkit.etcd import Gateway, dump, put_many, revision
from testkit.net import listening

pytestmark = pytest.mark.integration


def neighbours(ns: str) -> list[str]:
    """Namespaces whose keys start like ``ns``'s: a prefix delete without the "/" takes them."""
    return [f"{ns}2", f"{ns}-agg", f"{ns}_x", f"{ns}-component-x", ns[:-1]]


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Every request an `Etcd` client of this process makes, by gateway path."""
    seen: Counter[str] = Counter()
    real = Etcd._call

    def counting(self: Etcd, path: str, body: dict[str, Any], **kw: Any) -> dict[str, Any]:
        seen[path] += 1
        return real(self, path, body, **kw)

    monkeypatch.setattr(Etcd, "_call", counting)
    return seen


class Scene:
    """A namespace with stale keys, and neighbours with stale keys of their own (which stay)."""

    def __init__(self, etcd: Etcd, etcd_url: str, ns: str, free_ports: list[int]) -> None:
        self.etcd, self.ns = etcd, ns
        self.gateway = Gateway(etcd_url)  # what the checks read: not the client under test
        self.where = Endpoints("etcd", etcd=etcd_url)
        self.dead_rpc, self.dead_sys = free_ports[0], free_ports[1]  # nothing listens there
        others: dict[str, dict[str, Any]] = {}
        for other in neighbours(ns):
            others |= stale_workers_1x(other, 20, self.dead_rpc, self.dead_sys)
        put_many(etcd, others)
        self.before = self.outside()

    def stale(self, workers: int, only_instances: bool = False) -> list[str]:
        keys = stale_workers_1x(self.ns, workers, self.dead_rpc, self.dead_sys)
        if only_instances:
            keys = {k: v for k, v in keys.items() if k.startswith(f"v1/instances/{self.ns}/")}
        put_many(self.etcd, keys)
        return sorted(keys)

    def outside(self) -> list[tuple[str, bytes, int, int, int]]:
        """Every key not under the namespace's own prefixes: equal before and after."""
        mine = layouts.own_prefixes(self.ns)
        return [kv for kv in dump(self.etcd) if not kv[0].startswith(mine)]

    def left(self) -> list[str]:
        return [kv[0] for kv in self.gateway.dump(*layouts.own_prefixes(self.ns))]

    def judge(self) -> Decision:
        return decide(runner.gather(self.ns, self.where, self.etcd))

    def apply(self, decision: Decision, calls: Counter[str]) -> tuple[dict[str, int], int]:
        """Apply ``decision``: the requests it made, and how many revisions the store moved."""
        start = revision(self.etcd)
        calls.clear()
        runner.apply(decision, self.where, self.etcd)
        made = dict(calls)
        return made, revision(self.etcd) - start


@pytest.fixture
def scene(etcd: Etcd, etcd_url: str, ns: str, free_ports: list[int]) -> Iterator[Scene]:
    """Its keys are removed afterwards: a frontend of a later test (e2e) would list the
    neighbours' stale instances of model "tiny" among its own."""
    yield Scene(etcd, etcd_url, ns, free_ports)
    for space in (ns, *neighbours(ns)):
        for prefix in layouts.own_prefixes(space):
            etcd.delete_prefix(prefix)


# -- the client call ---------------------------------------------------------------------------


def test_range_delete_compares_the_whole_range_and_stops_at_the_slash(etcd: Etcd, ns: str) -> None:
    """etcd 3.4's gateway takes ``range_end`` in a compare: a newer key anywhere in the range
    fails it (without range_end the compare would be on the absent key "ns/" and pass)."""
    for bad, rev in ((f"v1/instances/{ns}", 5), ("/", 5), ("", 5), (f"{ns}/", 0)):
        with pytest.raises(ValueError, match="range delete"):
            etcd.delete_prefix_if_unchanged(bad, rev)
    etcd.put(f"{ns}/a", "1")
    etcd.put(f"{ns}2/a", "neighbour")
    read_at = etcd.range_prefix(f"{ns}/")[1]
    etcd.put(f"{ns}/b", "newer")
    start = revision(etcd)
    assert etcd.delete_prefix_if_unchanged(f"{ns}/", read_at) is None
    assert revision(etcd) == start  # a failed compare writes nothing
    assert [kv.key for kv in etcd.get_prefix(f"{ns}/")] == [f"{ns}/a", f"{ns}/b"]
    assert etcd.delete_prefix_if_unchanged(f"{ns}/", revision(etcd)) == 2
    assert revision(etcd) == start + 1  # both keys in one revision
    assert etcd.delete_prefix_if_unchanged(f"{ns}/", revision(etcd)) == 0  # empty range passes
    assert [kv.value for kv in etcd.get_prefix(f"{ns}2/")] == [b"neighbour"]
    etcd.delete_key(f"{ns}2/a")


# -- the bulk path -----------------------------------------------------------------------------


def test_2000_stale_keys_of_one_prefix_go_in_one_transaction(
    scene: Scene, calls: Counter[str]
) -> None:
    mine = scene.stale(1000, only_instances=True)
    assert len(mine) == 2000
    decision = scene.judge()
    prefix = f"v1/instances/{scene.ns}/"
    assert [r.prefix for r in decision.delete_ranges] == [prefix]
    assert {d.key for d in decision.delete_keys} == set(mine)  # the fallback, still listed
    made, moved = scene.apply(decision, calls)
    assert made == {"/v3/kv/txn": 1}  # not 2,000 requests
    assert moved == 1  # one revision: one transaction deleted all 2,000
    assert scene.left() == []
    assert scene.outside() == scene.before


def test_the_cli_clears_a_realistic_namespace_in_one_transaction_per_prefix(
    scene: Scene, etcd_url: str
) -> None:
    mine = scene.stale(400)  # 2,000 keys: instances, cards, event channels and sources
    start = revision(scene.etcd)
    report = cli_json("clear-namespace", "--namespace", scene.ns, "--etcd", etcd_url)
    assert removed_keys(report) == set(mine)
    assert report["counts"]["instances"] == {"removed": 800, "kept": 0}
    assert report["counts"]["event channels"] == {"removed": 800, "kept": 0}
    assert revision(scene.etcd) - start == 4  # one per prefix that held keys
    assert scene.left() == []
    assert scene.outside() == scene.before


def test_a_dead_lease_is_revoked_and_the_lease_less_rest_goes_in_bulk(
    scene: Scene, calls: Counter[str], leases: list[int]
) -> None:
    lease = scene.etcd.lease_grant(60)
    leases.append(lease)
    on_lease = put_worker_1x(scene.etcd, scene.ns, lease, scene.dead_rpc, scene.dead_sys)
    scene.stale(100)
    decision = scene.judge()
    assert decision.revoke == (lease,)
    assert len(decision.delete_ranges) == 4
    assert not {d.key for d in decision.delete_keys} & set(on_lease)  # those go with the lease
    made, moved = scene.apply(decision, calls)
    assert made == {"/v3/lease/revoke": 1, "/v3/kv/txn": 4}
    assert moved == 5
    assert lease not in scene.gateway.leases()
    assert scene.left() == []
    assert scene.outside() == scene.before


# -- falling back ------------------------------------------------------------------------------


def test_a_key_registered_after_the_snapshot_stops_the_bulk_delete_and_stays(
    scene: Scene, calls: Counter[str], leases: list[int]
) -> None:
    mine = scene.stale(100, only_instances=True)
    decision = scene.judge()
    assert len(decision.delete_ranges) == 1
    lease = scene.etcd.lease_grant(60)  # a worker registers between snapshot and apply
    leases.append(lease)
    newcomer = f"v1/instances/{scene.ns}/backend/generate/{lease:x}"
    value = worker_1x(scene.ns, lease, scene.dead_rpc, scene.dead_sys)[newcomer]
    scene.etcd.put(newcomer, json.dumps(value), lease)
    kept = scene.gateway.get(newcomer)
    made, moved = scene.apply(decision, calls)
    assert made == {"/v3/kv/txn": 1 + len(mine)}  # the failed range, then key by key
    assert moved == len(mine)
    assert scene.gateway.get(newcomer) == kept  # untouched, its revisions too
    assert scene.left() == [newcomer]
    assert scene.outside() == scene.before


def test_a_stale_key_rewritten_after_the_snapshot_stays_and_the_rest_goes(
    scene: Scene, calls: Counter[str]
) -> None:
    mine = scene.stale(50, only_instances=True)
    decision = scene.judge()
    scene.etcd.put(mine[7], json.dumps({"rewritten": True}))  # its owner came back
    made, _ = scene.apply(decision, calls)
    assert made == {"/v3/kv/txn": 1 + len(mine)}
    assert scene.left() == [mine[7]]
    assert scene.outside() == scene.before


def test_a_key_deleted_after_the_snapshot_does_not_stop_the_bulk_delete(
    scene: Scene, calls: Counter[str]
) -> None:
    mine = scene.stale(50, only_instances=True)
    decision = scene.judge()
    assert scene.etcd.delete_key(mine[3]) == 1
    made, moved = scene.apply(decision, calls)
    assert (made, moved) == ({"/v3/kv/txn": 1}, 1)
    assert scene.left() == []


def test_a_live_worker_keeps_the_namespace_key_by_key(
    scene: Scene, calls: Counter[str], leases: list[int], free_ports: list[int]
) -> None:
    live = scene.etcd.lease_grant(60)
    leases.append(live)
    live_keys = put_worker_1x(scene.etcd, scene.ns, live, free_ports[2], free_ports[3], pub=9)
    mine = scene.stale(20)
    with listening(free_ports[2]):
        decision = scene.judge()
    assert decision.delete_ranges == ()  # the live worker has a key under all four prefixes
    made, _ = scene.apply(decision, calls)
    assert made == {"/v3/kv/txn": len(mine)}
    assert sorted(scene.left()) == live_keys
    assert scene.outside() == scene.before


def test_a_key_no_layout_claims_keeps_its_prefix_key_by_key(
    scene: Scene, calls: Counter[str]
) -> None:
    odd = f"v1/mdc/{scene.ns}/not-a-card"  # too short for a card: neither removed nor kept
    scene.etcd.put(odd, "{}")
    mine = scene.stale(20)
    decision = scene.judge()
    assert f"v1/mdc/{scene.ns}/" not in {r.prefix for r in decision.delete_ranges}
    assert len(decision.delete_ranges) == 3
    made, _ = scene.apply(decision, calls)
    assert made == {"/v3/kv/txn": 3 + 20}  # three ranges, then the 20 cards one by one
    assert len(mine) == 100
    assert scene.left() == [odd]
    assert scene.outside() == scene.before


# -- deciding (pure) ---------------------------------------------------------------------------


def entries_of(ns: str, owners: range, lease: int = 0) -> list[Entry]:
    return [
        Entry(key, json.dumps(value).encode(), lease, revision=10)
        for owner in owners
        for key, value in worker_1x(ns, owner, 28522, 28521).items()
    ]


DEAD = {"127.0.0.1:28522": Probe.REFUSED, "127.0.0.1:28521": Probe.REFUSED}
OWN = layouts.own_prefixes("ns")


def test_ranges_need_the_read_revision_of_each_prefix() -> None:
    stale = entries_of("ns", range(0x10, 0x14))
    assert decide(Snapshot("ns", tuple(stale), probes=DEAD)).delete_ranges == ()
    at = dict.fromkeys(OWN, 20)
    got = decide(Snapshot("ns", tuple(stale), probes=DEAD, revisions=at))
    assert got.delete_ranges == tuple(RangeDelete(p, 20) for p in OWN[:4])  # 0.5's were empty
    assert {d.key for d in got.delete_keys} == {e.key for e in stale}
    everything = decide(Snapshot("ns", tuple(stale), probes=DEAD, revisions=at), everything=True)
    assert len(everything.delete_ranges) == 4


def test_no_range_when_a_key_stays_or_was_written_after_its_read() -> None:
    stale = entries_of("ns", range(0x10, 0x14))
    live = entries_of("ns", range(0x20, 0x21), lease=0x20)
    probes = {**DEAD, "127.0.0.1:28522": Probe.ANSWERS}
    facts = {0x20: LeaseFacts(9, tuple(e.key for e in live))}
    at = dict.fromkeys(OWN, 20)
    kept = decide(Snapshot("ns", (*stale, *live), leases=facts, probes=probes, revisions=at))
    assert kept.delete_ranges == ()
    late = Entry(stale[0].key, stale[0].value, 0, revision=21)  # newer than its prefix's read
    got = decide(Snapshot("ns", (late, *stale[1:]), probes=DEAD, revisions=at))
    assert "v1/instances/ns/" not in {r.prefix for r in got.delete_ranges}
    assert len(got.delete_ranges) == 3


def test_neighbours_never_get_a_range() -> None:
    others = [e for other in ("ns2", "ns-agg", "ns_x", "n") for e in entries_of(other, range(3))]
    at = {p: 20 for other in ("ns", "ns2", "ns-agg", "ns_x", "n")
          for p in layouts.etcd_prefixes(other)}  # fmt: skip
    got = decide(Snapshot("ns", tuple(others), probes=DEAD, revisions=at), everything=True)
    assert got.delete_ranges == ()
    assert all(p.endswith("/ns/") for p in OWN)  # the namespace is a whole segment
