# -*- test-case-name: tests.test_tunnel_tls,tests.test_tls_store -*-
"""
TLS contexts: the one TLS policy, and the connection creators built on it,
with failures told in words an installer understands.

Policy
    Only TLS 1.2 and TLS 1.3 are ever offered (`VERSIONS`); on TLS 1.2 only
    ECDHE key exchange with an AEAD cipher (AES-GCM, ChaCha20-Poly1305:
    `CIPHERS`), on TLS 1.3 its standard three suites; a client's (or
    server's) request to renegotiate is refused (``OP_NO_RENEGOTIATION``).
    `certificate_options` builds the `CertificateOptions` every server side
    uses (HTTPS, TLS accept mode), `client_options` the client side (connect mode).

Connect mode (``tls:host=...:port=...``)
    `client_creator` builds Twisted's `optionsForClientTLS` for the host: the
    head-end's certificate must chain to the tunnel's ``connect_tls_ca`` (a
    PEM bundle) or, when that is empty, to the system's trust store, and
    must name the host, which `service_identity` checks.  With
    ``connect_tls_certificate`` and ``connect_tls_key`` the gateway shows a
    client certificate (mutual TLS).
    `VerifyingClientCreator.explain` turns a failed handshake into a reason:
    "the head-end's certificate is for other.example, not headend.example",
    "certificate not trusted: issued by Test CA which is not in the CA
    bundle", "the head-end's certificate expired on 2026-01-01 00:00 UTC"...

Accept mode over TLS (``tls = true``)
    `ServerTls` serves the certificate of the HTTPS store (the files the
    gateway names: the configured HTTPS pair, or the self-signed one) with
    TLS 1.2 and 1.3 only; with ``tls_client_ca`` a client must show a
    certificate that CA issued.  The files are read again when they change,
    so a new HTTPS certificate serves the next tunnel client too.

The protocol wrappers that start a tunnel only after a verified handshake are
in `cmegw.tls.protocol`.
"""

from __future__ import annotations

import datetime
import weakref
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL
from twisted.internet import error, ssl
from twisted.internet._sslverify import ClientTLSOptions
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator, IOpenSSLServerConnectionCreator
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from cmegw.config.model import ClientEndpoint
from cmegw.tls.certificates import (
    CertificateError,
    PrivateKey,
    certificate_names,
    check_in_time,
    check_key_matches,
    common_name,
    read_certificates,
    read_private_key,
    utcnow,
    validity_problem,
)

log = Logger(namespace="cmegw.tunnel")

#: The TLS versions the gateway can offer, by the names the settings use (``http.tls_versions``).
VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}
#: Never anything older.
MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2
#: The TLS 1.2 cipher suites (OpenSSL's syntax): forward secrecy and authenticated encryption only.
#: TLS 1.3 keeps OpenSSL's default suites (AES-256-GCM, ChaCha20-Poly1305, AES-128-GCM).
CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"
#: Renegotiation refused both ways (pyOpenSSL names it from 22.1 on; OpenSSL 1.1.0h and later).
NO_RENEGOTIATION: int = getattr(SSL, "OP_NO_RENEGOTIATION", 0x40000000)


def _acceptable_ciphers() -> Any:
    return ssl.AcceptableCiphers.fromOpenSSLCipherString(CIPHERS)


class PolicyOptions(ssl.CertificateOptions):
    """`CertificateOptions` with the gateway's ciphers whose context refuses renegotiation."""

    def __init__(self, **options: Any) -> None:
        super().__init__(acceptableCiphers=_acceptable_ciphers(), **options)

    def _makeContext(self, *args: Any, **kwargs: Any) -> SSL.Context:
        # Where getContext() makes (and caches) the context: it cannot change once a connection used it.
        context = super()._makeContext(*args, **kwargs)
        context.set_options(NO_RENEGOTIATION)
        return context


def certificate_options(certificate: x509.Certificate, key: PrivateKey, chain: list[x509.Certificate],
                        versions: tuple[str, ...] = tuple(VERSIONS),
                        trust_root: Any = None) -> ssl.CertificateOptions:
    """
    Server options offering exactly the enabled versions among TLS 1.2 and 1.3
    (never older ones); with `trust_root`, a client must show a certificate it issued.
    """
    enabled = sorted(VERSIONS[v] for v in versions if v in VERSIONS)
    if not enabled:
        raise ValueError("no TLS version is enabled")
    maximum = None if enabled[-1] == ssl.TLSVersion.TLSv1_3 else enabled[-1]
    return PolicyOptions(privateKey=key, certificate=certificate, extraCertChain=chain or None,
                         raiseMinimumTo=enabled[0], lowerMaximumSecurityTo=maximum, trustRoot=trust_root)


def client_options(hostname: str, trust_root: Any, client_certificate: ssl.PrivateCertificate | None) -> Any:
    """
    What `optionsForClientTLS` builds for `hostname` (the host name checked,
    SNI sent), on the gateway's policy: TLS 1.2 and 1.3, `CIPHERS`, no renegotiation.
    """
    if not isinstance(hostname, str):
        raise TypeError(f"a host name is text, not {hostname.__class__.__name__}")
    extra: dict[str, Any] = {}
    if client_certificate is not None:
        extra = {"privateKey": client_certificate.privateKey.original, "certificate": client_certificate.original}
    options = PolicyOptions(trustRoot=trust_root if trust_root is not None else ssl.platformTrust(),
                            raiseMinimumTo=MINIMUM_VERSION, **extra)
    return ClientTLSOptions(options._makeTLSConnection, hostname)


def _twisted_certificate(certificate: x509.Certificate) -> ssl.Certificate:
    return ssl.Certificate.loadPEM(certificate.public_bytes(serialization.Encoding.PEM))


def trust_root_from(anchors: Sequence[x509.Certificate]) -> Any:
    """A Twisted trust root of exactly these CA certificates."""
    return ssl.trustRootFromCertificates([_twisted_certificate(c) for c in anchors])


def private_certificate(certificate: x509.Certificate, key: PrivateKey) -> ssl.PrivateCertificate:
    """A certificate and its key as Twisted shows them (a client certificate)."""
    pem = certificate.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return ssl.PrivateCertificate.loadPEM(pem)


class TlsSetupError(Exception):
    """The tunnel's own TLS files cannot be used; the message says why."""


@contextmanager
def _certificate_files() -> Iterator[None]:
    """A certificate, key or CA file that cannot be used is a `TlsSetupError` (the message names the file)."""
    try:
        yield
    except CertificateError as e:
        raise TlsSetupError(str(e)) from None


def _trusted_issuer(chain: Sequence[x509.Certificate], anchors: Sequence[x509.Certificate]) -> bool:
    subjects = {a.subject for a in anchors}
    return any(c.issuer in subjects or c in anchors for c in chain)


def _alert(text: str) -> str:
    low = text.lower()
    if "certificate required" in low:
        return "it asks for a client certificate (set connect_tls_certificate and connect_tls_key)"
    if "unknown ca" in low or "bad certificate" in low or "certificate unknown" in low:
        return "it does not accept our client certificate"
    if "certificate expired" in low:
        return "it says our client certificate expired"
    if "protocol version" in low:
        return "it speaks no TLS version we offer (1.2, 1.3)"
    if "handshake failure" in low:
        return "no common cipher or protocol"
    return text


def _ssl_text(value: BaseException) -> str:
    if isinstance(value, SSL.Error) and value.args and isinstance(value.args[0], list):
        parts = [p[2] for p in value.args[0] if isinstance(p, tuple) and len(p) >= 3 and p[2]]
        if parts:
            return "; ".join(parts)
    return str(value) or value.__class__.__name__


def _peer_chain(connection: Any) -> list[x509.Certificate]:
    if connection is None:
        return []
    try:
        chain = connection.get_peer_cert_chain(as_cryptography=True)
    except Exception:
        return []
    return list(chain or [])


@implementer(IOpenSSLClientConnectionCreator)
class VerifyingClientCreator:
    """
    `optionsForClientTLS` for one head-end, remembering the connection so a
    failed handshake can be explained (`explain`).
    """

    def __init__(self, inner: Any, hostname: str, anchors: list[x509.Certificate] | None, trust_name: str,
                 now: Callable[[], datetime.datetime] = utcnow) -> None:
        self.inner = inner
        self.hostname = hostname
        self.anchors = anchors
        self.trust_name = trust_name
        self.now = now
        self.connection: Any = None

    def clientConnectionForTLS(self, tlsProtocol: Any) -> Any:
        self.connection = self.inner.clientConnectionForTLS(tlsProtocol)
        return self.connection

    def explain(self, reason: Failure) -> str:
        """Why the handshake with the head-end failed, in words."""
        value = reason.value
        chain = _peer_chain(self.connection)
        if value.__class__.__name__ == "VerificationError" or _is_identity_error(value):
            names = certificate_names(chain[0]) if chain else []
            if names:
                return f"the head-end's certificate is for {', '.join(names)}, not {self.hostname}"
            return f"the head-end's certificate is not for {self.hostname}"
        if isinstance(value, SSL.Error):
            text = _ssl_text(value)
            if "certificate verify failed" in text:
                if chain:
                    problem = validity_problem(chain, "the head-end's certificate", self.now())
                    if problem:
                        return problem
                    if self.anchors is None or not _trusted_issuer(chain, self.anchors):
                        return (f"certificate not trusted: issued by {common_name(chain[-1].issuer)} "
                                f"which is not in {self.trust_name}")
                return f"certificate not trusted ({text})"
            if "alert" in text:
                return f"the head-end refused the TLS handshake: {_alert(text)}"
            if "wrong version number" in text or "packet length" in text or "record layer" in text:
                return "the head-end does not speak TLS on this port"
            return f"TLS handshake failed: {text}"
        if isinstance(value, (error.ConnectionDone, error.ConnectionLost)):
            return "the head-end closed the connection during the TLS handshake"
        return f"TLS handshake failed: {reason.getErrorMessage()}"


def _is_identity_error(value: BaseException) -> bool:
    try:
        from service_identity import VerificationError
    except ImportError:  # pragma: no cover - Twisted needs service_identity for hostname checks
        return False
    return isinstance(value, VerificationError)


def client_creator(endpoint: ClientEndpoint, ca: str, certificate: str, key: str,
                   now: Callable[[], datetime.datetime] = utcnow) -> VerifyingClientCreator:
    """
    The TLS client side for one connect-mode host, from the tunnel's
    settings (read at each attempt, so a changed file applies to the next).
    Raises `TlsSetupError` when a file cannot be used.
    """
    anchors: list[x509.Certificate] | None = None
    if ca:
        with _certificate_files():
            anchors = read_certificates(ca, "CA bundle (connect_tls_ca)")
        trust: Any = trust_root_from(anchors)
        trust_name = f"the CA bundle {ca}"
    else:
        trust = ssl.platformTrust()
        trust_name = "the system's trust store"
    client = None
    if certificate or key:
        if not (certificate and key):
            raise TlsSetupError("a client certificate needs both connect_tls_certificate and connect_tls_key")
        with _certificate_files():
            chain = read_certificates(certificate, "client certificate (connect_tls_certificate)")
            private = read_private_key(key, "client key (connect_tls_key)")
            check_key_matches(chain[0], private, "client key", key, "client certificate", certificate)
            check_in_time(chain[0], now(), "gateway's client certificate")
        client = private_certificate(chain[0], private)
    options = client_options(endpoint.host, trust, client)
    return VerifyingClientCreator(options, endpoint.host, anchors, trust_name, now)


@implementer(IOpenSSLServerConnectionCreator)
class ServerTls:
    """
    TLS accept mode: the HTTPS store's certificate, TLS 1.2/1.3, optionally
    a client certificate from `client_ca`.  `files()` names the certificate
    and key (the gateway knows where the HTTPS store keeps them); both, and
    the client CA, are read again when they change.
    """

    def __init__(self, files: Callable[[], tuple[Path, Path]], client_ca: str = "",
                 now: Callable[[], datetime.datetime] = utcnow) -> None:
        self.files = files
        self.client_ca = client_ca
        self.now = now
        self._stamp: tuple[Any, ...] | None = None
        self._options: ssl.CertificateOptions | None = None
        self._seen: weakref.WeakKeyDictionary[Any, list[x509.Certificate]] = weakref.WeakKeyDictionary()

    def _mtimes(self, *paths: Path | str) -> tuple[Any, ...]:
        out: list[Any] = []
        for path in paths:
            try:
                out.append((str(path), Path(path).stat().st_mtime_ns))
            except OSError:
                out.append((str(path), None))
        return tuple(out)

    def options(self) -> ssl.CertificateOptions:
        """The current options (read again when a file changed); `TlsSetupError` says what is wrong."""
        cert_path, key_path = self.files()
        stamp = self._mtimes(cert_path, key_path, *([self.client_ca] if self.client_ca else []))
        if stamp == self._stamp and self._options is not None:
            return self._options
        with _certificate_files():
            chain = read_certificates(cert_path, "HTTPS certificate")
            key = read_private_key(key_path, "HTTPS key")
            check_key_matches(chain[0], key, "HTTPS key", key_path, "certificate", cert_path)
            check_in_time(chain[0], self.now(), "HTTPS certificate")
            anchors = read_certificates(self.client_ca, "client CA (tls_client_ca)") if self.client_ca else None
        self._options = certificate_options(chain[0], key, chain[1:],
                                            trust_root=trust_root_from(anchors) if anchors is not None else None)
        self._stamp = stamp
        return self._options

    def serverConnectionForTLS(self, tlsProtocol: Any) -> Any:
        try:
            options = self.options()
        except TlsSetupError as e:
            log.error("Tunnel TLS: {e}", e=e)
            raise SSL.Error(str(e)) from None
        connection = options.serverConnectionForTLS(tlsProtocol)
        if self.client_ca:
            # Keep the client's certificates as OpenSSL checks them, to say later why one was refused.
            seen: list[x509.Certificate] = []
            self._seen[tlsProtocol] = seen

            def verify(conn: Any, certificate: Any, errno: int, depth: int, ok: int) -> bool:
                seen.append(certificate.to_cryptography())
                return bool(ok)

            connection.set_verify(connection.get_verify_mode(), verify)
        return connection

    def explain(self, reason: Failure, connection: Any, tls_protocol: Any = None) -> str:
        """Why a client's handshake failed, in words."""
        seen = self._seen.pop(tls_protocol, None) if tls_protocol is not None else None
        value = reason.value
        if isinstance(value, SSL.Error):
            text = _ssl_text(value)
            low = text.lower()
            if "did not return a certificate" in low or "certificate required" in low:
                return "the client showed no certificate (tls_client_ca requires one)"
            if "certificate verify failed" in low:
                chain = _peer_chain(connection) or sorted(seen or [], key=lambda c: c.issuer == c.subject)
                problem = validity_problem(chain, "the client's certificate", self.now()) if chain else None
                if problem:
                    return problem
                issuer = common_name(chain[-1].issuer) if chain else "an unknown CA"
                return f"the client's certificate was issued by {issuer}, not by the CA in {self.client_ca}"
            if "http request" in low or "wrong version number" in low or "unknown protocol" in low \
                    or "record layer" in low or "packet length" in low:
                return "the client does not speak TLS"
            if "unsupported protocol" in low or "version" in low:
                return "the client offers no TLS version we accept (1.2, 1.3)"
            if "alert" in low:
                return f"the client ended the handshake: {text}"
            return f"TLS handshake failed: {text}"
        if isinstance(value, (error.ConnectionDone, error.ConnectionLost)):
            return "the client closed the connection during the TLS handshake"
        return f"TLS handshake failed: {reason.getErrorMessage()}"
