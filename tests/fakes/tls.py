"""Throwaway keys and certificates for the fake provider servers, made with ``cryptography``.

* :func:`make_pki`: a CA and a server certificate for ``127.0.0.1`` / ``localhost``, written as
  PEM files, with the SSL contexts a fake server and a client use (the client trusts only the CA,
  and checks the host name, as a real client does).
* :func:`make_apns_key`: an ES256 (P-256) signing key in Apple's ``.p8`` form (unencrypted
  PKCS#8 PEM), as downloaded from the developer portal for APNs token authentication.
* :func:`make_service_account`: an RSA key and the service-account JSON Google issues
  (``client_email``, ``private_key``, ``token_uri``, ``project_id``), for FCM's OAuth flow.

Everything is generated per test into a temporary directory; nothing here is secret.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import secrets
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "ApnsKey",
    "Pki",
    "ServiceAccount",
    "make_apns_key",
    "make_pki",
    "make_service_account",
]


@dataclass(frozen=True)
class Pki:
    ca_file: Path
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_file, self.key_file)
        # Offered, never required: aioapns sends no ALPN and starts HTTP/2 right after TLS.
        context.set_alpn_protocols(["h2", "http/1.1"])
        return context

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))


@dataclass(frozen=True)
class ApnsKey:
    path: Path
    pem: str
    key_id: str
    team_id: str
    public_key: ec.EllipticCurvePublicKey


@dataclass(frozen=True)
class ServiceAccount:
    path: Path
    info: dict[str, Any]
    public_key: rsa.RSAPublicKey

    @property
    def json(self) -> str:
        return json.dumps(self.info)


def _pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_pki(directory: Path) -> Pki:
    """A CA, and a server certificate it signs for 127.0.0.1 and localhost, valid for a day."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("Switchboard test CA")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
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
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    pki = Pki(directory / "ca.pem", directory / "server.pem", directory / "server-key.pem")
    pki.ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    pki.cert_file.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    pki.key_file.write_bytes(_pem(server_key))
    return pki


def make_apns_key(
    directory: Path, *, key_id: str = "ABC123DEFG", team_id: str = "TEAM123456"
) -> ApnsKey:
    """An APNs auth key, written as ``AuthKey_<key_id>.p8`` like Apple's download."""
    key = ec.generate_private_key(ec.SECP256R1())
    pem = _pem(key)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"AuthKey_{key_id}.p8"
    path.write_bytes(pem)
    return ApnsKey(path, pem.decode(), key_id, team_id, key.public_key())


def make_service_account(
    directory: Path, *, token_uri: str, project_id: str = "switchboard-test"
) -> ServiceAccount:
    """A Google service-account key file whose ``token_uri`` points at ``token_uri``."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    info: dict[str, Any] = {
        "type": "service_account",
        "project_id": project_id,
        "private_key_id": secrets.token_hex(20),
        "private_key": _pem(key).decode(),
        "client_email": f"fcm-sender@{project_id}.iam.gserviceaccount.com",
        "client_id": "100000000000000000000",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
    }
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "service-account.json"
    path.write_text(json.dumps(info))
    return ServiceAccount(path, info, key.public_key())
