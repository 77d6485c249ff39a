"""The control plane's certificate files: checking an operator's, and making a private CA's.

Checking (:func:`check_server_files`) runs before the server listens, so that a wrong path, a
file that is not PEM, or a key that belongs to another certificate is one clear error naming
the file (``InvalidInput``: the CLI's exit code 2), not an ``ssl.SSLError: [SSL] PEM lib`` from
deep inside uvicorn after the store was opened.

Making (:func:`make_ca`, :func:`issue_server_cert`) is for a fabric with no public name (a lab,
a test, an operator without an ACME setup): a CA whose certificate the clients are given with
``--ca``, and a server certificate for the names and addresses the clients dial. Keys are
ECDSA P-256 (small, fast handshakes, accepted by every TLS stack the clients use); private keys
are written with mode 0600.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sixpn.model.errors import InvalidInput

log = logging.getLogger("sixpn.tls")

PrivateKey = ec.EllipticCurvePrivateKey


# -- checking an operator's files ----------------------------------------------------------------


def _read(path: Path, what: str, option: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"{option} {path}: cannot read the {what}: {exc}", field=option) from exc


def check_server_files(cert: Path, key: Path, *, now: datetime.datetime | None = None) -> None:
    """Raise ``InvalidInput`` naming the file unless ``cert`` holds a PEM certificate (chain)
    and ``key`` the unencrypted PEM private key of its first certificate; log a warning when
    that certificate is expired or not yet valid (the operator may be about to replace it)."""
    cert_pem = _read(cert, "certificate", "--tls-cert")
    key_pem = _read(key, "private key", "--tls-key")
    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
    except ValueError as exc:
        raise InvalidInput(
            f"--tls-cert {cert}: not a PEM certificate ({exc})", field="--tls-cert"
        ) from exc
    try:
        private = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:  # TypeError: an encrypted key
        raise InvalidInput(
            f"--tls-key {key}: not an unencrypted PEM private key ({exc})", field="--tls-key"
        ) from exc
    leaf = chain[0]
    mine = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    theirs = leaf.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if mine != theirs:
        raise InvalidInput(
            f"--tls-key {key} is not the private key of the certificate in --tls-cert {cert}",
            field="--tls-key",
        )
    try:  # the last word: what uvicorn will do with the same files
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        raise InvalidInput(
            f"--tls-cert {cert} / --tls-key {key}: rejected by OpenSSL: {exc}", field="--tls-cert"
        ) from exc
    now = now or datetime.datetime.now(datetime.UTC)
    if not leaf.not_valid_before_utc <= now <= leaf.not_valid_after_utc:
        log.warning(
            "--tls-cert %s is valid only from %s to %s: clients will refuse it",
            cert,
            leaf.not_valid_before_utc.isoformat(),
            leaf.not_valid_after_utc.isoformat(),
        )


# -- making a private CA and a server certificate ----------------------------------------------


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key (the key stays out of ``repr``)."""

    cert: x509.Certificate
    key: PrivateKey

    def __repr__(self) -> str:
        return f"Issued(subject={self.cert.subject.rfc4514_string()!r}, key=<redacted>)"

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def write(self, cert: Path, key: Path) -> None:
        """The certificate (0644) and the key (0600, never readable by others, not even briefly)."""
        cert.write_bytes(self.cert_pem())
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(self.key_pem())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_ca(common_name: str = "sixpn private CA", *, days: int = 3650) -> Issued:
    """A self-signed CA certificate that may sign server certificates (and no further CAs)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(cert, key)


def issue_server_cert(ca: Issued, names: Iterable[str], *, days: int = 825) -> Issued:
    """A server certificate signed by ``ca`` for ``names``: DNS names and IP addresses alike
    (each goes into the subjectAltName as what it is; clients check only that)."""
    alt: list[x509.GeneralName] = []
    for name in names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt.append(x509.DNSName(name))
    if not alt:
        raise InvalidInput("a server certificate needs a name or an address", field="names")
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(str(alt[0].value)))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
        .sign(ca.key, hashes.SHA256())
    )
    return Issued(cert, key)
