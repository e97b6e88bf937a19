"""Property: for random namespaces and live or dead instances, exactly the dead ones of the target
namespace go (etcd and file store), and nothing of any other namespace is even looked at."""

from __future__ import annotations

import json
from dataclasses import dataclass
from urllib.parse import quote

from hypothesis import given, settings
from hypothesis import strategies as st

from launcher.registrations.decide import LeaseFacts, Probe, Snapshot, decide
from launcher.registrations.layouts import Entry
from testkit.dynamo import worker_1x

# Prefix-colliding names first: the cases a prefix delete gets wrong.
NAMES = [
    "sglang",
    "sglang2",
    "sglang-agg",
    "sglang_x",
    "sglang-component-x",
    "sglan",
    "s",
    "dynamo",
]
namespaces = st.one_of(st.sampled_from(NAMES), st.from_regex(r"[a-z0-9_-]{1,10}", fullmatch=True))

# How an instance is dead or alive, as the store and the network tell it.
DEAD = ["lease-gone", "both-refuse", "no-lease-refuses", "stale-file", "fresh-file-refuses"]
ALIVE = ["answers", "system-answers", "not-probed", "no-lease-answers", "fresh-file-answers"]


@dataclass(frozen=True)
class Spec:
    ns: str
    state: str

    @property
    def dead(self) -> bool:
        return self.state in DEAD

    @property
    def in_files(self) -> bool:
        return "file" in self.state


specs = st.builds(Spec, namespaces, st.sampled_from(DEAD + ALIVE))
NOW = 5000.0


def build(
    target: str, instances: list[Spec], streams: list[str]
) -> tuple[Snapshot, dict[int, set[str]]]:
    entries: list[Entry] = []
    files: list[Entry] = []
    leases: dict[int, LeaseFacts | None] = {}
    probes: dict[str, Probe] = {}
    keys_of: dict[int, set[str]] = {}
    for i, spec in enumerate(instances):
        lease, rpc, system = 0x7000_0000_0000_0000 + i, 20000 + 2 * i, 20001 + 2 * i
        values = worker_1x(spec.ns, lease, rpc, system, pub=0x10_0000 + i)
        rpc_state, system_state = {
            "both-refuse": (Probe.REFUSED, Probe.REFUSED),
            "no-lease-refuses": (Probe.REFUSED, Probe.REFUSED),
            "fresh-file-refuses": (Probe.REFUSED, Probe.REFUSED),
            "system-answers": (Probe.REFUSED, Probe.ANSWERS),
            "not-probed": (None, None),
        }.get(spec.state, (Probe.ANSWERS, Probe.ANSWERS))
        for addr, state in ((f"127.0.0.1:{rpc}", rpc_state), (f"127.0.0.1:{system}", system_state)):
            if state is not None:
                probes[addr] = state
        if spec.in_files:
            mtime = NOW - (30 if spec.state == "stale-file" else 2)
            made = [
                Entry(f"v1/{k.split('/')[1]}/{quote(k.split('/', 2)[2], safe='')}",
                      json.dumps(v).encode(), mtime=mtime)
                for k, v in values.items()
            ]  # fmt: skip
            files += made
        else:
            on = 0 if spec.state.startswith("no-lease") else lease
            made = [Entry(k, json.dumps(v).encode(), on, 10 + i) for k, v in values.items()]
            entries += made
            if on:
                gone = spec.state == "lease-gone"
                leases[lease] = None if gone else LeaseFacts(9, tuple(values))
        keys_of[i] = {e.key for e in made}
    snap = Snapshot(target, tuple(entries), tuple(files), leases, probes, tuple(streams), now=NOW)
    return snap, keys_of


@settings(max_examples=300, deadline=None, database=None)
@given(
    target=namespaces,
    instances=st.lists(specs, max_size=8),
    stream_ns=st.lists(namespaces, max_size=4),
)
def test_exactly_the_dead_instances_of_the_target_go(
    target: str, instances: list[Spec], stream_ns: list[str]
) -> None:
    streams = [f"namespace-{n}-component-backend-kv-events" for n in stream_ns]
    snap, keys_of = build(target, instances, streams)
    got = decide(snap)

    ours = [i for i, s in enumerate(instances) if s.ns == target]
    dead = set().union(*(keys_of[i] for i in ours if instances[i].dead))
    live = set().union(*(keys_of[i] for i in ours if not instances[i].dead))
    removed = {i.key for i in got.removed if i.kind not in ("leases", "streams")}
    kept = {i.key for i in got.kept if i.kind not in ("leases", "streams")}
    assert removed == dead
    assert kept == live

    # What is applied matches what is reported, and stays inside the namespace.
    revoked = {k for n, s in enumerate(instances) if s.ns == target for k in keys_of[n]
               if 0x7000_0000_0000_0000 + n in got.revoke}  # fmt: skip
    applied = revoked | {d.key for d in got.delete_keys} | {f for f, _ in got.delete_files}
    assert applied == dead
    for n in got.revoke:
        assert instances[n - 0x7000_0000_0000_0000].ns == target
        assert instances[n - 0x7000_0000_0000_0000].dead

    # The namespace's streams go only when none of its instances is alive.
    mine = {s for s in streams if s.startswith(f"namespace-{target}-component-backend")}
    assert set(got.delete_streams) == (set() if live else mine)


@settings(max_examples=100, deadline=None, database=None)
@given(target=namespaces, instances=st.lists(specs, max_size=8))
def test_all_takes_the_whole_namespace_and_counts_the_live(
    target: str, instances: list[Spec]
) -> None:
    snap, keys_of = build(target, instances, [])
    got = decide(snap, everything=True)
    ours = [i for i, s in enumerate(instances) if s.ns == target]
    assert {i.key for i in got.removed if i.kind != "leases"} == set().union(
        *(keys_of[i] for i in ours)
    )
    assert got.kept == ()
    live_instances = sum(2 for i in ours if not instances[i].dead)  # 2 instance keys a worker
    assert len(got.live_instances) == live_instances
