"""Fast fencing: when a worker exits, revoke its etcd lease so the frontend stops routing to it
at once, instead of for the rest of the lease's TTL (30 s on Dynamo 1.x)."""

from __future__ import annotations

import logging

from launcher import clearns
from launcher.errors import DynlaunchError
from launcher.plan import Plan
from launcher.supervisor import Child

log = logging.getLogger(__name__)


class Fence:
    """Called with each child that exited on its own; acts on workers only."""

    def __init__(self, plan: Plan) -> None:
        self.etcd = plan.etcd_endpoints
        self.namespace = plan.namespace

    def __call__(self, child: Child) -> None:
        port = child.spec.ports.get("rpc")
        if child.spec.role != "worker" or port is None:
            return
        try:
            lease = clearns.lease_of_rpc_port(self.etcd, self.namespace, port)
            if lease is not None and clearns.revoke(self.etcd, lease):
                log.info(
                    "%s pid=%s: fenced: revoked its etcd lease %x", child.name, child.pid, lease
                )
        except DynlaunchError as err:  # etcd down: the lease expires on its own
            log.warning("%s pid=%s: could not fence: %s", child.name, child.pid, err)
