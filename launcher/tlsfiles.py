"""`infra.tls`: a private CA and certificates for the embedded etcd (and, on Dynamo 1.6+, the
embedded NATS), made with `cryptography` once per state dir and kept under STATE/tls/ (every file
0600; the next `up` of the state dir reuses them). The CA's key is not kept: nothing can issue
another certificate this etcd or NATS trusts. The embedded NATS serves with ``etcd``'s
certificate and wants a client certificate of this CA: Dynamo's (by path) and dynlaunch's
``client``, with the generated user and password.

Three certificates, each for 127.0.0.1 and localhost, EC P-256, 825 days:

- ``etcd``: etcd's server certificate (its JSON gateway also dials etcd's gRPC with it, so it is a
  client certificate too). No common name.
- ``dynamo``: Dynamo's processes' login, common name ``root``: Dynamo 1.4.2 and 0.5.0 use TLS to
  etcd only with ETCD_AUTH_CA/CLIENT_CERT/CLIENT_KEY (PEM text) and no username, and etcd takes
  the common name as the user.
- ``client``: dynlaunch's own clients (lock, fencing, clear, status, down), no common name: once
  auth is on, etcd 3.4's JSON gateway refuses a client certificate with one; they log in with
  root's password as well.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DIR = "tls"  # under the state dir, 0700
DAYS = 825
RENEW_DAYS = 30  # a certificate that expires sooner is made again (with all the others)
HOSTS = ("127.0.0.1", "localhost")
DYNAMO_USER = "root"  # the common name of Dynamo's certificate: its etcd user
STEMS = ("ca", "etcd", "dynamo", "client")


@dataclass(frozen=True)
class TlsPaths:
    ca: str
    server_cert: str
    server_key: str
    dynamo_cert: str
    dynamo_key: str
    client_cert: str
    client_key: str


@dataclass(frozen=True)
class TlsMaterial:
    """PEM text of the CA certificate and of each certificate and its key."""

    ca: str
    server_cert: str
    server_key: str = field(repr=False)
    dynamo_cert: str = ""
    dynamo_key: str = field(default="", repr=False)
    client_cert: str = ""
    client_key: str = field(default="", repr=False)


def paths(state_dir: str) -> TlsPaths:
    d = Path(state_dir) / DIR
    return TlsPaths(
        ca=str(d / "ca.pem"),
        server_cert=str(d / "etcd.pem"),
        server_key=str(d / "etcd.key"),
        dynamo_cert=str(d / "dynamo.pem"),
        dynamo_key=str(d / "dynamo.key"),
        client_cert=str(d / "client.pem"),
        client_key=str(d / "client.key"),
    )


def files(state_dir: str, material: TlsMaterial) -> tuple[tuple[str, str], ...]:
    """(path, PEM text) of every file, as the shell writes them (0600)."""
    where = paths(state_dir)
    return tuple((getattr(where, attr), getattr(material, attr)) for attr in vars(where))


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _usage(ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True, key_cert_sign=ca, crl_sign=ca, content_commitment=False,
        key_encipherment=False, data_encipherment=False, key_agreement=False,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip


def _builder(subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey,
             now: datetime.datetime) -> x509.CertificateBuilder:  # fmt: skip
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=DAYS))
    )


def _alt_names() -> x509.SubjectAlternativeName:
    alt: list[x509.GeneralName] = []
    for host in HOSTS:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(alt)


def generate(now: datetime.datetime | None = None) -> TlsMaterial:
    """A new CA (its key is dropped once the three certificates are signed) and certificates."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dynlaunch embedded etcd CA")])
    ca = (
        _builder(ca_name, ca_name, ca_key, now)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_usage(ca=True), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    issued: dict[str, tuple[str, str]] = {}
    for stem, user in (("etcd", None), ("dynamo", DYNAMO_USER), ("client", None)):
        key = ec.generate_private_key(ec.SECP256R1())
        names = [x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, f"dynlaunch {stem}")]
        names += [x509.NameAttribute(NameOID.COMMON_NAME, user)] if user else []
        eku = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
        cert = (
            _builder(x509.Name(names), ca_name, key, now)
            .add_extension(_alt_names(), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_usage(ca=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(eku), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        issued[stem] = (_cert_pem(cert), _key_pem(key))
    return TlsMaterial(
        ca=_cert_pem(ca),
        server_cert=issued["etcd"][0],
        server_key=issued["etcd"][1],
        dynamo_cert=issued["dynamo"][0],
        dynamo_key=issued["dynamo"][1],
        client_cert=issued["client"][0],
        client_key=issued["client"][1],
    )


def load(state_dir: str, now: datetime.datetime | None = None) -> TlsMaterial | None:
    """The state dir's certificates; None when one is missing, unreadable or expires within
    RENEW_DAYS (then new ones are made and written over them)."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    where = paths(state_dir)
    try:
        text = {
            attr: Path(getattr(where, attr)).read_text(encoding="utf-8") for attr in vars(where)
        }
        for attr in ("ca", "server_cert", "dynamo_cert", "client_cert"):
            cert = x509.load_pem_x509_certificate(text[attr].encode())
            if cert.not_valid_after_utc < now + datetime.timedelta(days=RENEW_DAYS):
                return None
        for attr in ("server_key", "dynamo_key", "client_key"):
            serialization.load_pem_private_key(text[attr].encode(), None)
    except (OSError, ValueError, TypeError):
        return None
    return TlsMaterial(**text)


def load_or_generate(state_dir: str) -> TlsMaterial:
    return load(state_dir) or generate()


def fingerprint(cert_pem: str) -> str:
    """SHA-256 of the certificate, hex (what `status` may show; no key material)."""
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    return cert.fingerprint(hashes.SHA256()).hex()
