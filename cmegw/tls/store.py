# -*- test-case-name: tests.test_tls_store, tests.test_web_pages_tunnel_tls -*-
"""
The gateway's certificate store: the HTTPS pair (configured, uploaded, or
self-signed) and the TLS files uploaded for the tunnels, with `cryptography`.

HTTPS
    ``validate_pair(cert_pem, key_pem, now=None, cert_path="", key_path="") ->
    (certificate, key, chain)``: PEM, the key matches the first certificate,
    valid now, and OpenSSL can serve the pair; raises ``CertificateError``
    (naming the files when their paths are given).

    ``generate_self_signed(hostname=None, now=None) -> (cert_pem, key_pem)``.

    ``TlsManager(config_dir, settings, now=None)``: the certificate in use and
    the ``IOpenSSLServerConnectionCreator`` HTTPS listens with (the manager
    itself): each new connection gets the current certificate and TLS
    versions, so a change applies without a restart.  ``info``, ``reload()``,
    ``install(cert_pem, key_pem) -> (cert_name, key_name)`` (validated,
    written beside the configuration file, key mode 0600; names relative to
    that folder), ``remove_unused()``.  When no certificate is configured, a
    self-signed one is made on first start and kept beside the configuration
    file (``cmegw-selfsigned.crt`` / ``cmegw-selfsigned.key``); a configured
    one that does not load is reported in ``info.problem`` and the
    self-signed one serves.  Only the versions of ``http.tls_versions`` are
    offered, among TLS 1.2 and 1.3 (`cmegw.tls.contexts`).

Tunnel TLS files
    The files the tunnel settings name by path: the CA bundle a head-end's
    certificate must chain to (``connect_tls_ca``), the client certificate
    and key for head-ends that want mutual TLS (``connect_tls_certificate``,
    ``connect_tls_key``), and the CA whose certificates TLS accept mode
    requires of its clients (``tls_client_ca``).

    `install_tunnel_files` checks an upload (`check_upload`: PEM, every
    certificate valid now, the key matching its certificate), writes the
    files beside the configuration file (owner-only, mode 0600; named by
    content, so a new file never half-replaces one in use), and sets the
    paths through the configuration store, so the tunnel takes them as if
    they had been typed: at once.  Uploaded files no setting names any more
    are deleted.  All or nothing.  `files_view` says what each setting's file
    holds.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import secrets
import socket
from pathlib import Path
from typing import Any, Callable, Mapping

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import SSL
from twisted.internet import ssl
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.logger import Logger
from zope.interface import implementer

from cmegw.config.model import Config, HttpConfig
from cmegw.config.settings import apply_settings
from cmegw.config.store import ConfigStore, atomic_write
from cmegw.tls.certificates import (
    CertificateError,
    CertificateInfo,
    PrivateKey,
    UnreadableFileError,
    check_bundle_in_time,
    check_in_time,
    check_key_matches,
    parse_certificates,
    parse_private_key,
    read_certificates,
    read_pem_file,
    utcnow,
    validity_summary,
)
from cmegw.tls.contexts import certificate_options

log = Logger(namespace="cmegw.web.tls")
#: The tunnel files were logged under the web's namespace, where the upload page was.
tunnel_log = Logger(namespace="cmegw.web")

SELF_SIGNED_CERT = "cmegw-selfsigned.crt"
SELF_SIGNED_KEY = "cmegw-selfsigned.key"
#: Uploaded pairs are named by fingerprint, so a new pair never half-replaces the old one.
UPLOADED_PREFIX = "cmegw-https-"
SELF_SIGNED_DAYS = 10 * 365


def validate_pair(cert_pem: bytes, key_pem: bytes, now: datetime.datetime | None = None,
                  cert_path: str = "", key_path: str = "",
                  ) -> tuple[x509.Certificate, PrivateKey, list[x509.Certificate]]:
    """The certificate, its key and the rest of the chain, checked; `CertificateError` says what is wrong."""
    now = now or utcnow()
    certificates = parse_certificates(cert_pem, "certificate", cert_path)
    key = parse_private_key(key_pem, "private key", key_path)
    certificate, chain = certificates[0], certificates[1:]
    check_key_matches(certificate, key, "private key", key_path, "certificate", cert_path)
    check_in_time(certificate, now, "certificate", cert_path)
    try:
        certificate_options(certificate, key, chain).getContext()  # every version the policy allows
    except (SSL.Error, ValueError, TypeError) as e:
        raise CertificateError(f"OpenSSL cannot serve this pair: {e}") from None
    return certificate, key, chain


def generate_self_signed(hostname: str | None = None,
                         now: datetime.datetime | None = None) -> tuple[bytes, bytes]:
    """A new self-signed certificate (EC P-256) for this host and the loopback names, with its key."""
    now = now or utcnow()
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
        self.now = now or utcnow
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


# -- the tunnels' TLS files -----------------------------------------------------------------

#: Uploaded files are named cmegw-tunnel-N-SETTING-DIGEST.pem (.key for the key).
FILE_PREFIX = "cmegw-tunnel-"

#: The tunnel settings that take an uploaded file: (label, help).
UPLOADABLE = {
    "connect_tls_ca": ("Trusted CA bundle (connect mode)",
                       "PEM certificates; a tls: head-end's certificate must chain to one of them."),
    "connect_tls_certificate": ("Client certificate (connect mode)",
                                "PEM, for head-ends that ask for one; upload it with its key."),
    "connect_tls_key": ("Client key (connect mode)", "Unencrypted PEM private key of the client certificate."),
    "tls_client_ca": ("Client CA (TLS accept mode)",
                      "PEM certificates; with TLS on, a client must show a certificate one of them issued."),
}
CLIENT_PAIR = ("connect_tls_certificate", "connect_tls_key")


class UploadError(ValueError):
    """An uploaded file that cannot serve its setting; the message says why."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(f"{setting}: {message}")
        self.setting = setting
        self.message = message


def check_bundle(setting: str, data: bytes, now: datetime.datetime) -> list[x509.Certificate]:
    """The certificates of a PEM bundle, every one valid now."""
    try:
        certificates = parse_certificates(data, "file")
        check_bundle_in_time(certificates, now)
    except CertificateError as e:
        raise UploadError(setting, str(e)) from None
    return certificates


def _tunnel_field(config: Config, setting: str) -> tuple[int, str]:
    parts = setting.split(".")
    if len(parts) != 3 or parts[0] != "tunnel" or not parts[1].isdigit() or parts[2] not in UPLOADABLE:
        raise UploadError(setting, "upload to tunnel.N." + ", tunnel.N.".join(UPLOADABLE))
    if int(parts[1]) not in config.tunnels:
        raise UploadError(setting, "use the number of a configured tunnel: "
                          + ", ".join(str(n) for n in config.tunnels))
    return int(parts[1]), parts[2]


def check_upload(config: Config, files: Mapping[str, bytes], now: datetime.datetime) -> None:
    """Refuse (`UploadError`, naming the setting) a file that could not serve; `files` by setting name."""
    if not files:
        raise UploadError("tunnel", "choose at least one file")
    located = {setting: _tunnel_field(config, setting) for setting in files}
    for setting, data in files.items():
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            raise UploadError(setting, "the file is not PEM (it is not text)") from None
        if located[setting][1] not in CLIENT_PAIR:
            check_bundle(setting, data, now)
    for n in sorted({n for n, field in located.values() if field in CLIENT_PAIR}):
        certificate, key = (f"tunnel.{n}.{field}" for field in CLIENT_PAIR)
        if certificate not in files or key not in files:
            raise UploadError(key if certificate in files else certificate,
                              "upload the client certificate and its key together")
        try:
            validate_pair(files[certificate], files[key], now)
        except CertificateError as e:
            raise UploadError(key if "private key" in str(e) else certificate, str(e)) from None


def uploaded_paths(config: Config) -> set[Path]:
    """The uploaded files the configuration names."""
    out = set()
    for tunnel in config.tunnels.values():
        for field in UPLOADABLE:
            value = getattr(tunnel, field)
            if value and Path(value).name.startswith(FILE_PREFIX):
                out.add(Path(value))
    return out


def install_tunnel_files(store: ConfigStore, running: Callable[[], Config], files: Mapping[str, bytes],
                         now: datetime.datetime | None = None) -> dict[str, str]:
    """
    Check, write and configure uploaded files (see the module docstring); the
    settings set, by name.  `running` gives the configuration the gateway runs
    with (its files are in use too).  Raises `UploadError`, `ConfigError` (the
    model refused), or `ConfigFileError`/`OSError` (the file could not be saved).
    """
    check_upload(store.config, files, now or utcnow())
    directory = store.path.parent.resolve()  # the settings take absolute paths
    in_use = uploaded_paths(store.config) | uploaded_paths(running())
    changes: dict[str, str] = {}
    written: list[Path] = []
    try:
        for setting, data in files.items():
            n, field = _tunnel_field(store.config, setting)
            digest = hashlib.sha256(data).hexdigest()[:16]
            path = directory / f"{FILE_PREFIX}{n}-{field}-{digest}{'.key' if field == 'connect_tls_key' else '.pem'}"
            atomic_write(path, data.decode("utf-8"))
            os.chmod(path, 0o600)
            written.append(path)
            changes[setting] = str(path)
        store.change(apply_settings(store.config, changes))
    except BaseException:
        for path in written:
            if path not in in_use:
                path.unlink(missing_ok=True)
        raise
    remove_unused_tunnel_files(store, running, directory)
    tunnel_log.info("Tunnel TLS files uploaded: {settings}", settings=", ".join(sorted(changes)))
    return changes


def remove_unused_tunnel_files(store: ConfigStore, running: Callable[[], Config], directory: Path) -> None:
    """Delete uploaded files that neither the saved nor the running configuration names."""
    keep = uploaded_paths(store.config) | uploaded_paths(running())
    for path in directory.glob(FILE_PREFIX + "*"):
        if path not in keep and path.suffix in (".pem", ".key"):
            path.unlink(missing_ok=True)


def summary(path: str, field: str) -> str:
    """What the file a setting names holds, in a few words."""
    if not path:
        return "none" if field != "connect_tls_ca" else "none (the system's trust store)"
    if field == "connect_tls_key":
        return "a private key" if Path(path).exists() else "the file is missing"
    try:
        certificates = read_certificates(path, "certificates")
    except UnreadableFileError as e:
        return f"cannot be read ({e.reason})"
    except CertificateError:
        return "not a PEM file of certificates"
    return validity_summary(certificates)


def files_view(config: Config) -> dict[int, dict[str, dict[str, str]]]:
    """Each tunnel's uploadable settings: the path set and what the file holds."""
    return {n: {field: {"path": getattr(tunnel, field), "holds": summary(getattr(tunnel, field), field)}
                for field in UPLOADABLE} for n, tunnel in config.tunnels.items()}
