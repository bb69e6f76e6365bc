# -*- test-case-name: tests.test_tunnel_tls -*-
"""
TLS on the tunnels: verified client TLS to head-ends (connect mode) and TLS
accept mode, with failures told in words an installer understands.

Connect mode (``tls:host=...:port=...``)
    `client_creator` builds Twisted's `optionsForClientTLS` for the host: the
    head-end's certificate must chain to the tunnel's ``connect_tls_ca`` (a
    PEM bundle) or, when that is empty, to the system's trust store, and
    must name the host, which `service_identity` checks.  With
    ``connect_tls_certificate`` and ``connect_tls_key`` the gateway shows a
    client certificate (mutual TLS).  Only TLS 1.2 and 1.3 are offered.
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

Either way the tunnel starts only once the handshake has verified the peer
(`StartAfterHandshake`): an unverified peer never touches the line.
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
from twisted.internet.interfaces import (
    IHandshakeListener,
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
    IStreamClientEndpoint,
)
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

from cmegw.certificates import (
    CertificateError,
    certificate_names,
    check_in_time,
    check_key_matches,
    common_name,
    read_certificates,
    read_private_key,
    validity_problem,
)
from cmegw.config.model import ClientEndpoint

log = Logger(namespace="cmegw.tunnel")

#: Seconds a peer has to complete the TLS handshake.
HANDSHAKE_TIMEOUT = 15.0
MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2


class TlsSetupError(Exception):
    """The tunnel's own TLS files cannot be used; the message says why."""


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


@contextmanager
def _certificate_files() -> Iterator[None]:
    """A certificate, key or CA file that cannot be used is a `TlsSetupError` (the message names the file)."""
    try:
        yield
    except CertificateError as e:
        raise TlsSetupError(str(e)) from None


def _twisted_certificate(certificate: x509.Certificate) -> ssl.Certificate:
    return ssl.Certificate.loadPEM(certificate.public_bytes(serialization.Encoding.PEM))


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
                 now: Callable[[], datetime.datetime] = _utcnow) -> None:
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
                   now: Callable[[], datetime.datetime] = _utcnow) -> VerifyingClientCreator:
    """
    The TLS client side for one connect-mode host, from the tunnel's
    settings (read at each attempt, so a changed file applies to the next).
    Raises `TlsSetupError` when a file cannot be used.
    """
    anchors: list[x509.Certificate] | None = None
    if ca:
        with _certificate_files():
            anchors = read_certificates(ca, "CA bundle (connect_tls_ca)")
        trust: Any = ssl.trustRootFromCertificates([_twisted_certificate(c) for c in anchors])
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
        pem = chain[0].public_bytes(serialization.Encoding.PEM) + private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        client = ssl.PrivateCertificate.loadPEM(pem)
    options = ssl.optionsForClientTLS(endpoint.host, trustRoot=trust, clientCertificate=client,
                                      extraCertificateOptions={"raiseMinimumTo": MINIMUM_VERSION})
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
                 now: Callable[[], datetime.datetime] = _utcnow) -> None:
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
        extra: dict[str, Any] = {}
        with _certificate_files():
            chain = read_certificates(cert_path, "HTTPS certificate")
            key = read_private_key(key_path, "HTTPS key")
            check_key_matches(chain[0], key, "HTTPS key", key_path, "certificate", cert_path)
            check_in_time(chain[0], self.now(), "HTTPS certificate")
            anchors = read_certificates(self.client_ca, "client CA (tls_client_ca)") if self.client_ca else None
        if anchors is not None:
            extra["trustRoot"] = ssl.trustRootFromCertificates([_twisted_certificate(c) for c in anchors])
        self._options = ssl.CertificateOptions(privateKey=key, certificate=chain[0], extraCertChain=chain[1:] or None,
                                               raiseMinimumTo=MINIMUM_VERSION, **extra)
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


class TunnelTlsFactory(TLSMemoryBIOFactory):
    """
    `TLSMemoryBIOFactory` for a tunnel: its factory may refuse a client
    (buildProtocol returns None), and each write becomes a TLS record at once.
    Twisted's default transport holds small writes for one more reactor turn
    to batch them; the tunnel already writes whole reads of the line, so that
    turn would only add latency (measured: about 100 µs per echo).
    """

    noisy = False
    protocol = TLSMemoryBIOProtocol

    def buildProtocol(self, addr: Any) -> Any:
        inner = self.wrappedFactory.buildProtocol(addr)
        if inner is None:
            return None
        return self.protocol(self, inner)


@implementer(IStreamClientEndpoint)
class TlsClientEndpoint:
    """`wrapClientTLS` with `TunnelTlsFactory`: TLS to a head-end over a TCP endpoint."""

    def __init__(self, creator: Any, tcp: Any) -> None:
        self.creator = creator
        self.tcp = tcp

    def connect(self, factory: Any) -> Any:
        d = self.tcp.connect(TunnelTlsFactory(self.creator, True, factory))
        return d.addCallback(lambda protocol: protocol.wrappedProtocol)


@implementer(IHandshakeListener)
class StartAfterHandshake:
    """
    Mixed in front of a tunnel protocol: over TLS, the tunnel starts (the
    protocol's own ``connectionMade``) only when the handshake completed and
    verified the peer; a handshake that fails or does not finish within
    `HANDSHAKE_TIMEOUT` is reported to ``factory.tls_failed(protocol, reason)``
    and never reaches the line.
    """

    factory: Any
    transport: Any
    tls_started = False
    _handshake_timer: Any = None

    def connectionMade(self) -> None:
        self._handshake_timer = self.factory.clock.callLater(HANDSHAKE_TIMEOUT, self._handshake_late)

    def _handshake_late(self) -> None:
        self._handshake_timer = None
        self.transport.abortConnection()

    def handshakeCompleted(self) -> None:
        timer, self._handshake_timer = self._handshake_timer, None
        if timer is not None and timer.active():
            timer.cancel()
        admit = getattr(self.factory, "admit_after_handshake", None)
        if admit is not None and not admit(self):
            self.transport.loseConnection()
            return
        self.tls_started = True
        super().connectionMade()  # type: ignore[misc]

    def close(self, reason: str) -> None:
        # Twisted's TLS closes only once no producer is registered; the line is this connection's producer.
        self.transport.unregisterProducer()
        super().close(reason)  # type: ignore[misc]

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        timer, self._handshake_timer = self._handshake_timer, None
        if timer is not None and timer.active():
            timer.cancel()
        if self.tls_started:
            super().connectionLost(reason)  # type: ignore[misc]
            return
        handler = getattr(self.factory, "tls_failed", None)
        if handler is not None:
            if timer is None and reason is not None and reason.check(error.ConnectionAborted):
                reason = Failure(error.TimeoutError(f"no TLS handshake within {HANDSHAKE_TIMEOUT:g} s"))
            handler(self, reason)


_TLS_CLASSES: dict[type, type] = {}


def tls_protocol(base: type) -> type:
    """The tunnel protocol `base` started only after a verified TLS handshake."""
    cls = _TLS_CLASSES.get(base)
    if cls is None:
        cls = _TLS_CLASSES[base] = type(f"Tls{base.__name__}", (StartAfterHandshake, base), {})
    return cls
