"""clear-namespace's runner: gather a `Snapshot` (etcd, NATS, the file store, TCP probes), let
`decide` judge it, apply the `Decision`: streams, then lease revokes, then keys, then files."""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from launcher.errors import ConfigError
from launcher.registrations import layouts
from launcher.registrations.decide import (
    LOCK_PREFIX,
    Decision,
    LeaseFacts,
    Probe,
    Snapshot,
    decide,
)
from launcher.registrations.etcd import Etcd
from launcher.registrations.layouts import Entry, check_namespace

PROBE_TIMEOUT_S = 0.5


@dataclass(frozen=True)
class Endpoints:
    discovery: str  # "etcd" or "file"
    etcd: str | None = None
    nats: str | None = None
    file_kv: str | None = None


def default_file_kv(environ: Mapping[str, str]) -> str:
    """Dynamo's own default for DYN_FILE_KV."""
    tmp = environ.get("TMPDIR", "/tmp")
    return environ.get("DYN_FILE_KV") or os.path.join(tmp, "dynamo_store_kv")


def _is_local(host: str) -> bool:
    """Loopback, or an address of this host (binding to it works): only those are probed."""
    if host == "localhost":
        return True
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return False
    if addr.is_loopback:
        return True
    with socket.socket(socket.AF_INET6 if addr.version == 6 else socket.AF_INET) as sock:
        try:
            sock.bind((host, 0))
        except OSError:
            return False
    return True


def probe(addr: str, timeout: float = PROBE_TIMEOUT_S) -> Probe:
    """Does ``host:port`` accept a TCP connection? Only a refusal says no; a host that is not this
    one is never probed."""
    host, _, port = addr.rpartition(":")
    host = host.strip("[]")
    if not port.isdigit() or not _is_local(host):
        return Probe.UNKNOWN
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return Probe.ANSWERS
    except OSError as err:
        return Probe.REFUSED if err.errno == errno.ECONNREFUSED else Probe.UNKNOWN


def probe_all(addrs: set[str], nats: str | None) -> dict[str, Probe]:
    """Each address probed: host:port by a TCP connection, a 0.5 NATS subject by asking its
    service's live instances (none answer for it: UNANSWERED; no NATS given: UNKNOWN)."""
    subjects = {a for a in addrs if a.startswith(layouts.NATS_SUBJECT)}
    found = {addr: probe(addr) for addr in sorted(addrs - subjects)}
    if subjects and nats:
        from launcher.registrations import natsjs

        names = sorted({a[len(layouts.NATS_SUBJECT) :] for a in subjects})
        live = natsjs.service_subjects(nats, sorted({n.split(".", 1)[0] for n in names}))
        for name in names:
            state = Probe.ANSWERS if name in live else Probe.UNANSWERED
            found[layouts.NATS_SUBJECT + name] = state
    return found | {a: Probe.UNKNOWN for a in subjects if a not in found}


def read_files(root: Path) -> list[Entry]:
    """Every entry of a Dynamo file store, keyed "v1/BUCKET/NAME", with its mtime."""
    found: list[Entry] = []
    base = root / "v1"
    buckets = sorted(p for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
    for bucket in buckets:
        for path in sorted(bucket.iterdir()):
            try:
                mtime = path.stat().st_mtime
                value = path.read_bytes() if path.is_file() else b""
            except OSError:
                continue  # expired in between
            found.append(Entry(f"v1/{bucket.name}/{path.name}", value, mtime=mtime))
    return found


def gather(ns: str, where: Endpoints, etcd: Etcd | None = None) -> Snapshot:
    """Read everything `decide` needs; change nothing. An unreachable store fails here, first."""
    check_namespace(ns)
    entries: list[Entry] = []
    files: list[Entry] = []
    leases: dict[int, LeaseFacts | None] = {}
    holder: str | None = None
    revision = 0
    revisions: dict[str, int] = {}
    if etcd is not None:
        prefixes = layouts.etcd_prefixes(ns)
        for prefix, (kvs, at) in zip(prefixes, etcd.range_prefixes(prefixes), strict=True):
            entries += [Entry(kv.key, kv.value, kv.lease, kv.mod_revision) for kv in kvs]
            revisions[prefix] = at
            revision = at if prefix == "models/" else revision
        for lease in sorted({e.lease for e in entries if e.lease}):
            info = etcd.lease_info(lease)
            leases[lease] = None if info is None else LeaseFacts(info.ttl, info.keys)
        lock = etcd.get(LOCK_PREFIX + ns)
        holder = lock.value.decode(errors="replace") if lock is not None else None
    if where.discovery == "file":
        files = read_files(Path(where.file_kv or default_file_kv(os.environ)))
    streams: tuple[str, ...] | None = None
    if where.nats:
        from launcher.registrations import (
            natsjs,  # asyncio and nats-py: only when there is a NATS to ask
        )

        streams = tuple(natsjs.list_streams(where.nats))
    addrs: set[str] = set()
    regs = layouts.parse_keys(entries, ns)
    fpubs = layouts.publishers(files)
    for reg in [*regs, *(layouts.parse_file(e, ns, fpubs) for e in files)]:
        if reg is not None:
            addrs.update(reg.rpc, reg.system)
    return Snapshot(
        namespace=ns,
        entries=tuple(entries),
        files=tuple(files),
        leases=leases,
        probes=probe_all(addrs, where.nats),
        streams=streams,
        now=time.time(),
        lock_holder=holder,
        revision=revision,
        revisions=revisions,
        regs=regs,
    )


def apply(decision: Decision, where: Endpoints, etcd: Etcd | None = None) -> None:
    """Streams, then lease revokes, then whole prefixes, then keys, then files; what is already
    gone is skipped. Streams go first: a 0.5 object store is found through its card, which must
    outlive it. A prefix goes in one transaction if nothing under it is newer than the snapshot;
    if something is, its keys go one by one below (each only if unchanged)."""
    if decision.delete_streams and where.nats:
        from launcher.registrations import natsjs

        natsjs.delete_streams(where.nats, decision.delete_streams)
    if etcd is not None:
        # One by one: a pool of threads over one httpx client (etcd.py then) revoked 1,000 leases
        # only ~25% faster (2 cores, etcd 3.4), and 32 threads once failed with EBADF in httpx.
        for lease in decision.revoke:
            etcd.lease_revoke(lease)
        cleared = tuple(
            prefix
            for prefix, revision in decision.delete_ranges
            if etcd.delete_prefix_if_unchanged(prefix, revision) is not None
        )
        for key, revision, guard in decision.delete_keys:
            if key.startswith(cleared):  # went with its prefix (startswith(()) is False)
                continue
            if guard:
                etcd.delete_guarded(key, revision, guard, decision.guard_revision)
            elif revision:
                etcd.delete_if_unchanged(key, revision)
            else:
                etcd.delete_key(key)
    root = Path(where.file_kv or default_file_kv(os.environ))
    for key, mtime in decision.delete_files:
        path = root / key
        try:
            if mtime is None or path.stat().st_mtime == mtime:  # refreshed since: its owner lives
                path.unlink()
        except FileNotFoundError:
            continue


def run(
    ns: str, where: Endpoints, *, everything: bool = False, dry_run: bool = False,
    confirm: bool = True,
) -> Decision:  # fmt: skip
    """Gather, decide and (unless ``dry_run``) apply. With ``everything`` and live-looking
    instances, nothing is applied unless ``confirm``."""
    check_namespace(ns)
    if where.discovery == "etcd" and not where.etcd:
        raise ConfigError("no etcd endpoint: pass --etcd URL or set ETCD_ENDPOINTS")
    etcd = Etcd(where.etcd) if where.discovery == "etcd" and where.etcd else None
    try:
        decision = decide(gather(ns, where, etcd), everything=everything)
        held = decision.live_instances or decision.lock_holder is not None
        if everything and held and not (confirm or dry_run):
            raise ConfigError(refusal(decision))
        if not dry_run:
            apply(decision, where, etcd)
        return decision
    finally:
        if etcd is not None:
            etcd.close()


def refusal(decision: Decision) -> str:
    """Why --all stops without --yes: live-looking instances, or a dynlaunch up's lock."""
    n, ns = len(decision.live_instances), decision.namespace
    said = []
    if n:
        first = f"{decision.live_instances[0]}{', ...' if n > 1 else ''}"
        said.append(f"--all would remove {n} live-looking instance{'s' * (n != 1)} ({first})")
    if decision.lock_holder is not None:
        said.append(f"namespace {ns} is run by dynlaunch on {decision.lock_holder}")
    return (
        f"{'; '.join(said) if n else '--all: ' + said[0]}; add --yes if nothing of {ns} runs, "
        "or drop --all to remove only stale state"
    )
