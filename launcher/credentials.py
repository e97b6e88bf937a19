"""Credentials for etcd and NATS: generated per state dir for the embedded ones, given by the user
for external ones, handed to Dynamo's processes through the environment only.

Dynamo's variables (measured on 1.4.2 and 0.5.0 with a real authenticated etcd and NATS):
`ETCD_AUTH_USERNAME`/`ETCD_AUTH_PASSWORD` work; `ETCD_AUTH_CA`, `ETCD_AUTH_CLIENT_CERT` and
`ETCD_AUTH_CLIENT_KEY` work only as PEM *contents* (a path fails) and only when no username is set
(the client picks one or the other); `NATS_AUTH_USERNAME`/`NATS_AUTH_PASSWORD` and
`NATS_AUTH_TOKEN` work; there is no `NATS_TLS_*` in either binary, and a NATS server that asks for
TLS aborts Dynamo's connection. Dynamo 1.6.1 speaks TLS to NATS: `NATS_TLS_CA_CERT_PATH`,
`NATS_TLS_CLIENT_CERT_PATH`, `NATS_TLS_CLIENT_KEY_PATH` (paths) with a tls:// `NATS_SERVER`.
dynlaunch's own clients (lock, fencing, clear-namespace, status) take all of them, paths or PEM,
and `NATS_TLS_CA`/`NATS_TLS_CERT`/`NATS_TLS_KEY` for NATS.

One process-wide set is *active* (`activate`); until then the environment's. Nothing here
prints a secret: the secret fields are left out of ``repr``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import ssl
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from launcher.errors import ConfigError

if TYPE_CHECKING:
    from launcher.config import EtcdConfig, NatsConfig
    from launcher.tlsfiles import TlsMaterial

FILE = "credentials.json"  # under the state dir, 0600
ETCD_USER = "root"  # etcd enables auth only once a user named root exists
NATS_USER = "dynlaunch"
PEM = "-----BEGIN"


@dataclass(frozen=True)
class EtcdAuth:
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca: str | None = None  # a path, or PEM text (as Dynamo takes it)
    cert: str | None = None
    key: str | None = field(default=None, repr=False)

    @property
    def tls(self) -> bool:
        return bool(self.ca or self.cert)

    def ssl_context(self) -> ssl.SSLContext | None:
        """For https:// endpoints: the system's CAs, or ``ca``; the client certificate if any."""
        return _context(self.ca, self.cert, self.key) if self.tls else None


@dataclass(frozen=True)
class NatsAuth:
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    nkey: str | None = field(default=None, repr=False)  # an NKey seed file (nats-py: nkeys_seed)
    creds_file: str | None = None
    ca: str | None = None
    cert: str | None = None
    key: str | None = field(default=None, repr=False)

    @property
    def tls(self) -> bool:
        return bool(self.ca or self.cert)

    def ssl_context(self) -> ssl.SSLContext | None:
        return _context(self.ca, self.cert, self.key) if self.tls else None


@dataclass(frozen=True)
class InfraAuth:
    etcd: EtcdAuth = field(default_factory=EtcdAuth)
    nats: NatsAuth = field(default_factory=NatsAuth)


ETCD_VARS = {
    "username": "ETCD_AUTH_USERNAME",
    "password": "ETCD_AUTH_PASSWORD",
    "ca": "ETCD_AUTH_CA",
    "cert": "ETCD_AUTH_CLIENT_CERT",
    "key": "ETCD_AUTH_CLIENT_KEY",
}
NATS_VARS = {
    "username": "NATS_AUTH_USERNAME",
    "password": "NATS_AUTH_PASSWORD",
    "token": "NATS_AUTH_TOKEN",
    "nkey": "NATS_AUTH_NKEY",
    "creds_file": "NATS_AUTH_CREDENTIALS_FILE",
    "ca": "NATS_TLS_CA",  # dynlaunch's names; Dynamo 1.6's are NATS_TLS_ENV
    "cert": "NATS_TLS_CERT",
    "key": "NATS_TLS_KEY",
}
ETCD_KEYS = {"username": "username", "password": "password", "ca": "ca", "cert": "client_cert",
             "key": "client_key"}  # fmt: skip
NATS_KEYS = {"username": "username", "password": "password", "token": "token",
             "creds_file": "credentials_file", "ca": "ca", "cert": "client_cert",
             "key": "client_key"}  # fmt: skip


def _context(ca: str | None, cert: str | None, key: str | None) -> ssl.SSLContext:
    """A verifying client context; ``ca``, ``cert`` and ``key`` are paths or PEM text."""
    try:
        ctx = ssl.create_default_context()
        if ca:
            if ca.lstrip().startswith(PEM):
                ctx.load_verify_locations(cadata=ca)
            else:
                ctx.load_verify_locations(cafile=ca)
        if cert:
            with _as_files(cert, key) as (cert_file, key_file):
                ctx.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError, ValueError) as err:
        reason = (
            getattr(err, "strerror", None) or getattr(err, "reason", None) or type(err).__name__
        )
        raise ConfigError(
            f"TLS files (CA {_shown(ca)}, certificate {_shown(cert)}): cannot load them ({reason})"
        ) from None
    return ctx


def _shown(value: str | None) -> str:
    if not value:
        return "none"
    return "PEM text" if value.lstrip().startswith(PEM) else value


@contextlib.contextmanager
def _as_files(cert: str, key: str | None) -> Any:
    """ssl loads a certificate chain from files only: PEM text goes through private temp files."""
    if not cert.lstrip().startswith(PEM) and (key is None or not key.lstrip().startswith(PEM)):
        yield cert, key
        return
    with tempfile.TemporaryDirectory(prefix="dynlaunch-tls-") as tmp:
        paths = []
        for name, text in (("cert.pem", cert), ("key.pem", key)):
            if text is None or not text.lstrip().startswith(PEM):
                paths.append(text)
                continue
            path = os.path.join(tmp, name)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(text)
            paths.append(path)
        yield paths[0], paths[1]


def pem(value: str | None, origin: str) -> str | None:
    """PEM text for Dynamo (its etcd client parses the variable's value, not a file)."""
    if value is None or value.lstrip().startswith(PEM):
        return value
    try:
        return Path(value).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = getattr(err, "strerror", None) or "not text"
        raise ConfigError(f"{origin} {value}: cannot read it ({reason})") from None


def nkey_seed(value: str, origin: str = "NATS_AUTH_NKEY") -> str:
    """The NKey seed text Dynamo takes (measured on 1.4.2: it parses the variable's value as a
    seed; a path fails with "failed to create key pair from nkey seed"): a seed file's content."""
    if value.startswith("S") and not os.path.exists(value):
        return value
    try:
        return Path(value).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as err:
        reason = getattr(err, "strerror", None) or "not text"
        raise ConfigError(f"{origin} {value}: cannot read the NKey seed file ({reason})") from None


def nkey_option(value: str) -> dict[str, str]:
    """nats-py's connect option for an NKey seed (a file, or the seed itself); nats-py signs with
    the `nkeys` package, which dynlaunch needs only then."""
    import importlib.util

    if importlib.util.find_spec("nkeys") is None:
        raise ConfigError(
            "NATS_AUTH_NKEY (an NKey login) needs the nkeys package for dynlaunch's own NATS "
            "client: pip install nkeys"
        )
    if os.path.exists(value):
        return {"nkeys_seed": value}
    if not value.startswith("S"):
        raise ConfigError(f"NATS_AUTH_NKEY {value}: neither an NKey seed (S...) nor a file")
    return {"nkeys_seed_str": value}


# -- where they come from ---------------------------------------------------------------------


def _from_env(environ: Mapping[str, str]) -> InfraAuth:
    e = {attr: environ.get(var) or None for attr, var in ETCD_VARS.items()}
    n = {attr: environ.get(var) or None for attr, var in NATS_VARS.items()}
    return InfraAuth(EtcdAuth(**e), NatsAuth(**n))


def _from_config(etcd: EtcdConfig | None, nats: NatsConfig | None) -> InfraAuth:
    e = {attr: getattr(etcd, key) if etcd else None for attr, key in ETCD_KEYS.items()}
    n = {attr: getattr(nats, key) if nats else None for attr, key in NATS_KEYS.items()}
    return InfraAuth(EtcdAuth(**e), NatsAuth(**n))


def _given(auth: EtcdAuth | NatsAuth) -> bool:
    return any(vars(auth).values())


def external(
    environ: Mapping[str, str], etcd: EtcdConfig | None = None, nats: NatsConfig | None = None
) -> InfraAuth:
    """dynlaunch's own login to an external etcd / NATS: the config's `infra.etcd.*` /
    `infra.nats.*` keys when any is set, else Dynamo's variables. (Two logins may be needed: etcd
    3.4's JSON gateway refuses a client certificate with a common name once auth is on, while
    Dynamo over TLS logs in with just such a certificate.)"""
    env, config = _from_env(environ), _from_config(etcd, nats)
    return InfraAuth(
        config.etcd if _given(config.etcd) else env.etcd,
        config.nats if _given(config.nats) else env.nats,
    )


def for_dynamo(
    environ: Mapping[str, str], etcd: EtcdConfig | None = None, nats: NatsConfig | None = None
) -> InfraAuth:
    """Dynamo's login to an external etcd / NATS: its variables when any is set, else the
    config's keys."""
    env, config = _from_env(environ), _from_config(etcd, nats)
    return InfraAuth(
        env.etcd if _given(env.etcd) else config.etcd,
        env.nats if _given(env.nats) else config.nats,
    )


_ACTIVE: InfraAuth | None = None


def activate(auth: InfraAuth) -> None:
    """The credentials dynlaunch's own etcd and NATS clients use from now on."""
    global _ACTIVE
    _ACTIVE = auth


def active() -> InfraAuth:
    return _ACTIVE if _ACTIVE is not None else _from_env(os.environ)


# -- generated, per state dir -----------------------------------------------------------------


def generate() -> InfraAuth:
    return InfraAuth(
        EtcdAuth(username=ETCD_USER, password=secrets.token_urlsafe(24)),
        NatsAuth(username=NATS_USER, password=secrets.token_urlsafe(24)),
    )


def path(state_dir: str) -> Path:
    return Path(state_dir) / FILE


def to_text(auth: InfraAuth) -> str:
    data = {
        "etcd": {"username": auth.etcd.username, "password": auth.etcd.password},
        "nats": {"username": auth.nats.username, "password": auth.nats.password},
    }
    return json.dumps(data, indent=2) + "\n"


def load(state_dir: str) -> InfraAuth | None:
    """The state dir's generated credentials; None when there are none (or they are unreadable:
    new ones are made and written over them)."""
    try:
        data = json.loads(path(state_dir).read_text(encoding="utf-8"))
        etcd, nats = data["etcd"], data["nats"]
        auth = InfraAuth(
            EtcdAuth(username=str(etcd["username"]), password=str(etcd["password"])),
            NatsAuth(username=str(nats["username"]), password=str(nats["password"])),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return auth if auth.etcd.password and auth.nats.password else None


def load_or_generate(state_dir: str) -> InfraAuth:
    return load(state_dir) or generate()


def write_private(file: Path, text: str) -> None:
    """Write ``text`` into ``file`` with mode 0600 from the first byte on (its directory, when
    made here, 0700)."""
    file.parent.mkdir(mode=0o700, exist_ok=True)
    tmp = file.with_name(file.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    tmp.replace(file)


# -- what Dynamo's processes get ----------------------------------------------------------------


def child_env(
    auth: InfraAuth, nats_url: str | None = None, nats_tls_env: bool = False
) -> tuple[dict[str, str], list[str]]:
    """The variables every Dynamo process needs to reach etcd and NATS, and one warning for each
    setting Dynamo does not honour (dynlaunch's own clients still use it). ``nats_tls_env``: this
    Dynamo speaks TLS to NATS (1.6+, launcher.compat); ``nats_url``: the external NATS, given to
    it as tls:// when it does."""
    env: dict[str, str] = {}
    warnings: list[str] = []
    e, n = auth.etcd, auth.nats
    if e.username and e.password:
        env |= {"ETCD_AUTH_USERNAME": e.username, "ETCD_AUTH_PASSWORD": e.password}
        if e.tls:
            warnings.append(
                "Dynamo's etcd client ignores ETCD_AUTH_CA/CLIENT_CERT/CLIENT_KEY when a username "
                "is set: its processes log in with the password over the endpoint's scheme only "
                "(give Dynamo a client certificate whose common name is its etcd user instead)"
            )
    elif e.ca and e.cert and e.key:
        env |= {
            "ETCD_AUTH_CA": pem(e.ca, "ETCD_AUTH_CA (infra.etcd.ca)") or "",
            "ETCD_AUTH_CLIENT_CERT": pem(e.cert, "ETCD_AUTH_CLIENT_CERT") or "",
            "ETCD_AUTH_CLIENT_KEY": pem(e.key, "ETCD_AUTH_CLIENT_KEY") or "",
        }
    elif e.tls:
        warnings.append(
            "Dynamo's etcd client uses TLS only with all three of ETCD_AUTH_CA, "
            "ETCD_AUTH_CLIENT_CERT and ETCD_AUTH_CLIENT_KEY; with fewer it connects without them"
        )
    for attr in ("username", "password", "token", "nkey", "creds_file"):
        value = getattr(n, attr)
        if value:
            env[NATS_VARS[attr]] = nkey_seed(value) if attr == "nkey" else value
    if n.tls and nats_tls_env:
        env |= nats_tls(n, nats_url)
    elif n.tls:
        warnings.append(
            "Dynamo (1.4.2 and 0.5.0, measured) cannot connect to NATS over TLS: its processes "
            "connect without TLS, so that NATS must also accept plain connections; dynlaunch's "
            "own NATS client uses TLS"
        )
    return env, warnings


NATS_TLS_ENV = {"ca": "NATS_TLS_CA_CERT_PATH", "cert": "NATS_TLS_CLIENT_CERT_PATH",
                "key": "NATS_TLS_CLIENT_KEY_PATH"}  # fmt: skip


def nats_tls(nats: NatsAuth, url: str | None) -> dict[str, str]:
    """Dynamo 1.6's NATS TLS (measured on 1.6.1): the files as paths (it reads the variables as
    paths: PEM text fails, "reading CA cert: ..."), and a tls:// NATS_SERVER, which it requires
    once any of them is set. Only paths are given here (never a key's content)."""
    env: dict[str, str] = {}
    for attr, var in NATS_TLS_ENV.items():
        value = getattr(nats, attr)
        if not value:
            continue
        if value.lstrip().startswith(PEM):
            raise ConfigError(
                f"{NATS_VARS[attr]} (infra.nats.{NATS_KEYS[attr]}): Dynamo reads {var} as a file "
                "path, not PEM text: give the path of a file (mode 0600 for a key)"
            )
        env[var] = os.path.abspath(value)
    if url:
        env["NATS_SERVER"] = ",".join(_tls_scheme(u.strip()) for u in url.split(",") if u.strip())
    return env


def _tls_scheme(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep:
        return f"tls://{url}"
    return f"tls://{rest}" if scheme == "nats" else url


def for_run(
    environ: Mapping[str, str],
    etcd: EtcdConfig,
    nats: NatsConfig,
    *,
    state_dir: str,
    embedded_etcd: bool,
    embedded_nats: bool,
    generate_for_embedded: bool,
    tls: TlsMaterial | None = None,
    nats_url: str | None = None,
    nats_tls_env: bool = False,
) -> tuple[InfraAuth, dict[str, str], bool, list[str]]:
    """The run's credentials: the state dir's generated ones for embedded etcd/NATS (made now if
    there are none; the shell writes them), the user's for external ones. Also what Dynamo's
    processes get of them, whether generated ones are in use, and warnings. ``tls``: the
    certificates of `infra.tls` (launcher.tlsfiles) for the embedded etcd, and for the embedded
    NATS where Dynamo speaks TLS to NATS (``nats_tls_env``, launcher.compat: 1.6+).
    ``nats_url``: the external NATS (given to Dynamo as tls:// when it has TLS settings)."""
    given, dynamo = external(environ, etcd, nats), for_dynamo(environ, etcd, nats)
    made = (
        load_or_generate(state_dir)
        if generate_for_embedded and (embedded_etcd or embedded_nats)
        else None
    )
    auth = InfraAuth(
        (made.etcd if made else EtcdAuth()) if embedded_etcd else given.etcd,
        (made.nats if made else NatsAuth()) if embedded_nats else given.nats,
    )
    dynamo_etcd = auth.etcd if embedded_etcd else dynamo.etcd
    if tls is not None and embedded_etcd:
        auth, dynamo_etcd = _with_tls(auth, tls, state_dir)
    dynamo_nats = auth.nats if embedded_nats else dynamo.nats
    if tls is not None and embedded_nats and nats_tls_env:
        own_nats, dynamo_nats = nats_over_tls(state_dir, auth.nats)
        auth = InfraAuth(auth.etcd, own_nats)
    dynamo_auth = InfraAuth(dynamo_etcd, dynamo_nats)
    env, warnings = child_env(dynamo_auth, None if embedded_nats else nats_url, nats_tls_env)
    return auth, env, made is not None, warnings


def _with_tls(auth: InfraAuth, tls: TlsMaterial, state_dir: str) -> tuple[InfraAuth, EtcdAuth]:
    """dynlaunch's own etcd login over TLS (the certificate without a common name, by path, and
    root's password if any) and Dynamo's (PEM text of the certificate whose common name is its
    user, and no username: Dynamo uses TLS only so)."""
    dynamo = EtcdAuth(ca=tls.ca, cert=tls.dynamo_cert, key=tls.dynamo_key)
    return InfraAuth(_client_tls(state_dir, auth.etcd), auth.nats), dynamo


def nats_over_tls(state_dir: str, login: NatsAuth) -> tuple[NatsAuth, NatsAuth]:
    """The embedded NATS over TLS (`infra.tls`, Dynamo 1.6+): dynlaunch's own login (the state
    dir's CA and its client certificate) and Dynamo's (the CA and Dynamo's certificate), both by
    path (Dynamo reads NATS_TLS_*_PATH as files), with ``login``'s user and password."""
    from launcher.tlsfiles import paths

    where = paths(state_dir)
    return (
        NatsAuth(login.username, login.password, ca=where.ca, cert=where.client_cert,
                 key=where.client_key),
        NatsAuth(login.username, login.password, ca=where.ca, cert=where.dynamo_cert,
                 key=where.dynamo_key),
    )  # fmt: skip


def tls_warnings(
    tls: bool, embedded_etcd: bool, embedded_nats: bool, auth: bool, version: str, nats_tls: bool
) -> list[str]:
    """`infra.tls` never falls back silently: one line for an embedded NATS that stays without
    TLS (Dynamo ``version`` cannot speak it: ``nats_tls`` false), one for an external etcd it
    does not apply to. ``auth``: the embedded NATS has a login."""
    if not tls:
        return []
    warnings = []
    if embedded_nats and not nats_tls:
        login = "user and password" if auth else "no login: infra.auth is false"
        warnings.append(
            f"infra.tls: the embedded NATS stays without TLS (loopback only, {login}): "
            f"Dynamo {version} cannot connect to NATS over TLS"
        )
    if not embedded_etcd:
        warnings.append(
            "infra.tls applies to the embedded etcd and NATS only: the external etcd's TLS is set "
            "by its https:// endpoint and ETCD_AUTH_CA/CLIENT_CERT/CLIENT_KEY (infra.etcd.*)"
        )
    return warnings


def for_run_record(
    info: Mapping[str, Any], etcd: str | None, nats: str | None, environ: Mapping[str, str]
) -> InfraAuth:
    """What `status` and `clear-namespace` log in with: for the etcd / NATS of a running `up`
    (its launcher.json ``info``) that generated credentials, those from its state dir; for any
    other endpoint, the environment's (ETCD_AUTH_*, NATS_AUTH_*, NATS_TLS_*)."""
    given = _from_env(environ)
    state_dir = info.get("state_dir")
    made = load(str(state_dir)) if state_dir else None
    generated = info.get("generated_credentials") or []
    own_etcd = bool(etcd) and etcd == info.get("etcd")
    auth = given
    if made is not None:
        auth = InfraAuth(
            made.etcd if "etcd" in generated and own_etcd else given.etcd,
            made.nats if "nats" in generated and nats and nats == info.get("nats") else given.nats,
        )
    if state_dir and "etcd" in generated and own_etcd and str(etcd).startswith("https://"):
        auth = InfraAuth(_run_tls(str(state_dir), auth.etcd), auth.nats)
    if state_dir and nats and nats == info.get("nats") and str(nats).startswith("tls://"):
        auth = InfraAuth(auth.etcd, _run_nats_tls(str(state_dir), auth.nats))
    return auth


def _run_nats_tls(state_dir: str, login: NatsAuth) -> NatsAuth:
    """A running `up`'s embedded NATS over TLS (`infra.tls` on 1.6+), if its state dir has the
    files."""
    from launcher.tlsfiles import paths

    exists = os.path.exists(paths(state_dir).client_cert)
    return nats_over_tls(state_dir, login)[0] if exists else login


def _run_tls(state_dir: str, login: EtcdAuth) -> EtcdAuth:
    """A running `up`'s embedded etcd over TLS (`infra.tls`), if its state dir has the files."""
    from launcher.tlsfiles import paths

    return _client_tls(state_dir, login) if os.path.exists(paths(state_dir).client_cert) else login


def _client_tls(state_dir: str, login: EtcdAuth) -> EtcdAuth:
    """dynlaunch's own login to the embedded etcd over TLS: the state dir's CA and its client
    certificate (no common name), with ``login``'s user and password."""
    from launcher.tlsfiles import paths

    where = paths(state_dir)
    return EtcdAuth(login.username, login.password, where.ca, where.client_cert, where.client_key)
