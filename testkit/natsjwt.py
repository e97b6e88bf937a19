"""A nats-server 2.9 in operator mode (decentralized auth), made without `nsc`: an operator, a
system account, one account with JetStream and one user, as JWTs signed with NKeys (`nkeys`), and
the user's `.creds` file (its JWT and NKey seed), as NATS_AUTH_CREDENTIALS_FILE names one."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nkeys

UNLIMITED = {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
             "wildcards": True, "conn": -1, "leaf": -1}  # fmt: skip
JETSTREAM = {"mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1}


@dataclass(frozen=True)
class Operator:
    config: str  # nats-server config lines: operator, resolver, system account, accounts
    creds: Path  # the user's .creds file (0600): its JWT and NKey seed
    seed: str  # the user's seed (secret)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _keypair(prefix: int) -> tuple[str, str, Any]:
    seed = nkeys.encode_seed(secrets.token_bytes(32), prefix)
    pair = nkeys.from_seed(bytearray(seed))
    return seed.decode(), pair.public_key.decode(), pair


def _jwt(signer: Any, issuer: str, subject: str, name: str, nats: dict[str, Any]) -> str:
    claims: dict[str, Any] = {"iat": int(time.time()), "iss": issuer, "name": name,
                              "sub": subject, "nats": {**nats, "version": 2}}  # fmt: skip
    digest = hashlib.sha256(json.dumps(claims, sort_keys=True).encode()).digest()
    claims["jti"] = base64.b32encode(digest).decode().rstrip("=")
    head = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    body = _b64(json.dumps(claims).encode())
    return f"{head}.{body}.{_b64(signer.sign(f'{head}.{body}'.encode()))}"


def _account(limits: dict[str, Any]) -> dict[str, Any]:
    return {"type": "account", "limits": limits, "default_permissions": {"pub": {}, "sub": {}}}


def make(directory: Path) -> Operator:
    _, op_pub, op = _keypair(nkeys.PREFIX_BYTE_OPERATOR)
    _, sys_pub, _ = _keypair(nkeys.PREFIX_BYTE_ACCOUNT)
    _, acc_pub, acc = _keypair(nkeys.PREFIX_BYTE_ACCOUNT)
    user_seed, user_pub, _ = _keypair(nkeys.PREFIX_BYTE_USER)
    operator = _jwt(op, op_pub, op_pub, "op", {"type": "operator", "system_account": sys_pub})
    system = _jwt(op, op_pub, sys_pub, "SYS", _account(UNLIMITED))
    account = _jwt(op, op_pub, acc_pub, "dynamo", _account(UNLIMITED | JETSTREAM))
    rights = {"type": "user", "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1}
    user = _jwt(acc, acc_pub, user_pub, "dynamo", rights)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "operator.jwt").write_text(operator)
    creds = directory / "user.creds"
    creds.write_text(
        f"-----BEGIN NATS USER JWT-----\n{user}\n------END NATS USER JWT------\n\n"
        f"-----BEGIN USER NKEY SEED-----\n{user_seed}\n------END USER NKEY SEED------\n"
    )
    creds.chmod(0o600)
    config = (
        f'operator: "{directory / "operator.jwt"}"\nresolver: MEMORY\n'
        f"system_account: {sys_pub}\n"
        f'resolver_preload: {{ {acc_pub}: "{account}", {sys_pub}: "{system}" }}\n'
    )
    return Operator(config, creds, user_seed)
