"""What each Dynamo operator release does with a DynamoGraphDeployment: one table, read from the
operator's code and CRDs (v0.4.0, v0.4.1, v0.5.0, 1.0.0, 1.3.0, the 1.4.0 cut and main; README,
"Kubernetes"). `render` and `dgd` read these fields and never compare versions themselves. Pure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from launcher.errors import ConfigError

# A version as the operator's webhook reads an image tag: MAJOR.MINOR.PATCH and nothing else.
STRICT_SEMVER_RE = re.compile(r"^(0|[1-9]\d{0,3})\.(0|[1-9]\d{0,3})\.(0|[1-9]\d{0,3})$")
_VERSION_RE = re.compile(r"^v?(\d+)\.(\d+)(?:\.(\d+))?")


@dataclass(frozen=True)
class Release:
    """One row: a range of operator releases that treat a manifest the same way."""

    row: str  # "0.4.0", "0.4.1", "0.5.x", "1.0-1.2", "1.3", ">=1.4"
    frontend_type: str  # componentType / type of the frontend: `main` until 0.4.0.post0
    api_versions: tuple[str, ...]  # DGD API versions the operator serves
    backend_framework: bool  # spec.backendFramework exists (v0.4.1 on)
    runtime_override: bool  # runtimeVersionOverride exists; the webhook requires it for a
    # tag that is not MAJOR.MINOR.PATCH (or that is not the runtime's version)
    user_env_wins: bool  # MergeEnvs(operator, user): the user's envs override the operator's
    # (1.x); 0.x: the operator's defaults override the user's
    computed_namespace: bool  # DYN_NAMESPACE = "<k8s namespace>-<dgd name>" on every pod, the
    # frontend gets DYN_NAMESPACE_PREFIX, workers DYN_NAMESPACE_WORKER_SUFFIX; dynamoNamespace
    # is ignored. Else DYN_NAMESPACE = the service's dynamoNamespace.
    discovery: str  # "etcd": the operator injects ETCD_ENDPOINTS and NATS_SERVER; "platform":
    # DYN_DISCOVERY_BACKEND as the platform chart says (kubernetes by default, no etcd or NATS)
    grace_s: int = 60  # the operator's default terminationGracePeriodSeconds

    @property
    def sets_dyn_namespace(self) -> bool:
        """A manifest may carry DYN_NAMESPACE only where the operator's value wins anyway."""
        return not self.user_env_wins and not self.computed_namespace


_ALPHA, _BOTH = ("v1alpha1",), ("v1alpha1", "v1beta1")


def _pre_1(row: str, frontend_type: str, backend_framework: bool) -> Release:
    return Release(row, frontend_type, _ALPHA, backend_framework, False, False, False, "etcd")


def _v1(row: str, api_versions: tuple[str, ...], runtime_override: bool) -> Release:
    return Release(row, "frontend", api_versions, True, runtime_override, True, True, "platform")


# (first version of the row, the row), oldest first. 0.6-0.9 were not read: they take the 0.5.x
# row (the last one read before 1.0).
ROWS: tuple[tuple[tuple[int, int, int], Release], ...] = (
    ((0, 4, 0), _pre_1("0.4.0", "main", backend_framework=False)),
    ((0, 4, 1), _pre_1("0.4.1", "frontend", backend_framework=True)),
    ((0, 5, 0), _pre_1("0.5.x", "frontend", backend_framework=True)),
    ((1, 0, 0), _v1("1.0-1.2", _ALPHA, runtime_override=False)),
    ((1, 3, 0), _v1("1.3", _BOTH, runtime_override=False)),
    ((1, 4, 0), _v1(">=1.4", _BOTH, runtime_override=True)),
)


def version_tuple(version: str) -> tuple[int, int, int]:
    """'1.4.0.post1' -> (1, 4, 0); 'v0.5' -> (0, 5, 0)."""
    match = _VERSION_RE.match(version.strip())
    if match is None:
        raise ConfigError(f"k8s.dynamo_version {version!r}: expected a version like 0.5.0 or 1.4.2")
    return int(match[1]), int(match[2]), int(match[3] or 0)


def canonical(version: str) -> str:
    """MAJOR.MINOR.PATCH, the form runtimeVersionOverride takes."""
    return ".".join(map(str, version_tuple(version)))


def release(version: str) -> Release:
    """The row of operator release ``version``."""
    want = version_tuple(version)
    rows = [row for since, row in ROWS if since <= want]
    if not rows:
        raise ConfigError(
            f"k8s.dynamo_version {version}: operators before 0.4.0 are not covered "
            f"(rows: {', '.join(row.row for _, row in ROWS)})"
        )
    return rows[-1]


def runtime_version_override(row: Release, image_tag: str | None, version: str) -> str | None:
    """The runtimeVersionOverride a component needs, or None. Only where the field exists; there,
    whenever the tag is not exactly the targeted MAJOR.MINOR.PATCH (`latest`, `1.4`,
    `1.4.0.post1`, `v1.4.0`, a digest, a tag of another version)."""
    if not row.runtime_override:
        return None
    value = canonical(version)
    if image_tag is not None and STRICT_SEMVER_RE.fullmatch(image_tag) and image_tag == value:
        return None
    return value
