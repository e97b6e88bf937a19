"""Naming rules written once: a Dynamo namespace, and the names that mark a secret.

Stdlib only: the config, the planner, `clear-namespace` and `render k8s` all import it.
"""

from __future__ import annotations

import itertools
import re

# Dynamo's rule for a namespace: letters, digits, - and _ (it is a path segment in etcd keys and a
# part of NATS subjects).
NAMESPACE_RE = re.compile(r"[A-Za-z0-9_-]+")
# A DNS label's length: Kubernetes renders name resources after it, and etcd keys, NATS subjects
# and the default state dir carry it (300 characters failed as "File name too long"). Only a
# namespace dynlaunch runs is held to it; `clear-namespace` clears any Dynamo namespace.
NAMESPACE_MAX = 63

# An environment variable or config key whose value is never shown: *TOKEN*, *SECRET*,
# *PASSWORD*, *API_KEY* (README), and their kin.
SECRET_NAME_RE = re.compile(
    r"TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|API_KEY|(^|_)NKEY|(^|_)KEY$", re.I
)
# A word of a command-line flag that marks its value a secret (`--api-key`, `--hf-token`).
SECRET_WORDS = frozenset({"token", "secret", "password", "passwd", "apikey", "credentials"})


def is_namespace(value: str) -> bool:
    """True for a name Dynamo accepts as a namespace (any length)."""
    return NAMESPACE_RE.fullmatch(value or "") is not None


def is_secret_name(name: str) -> bool:
    """True for a variable or config key whose value must not be shown."""
    return SECRET_NAME_RE.search(name) is not None


def is_secret_flag(flag: str) -> bool:
    """`--api-key`, `--hf-token`, `--nats-password`: a word of the flag names a secret.
    (`--skip-tokenizer-init` does not: 'tokenizer' is not 'token'.)"""
    if not flag.startswith("-"):
        return False
    words = re.split(r"[-_]+", flag.lstrip("-").lower())
    joined = {a + b for a, b in itertools.pairwise(words)}
    return bool(SECRET_WORDS & (set(words) | joined))
