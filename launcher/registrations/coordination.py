"""What `up` does in etcd around its children: one launcher per namespace (a lease-backed lock
key), the stale-only clear before the frontend starts, and fencing of workers that exit."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from functools import partial

from launcher import probes
from launcher.compat import for_version
from launcher.errors import DynlaunchError
from launcher.plan import Plan
from launcher.registrations import card05, endpoints, lock
from launcher.registrations.etcd import Etcd
from launcher.supervision.supervisor import Child

log = logging.getLogger(__name__)
LOCK_TTL_S = 10
KEEPALIVE_S = 3.0
FENCE_WAIT_S = 2.0  # 0.5: how long a dead worker's NATS subjects may still look subscribed


class Coordination:
    def __init__(self, plan: Plan, rpc_host: str = "127.0.0.1", run_id: str = "") -> None:
        self.etcd = plan.etcd_endpoints
        self.nats = plan.nats_url
        self.namespace = plan.namespace
        self.holder = lock.lock_holder(run_id)  # host, pid, start time, run: see holder_is_dead
        self.rpc_host = rpc_host  # the address workers advertise (a pod's IP in role mode)
        self.compat = for_version(plan.dynamo_version)
        nats = plan.by_role("nats")
        monitor = nats[0].ports.get("monitor") if nats else None
        self.nats_monitor = f"http://127.0.0.1:{monitor}" if monitor else None
        self.nats_port = nats[0].ports.get("client") if nats else None  # the embedded NATS's
        self._fenced_live: set[int] = set()  # pids of retired 0.5 workers whose leases are gone
        self.workers = {m: len(plan.workers_of(m)) for m in plan.models}  # per served model
        self.migration_limit = plan.card_migration_limit
        self._lease: int | None = None
        self._stop = threading.Event()
        self._keeper: threading.Thread | None = None

    def etcd_ready(self) -> None:
        """Claim the namespace (a second `up` on it exits 2 naming this one); nothing of Dynamo
        runs yet."""
        self._lease = lock.acquire_lock(self.etcd, self.namespace, self.holder, LOCK_TTL_S)
        log.info("dynlaunch: holds namespace %r in etcd (lease %x)", self.namespace, self._lease)
        self._keeper = threading.Thread(target=self._keep, name="namespace-lock", daemon=True)
        self._keeper.start()

    def _keep(self) -> None:
        with Etcd(self.etcd) as etcd:  # one connection for the run's keep-alives
            while not self._stop.wait(KEEPALIVE_S):
                self._keep_once(etcd)

    def _keep_once(self, etcd: Etcd) -> None:
        try:
            if self._lease is not None and etcd.lease_keepalive(self._lease) is not None:
                return
            self._lease = lock.acquire_lock(self.etcd, self.namespace, self.holder, LOCK_TTL_S)
            log.warning("dynlaunch: namespace lock was lost; taken again")
        except DynlaunchError as err:  # etcd restarting; try again
            log.warning("dynlaunch: namespace lock: %s", err)

    def before_dynamo(self) -> None:
        """Remove registrations whose owner is gone; a live worker's are never touched."""
        counts = lock.clear_stale(self.etcd, self.namespace, self.nats)
        removed = {kind: c["removed"] for kind, c in counts.items() if c["removed"]}
        if removed:
            log.info("dynlaunch: cleared stale registrations of %r: %s", self.namespace,
                     ", ".join(f"{n} {kind}" for kind, n in removed.items()))  # fmt: skip

    def workers_registered(self) -> bool:
        """0.5: every planned worker has put its models/ entry (its model files are uploaded)."""
        try:
            return all(
                card05.count_registered(self.etcd, self.namespace, model) >= count
                for model, count in self.workers.items()
            )
        except DynlaunchError:  # etcd busy or restarting: ask again
            return False

    def after_registration(self) -> None:
        """0.5: the migration limit into the model card, which the frontend about to start
        reads (its own flag does not exist)."""
        limit = self.migration_limit
        if limit is None:
            return
        for model in self.workers:
            before = card05.set_migration_limit(self.etcd, model, limit)
            if before is None:
                log.warning("dynlaunch: no model card for %r in etcd: requests will not migrate "
                            "when a worker dies", model)  # fmt: skip
            elif before != limit:
                log.info("dynlaunch: model card of %r: migration_limit %s -> %d (the frontend "
                         "reads it from the card)", model, before, limit)  # fmt: skip

    def explain_exit(self, child: Child) -> str | None:
        """Why a worker may have ended during start-up without saying so: its endpoint already
        serves another model (Dynamo refuses a second one there)."""
        if child.spec.role != "worker" or not child.spec.component:
            return None
        try:
            layout = self.compat.layout
            served = endpoints.served_on(self.etcd, self.namespace, child.spec.component, layout)
        except DynlaunchError:
            return None
        others = sorted(served - {child.spec.model})
        if not others:
            return None
        where = f"dyn://{self.namespace}.{child.spec.component}.generate"
        return (
            f"{where} already serves model {', '.join(map(repr, others))}, and Dynamo refuses "
            f"a second model ({child.spec.model!r}) on one endpoint; stop what registered it, or "
            "use another namespace or model name (models[].name)"
        )

    def fence(self, child: Child) -> None:
        """A worker exited: revoke its lease so the frontend stops routing to it now. 1.x: the
        lease of the instance at its RPC port; 0.5 (requests over NATS): the leases whose NATS
        subjects lost their subscriber (the dead worker's connection)."""
        if child.spec.role == "worker" and self.compat.fence_by == "nats-subject":
            self._fence_by_subject(child)
            return
        port = child.spec.ports.get("rpc")
        if child.spec.role != "worker" or port is None or not self.rpc_host:
            return  # in a pod without DYN_TCP_RPC_HOST the address is Dynamo's guess: no match
        try:
            lease = lock.lease_of_rpc_port(self.etcd, self.namespace, port, self.rpc_host)
            if lease is not None and lock.revoke(self.etcd, lease):
                log.info(
                    "%s pid=%s: fenced: revoked its etcd lease %x", child.name, child.pid, lease
                )
        except DynlaunchError as err:  # etcd down: the lease expires on its own
            log.warning("%s pid=%s: could not fence: %s", child.name, child.pid, err)

    def registered(self, child: Child, serving: int | None = None) -> bool:
        """A replacement or added worker (`dynlaunch restart`, `scale`) has registered its
        generate instance: 1.x, an instance at its own RPC port; 0.5 (no RPC port), more model
        entries of its model than the ``serving`` other workers of its model (the old one during
        a restart) have; ``serving`` None: as many as the start planned."""
        expected = self.workers.get(child.spec.model, 0) if serving is None else serving
        try:
            if self.compat.fence_by == "nats-subject" or child.spec.ports.get("rpc") is None:
                found = card05.count_registered(self.etcd, self.namespace, child.spec.model)
                return found > expected
            port = child.spec.ports["rpc"]
            lease = lock.lease_of_rpc_port(self.etcd, self.namespace, port, self.rpc_host)
            return lease is not None
        except DynlaunchError:  # etcd busy: ask again
            return False

    def _fence_by_subject(self, child: Child) -> None:
        if child.pid in self._fenced_live or (child.alive and self._fence_live(child)):
            return  # its leases are revoked already
        deadline = time.monotonic() + FENCE_WAIT_S  # NATS may not have seen the close yet
        try:
            while True:
                by_lease = lock.subjects_by_lease(self.etcd, self.namespace)
                dead = lock.leases_without_subscriber(by_lease, self._subscribed(by_lease))
                if dead or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            for lease in dead:
                if lock.revoke(self.etcd, lease):
                    log.info("%s pid=%s: fenced: revoked its etcd lease %x (its NATS subjects "
                             "have no subscriber)", child.name, child.pid, lease)  # fmt: skip
        except DynlaunchError as err:  # etcd or NATS down: the lease expires on its own
            log.warning("%s pid=%s: could not fence: %s", child.name, child.pid, err)

    def fenced_live(self, child: Child) -> bool:
        """Were ``child``'s leases revoked while it ran (a retired 0.5 worker)? It then stops
        serving and exits on its own."""
        return child.pid in self._fenced_live

    def _fence_live(self, child: Child) -> bool:
        """A live 0.5 worker being retired (restart, scale down): its leases are those whose
        subjects its own NATS connections subscribe to (the embedded NATS's /connz, matched with
        the worker's sockets). Revoked, the worker stops serving them and exits (measured: code 1,
        "Endpoint service completed unexpectedly", 0 failed of 93 requests under load). False
        when they cannot be told (an external NATS): the caller fences it once it is gone."""
        if self.nats_monitor is None or self.nats_port is None or child.pid is None:
            return False
        subjects = probes.nats_subjects_of(self.nats_monitor, self.nats_port, child.pid)
        if not subjects:
            return False
        try:
            by_lease = lock.subjects_by_lease(self.etcd, self.namespace)
            for lease in (lease for lease, names in by_lease.items() if set(names) & subjects):
                if lock.revoke(self.etcd, lease):
                    log.info("%s pid=%s: fenced: revoked its etcd lease %x (the subjects of its "
                             "NATS connection)", child.name, child.pid, lease)  # fmt: skip
        except DynlaunchError as err:
            log.warning("%s pid=%s: could not fence: %s", child.name, child.pid, err)
        self._fenced_live.add(child.pid)
        return True

    def _subscribed(self, by_lease: dict[int, list[str]]) -> Callable[[str], bool | None]:
        """Is a subject subscribed? The embedded NATS's monitoring port says it (the server's own
        list); an external NATS is asked which subjects the services' live instances advertise."""
        if self.nats_monitor is not None:
            return partial(probes.nats_subscribed, self.nats_monitor)
        from launcher.registrations import natsjs

        names = {s for subjects in by_lease.values() for s in subjects}
        live = natsjs.service_subjects(self.nats, sorted({n.split(".", 1)[0] for n in names}))
        return lambda subject: subject in live

    def release(self) -> None:
        self._stop.set()
        if self._keeper is not None:
            self._keeper.join(KEEPALIVE_S + 5)
        if self._lease is not None:
            try:
                lock.release_lock(self.etcd, self._lease)
            except DynlaunchError as err:
                log.warning("dynlaunch: could not release the namespace lock: %s", err)
