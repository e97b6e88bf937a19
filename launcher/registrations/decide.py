"""clear-namespace's pure decision: which registrations of one Dynamo namespace are stale.

`decide` is pure: a `Snapshot` (keys with values and leases, lease facts, which advertised addresses
answer, file mtimes and the clock, stream names) in, a `Decision` out (leases to revoke, keys, files
and streams to delete, every item removed or kept with its reason). `runner.py` gathers the
snapshot (etcd, NATS, the file store, TCP probes) and applies the decision: streams, then lease
revokes, then keys, then files. Each step skips what is already gone, so a run cut short is
finished by the next.

Liveness: an owner is a lease (etcd) or an instance id (file store). It is dead when its lease is
gone (file store: no file refreshed within 10 s), or when every transport address it advertises
refuses TCP connections and so does every system port its model card names. A dead owner's lease
is revoked, which removes all its keys at once, only when the lease carries one of this namespace's
instance keys and nothing outside the namespace; otherwise its keys are deleted one by one, each
only if unchanged since it was judged. A key without a lease goes when no live owner claims it.

Bulk: when every key the snapshot saw under one of the namespace's own prefixes goes (say the whole
``v1/instances/NS/``), that prefix is cleared by one transaction: delete the range if no key in it
was written after the revision it was read at. If that compare fails (a worker registered in
between), the keys go one by one as above, and the newcomer stays.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, NamedTuple

from launcher.registrations import layouts
from launcher.registrations.layouts import Entry, Reg, check_namespace

FILE_STALE_S = 10.0  # Dynamo's file store expires an entry not refreshed for ~10 s
LOCK_PREFIX = "dynlaunch/locks/"
log = logging.getLogger(__name__)
KINDS = (
    "instances",
    "model cards",
    "event channels",
    "routers",
    "leases",
    "streams",
    "object stores",
    "files",
)


class Probe(str, Enum):
    ANSWERS = "answers"
    REFUSED = "refuses connections"
    UNANSWERED = "has no responder on NATS"  # 0.5: no live instance advertises the subject
    UNKNOWN = "could not be probed"


DEAD = (Probe.REFUSED, Probe.UNANSWERED)  # what says an owner is gone; anything else: alive


@dataclass(frozen=True)
class LeaseFacts:
    ttl: int  # seconds left, > 0
    keys: tuple[str, ...]  # every key attached to it, in any namespace


ALIVE_UNKNOWN = LeaseFacts(ttl=1, keys=())


@dataclass(frozen=True)
class Snapshot:
    """What the store and the network said. A lease missing from ``leases`` counts as alive, an
    address missing from ``probes`` as not probed (alive): a gap in the facts keeps things."""

    namespace: str
    entries: tuple[Entry, ...] = ()  # etcd: the namespace's prefixes, all models/ and mdc/
    files: tuple[Entry, ...] = ()  # file store: every entry under v1/
    leases: Mapping[int, LeaseFacts | None] = field(default_factory=dict)  # None: gone
    probes: Mapping[str, Probe] = field(default_factory=dict)  # "host:port" -> answer
    streams: tuple[str, ...] | None = None  # None: NATS not looked at
    now: float = 0.0
    lock_holder: str | None = None  # holder of dynlaunch up's namespace lock
    revision: int = 0  # etcd's revision when models/ was read
    revisions: Mapping[str, int] = field(default_factory=dict)  # prefix -> revision read at
    # layouts.parse_keys(entries), as gather parsed them to find what to probe (10,000 keys:
    # ~0.1 s of JSON not decoded twice); None: decide parses the entries itself.
    regs: tuple[Reg, ...] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Item:
    kind: str
    key: str
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind, "key": self.key, "reason": self.reason}


class KeyDelete(NamedTuple):
    key: str
    revision: int  # the mod_revision it must still have; 0: whatever it holds
    guard: str  # "" or a prefix under which no key may be newer than the snapshot


class RangeDelete(NamedTuple):
    prefix: str  # one of layouts.own_prefixes(namespace): ends with "/"
    revision: int  # the revision it was read at: nothing under it may be newer


@dataclass(frozen=True)
class Decision:
    namespace: str
    everything: bool
    removed: tuple[Item, ...]
    kept: tuple[Item, ...]
    revoke: tuple[int, ...]
    delete_keys: tuple[KeyDelete, ...]
    delete_files: tuple[tuple[str, float | None], ...]  # (key, the mtime it must still have)
    delete_streams: tuple[str, ...]
    live_instances: tuple[str, ...]  # instance keys that look alive yet go (--all)
    guard_revision: int = 0
    lock_holder: str | None = None
    notes: tuple[str, ...] = ()
    # Prefixes whose every key goes: each tried as one guarded transaction before the keys under
    # it, which ``delete_keys`` still lists (the way they go if the range has changed).
    delete_ranges: tuple[RangeDelete, ...] = ()

    def counts(self) -> dict[str, dict[str, int]]:
        out = {kind: {"removed": 0, "kept": 0} for kind in KINDS}
        for bucket, items in (("removed", self.removed), ("kept", self.kept)):
            for item in items:
                out.setdefault(item.kind, {"removed": 0, "kept": 0})[bucket] += 1
        return out

    def to_json(self, dry_run: bool) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "dry_run": dry_run,
            "all": self.everything,
            "removed": [i.to_json() for i in self.removed],
            "kept": [i.to_json() for i in self.kept],
            "counts": self.counts(),
            "notes": list(self.notes),
        }


# -- judging ------------------------------------------------------------------------------------


def by_address(
    rpc: Iterable[str], system: Iterable[str], probes: Mapping[str, Probe]
) -> tuple[bool | None, str]:
    """(alive?, why) from advertised addresses alone; None: nothing to probe."""
    rpc, system = sorted(set(rpc)), sorted(set(system))
    if not rpc:
        return None, "no transport address to probe"
    for addr in rpc:
        state = probes.get(addr, Probe.UNKNOWN)
        if state not in DEAD:
            return True, f"{addr} {state.value}"
    if any(probes[addr] is Probe.UNANSWERED for addr in rpc):  # 0.5: subjects, no system port
        return False, f"{', '.join(rpc)}: {Probe.UNANSWERED.value}"
    refused = ", ".join(rpc)
    for addr in system:
        state = probes.get(addr, Probe.UNKNOWN)
        if state not in DEAD:
            return True, f"{refused} refuses connections but system port {addr} {state.value}"
    if system:
        return False, f"{refused} and system port {', '.join(system)} refuse connections"
    return False, f"{refused} refuses connections"


def _group_addresses(group: list[Reg], probes: Mapping[str, Probe]) -> tuple[bool | None, str]:
    return by_address(
        [a for r in group for a in r.rpc], [a for r in group for a in r.system], probes
    )


class _Builder:
    def __init__(self, everything: bool) -> None:
        self.everything = everything
        self.removed: list[Item] = []
        self.kept: list[Item] = []
        self.revoke: list[int] = []
        self.keys: dict[str, KeyDelete] = {}
        self.files: dict[str, float | None] = {}
        self.streams: list[str] = []
        self.live: list[str] = []
        self.live_count = 0  # instance keys whose owner looks alive

    def keep(self, kind: str, key: str, why: str) -> None:
        self.kept.append(Item(kind, key, why))

    def drop(self, kind: str, key: str, why: str) -> None:
        self.removed.append(Item(kind, key, f"--all ({why})" if self.everything else why))

    def alive(self, reg: Reg, why: str) -> bool:
        """A live-looking registration: kept, unless --all. True when kept."""
        self.live_count += int(reg.instance)
        if not self.everything:
            self.keep(reg.kind, reg.entry.key, why)
            return True
        if reg.instance:
            self.live.append(reg.entry.key)
        return False

    def delete_key(self, entry: Entry, guard: str = "") -> None:
        """Only if unchanged since the snapshot (--all: whatever it holds now)."""
        revision = 0 if self.everything and not guard else entry.revision
        self.keys[entry.key] = KeyDelete(entry.key, revision, guard)


def decide(snap: Snapshot, *, everything: bool = False) -> Decision:
    """What goes and what stays, and why. ``everything``: the whole namespace (--all)."""
    ns = check_namespace(snap.namespace)
    out = _Builder(everything)
    regs = layouts.parse_keys(snap.entries, ns) if snap.regs is None else snap.regs
    gone = _decide_leases(snap, regs, out)
    ranges = _decide_ranges(snap, ns, gone, out)
    pubs = layouts.publishers(snap.files)
    fregs = [r for e in snap.files if (r := layouts.parse_file(e, ns, pubs)) is not None]
    _decide_files(snap, fregs, out)
    _decide_cards(snap, ns, gone, out)
    _decide_streams(snap, ns, out)
    notes = []
    if snap.lock_holder is not None:
        notes.append(f"namespace {ns} is held by dynlaunch on {snap.lock_holder}")
    if snap.streams is None:
        notes.append("NATS not checked (no --nats, NATS_SERVER or running dynlaunch up)")
    return Decision(
        namespace=ns,
        everything=everything,
        removed=tuple(out.removed),
        kept=tuple(out.kept),
        revoke=tuple(out.revoke),
        delete_keys=tuple(out.keys.values()),
        delete_files=tuple(out.files.items()),
        delete_streams=tuple(out.streams),
        live_instances=tuple(out.live),
        guard_revision=snap.revision,
        lock_holder=snap.lock_holder,
        notes=tuple(notes),
        delete_ranges=tuple(ranges),
    )


def _decide_leases(snap: Snapshot, regs: Sequence[Reg], out: _Builder) -> set[str]:
    """etcd keys of the namespace, owner by owner; returns the keys that go."""
    ours = {r.entry.key for r in regs}
    by_lease: dict[int, list[Reg]] = defaultdict(list)
    for reg in regs:
        by_lease[reg.entry.lease].append(reg)
    alive_owners: set[int] = set()
    gone: set[str] = set()
    for lease in sorted(k for k in by_lease if k):
        group, label = by_lease[lease], f"lease {lease:x}"
        facts = snap.leases.get(lease, ALIVE_UNKNOWN)
        has_instance = any(r.instance for r in group)
        if facts is None:
            alive, why = False, f"{label} is gone"
        else:
            by_addr, detail = _group_addresses(group, snap.probes)
            alive = by_addr is not False
            why = f"{label} alive ({facts.ttl}s left), {detail}" if alive else (
                f"owner dead: {detail}; {label} still has {facts.ttl}s"
            )  # fmt: skip
        if alive:
            alive_owners.add(lease)
            kept = [out.alive(reg, why) for reg in group]
            if all(kept):
                if has_instance:
                    out.keep("leases", label, why)
                continue
        # Revoke only a lease found on this namespace's instance keys and holding nothing else:
        # never a frontend's, never one that also carries another namespace's keys.
        revocable = facts is not None and has_instance and set(facts.keys) <= ours
        reason = why
        if revocable:
            out.revoke.append(lease)
            out.drop("leases", label, why)
            reason = f"goes with {label}" + ("" if alive else ": owner dead")
        elif facts is not None and has_instance:
            reason = f"{why}; {label} holds other keys too, so it stays"
        for reg in group:
            out.drop(reg.kind, reg.entry.key, reason)
            gone.add(reg.entry.key)
            if not revocable:
                out.delete_key(reg.entry)
    # Keys without a lease: grouped by the owner their path or value names (alone if none).
    orphans: dict[int, list[Reg]] = defaultdict(list)
    for n, reg in enumerate(by_lease.get(0, [])):
        orphans[reg.owner or -1 - n].append(reg)
    for owner, group in orphans.items():
        if owner in alive_owners:
            alive, why = True, f"no lease, but its owner (lease {owner:x}) is alive"
        else:
            by_addr, detail = _group_addresses(group, snap.probes)
            alive = bool(by_addr)
            why = f"no lease, but {detail}" if alive else (
                f"no lease and {detail}" if by_addr is False else "no lease and no live owner"
            )  # fmt: skip
        for reg in group:
            if alive and out.alive(reg, why):
                continue
            out.drop(reg.kind, reg.entry.key, why)
            out.delete_key(reg.entry)
            gone.add(reg.entry.key)
    return gone


def _decide_ranges(snap: Snapshot, ns: str, gone: set[str], out: _Builder) -> list[RangeDelete]:
    """The namespace's own prefixes whose every key the snapshot saw goes, at least one of them by
    key (not with a revoked lease): each can go in one transaction guarded by its read revision.
    A key under the prefix that no layout claims (so it is neither removed nor kept) stops it."""
    ranges: list[RangeDelete] = []
    for prefix in layouts.own_prefixes(ns):
        revision = snap.revisions.get(prefix, 0)
        if revision <= 0 or not any(key.startswith(prefix) for key in out.keys):
            continue
        seen = [e for e in snap.entries if e.key.startswith(prefix)]
        if all(e.key in gone and e.revision <= revision for e in seen):
            ranges.append(RangeDelete(prefix, revision))
    return ranges


def _decide_files(snap: Snapshot, regs: list[Reg], out: _Builder) -> None:
    fresh: dict[int, list[Reg]] = defaultdict(list)
    for reg in regs:
        age = snap.now - (reg.entry.mtime or 0.0)
        if age > FILE_STALE_S:
            out.drop(
                "files", reg.entry.key, f"not refreshed for {age:.0f}s (> {FILE_STALE_S:.0f}s)"
            )
            out.files[reg.entry.key] = reg.entry.mtime
        else:
            fresh[reg.owner].append(reg)
    for owner, group in sorted(fresh.items()):
        by_addr, detail = _group_addresses(group, snap.probes) if owner else (None, "")
        if by_addr is False:
            alive, why = False, f"owner {owner:x} dead: {detail} (its files are still fresh)"
        elif owner:
            alive, why = True, f"owner {owner:x} refreshed it within 10s, {detail}"
        else:
            alive, why = True, "refreshed within 10s, owner unknown"
        for reg in group:
            if alive and out.alive(reg, why):
                continue
            out.drop("files", reg.entry.key, why)
            out.files[reg.entry.key] = None if out.everything else reg.entry.mtime


def _decide_cards(snap: Snapshot, ns: str, gone: set[str], out: _Builder) -> None:
    """0.5's lease-less mdc/<slug> cards and object stores OBJ_<slug>: they go when no live model
    entry uses the slug and the slug was this namespace's or nobody's."""
    cards = layouts.cards(snap.entries)
    users: dict[str, list[tuple[str, bool]]] = defaultdict(list)  # slug -> (namespace, live)
    for entry, model_ns, name in layouts.models(snap.entries):
        if model_ns == ns:
            live = entry.key not in gone
        else:  # another namespace's: alive while its lease is (it is not probed)
            live = entry.lease == 0 or snap.leases.get(entry.lease, ALIVE_UNKNOWN) is not None
        slugs = {layouts.slugify(name)} | {s for s, (_, shown) in cards.items() if shown == name}
        for slug in slugs:
            users[slug].append((model_ns, live))
    streams = set(snap.streams or ())
    candidates = {s for s, used in users.items() if any(n == ns for n, _ in used)}
    candidates |= {s for s in cards if s not in users}
    for slug in sorted(candidates):
        using = users.get(slug, [])
        live_ns = sorted({n for n, live in using if live})
        card = cards.get(slug)
        store = f"OBJ_{slug}"
        if live_ns:
            why = f"live model entries use it (namespace {', '.join(live_ns)})"
            if card is not None:
                out.keep("model cards", card[0].key, why)
            if store in streams:
                out.keep("object stores", store, why)
            continue
        why = "no model entry of any namespace uses it" if not using else (
            f"no live model entry uses slug {slug!r} any more"
        )  # fmt: skip
        if store in streams and (card is not None or using):
            out.drop("object stores", store, f"model files of slug {slug!r}: {why}")
            out.streams.append(store)
        if card is not None:
            out.drop("model cards", card[0].key, why)
            out.delete_key(card[0], guard="models/")


def _decide_streams(snap: Snapshot, ns: str, out: _Builder) -> None:
    for name in snap.streams or ():
        if not layouts.namespace_stream(name, ns):
            continue
        kind = "object stores" if name.startswith("OBJ_") else "streams"
        live = f"namespace {ns} has {out.live_count} live instance(s)"
        if out.live_count and not out.everything:
            out.keep(kind, name, live)
        else:
            out.drop(kind, name, live if out.live_count else f"namespace {ns} has no live instance")
            out.streams.append(name)
