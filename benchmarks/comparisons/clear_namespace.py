"""5. clear-namespace on 10,000 stale keys against `etcdctl del --prefix`, on a private etcd."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from benchmarks.harness import CLEAR_KEYS, DYNLAUNCH, SIDES, BenchError, Ctx, sides_for
from benchmarks.report import Row, failed_reps, first_line, fmt_s, md_table, median, ratio
from testkit.dynamo import prefixes_1x, stale_workers_1x
from testkit.etcd import KV, TXN_OPS, Gateway, GatewayError, PrivateEtcd
from testkit.net import refuses

ETCD = shutil.which("etcd", path="/usr/bin:" + os.environ.get("PATH", "")) or "etcd"
ETCDCTL = shutil.which("etcdctl", path="/usr/bin:" + os.environ.get("PATH", "")) or "etcdctl"
NEIGHBOUR_KEYS = 100  # of namespace NS2: must stay byte for byte
CLEAR_TIMEOUT_S = 300.0
FIRST_WORKER = 0x694D7A0000000001


def stale_keys_1x(ns: str, count: int, ports: tuple[int, int]) -> dict[str, dict[str, Any]]:
    """``count`` keys of ``count`` / 5 dead workers, without a lease: nothing but a clear
    removes them (their transports and system ports refuse connections)."""
    workers = -(-count // 5)
    keys = stale_workers_1x(ns, workers, *ports, first=FIRST_WORKER, context_length=2048)
    return dict(list(keys.items())[:count])


@dataclasses.dataclass
class ClearRep:
    seconds: float
    revisions: int  # how far the store's revision moved: one per transaction or delete
    left: int  # keys of NS left afterwards
    neighbours_intact: bool
    code: int
    note: str = ""


def _dynlaunch(ctx: Ctx, url: str, ns: str, log: Path) -> tuple[float, int, str]:
    argv = [str(DYNLAUNCH), "clear-namespace", "--namespace", ns, "--etcd", url]
    with open(log / "stdout.log", "wb") as out, open(log / "stderr.log", "wb") as err:
        began = time.monotonic()
        done = subprocess.run(argv, env=ctx.env, stdout=out, stderr=err,
                              timeout=CLEAR_TIMEOUT_S, check=False)  # fmt: skip
        return time.monotonic() - began, done.returncode, ""


def _etcdctl(ctx: Ctx, url: str, ns: str, log: Path) -> tuple[float, int, str]:
    deleted, code = 0, 0
    with open(log / "stdout.log", "wb") as out, open(log / "stderr.log", "wb") as err:
        began = time.monotonic()
        for prefix in prefixes_1x(ns):  # one etcdctl per prefix, as a user types them
            done = subprocess.run(
                [ETCDCTL, "--endpoints", url, "del", "--prefix", prefix],
                env=ctx.env, capture_output=True, timeout=60, check=False,
            )  # fmt: skip
            code = code or done.returncode
            out.write(done.stdout)
            err.write(done.stderr)
            with contextlib.suppress(ValueError):
                deleted += int(done.stdout.split()[0])
        return time.monotonic() - began, code, f"{deleted} deleted"


@dataclasses.dataclass
class Scene:
    """The private etcd, the namespace cleared, its dead owners' ports, NS2 as seeded."""

    etcd: PrivateEtcd
    gateway: Gateway
    ns: str
    ports: tuple[int, int]
    before: list[KV]
    seeded: list[int] = dataclasses.field(default_factory=list)  # requests per seeding


def clear_once(ctx: Ctx, scene: Scene, side: str) -> ClearRep:
    """Seed NS's stale keys afresh, clear them one way, check that NS is empty and that NS2 is
    still as seeded at the start, byte for byte."""
    etcd, ns = scene.gateway, scene.ns
    if not all(refuses(p) for p in scene.ports):
        raise BenchError(f"something listens on {scene.ports}: the seeded owners would look alive")
    scene.seeded.append(etcd.put_many(stale_keys_1x(ns, CLEAR_KEYS, scene.ports)))
    if (found := etcd.count(prefixes_1x(ns))) != CLEAR_KEYS:
        raise BenchError(f"seeded {found} keys, not {CLEAR_KEYS}")
    log = ctx.fresh_dir(f"clear-{side}")
    start_rev = etcd.revision()
    clear = _dynlaunch if side == "dynlaunch" else _etcdctl
    seconds, code, note = clear(ctx, scene.etcd.url, ns, log)
    if code != 0:
        tail = (log / "stderr.log").read_text(errors="replace").strip().splitlines()[-3:]
        raise BenchError(f"{side} exited with code {code}: {' / '.join(tail)}")
    rep = ClearRep(
        seconds=seconds,
        revisions=etcd.revision() - start_rev,
        left=etcd.count([*prefixes_1x(ns), f"instances/{ns}/", f"kv_routers/{ns}/"]),
        neighbours_intact=etcd.dump(*prefixes_1x(f"{ns}2")) == scene.before,
        code=code,
        note=note,
    )
    etcd.compact()
    if rep.left or not rep.neighbours_intact:
        raise BenchError(
            f"{side}: {rep.left} keys of {ns} left, {ns}2 intact: {rep.neighbours_intact}"
        )
    return rep


def empty_run(ctx: Ctx, url: str, ns: str) -> float | None:
    """`dynlaunch clear-namespace` with nothing to clear: its start-up and reads alone."""
    argv = [str(DYNLAUNCH), "clear-namespace", "--namespace", ns, "--etcd", url]
    began = time.monotonic()
    done = subprocess.run(argv, env=ctx.env, capture_output=True, timeout=60, check=False)
    return time.monotonic() - began if done.returncode == 0 else None


def _start(ctx: Ctx, ns: str, ports: tuple[int, int]) -> Scene:
    """A private etcd with NS2's neighbour keys seeded (and checked)."""
    etcd = PrivateEtcd(ctx.fresh_dir("etcd"), (ctx.ports.pick(), ctx.ports.pick()), name="bench",
                       env=ctx.env)  # fmt: skip
    etcd.start()
    assert etcd.proc is not None
    ctx.reaper.procs.append(etcd.proc)
    gateway = etcd.gateway()
    try:
        gateway.put_many(stale_keys_1x(f"{ns}2", NEIGHBOUR_KEYS, ports))
        before = gateway.dump(*prefixes_1x(f"{ns}2"))
        if len(before) != NEIGHBOUR_KEYS:
            raise BenchError(f"seeded {len(before)} keys of {ns}2, not {NEIGHBOUR_KEYS}")
    except BaseException:
        etcd.stop()
        raise
    return Scene(etcd, gateway, ns, ports, before)


def _details(scene: Scene, rows: list[list[object]], errors: list[str], empty: list[float]
             ) -> list[str]:  # fmt: skip
    seeded = scene.seeded
    details = md_table(
        ["rep", "side", "seconds", "store revisions used", "keys of NS left",
         "NS2 intact (100 keys, byte for byte)", "notes"],
        rows,
    )  # fmt: skip
    details += failed_reps(errors)
    floor = median(empty)
    details += [
        f"* Seeded before each run (not timed): {CLEAR_KEYS:,} lease-less keys of one namespace "
        f"NS in the Dynamo 1.4.2 layout, {CLEAR_KEYS // 5:,} dead workers × 5 keys "
        "(`v1/instances/NS/backend/generate/<hex>`, `v1/instances/NS/backend/"
        "worker_kv_query_source_<pub>/<hex>`, `v1/mdc/NS/backend/generate/<hex>`, "
        "`v1/event_channels/namespace/NS/...` and `v1/event_sources/namespace/NS/...`), every "
        "transport address and system port on two loopback ports nothing listens on; in "
        f"transactions of {TXN_OPS} puts (etcd's default --max-txn-ops; "
        f'{median(seeded) or 0:.0f} requests a seeding). Namespace NS2 (NS plus a "2", the '
        f"prefix a delete without the trailing / would also take) holds {NEIGHBOUR_KEYS} such "
        "keys throughout and is checked byte for byte (value, lease, revisions) after each run.",
        f"* `dynlaunch` = `.venv/bin/dynlaunch clear-namespace --namespace NS --etcd URL` (the "
        "whole command: Python start-up, reads of the namespace's prefixes, the liveness "
        "probes, the decision, the deletes, its table on stdout). `etcdctl` = "
        "`etcdctl --endpoints URL del --prefix P` once per prefix P of "
        f"{', '.join(f'`{p}`' for p in prefixes_1x('NS'))}, timed together (four processes "
        "one after the other, no shell). Both against the same private etcd "
        f"({first_line([ETCD, '--version'])}, default settings, data dir in the run's "
        "temporary directory), history compacted after each run.",
        "* Store revisions used: how far etcd's revision moved during the run; each write "
        "transaction (or delete request) takes one. dynlaunch deleting key by key would take "
        f"{CLEAR_KEYS:,}; its guarded range delete takes one per prefix.",
        f"* For reference, `dynlaunch clear-namespace` with nothing left to clear (start-up, "
        f"eight empty reads, nothing to delete) took {fmt_s(floor, 3)} (median of "
        f"{len(empty)}): its floor, against etcdctl's whole job.",
        "",
    ]
    return details


def run(ctx: Ctx) -> Row:
    took: dict[str, list[float]] = {s: [] for s in SIDES}
    rows: list[list[object]] = []
    errors: list[str] = []
    empty: list[float] = []
    ns = f"bench-{uuid.uuid4().hex[:8]}"
    scene = _start(ctx, ns, (ctx.ports.pick(), ctx.ports.pick()))  # free: nothing listens
    try:
        for rep in range(ctx.reps):
            for side in sides_for(rep):
                try:
                    got = clear_once(ctx, scene, side)
                except (BenchError, GatewayError, subprocess.TimeoutExpired,
                        httpx.HTTPError) as err:  # fmt: skip
                    errors.append(f"rep {rep + 1} {side}: {err}")
                    continue
                took[side].append(got.seconds)
                rows.append([rep + 1, "dynlaunch" if side == "dynlaunch" else "etcdctl",
                             f"{got.seconds:.3f}", got.revisions, got.left,
                             "yes" if got.neighbours_intact else "NO", got.note])  # fmt: skip
            if (seconds := empty_run(ctx, scene.etcd.url, ns)) is not None:
                empty.append(seconds)
    finally:
        scene.etcd.stop()
    dl, sc = median(took["dynlaunch"]), median(took["script"])
    r = ratio(dl, sc)
    return Row(
        metric=f"wall time to clear {CLEAR_KEYS:,} stale keys of one namespace (median)",
        dynlaunch=fmt_s(dl, 3),
        script="n/a" if sc is None else f"{sc:.3f} s (`etcdctl del --prefix` ×4)",
        ratio="n/a" if r is None else f"{r:.2f}x",
        target="≤ 1.5x etcdctl",
        verdict="n/a" if r is None else ("met" if r <= 1.5 else "NOT met"),
        details=_details(scene, rows, errors, empty),
    )
