"""What a Dynamo line takes and does, decided once from its version (pure).

Every difference between Dynamo lines that dynlaunch acts on is a field here; `plan`, `resolve` and
the fencing read these fields and never compare versions themselves. Measured on 0.5.0 and 1.4.2
(README, "Dynamo versions"); 0.4.x is planned like 0.5 except for its SGLang module.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from launcher.errors import ConfigError
from launcher.versions import parse

MOCKER_ENGINE_ARGS_FILE = (
    "mocker-engine-args.json"  # under the state dir (0.5: --extra-engine-args)
)


@dataclass(frozen=True)
class Compat:
    line: str  # "0.4", "0.5", "1.x"
    sglang_module: str  # the worker module when workers.legacy_module is off
    legacy_sglang_module: bool  # the deprecated `dynamo.sglang.worker` alias still exists
    mocker_flags: bool  # mocker takes --block-size; else a JSON file via --extra-engine-args
    frontend_migration_limit: bool  # the frontend takes --migration-limit
    response_stream_env: bool  # DYN_TCP_RESPONSE_STREAM_HOST/PORT honoured (else a random port)
    tcp_rpc: bool  # requests over TCP to DYN_TCP_RPC_HOST:PORT (else NATS subjects)
    event_plane_env: bool  # DYN_EVENT_PLANE(_HOST), DYN_DISCOVERY_BACKEND
    endpoint_health_env: bool  # DYN_SYSTEM_USE_ENDPOINT_HEALTH_STATUS (else starting status)
    layout: str  # registrations in etcd: "v1" (v1/instances/NS/...) or "0.5" (instances/NS/...)
    # The frontend takes the migration limit from the model card (mdc/<slug>), which the first
    # worker ever writes and nobody refreshes (0.5's mocker has no flag for it): dynlaunch sets it
    # once the workers have registered, and only then starts the frontend, which reads it.
    migration_in_card: bool
    # With --router-mode kv, a request whose worker dies is migrated to another worker. Measured
    # (2 workers, 4 clients, one SIGKILLed; round-robin: 0 failed on both lines): 1.4.2 no, its KV
    # router re-books the same request id and fails it ("failed to book scheduler state: Request
    # ... already exists"; ai-dynamo/dynamo#11647), 2-36 of ~650 failed; 0.5.0 no, its frontend
    # task panics ("called `Option::unwrap()` on a `None` value"), 0-2 of ~200 failed in 4 runs;
    # 1.6.1 yes: 0 of ~690 in each of 3 runs (1.5.x and 1.6.0 not measured: taken as 1.4.2 and
    # 1.6.1). `auto` picks kv only on a line where this holds.
    kv_router_migrates: bool
    # Dynamo's NATS client speaks TLS: NATS_TLS_CA_CERT_PATH, NATS_TLS_CLIENT_CERT_PATH and
    # NATS_TLS_CLIENT_KEY_PATH (file paths; PEM text fails: "reading CA cert: ...") with a tls://
    # NATS_SERVER (nats:// with them set exits: "NATS TLS is configured ... but NATS_SERVER does
    # not use the 'tls://' scheme"). Measured: 1.6.1 yes, with and without a client certificate
    # (nats-server 2.9.10, TLS 1.3); 1.4.2 and 0.5.0 no (no NATS_TLS_* in their binaries; 1.4.2
    # panics on a TLS-only NATS). 1.5.x and 1.6.0 not measured: taken as 1.4.2 and 1.6.1.
    nats_tls_env: bool = False

    @property
    def fence_by(self) -> str:
        """How a dead worker's registrations are found: its RPC port, or its NATS subject."""
        return "rpc-port" if self.tcp_rpc else "nats-subject"

    def worker_module(self, version: str, legacy_module: bool) -> str:
        if not legacy_module:
            return self.sglang_module
        if not self.legacy_sglang_module:
            raise ConfigError(
                "workers.legacy_module: dynamo.sglang.worker exists only up to 0.5.x, "
                f"not {version}"
            )
        return "dynamo.sglang.worker"


_PRE_1 = Compat(
    line="0.5",
    sglang_module="dynamo.sglang",
    legacy_sglang_module=True,
    mocker_flags=False,
    frontend_migration_limit=False,
    response_stream_env=False,
    tcp_rpc=False,
    event_plane_env=False,
    endpoint_health_env=False,
    layout="0.5",
    migration_in_card=True,
    kv_router_migrates=False,
)
_V1 = Compat(
    line="1.x",
    sglang_module="dynamo.sglang",
    legacy_sglang_module=False,
    mocker_flags=True,
    frontend_migration_limit=True,
    response_stream_env=True,
    tcp_rpc=True,
    event_plane_env=True,
    endpoint_health_env=True,
    layout="v1",
    migration_in_card=False,
    kv_router_migrates=False,
)


def for_version(version: str) -> Compat:
    """The line of ``version``: before 0.5 only `dynamo.sglang.worker` exists; 0.6 dropped that
    alias; 1.0 brought the v1 layout, TCP request plane and settable ports; 1.6's KV router
    migrates a dead worker's requests, and 1.6 speaks TLS to NATS."""
    major, minor = parse(version)
    if (major, minor) >= (1, 6):
        return replace(_V1, kv_router_migrates=True, nats_tls_env=True)
    if major >= 1:
        return _V1
    if minor < 5:
        return replace(_PRE_1, line="0.4", sglang_module="dynamo.sglang.worker")
    if minor == 5:
        return _PRE_1
    return replace(_PRE_1, line=f"0.{minor}", legacy_sglang_module=False)
