"""A private CA and certificates for TLS tests on loopback, made with `cryptography`.

One CA per test; each certificate names 127.0.0.1 and localhost and serves as both server
and client certificate (etcd's and NATS's client-certificate checks accept it). No certificate
but the CA's has a common name: etcd 3.4 refuses JSON-gateway requests (HTTP 400 "CommonName of
client sending a request against gateway will be ignored") from a client certificate with one
once auth is on, and would take it as the user name on gRPC. Keys are EC P-256,
written 0600; certificates live 825 days. Nothing here is secret but the keys.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DAYS = 825
HOSTS = ("127.0.0.1", "localhost")


@dataclass(frozen=True)
class CertFiles:
    cert: str
    key: str


@dataclass(frozen=True)
class Authority:
    cert: str  # the CA certificate clients trust
    key: str


def _write_private(path: Path, data: bytes) -> None:
    """Created 0600 from the start (no window where another user could open it)."""
    tmp = path.with_name(path.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    tmp.replace(path)


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _subject(stem: str, user: str | None) -> x509.Name:
    unit = [x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, stem)]
    return x509.Name(unit + ([x509.NameAttribute(NameOID.COMMON_NAME, user)] if user else []))


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_ca(directory: Path, common: str = "dynlaunch private CA") -> Authority:
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common))
        .issuer_name(_name(common))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    ca = Authority(str(directory / "ca.pem"), str(directory / "ca.key"))
    _write_private(Path(ca.key), _key_pem(key))
    Path(ca.cert).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return ca


def issue(
    ca: Authority,
    directory: Path,
    stem: str,
    hosts: tuple[str, ...] = HOSTS,
    user: str | None = None,
) -> CertFiles:
    """A certificate for ``hosts`` signed by ``ca``, good for a server and for a client.
    ``user``: its common name, which etcd takes as the user of a gRPC client without a token."""
    ca_key = serialization.load_pem_private_key(Path(ca.key).read_bytes(), None)
    ca_cert = x509.load_pem_x509_certificate(Path(ca.cert).read_bytes())
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    alt: list[x509.GeneralName] = []
    for host in hosts:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(_subject(stem, user))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=DAYS))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = CertFiles(str(directory / f"{stem}.pem"), str(directory / f"{stem}.key"))
    _write_private(Path(files.key), _key_pem(key))
    Path(files.cert).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return files
