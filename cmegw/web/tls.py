# -*- test-case-name: tests.test_web_tls -*-
"""
Certificates for HTTPS, with `cryptography`.

Public API:

``CertificateError(ValueError)`` (from `cmegw.certificates`): an uploaded or
configured certificate/key that cannot be used; the message says why, for the
page.

``CertificateInfo`` (from `cmegw.certificates`): frozen: ``subject``,
``issuer``, ``not_before``, ``not_after`` (aware datetimes), ``self_signed``,
``fingerprint`` (SHA-256, hex with colons), ``path``, ``problem`` (why the
configured certificate is not used, or None).

``validate_pair(cert_pem, key_pem, now=None, cert_path="", key_path="") ->
(certificate, key, chain)``: PEM, the key matches the first certificate, valid
now, and OpenSSL can serve the pair; raises ``CertificateError`` (naming the
files when their paths are given).

``generate_self_signed(hostname=None, now=None) -> (cert_pem, key_pem)``.

``TlsManager(config_dir, settings, now=None)``: the certificate in use and
the ``IOpenSSLServerConnectionCreator`` HTTPS listens with (the manager
itself): each new connection gets the current certificate and TLS versions,
so a change applies without a restart.  ``info``, ``reload()``,
``install(cert_pem, key_pem) -> (cert_name, key_name)`` (validated, written
beside the configuration file, key mode 0600; names relative to that folder),
``remove_unused()``.  When no certificate is configured, a self-signed one is
made on first start and kept beside the configuration file
(``cmegw-selfsigned.crt`` / ``cmegw-selfsigned.key``); a configured one that
does not load is reported in ``info.problem`` and the self-signed one serves.

Only TLS 1.2 and TLS 1.3 are ever offered, as ``http.tls_versions`` says.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
import socket
from pathlib import Path
from typing import Any, Callable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import SSL
from twisted.internet import ssl
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.logger import Logger
from zope.interface import implementer

from cmegw.certificates import (
    CertificateError,
    CertificateInfo,
    PrivateKey,
    check_in_time,
    check_key_matches,
    parse_certificates,
    parse_private_key,
    read_pem_file,
)
from cmegw.config.model import HttpConfig
from cmegw.config.store import atomic_write

log = Logger(namespace="cmegw.web.tls")

SELF_SIGNED_CERT = "cmegw-selfsigned.crt"
SELF_SIGNED_KEY = "cmegw-selfsigned.key"
#: Uploaded pairs are named by fingerprint, so a new pair never half-replaces the old one.
UPLOADED_PREFIX = "cmegw-https-"
SELF_SIGNED_DAYS = 10 * 365

_VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}

def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def validate_pair(cert_pem: bytes, key_pem: bytes, now: datetime.datetime | None = None,
                  cert_path: str = "", key_path: str = "",
                  ) -> tuple[x509.Certificate, PrivateKey, list[x509.Certificate]]:
    """The certificate, its key and the rest of the chain, checked; `CertificateError` says what is wrong."""
    now = now or _utcnow()
    certificates = parse_certificates(cert_pem, "certificate", cert_path)
    key = parse_private_key(key_pem, "private key", key_path)
    certificate, chain = certificates[0], certificates[1:]
    check_key_matches(certificate, key, "private key", key_path, "certificate", cert_path)
    check_in_time(certificate, now, "certificate", cert_path)
    try:
        certificate_options(certificate, key, chain, ("TLSv1.2", "TLSv1.3")).getContext()
    except (SSL.Error, ValueError, TypeError) as e:
        raise CertificateError(f"OpenSSL cannot serve this pair: {e}") from None
    return certificate, key, chain


def generate_self_signed(hostname: str | None = None,
                         now: datetime.datetime | None = None) -> tuple[bytes, bytes]:
    """A new self-signed certificate (EC P-256) for this host and the loopback names, with its key."""
    now = now or _utcnow()
    hostname = hostname or socket.gethostname() or "cmegw"
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname[:64]),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cmegw")])
    names: list[x509.GeneralName] = [x509.DNSName(n) for n in dict.fromkeys((hostname, "localhost"))]
    names += [x509.IPAddress(ipaddress.ip_address(a)) for a in ("127.0.0.1", "::1")]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(int.from_bytes(secrets.token_bytes(16), "big") >> 1)
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=SELF_SIGNED_DAYS))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return certificate.public_bytes(serialization.Encoding.PEM), key_pem


def certificate_options(certificate: x509.Certificate, key: PrivateKey, chain: list[x509.Certificate],
                        versions: tuple[str, ...]) -> ssl.CertificateOptions:
    """Options offering exactly the enabled versions among TLS 1.2 and 1.3 (never older ones)."""
    enabled = sorted(_VERSIONS[v] for v in versions if v in _VERSIONS)
    if not enabled:
        raise ValueError("no TLS version is enabled")
    maximum = None if enabled[-1] == ssl.TLSVersion.TLSv1_3 else enabled[-1]
    return ssl.CertificateOptions(privateKey=key, certificate=certificate, extraCertChain=chain or None,
                                  raiseMinimumTo=enabled[0], lowerMaximumSecurityTo=maximum)


def write_pair(directory: Path, cert_name: str, key_name: str, cert_pem: bytes, key_pem: bytes) -> None:
    """Both files written atomically; the key (and the certificate) readable by the owner only."""
    atomic_write(directory / key_name, key_pem.decode("ascii"))
    atomic_write(directory / cert_name, cert_pem.decode("ascii"))
    os.chmod(directory / key_name, 0o600)


@implementer(IOpenSSLServerConnectionCreator)
class TlsManager:
    """The certificate HTTPS serves, reloaded when the configuration changes."""

    def __init__(self, config_dir: Path, settings: Callable[[], HttpConfig],
                 now: Callable[[], datetime.datetime] | None = None) -> None:
        self.config_dir = Path(config_dir)
        self.settings = settings
        self.now = now or _utcnow
        self.info: CertificateInfo | None = None
        #: The certificate and key files being served (the configured pair, or the self-signed one).
        self.files: tuple[Path, Path] | None = None
        self._options: ssl.CertificateOptions | None = None

    def _path(self, name: str) -> Path:
        return self.config_dir / name  # an absolute name stays as it is

    def reload(self) -> CertificateInfo:
        """Load the configured certificate (or the self-signed one) with the enabled TLS versions."""
        http = self.settings()
        problem = None
        loaded = None
        if http.certificate or http.private_key:
            try:
                loaded = self._load(http.certificate, http.private_key)
                self.files = self._path(http.certificate), self._path(http.private_key)
            except CertificateError as e:
                problem = f"{http.certificate or '(no certificate)'}: {e}; the self-signed certificate serves"
                log.error("HTTPS certificate not used: {problem}", problem=problem)
        if loaded is None:
            loaded = self._self_signed()
            self.files = self._path(SELF_SIGNED_CERT), self._path(SELF_SIGNED_KEY)
        certificate, key, chain, path = loaded
        self._options = certificate_options(certificate, key, chain, http.tls_versions) \
            if http.tls_versions else None
        self.info = CertificateInfo.of(certificate, path, problem)
        return self.info

    def _load(self, cert_name: str, key_name: str) -> tuple[x509.Certificate, PrivateKey, list[x509.Certificate], str]:
        if not cert_name or not key_name:
            raise CertificateError("both the certificate and the private key must be configured")
        cert_path, key_path = str(self._path(cert_name)), str(self._path(key_name))
        cert_pem = read_pem_file(cert_path, "certificate")
        key_pem = read_pem_file(key_path, "private key")
        certificate, key, chain = validate_pair(cert_pem, key_pem, self.now(), cert_path, key_path)
        return certificate, key, chain, cert_path

    def _self_signed(self) -> tuple[x509.Certificate, PrivateKey, list[x509.Certificate], str]:
        try:
            return self._load(SELF_SIGNED_CERT, SELF_SIGNED_KEY)
        except CertificateError as e:
            if (self._path(SELF_SIGNED_CERT)).exists():
                log.warn("Replacing the self-signed certificate: {e}", e=e)
        cert_pem, key_pem = generate_self_signed(now=self.now())
        write_pair(self.config_dir, SELF_SIGNED_CERT, SELF_SIGNED_KEY, cert_pem, key_pem)
        log.info("Made a self-signed HTTPS certificate: {path}", path=str(self._path(SELF_SIGNED_CERT)))
        return self._load(SELF_SIGNED_CERT, SELF_SIGNED_KEY)

    def install(self, cert_pem: bytes, key_pem: bytes) -> tuple[str, str]:
        """Validate and write an uploaded pair; the names to configure (``http.certificate``, ``http.private_key``)."""
        certificate, _key, _chain = validate_pair(cert_pem, key_pem, self.now())
        stem = UPLOADED_PREFIX + certificate.fingerprint(hashes.SHA256()).hex()[:16]
        cert_name, key_name = stem + ".crt", stem + ".key"
        write_pair(self.config_dir, cert_name, key_name, cert_pem, key_pem)
        return cert_name, key_name

    def remove_unused(self) -> None:
        """Delete uploaded pairs the configuration no longer names."""
        http = self.settings()
        keep = {self._path(http.certificate), self._path(http.private_key)}
        for path in self.config_dir.glob(UPLOADED_PREFIX + "*"):
            if path not in keep and path.suffix in (".crt", ".key"):
                path.unlink(missing_ok=True)

    # -- IOpenSSLServerConnectionCreator ------------------------------------------------

    def serverConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        if self.info is None:
            self.reload()
        if self._options is None:
            raise SSL.Error("no TLS version is enabled")
        return self._options.serverConnectionForTLS(tlsProtocol)
