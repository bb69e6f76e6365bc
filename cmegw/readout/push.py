# -*- test-case-name: tests.test_readout_push -*-
"""
The HTTP POST delivery target: each reading is POSTed to a receiver's URL.

`HttpPushTarget` is the `DeliveryTarget` ``push.N``; its settings
(`PushConfig`, `parse_push_url`) are in `cmegw.config.readout`,
which imports no Twisted so the configuration model can use it cheaply.

One request per reading, in order (``window`` 1), over a persistent
connection (`HTTPConnectionPool`).  The body is the reading as JSON
(``application/json``) or CSV (``text/csv; charset=utf-8``), made by the
payload functions the target is given.  Every request carries::

    User-Agent: cmegw/<version>
    X-Gateway-Id: <gateway id>
    X-Reading-Id: <reading.id>
    Idempotency-Key: "<gateway id>-<reading.id>-<reading time in ms>"
    Authorization: Basic ... | Bearer ...      (when auth is set)

A reading whose answer was lost is sent again: a receiver drops duplicates by
the Idempotency-Key (the time keeps it unique should reading ids ever repeat).

Any 2xx answer acknowledges the reading.  Anything else fails the delivery
with a `PushError` that says what happened and what to check::

    https://x.example/in answered 401 Unauthorized: check the user name and password
    cannot reach x.example:443: connection refused
    no answer from x.example:443 within 10 s
    certificate of https://x.example:443 does not verify: it is for other.example, not x.example

HTTPS is verified against the CA bundle ``ca`` (read again when it changes)
or the system's trust store, and must name the URL's host; TLS 1.2 and 1.3
only (`cmegw.tls.contexts.client_options`).  Redirects are not followed: the
message names the new location.

Retrying is the forwarder's job (`cmegw.readout.delivery`: it backs off with
jitter after a failure), so `ready()` stays True after a failure: a hold-off
of our own would only add to the forwarder's wait, and the forwarder would
have to poll to learn when it ends.  The one retry made here is immediate
and once: a request on a kept-alive connection that the receiver closed at
that very moment ("closed the connection without answering"); Twisted
retries only idempotent methods, and the Idempotency-Key makes ours one.
"""

from __future__ import annotations

import base64
import http
import os
from typing import Any, Callable

from twisted.internet import defer, error
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import client
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

from cmegw import __version__
from cmegw.config.readout import PushConfig, PushUrl, parse_push_url
from cmegw.readout.reading import TARGET_CONNECTED, TARGET_CONNECTING, TARGET_DOWN, TARGET_OFF, StoredReading, \
    TargetStatus

log = Logger(namespace="cmegw.readout")

CONTENT_TYPES = {"json": b"application/json", "csv": b"text/csv; charset=utf-8"}
#: A kept-alive connection is closed after this long unused: before common receivers (nginx: 75 s) close it.
IDLE_CONNECTION_TIMEOUT = 55.0
#: What is kept of an answer's body to quote in an error message (the rest is read and dropped).
ANSWER_KEPT = 2048
_QUOTED = 120

#: What a refusal usually means, by status code (the message adds it after the code).
_ADVICE = {
    400: "the receiver refused the reading",
    403: "the credentials are valid but not allowed to post there",
    404: "check the path of the URL",
    405: "the URL does not take POST",
    413: "the reading is larger than the receiver accepts",
    415: "the receiver does not take this format: check the format setting",
    422: "the receiver refused the reading",
    429: "the receiver asks to send less often; it is sent again later",
}


class PushError(Exception):
    """A reading was not delivered to an HTTP receiver; the message says why in words."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        #: The HTTP status the receiver answered with (None when there was no answer).
        self.code = code


# -- the request --------------------------------------------------------------------------


@implementer(IBodyProducer)
class _Body:
    """A request body already in memory, written at once."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.length = len(data)

    def startProducing(self, consumer: Any) -> defer.Deferred:
        consumer.write(self.data)
        return defer.succeed(None)

    def pauseProducing(self) -> None:
        """Nothing to pause: the body was written at once (as are resume and stop)."""

    resumeProducing = stopProducing = pauseProducing


class _Answer(Protocol):
    """Reads an answer's body to its end (so the connection can be kept), keeping its start."""

    def __init__(self, done: defer.Deferred) -> None:
        self.done = done
        self.kept = bytearray()

    def dataReceived(self, data: bytes) -> None:
        room = ANSWER_KEPT - len(self.kept)
        if room > 0:
            self.kept += data[:room]

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if reason.check(client.ResponseDone, client.PotentialDataLoss):
            self.done.callback(bytes(self.kept))
        else:
            self.done.errback(reason)


def _read_answer(response: Any) -> defer.Deferred:
    """The first `ANSWER_KEPT` bytes of the body; cancelling closes the connection."""
    reader: _Answer

    def cancel(d: defer.Deferred) -> None:
        abort = getattr(reader.transport, "abortConnection", None)
        if abort is not None:
            abort()

    reader = _Answer(defer.Deferred(cancel))
    response.deliverBody(reader)
    return reader.done


def _quote(body: bytes) -> str:
    """The start of an answer's text, on one line, for a message ("" when it is not text)."""
    text = " ".join(body[:4 * _QUOTED].decode("utf-8", "ignore").split())
    if not text.isprintable():
        return ""
    return text if len(text) <= _QUOTED else text[:_QUOTED - 3] + "..."


def _phrase(code: int, given: bytes) -> str:
    try:
        return http.HTTPStatus(code).phrase
    except ValueError:
        return given.decode("latin-1", "replace").strip()


def _sf_string(text: str) -> str:
    """`text` as a structured-field string (RFC 8941), printable ASCII only."""
    clean = "".join(c for c in text if c.isascii() and c.isprintable())
    return '"' + clean.replace("\\", "\\\\").replace('"', '\\"') + '"'


# -- TLS ----------------------------------------------------------------------------------


class _Trust:
    """The trust of one target's HTTPS: its CA bundle (read again when it changes) or the system's."""

    def __init__(self, ca: str, what: str) -> None:
        self.ca = ca
        self.what = what
        self._stamp: tuple[int, int] | None = None
        self._anchors: list[Any] | None = None
        self._root: Any = None

    @property
    def name(self) -> str:
        return f"the CA bundle {self.ca}" if self.ca else "the system's trust store"

    def root(self) -> tuple[Any, list[Any] | None]:
        """The Twisted trust root and the CA certificates (None: the system's); CertificateError when unusable."""
        from twisted.internet import ssl

        from cmegw.tls.certificates import read_certificates
        from cmegw.tls.contexts import trust_root_from

        if not self.ca:
            return ssl.platformTrust(), None
        try:
            stat = os.stat(self.ca)
            stamp: tuple[int, int] | None = (stat.st_mtime_ns, stat.st_size)
        except OSError:
            stamp = None
        if stamp is None or stamp != self._stamp:
            anchors = read_certificates(self.ca, self.what)
            self._anchors, self._root, self._stamp = anchors, trust_root_from(anchors), stamp
        return self._root, self._anchors


class _Endpoints:
    """
    The agent's endpoint factory: TCP to the URL's host (an IPv6 literal
    too), with verified TLS for https; it keeps the last TLS creator so a
    failed handshake can be explained.
    """

    def __init__(self, reactor: Any, trust: _Trust) -> None:
        self.reactor = reactor
        self.trust = trust
        self.creator: Any = None
        self.anchors: list[Any] | None = None

    def endpointForURI(self, uri: client.URI) -> Any:
        host = uri.host.decode("ascii")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        endpoint = HostnameEndpoint(self.reactor, host, uri.port)
        if uri.scheme != b"https":
            return endpoint
        from cmegw.tls.contexts import VerifyingClientCreator, client_options

        root, self.anchors = self.trust.root()
        self.creator = VerifyingClientCreator(client_options(host, root, None), host, self.anchors,
                                              self.trust.name)
        return wrapClientTLS(self.creator, endpoint)


def _peer_chain(creator: Any) -> list[Any]:
    connection = getattr(creator, "connection", None)
    if connection is None:
        return []
    try:
        return list(connection.get_peer_cert_chain(as_cryptography=True) or [])
    except Exception:
        return []


def _ssl_text(value: BaseException) -> str:
    args = getattr(value, "args", ())
    if args and isinstance(args[0], list):
        parts = [p[2] for p in args[0] if isinstance(p, tuple) and len(p) >= 3 and p[2]]
        if parts:
            return "; ".join(parts)
    return str(value) or value.__class__.__name__


def _tls_problem(value: BaseException, url: PushUrl, endpoints: _Endpoints) -> str | None:
    """Why the TLS handshake with the receiver failed, in words; None when `value` is no TLS failure."""
    from OpenSSL import SSL

    from cmegw.tls.certificates import certificate_names, common_name, utcnow, validity_problem

    refused = f"certificate of {url.origin} does not verify"
    chain = _peer_chain(endpoints.creator)
    if value.__class__.__name__ == "VerificationError":  # service_identity: the host name does not match
        names = certificate_names(chain[0]) if chain else []
        return f"{refused}: it is for {', '.join(names)}, not {url.host}" if names else \
            f"{refused}: it does not name {url.host}"
    if not isinstance(value, SSL.Error):
        return None
    text = _ssl_text(value)
    if "certificate verify failed" in text:
        if chain:
            problem = validity_problem(chain, "it", utcnow())
            if problem:
                return f"{refused}: {problem}"
            anchors = endpoints.anchors
            subjects = {a.subject for a in anchors or []}
            if anchors is None or not any(c.issuer in subjects or c in anchors for c in chain):
                return f"{refused}: it is issued by {common_name(chain[-1].issuer)}, " \
                       f"which is not in {endpoints.trust.name}"
        return f"{refused}: not trusted ({text})"
    if "wrong version number" in text or "packet length" in text or "record layer" in text:
        return f"{url.netloc} does not speak TLS (is the URL http://?)"
    if "alert" in text:
        return f"{url.netloc} refused the TLS handshake ({text})"
    return f"TLS handshake with {url.netloc} failed ({text})"


# -- the target ---------------------------------------------------------------------------


class HttpPushTarget:
    """The delivery target ``push.N``: POSTs each reading to the receiver's URL."""

    window = 1

    def __init__(self, number: int, settings: PushConfig, reactor: Any, gateway_id: str,
                 payload_json: Callable[[StoredReading], bytes],
                 payload_csv: Callable[[StoredReading], bytes]) -> None:
        self.name = f"push.{number}"
        self.settings = settings
        self.reactor = reactor
        self.gateway_id = gateway_id
        self.payload = payload_json if settings.format == "json" else payload_csv
        self.url = settings.parsed_url
        self.status = TargetStatus(self.name, since=reactor.seconds())
        self._running = False
        self._pending: defer.Deferred | None = None
        self._pool = client.HTTPConnectionPool(reactor, persistent=True)
        self._pool.maxPersistentPerHost = 1
        self._pool.cachedConnectionTimeout = IDLE_CONNECTION_TIMEOUT
        self._endpoints = _Endpoints(reactor, _Trust(settings.ca, f"CA bundle ({self.name}.ca)"))
        self._agent = client.Agent.usingEndpointFactory(reactor, self._endpoints, pool=self._pool)
        self._authorization = self._credentials()

    def _credentials(self) -> bytes | None:
        s = self.settings
        if s.auth == "basic":
            return b"Basic " + base64.b64encode(f"{s.username}:{s.password}".encode("utf-8"))
        return b"Bearer " + s.token.encode("ascii") if s.auth == "bearer" else None

    def _set(self, state: str, error: str = "") -> None:
        if state != self.status.state:
            self.status.since = self.reactor.seconds()
            if state == TARGET_DOWN:
                log.warn("{name}: {error}", name=self.name, error=error)
            elif state == TARGET_CONNECTED and self.status.state == TARGET_DOWN:
                log.info("{name}: {url} takes readings again", name=self.name, url=str(self.url))
        self.status.state = state
        self.status.error = error

    # -- DeliveryTarget

    def start(self) -> None:
        if self.settings.enabled and not self._running:
            self._running = True
            self._set(TARGET_CONNECTING)

    def stop(self) -> defer.Deferred:
        """Stop: a delivery on its way fails, kept-alive connections close (fires when they are closed)."""
        self._running = False
        self._set(TARGET_OFF)
        if self._pending is not None:
            self._pending.cancel()
        return self._pool.closeCachedConnections()

    def ready(self) -> bool:
        """True while started and no delivery is on its way (see the module's note on back-off)."""
        return self._running and self._pending is None

    def deliver(self, reading: StoredReading) -> defer.Deferred:
        if not self._running:
            why = "disabled" if not self.settings.enabled else "stopped"
            return defer.fail(PushError(f"{self.name} is {why}; reading {reading.id} was not sent"))
        if self._pending is not None:
            return defer.fail(PushError(f"{self.name} delivers one reading at a time (window 1)"))
        try:
            body = self.payload(reading)
        except Exception as e:
            log.failure("{name}: cannot make the payload of reading {id}", name=self.name, id=reading.id)
            return defer.fail(PushError(f"cannot make the {self.settings.format} of reading {reading.id}: {e}"))
        headers = self._headers(reading)
        d = self._post(headers, body, retry=True)
        d.addTimeout(self.settings.timeout, self.reactor)
        d.addCallbacks(self._delivered, self._failed)
        self._pending = d

        def done(result: Any) -> Any:
            self._pending = None
            return result

        return d.addBoth(done)

    # -- the exchange

    def _headers(self, reading: StoredReading) -> Headers:
        key = f"{self.gateway_id}-{reading.id}-{round(reading.time * 1000)}"
        headers = Headers({
            b"Content-Type": [CONTENT_TYPES[self.settings.format]],
            b"User-Agent": [f"cmegw/{__version__}".encode("ascii")],
            b"X-Reading-Id": [str(reading.id).encode("ascii")],
            b"X-Gateway-Id": [_sf_string(self.gateway_id)[1:-1].encode("ascii")],
            b"Idempotency-Key": [_sf_string(key).encode("ascii")],
        })
        if self._authorization is not None:
            headers.addRawHeader(b"Authorization", self._authorization)
        return headers

    def _post(self, headers: Headers, body: bytes, retry: bool) -> defer.Deferred:
        d = defer.maybeDeferred(self._agent.request, b"POST", str(self.url).encode("ascii"), headers, _Body(body))
        d.addCallbacks(self._answered, _cancelled)
        if retry:
            def again(reason: Failure) -> Any:
                if self._running and _closed_unanswered(reason):
                    return self._post(headers, body, retry=False)
                return reason

            d.addErrback(again)
        return d

    def _answered(self, response: Any) -> defer.Deferred:
        code = response.code

        def judge(answer: bytes) -> None:
            if 200 <= code < 300:
                return None
            raise PushError(self._refusal(code, response, answer), code)

        return _read_answer(response).addCallback(judge)

    def _refusal(self, code: int, response: Any, answer: bytes) -> str:
        said = f"{self.url} answered {code} {_phrase(code, response.phrase)}"
        auth = self.settings.auth
        if code == 401:
            advice = {"basic": "check the user name and password", "bearer": "check the token"}.get(
                auth, "the receiver wants credentials: set auth to basic or bearer")
        elif 300 <= code < 400:
            where = response.headers.getRawHeaders(b"location", [b""])[0].decode("latin-1", "replace")
            advice = f"it moved to {where}: set that URL" if where else "redirects are not followed: set the new URL"
        elif code >= 500:
            advice = "the receiver has a problem; the reading is kept and sent again"
        else:
            advice = _ADVICE.get(code, "the reading is kept and sent again")
        quoted = _quote(answer) if code >= 400 else ""
        return f"{said}: {advice}" + (f' (it said: "{quoted}")' if quoted else "")

    def _delivered(self, _: None) -> None:
        self._set(TARGET_CONNECTED)

    def _failed(self, reason: Failure) -> Failure:
        message = self._explain(reason)
        if self._running:
            self._set(TARGET_DOWN, message)
        code = reason.value.code if isinstance(reason.value, PushError) else None
        return Failure(PushError(message, code))

    def _explain(self, reason: Failure) -> str:
        """What went wrong, in a field engineer's words."""
        value = reason.value
        netloc = self.url.netloc
        if isinstance(value, PushError):
            return str(value)
        if isinstance(value, defer.TimeoutError):
            return f"no answer from {netloc} within {self.settings.timeout:g} s"
        if isinstance(value, defer.CancelledError) or not self._running:
            return f"{self.name} was stopped before {netloc} answered"
        from cmegw.tls.certificates import CertificateError

        if isinstance(value, CertificateError):
            return str(value)
        inner = value
        if isinstance(value, client._WrapperException):
            reasons = [r for r in value.reasons if not r.check(defer.CancelledError)]
            inner = reasons[0].value if reasons else value
        problem = _tls_problem(inner, self.url, self._endpoints)
        if problem is not None:
            return problem
        if isinstance(inner, error.ConnectionRefusedError):
            return f"cannot reach {netloc}: connection refused (is the receiver running, is the port right?)"
        if isinstance(inner, error.DNSLookupError):
            return f"cannot reach {netloc}: the name {self.url.host} does not resolve"
        if isinstance(inner, error.NoRouteError):
            return f"cannot reach {netloc}: no route to the host"
        if isinstance(inner, error.TimeoutError):
            return f"cannot reach {netloc}: no connection within the timeout"
        if isinstance(inner, error.ConnectError):
            return f"cannot reach {netloc}: {inner.osError or inner}"
        if isinstance(inner, (error.ConnectionDone, error.ConnectionLost)):
            if isinstance(value, client.ResponseFailed) and not isinstance(value, client.ResponseNeverReceived):
                return f"the answer of {netloc} broke off"
            return f"{netloc} closed the connection without answering"
        if isinstance(value, client.ResponseFailed):
            return f"{netloc} sent an answer that is not HTTP ({inner.__class__.__name__}: {inner})"
        return f"cannot post to {self.url}: {reason.getErrorMessage()}"


def _cancelled(reason: Failure) -> Failure:
    """A request cancelled (by the timeout, by stop) as the cancel itself, which `addTimeout` recognises."""
    value = reason.value
    if isinstance(value, client._WrapperException) and value.reasons and \
            all(r.check(defer.CancelledError) for r in value.reasons):
        return Failure(defer.CancelledError())
    return reason


def _closed_unanswered(reason: Failure) -> bool:
    """A kept-alive connection the receiver closed as the request went out (nothing else went wrong)."""
    value = reason.value
    if not isinstance(value, (client.ResponseNeverReceived, client.RequestTransmissionFailed)):
        return False
    return bool(value.reasons) and all(r.check(error.ConnectionDone, error.ConnectionLost) for r in value.reasons)


__all__ = ["HttpPushTarget", "PushError", "PushConfig", "PushUrl", "parse_push_url"]
