"""What the Dynamo operator tells a role pod (`dynlaunch up BACKEND --role frontend|worker`)
through its environment, and what that means for the pod's plan. Pure.

The 1.x operator injects DYN_NAMESPACE (`<k8s namespace>-<dgd name>`), DYN_NAMESPACE_PREFIX on
the frontend (it watches every namespace with that prefix), DYN_NAMESPACE_WORKER_SUFFIX on
workers (they register in `<namespace>-<suffix>`), and DYN_DISCOVERY_BACKEND (`kubernetes` on a
default platform, which then has no etcd and no NATS); ETCD_ENDPOINTS and NATS_SERVER only where
the platform has them. 0.5 operators inject DYN_NAMESPACE (the service's dynamoNamespace),
ETCD_ENDPOINTS and NATS_SERVER, and no discovery backend (Dynamo's default: etcd).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from launcher.plan import Plan, ProcessSpec

ETCD = "etcd"
ENDPOINT_HEALTH = ("DYN_SYSTEM_USE_ENDPOINT_HEALTH_STATUS", '["generate"]')


@dataclass(frozen=True)
class PodEnv:
    discovery: str  # "etcd" (Dynamo's default), "kubernetes", or another Dynamo backend
    discovery_given: bool  # DYN_DISCOVERY_BACKEND is set in the pod: never override it
    namespace: str | None  # DYN_NAMESPACE
    prefix: str | None  # DYN_NAMESPACE_PREFIX: the namespaces a frontend watches
    suffix: str | None  # DYN_NAMESPACE_WORKER_SUFFIX: appended to a worker's namespace
    etcd: str | None  # ETCD_ENDPOINTS
    nats: str | None  # NATS_SERVER

    @property
    def uses_etcd(self) -> bool:
        """Fencing and the stale-only clear act on etcd: only where etcd is the discovery."""
        return self.discovery == ETCD

    def needs(self) -> tuple[str, ...]:
        """The variables this pod must have: etcd discovery needs etcd and NATS (0.5's requests
        and dynlaunch's event plane go over NATS); Kubernetes discovery needs neither."""
        return ("ETCD_ENDPOINTS", "NATS_SERVER") if self.uses_etcd else ()

    def namespace_for(self, role: str) -> str | None:
        """The Dynamo namespace of the pod's processes: where a worker registers (with the
        suffix), where a frontend registers itself (its prefix decides what it watches)."""
        if role == "worker" and self.namespace and self.suffix:
            return f"{self.namespace}-{self.suffix}"
        return self.namespace

    def describe(self, role: str) -> str:
        """Which discovery, which namespace: `status` shows it after `discovery: `, `up` logs it."""
        source = "DYN_DISCOVERY_BACKEND" if self.discovery_given else "Dynamo's default"
        where = self.namespace_for(role) or "(config)"
        watching = role == "frontend" and self.prefix
        watch = f", watching namespaces {self.prefix}*" if watching else ""
        line = f"{self.discovery} ({source}), namespace {where}{watch}"
        if not self.uses_etcd:
            line += "; no stale-only clear and no fencing (they act on etcd discovery only)"
        return line


def discovery(role: str, environ: Mapping[str, str]) -> str:
    """What `status` says after `discovery: `. A whole stack (role all) runs on the etcd it
    starts or is given; a pod on what the operator gave it."""
    return ETCD if role == "all" else read(environ).describe(role)


def read(environ: Mapping[str, str]) -> PodEnv:
    def get(name: str) -> str | None:
        return environ.get(name) or None

    backend = get("DYN_DISCOVERY_BACKEND")
    return PodEnv(
        discovery=(backend or ETCD).lower(),
        discovery_given=backend is not None,
        namespace=get("DYN_NAMESPACE"),
        prefix=get("DYN_NAMESPACE_PREFIX"),
        suffix=get("DYN_NAMESPACE_WORKER_SUFFIX"),
        etcd=get("ETCD_ENDPOINTS"),
        nats=get("NATS_SERVER"),
    )


def adapt(plan: Plan, pod: PodEnv) -> Plan:
    """The role plan as the pod must run it: the operator's discovery backend and namespaces
    left alone (the children inherit the pod's environment), no etcd/NATS the pod does not have,
    and worker health that is 200 only once the generate endpoint serves."""
    procs = tuple(_process(p, pod) for p in plan.processes)
    return dataclasses.replace(
        plan,
        processes=procs,
        etcd_endpoints=plan.etcd_endpoints if pod.etcd or pod.uses_etcd else "",
        nats_url=plan.nats_url if pod.nats or pod.uses_etcd else "",
    )


def _process(spec: ProcessSpec, pod: PodEnv) -> ProcessSpec:
    if spec.role not in ("frontend", "worker"):
        return spec
    env = dict(spec.env)
    argv = list(spec.argv)
    if pod.discovery_given:
        env.pop("DYN_DISCOVERY_BACKEND", None)
    if not pod.uses_etcd:
        if not pod.etcd:
            env.pop("ETCD_ENDPOINTS", None)
        if not pod.nats:
            env.pop("NATS_SERVER", None)
            if env.get("DYN_EVENT_PLANE") == "nats":
                env.pop("DYN_EVENT_PLANE")
    if spec.role == "worker":
        if pod.suffix:
            env["DYN_NAMESPACE_WORKER_SUFFIX"] = ""  # the namespace carries it already
        if env.pop("DYN_SYSTEM_STARTING_HEALTH_STATUS", None) is not None:
            env[ENDPOINT_HEALTH[0]] = ENDPOINT_HEALTH[1]
    if spec.role == "frontend" and pod.prefix and "--namespace" in argv:
        i = argv.index("--namespace")  # the operator's prefix decides what it watches
        del argv[i : i + 2]
    return dataclasses.replace(spec, env=env, argv=tuple(argv))
