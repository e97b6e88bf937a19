"""A worker pod's readinessProbe: ready only when the frontend can route to this worker.

Standard library only: the rendered manifests run this file's text as `python3 -c SOURCE URL`
(every Dynamo runtime image has python3; the stock image has no dynlaunch). Exit 0 when ready,
else 1 with one line saying why (kubelet keeps it in the pod's events). Reads the pod's own
environment, as the operator set it:

1. The worker's system server (URL) answers `/health` 200 with its `generate` endpoint ready
   (the operator sets DYN_SYSTEM_USE_ENDPOINT_HEALTH_STATUS=["generate"]: 200 only once the
   endpoint serves, not when the process starts).
2. With etcd discovery (DYN_DISCOVERY_BACKEND unset or `etcd`): an instance of `generate` is
   registered under the namespace the worker registers in (DYN_NAMESPACE, plus
   `-DYN_NAMESPACE_WORKER_SUFFIX`), in either layout (1.x `v1/instances/NS/`, 0.5 `instances/NS/`).
   Where instances carry a TCP address (1.x), one must be this pod's (POD_IP, else
   DYN_TCP_RPC_HOST, else the host name's address) and accept a connection. 0.5 instances
   (NATS subjects) name no host: any `generate` instance in the namespace counts. With
   ETCD_AUTH_USERNAME/ETCD_AUTH_PASSWORD in the pod (as Dynamo takes them) it logs in first.
3. With Kubernetes discovery the frontend sees a worker only once its pod is Ready (its
   EndpointSlice), so 1 is the whole check, plus DYN_TCP_RPC_PORT accepting a connection when set.

Every request goes straight to its address: a pod's HTTP(S)_PROXY is not for loopback or etcd.
Tested against a real etcd and Dynamo mocker worker: tests/integration/test_k8s_worker_ready.py.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from typing import Any

TIMEOUT_S = 4.0


_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no proxy from the env


def _json(url: str, body: dict[str, str] | None = None, token: str | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="GET" if data is None else "POST")
    if token:
        request.add_header("Authorization", token)
    with _DIRECT.open(request, timeout=TIMEOUT_S) as resp:
        return json.load(resp)


def health_problem(system_url: str) -> str | None:
    try:
        body = _json(system_url.rstrip("/") + "/health")
    except urllib.error.HTTPError as err:
        return f"worker /health answers {err.code}"
    except (OSError, ValueError) as err:
        return f"worker /health: {err}"
    endpoints = body.get("endpoints") if isinstance(body, dict) else None
    if isinstance(endpoints, dict) and endpoints.get("generate") != "ready":
        return "the generate endpoint is not ready"
    return None


def registration_namespace(env: Mapping[str, str]) -> str:
    """Where Dynamo registers this pod's worker (common/utils/namespace.py)."""
    namespace = env.get("DYN_NAMESPACE") or "dynamo"
    suffix = env.get("DYN_NAMESPACE_WORKER_SUFFIX")
    return f"{namespace}-{suffix}" if suffix else namespace


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def etcd_token(etcd: str, env: Mapping[str, str]) -> str | None:
    """The token of etcd's /v3/auth/authenticate for ETCD_AUTH_USERNAME, or None without one."""
    user = env.get("ETCD_AUTH_USERNAME")
    if not user:
        return None
    login = {"name": user, "password": env.get("ETCD_AUTH_PASSWORD", "")}
    try:
        return str(_json(f"{etcd}/v3/auth/authenticate", login)["token"])
    except urllib.error.HTTPError as err:
        if err.code == 412:  # "authentication is not enabled": every request is allowed
            return None
        raise


def generate_instances(
    etcd: str, namespace: str, token: str | None = None
) -> Iterator[dict[str, Any]]:
    """The `generate` instances registered under exactly ``namespace``, both layouts."""
    for prefix in (f"v1/instances/{namespace}/", f"instances/{namespace}/"):
        key = prefix.encode()
        end = key[:-1] + bytes([key[-1] + 1])
        body = {"key": _b64(key), "range_end": _b64(end)}
        found = _json(f"{etcd}/v3/kv/range", body, token)
        for kv in found.get("kvs", []):
            value = json.loads(base64.b64decode(kv["value"]))
            if isinstance(value, dict) and value.get("endpoint") == "generate":
                yield value


def own_hosts(env: Mapping[str, str]) -> set[str]:
    host = env.get("POD_IP") or env.get("DYN_TCP_RPC_HOST")
    if host:
        return {host}
    try:
        return {socket.gethostbyname(socket.gethostname())}
    except OSError:
        return set()


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=TIMEOUT_S):
            return True
    except OSError:
        return False


def _tcp_address(instance: dict[str, Any]) -> tuple[str, int] | None:
    transport = instance.get("transport")
    address = transport.get("tcp") if isinstance(transport, dict) else None
    if not isinstance(address, str):
        return None
    host, _, port = address.split("/", 1)[0].rpartition(":")
    return (host.strip("[]"), int(port)) if port.isdigit() else None


def etcd_problem(env: Mapping[str, str]) -> str | None:
    endpoints = [e.strip() for e in env.get("ETCD_ENDPOINTS", "").split(",") if e.strip()]
    if not endpoints:
        return "etcd discovery, but no ETCD_ENDPOINTS"
    namespace = registration_namespace(env)
    instances: list[dict[str, Any]] | None = None
    refused: str | None = None
    for endpoint in endpoints:
        url = (endpoint if "://" in endpoint else f"http://{endpoint}").rstrip("/")
        try:
            instances = list(generate_instances(url, namespace, etcd_token(url, env)))
            break
        except urllib.error.HTTPError as err:  # answers, but not to us (a login, a permission)
            user = env.get("ETCD_AUTH_USERNAME")
            refused = f"etcd at {url} answers {err.code}" + (f" (user {user})" if user else "")
        except (OSError, ValueError, KeyError):
            continue
    if instances is None:
        return refused or f"etcd at {', '.join(endpoints)} does not answer"
    if not instances:
        return f"no generate instance registered in namespace {namespace!r}"
    addresses = [a for a in map(_tcp_address, instances) if a is not None]
    if not addresses:
        return None  # 0.5: NATS subjects name no host
    mine = [a for a in addresses if a[0] in own_hosts(env)]
    if not mine:
        return f"no generate instance of this pod in namespace {namespace!r}"
    if not any(_answers(host, port) for host, port in mine):
        return f"this pod's generate endpoint {mine[0][0]}:{mine[0][1]} does not answer"
    return None


def problem(system_url: str, env: Mapping[str, str]) -> str | None:
    """Why the worker is not routable yet, or None when it is."""
    found = health_problem(system_url)
    if found is not None:
        return found
    backend = env.get("DYN_DISCOVERY_BACKEND") or "etcd"
    if backend == "etcd":
        return etcd_problem(env)
    port = env.get("DYN_TCP_RPC_PORT", "")
    if port.isdigit() and not _answers("127.0.0.1", int(port)):
        return f"the request plane port {port} does not answer"
    return None


def main(argv: list[str]) -> int:
    url = argv[1] if len(argv) > 1 else "http://127.0.0.1:9090"
    found = problem(url, os.environ)
    sys.stdout.write(f"not ready: {found}\n" if found else "ready\n")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
