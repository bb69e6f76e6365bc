# -*- test-case-name: tests.test_web_http -*-
"""
The HTTP layer of the web administration, as the device's HTTP page describes it.

Public API:

``HttpStatistics``: counters of the HTTP / Statistics page: ``rx_bytes``,
``tx_bytes``, ``status_200``, ``status_400``, ``status_401``, ``status_404``,
``status_408``, ``status_413``, ``status_501``, ``status_unknown`` (any other
status), ``work_queue_full`` and ``memory_errors`` (always 0: cmegw has no such
limits), ``socket_errors`` (connections lost uncleanly, TLS failures
included); ``by_status`` (every status counted); ``as_dict()``, ``reset()``.

``AccessLog``, ``AccessRecord``, ``format_entry``, ``escape_value``: the access
log, in `cmegw.web.accesslog` (named here too).

``GatewaySite(resource, settings, stats, access_log, reactor=None)``: a
``Site`` whose connections enforce, from ``settings()`` (the running
``HttpConfig``, read per connection and request):

- Max Timeout: a request not received whole within ``max_timeout`` seconds of
  its start (or of the connection) gets 408 and the connection is closed; a
  slow trickle does not extend it.  An idle keep-alive connection is closed
  silently after the same time.
- Max Bytes: request line + headers + body (chunked bodies counted decoded)
  larger than ``max_bytes`` gets 413 (as soon as a Content-Length says so).
- A malformed request gets 400.  All three close the connection.  So does
  a POST whose Content-Type cannot be read (control bytes): 400 and one log
  line, never Twisted's "Unhandled Error".
- A POST to the JSON API (``/api``) is never parsed as a form: the API reads
  its own bodies and answers a wrong Content-Type with its JSON 415.
- ``OPTIONS *`` carries the security headers of every other answer.
- HTTPS answers carry ``Strict-Transport-Security`` (`HSTS`) while
  ``http.hsts`` is on and HTTPS is the only listener (with plain HTTP on too,
  HSTS would send browsers away from it); plain HTTP answers never do.
- An upload (``UPLOAD_PATHS``) the authentication gate admits from its headers
  (``AuthGate.admits``: valid credentials, or an open path) has
  ``UPLOAD_MAX_BYTES`` and ``UPLOAD_TIMEOUT`` for its body, one at a time per
  site (``uploading``; another gets 503); any other request keeps the limits above.
``close_connections()`` closes every connection (each after the answer it is
sending), for a stop or restart; ALPN offers ``http/1.1`` only.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.http import RESPONSES, HTTPChannel, _parseContentType
from twisted.web.http_headers import Headers
from twisted.web.iweb import IRequest

from cmegw.config.model import HttpConfig
from cmegw.stats import HttpStatistics
from cmegw.web.accesslog import (
    AccessLog,
    AccessRecord,
    escape_value,
    format_entry,
    host_of,
)

log = Logger(namespace="cmegw.web.http")

#: Seconds a refused or timed-out client gets to read our answer before the connection is cut.
ABORT_AFTER = 5
SERVER_NAME = b"cmegw"
def security_headers(request: IRequest) -> None:
    """The headers every page and API answer carries (no outside resources, no framing, no caching)."""
    request.setHeader(b"content-security-policy",
                      b"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                      b"frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
    request.setHeader(b"x-content-type-options", b"nosniff")
    request.setHeader(b"referrer-policy", b"same-origin")
    request.setHeader(b"x-frame-options", b"DENY")
    request.setHeader(b"cache-control", b"no-store")


#: The Strict-Transport-Security value of HTTPS answers (one year).
HSTS = b"max-age=31536000"

Settings = Callable[[], HttpConfig]


def _headers_size(version: bytes, code: bytes, reason: bytes, headers: Any) -> int:
    pairs: Iterable[tuple[bytes, bytes]]
    if isinstance(headers, Headers):
        pairs = ((name, value) for name, values in headers.getAllRawHeaders() for value in values)
    else:
        pairs = headers
    return len(version) + len(code) + len(reason) + 4 + sum(len(n) + len(v) + 4 for n, v in pairs) + 2


#: Requests that carry a file (software update, certificate upload): their body
#: is bounded by UPLOAD_MAX_BYTES and UPLOAD_TIMEOUT instead of Max Bytes and
#: Max Timeout, which are sized for forms (a cmegw wheel alone is larger than the
#: factory 40960 bytes).  The headers still obey Max Bytes.  Twisted reads a whole
#: body before the authentication gate sees the request, so the gate (the site's
#: root resource, ``cmegw.web.auth.AuthGate.admits``) is asked as soon as the
#: headers are in, and the allowance goes only to a request it will let through,
#: by the same rules it applies later: credentials valid for the path's directive
#: (a forged or wrong Authorization header keeps Max Bytes: 413 for a large body,
#: else the gate's 401), or none at all where the operator opened the path (a None
#: directive, SSL over HTTPS: anyone may install an update there, so anyone may
#: send one).  A root that cannot judge (no ``admits``) grants no allowance.  And
#: only one such body at a time per site (another admitted one is answered 503
#: until it is done): nobody can fill memory or disk with parallel uploads.
UPLOAD_PATHS = frozenset({b"/system/update", b"/api/update", b"/http/certificate", b"/api/http/certificate",
                          b"/tcpip/tls", b"/api/tunnels/tls", b"/readouts/import", b"/api/readout/meters.csv",
                          b"/system/configuration", b"/api/config/file"})
UPLOAD_MAX_BYTES = 64 * 1024 * 1024
UPLOAD_TIMEOUT = 300


class GatewayChannel(HTTPChannel):
    """
    One HTTP connection with the device's limits: Max Timeout (408), Max Bytes
    (413), malformed requests (400), and its traffic counted.
    """

    site: "GatewaySite"
    abortTimeout = ABORT_AFTER

    def __init__(self) -> None:
        super().__init__()
        self._timer: Any = None
        self._request_bytes = 0
        self._served = 0
        self._rejected = False
        self._replaying = False
        self._upload = False

    # -- limits ------------------------------------------------------------------

    @property
    def _settings(self) -> HttpConfig:
        return self.site.settings()

    def _apply_limits(self) -> None:
        limit = self._settings.max_bytes
        self.MAX_LENGTH = limit
        self.totalHeadersSize = limit

    def _arm(self) -> None:
        self._disarm()
        self._apply_limits()
        self._timer = self.callLater(self._settings.max_timeout, self._timed_out)

    def _disarm(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        if self._rejected or self._handlingRequest:
            return
        if self._served and not self._request_bytes and not self._buffer:
            self._close()  # an idle keep-alive connection: nothing was asked
        else:
            self._reject(408)

    def _over_limit(self, extra: int = 0) -> bool:
        limit = UPLOAD_MAX_BYTES if self._upload else self._settings.max_bytes
        return self._request_bytes + extra > limit

    # -- refusing ----------------------------------------------------------------

    def _reject(self, code: int) -> None:
        """Answer `code` to the request being received and close the connection."""
        if self._rejected:
            return
        self._rejected = True
        self._disarm()
        reason = RESPONSES.get(code, b"Error")
        body = b"%d %s\n" % (code, reason)
        hsts = b"Strict-Transport-Security: %s\r\n" % HSTS if self.site.hsts(self.isSecure()) else b""
        head = (b"HTTP/1.1 %d %s\r\nServer: %s\r\n%sContent-Type: text/plain; charset=utf-8\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n" % (code, reason, SERVER_NAME, hsts, len(body)))
        self.transport.write(head + body)
        self.site.stats.tx_bytes += len(head) + len(body)
        self.site.log_rejected(self._partial_record(code, len(body)))
        self._close()

    def _close(self) -> None:
        self._disarm()
        if self.abortTimeout is not None and self._abortingCall is None:
            self._abortingCall = self.callLater(self.abortTimeout, self.forceAbortClient)
        self.loseConnection()

    def _partial_record(self, code: int, body_bytes: int) -> AccessRecord:
        request = self.requests[-1] if self.requests else None
        now = self.site.reactor.seconds()
        if request is not None and isinstance(request.uri, bytes) and request.path is not None:
            return AccessRecord.from_request(request, now, status=code, body_bytes=body_bytes)
        uri = getattr(self, "_path", b"")
        path, question, query = uri.partition(b"?")
        peer = self.transport.getPeer() if self.transport else None
        host = self.transport.getHost() if self.transport else None
        return AccessRecord(remote=host_of(peer), local_port=getattr(host, "port", None),
                            method=getattr(self, "_command", b""), path=path, query=question + query,
                            version=getattr(self, "_version", b""), status=code, body_bytes=body_bytes,
                            headers=request.requestHeaders if request is not None else Headers(), time=now)

    def _respondToBadRequestAndDisconnect(self) -> None:
        self._reject(400)

    def lineLengthExceeded(self, line: bytes) -> None:
        self._reject(413)

    # -- receiving ---------------------------------------------------------------

    def connectionMade(self) -> None:
        super().connectionMade()
        self.site.channels.add(self)
        self._arm()

    def close_when_idle(self) -> None:
        """Close now if no request is being answered, else once its answer is sent."""
        if self._handlingRequest:
            self.persistent = False
        else:
            self._close()

    def dataReceived(self, data: bytes) -> None:
        if not self._replaying:
            self.site.stats.rx_bytes += len(data)
        if self._rejected:
            return
        super().dataReceived(data)
        if (not self._rejected and self.line_mode and not self._handlingRequest
                and self._over_limit(len(self._buffer))):
            self._reject(413)

    def setLineMode(self, extra: bytes = b"") -> Any:
        """Pipelined bytes played back after a response are not received twice."""
        previous, self._replaying = self._replaying, True
        try:
            return super().setLineMode(extra)
        finally:
            self._replaying = previous

    def lineReceived(self, line: bytes) -> None:
        if self._rejected:
            return
        self._request_bytes += len(line) + len(self.delimiter)
        if self._over_limit():
            self._reject(413)
            return
        super().lineReceived(line)

    def _admitted_upload(self) -> bool:
        """Whether this request is an upload the site's gate will let in (see UPLOAD_PATHS)."""
        path = getattr(self, "_path", b"").partition(b"?")[0]
        if path not in UPLOAD_PATHS or getattr(self, "_command", b"") not in (b"POST", b"PUT") or not self.requests:
            return False
        admits = getattr(self.site.resource, "admits", None)
        if admits is None:
            return False
        request = self.requests[-1]
        answer = admits(self._command, self._path, request.requestHeaders, request.isSecure(),
                        peer=getattr(request.getClientAddress(), "host", None))
        # The gate's checkers are in memory (cmegw.web.auth.DirectiveChecker): the
        # Deferred has fired already.  One still pending (a slower checker) counts
        # as no, without pausing the connection: the request keeps Max Bytes, and
        # the gate still decides for good once it is whole.
        outcome: list[Any] = []
        answer.addBoth(outcome.append)
        if not outcome:
            answer.cancel()
            return False
        return outcome[0] is True

    def allHeadersReceived(self) -> None:
        if self.requests:
            self.requests[-1].headers_at = self.site.reactor.seconds()
        if self._admitted_upload():
            if self.site.uploading is not None and self.site.uploading is not self:
                self._reject(503)
                return
            self.site.uploading = self
            self._upload = True
            self._disarm()
            self._timer = self.callLater(max(UPLOAD_TIMEOUT, self._settings.max_timeout), self._timed_out)
        if self.length is not None and self._over_limit(self.length):
            self._reject(413)  # before any 100 Continue: the body is not wanted
            return
        super().allHeadersReceived()

    def rawDataReceived(self, data: bytes) -> None:
        if not self._rejected:
            super().rawDataReceived(data)

    def body_received(self, size: int) -> bool:
        """Count `size` decoded body bytes; False when the request is (now) refused."""
        if self._rejected:
            return False
        self._request_bytes += size
        if self._over_limit():
            self._reject(413)
            return False
        return True

    def allContentReceived(self) -> None:
        if self._rejected:
            return
        self._disarm()
        self._request_bytes = 0
        self._end_upload()
        super().allContentReceived()

    def _end_upload(self) -> None:
        self._upload = False
        if self.site.uploading is self:
            self.site.uploading = None

    def requestDone(self, request: Any) -> None:
        self._served += 1
        super().requestDone(request)
        if (self.persistent and not self._rejected and not self._handlingRequest
                and self.transport is not None and not self.transport.disconnecting):
            self._arm()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._disarm()
        self._end_upload()
        self.site.channels.discard(self)
        if not reason.check(ConnectionDone):
            self.site.stats.socket_errors += 1
        super().connectionLost(reason)

    # -- sending -----------------------------------------------------------------

    def writeHeaders(self, version: bytes, code: bytes, reason: bytes, headers: Any) -> None:
        super().writeHeaders(version, code, reason, headers)
        self.site.stats.tx_bytes += _headers_size(version, code, reason, headers)

    def write(self, data: bytes) -> None:
        self.site.stats.tx_bytes += len(data)
        super().write(data)

    def writeSequence(self, iovec: list[bytes]) -> None:
        self.site.stats.tx_bytes += sum(map(len, iovec))
        super().writeSequence(iovec)

    def _send100Continue(self) -> None:
        self.site.stats.tx_bytes += len(b"HTTP/1.1 100 Continue\r\n\r\n")
        super()._send100Continue()


class GatewayRequest(server.Request):
    """A request whose body counts toward Max Bytes and whose answer names no software version."""

    channel: GatewayChannel
    #: When the headers were in (the reactor's clock); a Digest nonce is judged at that moment.
    headers_at: float | None = None

    def handleContentChunk(self, data: bytes) -> None:
        if self.channel.body_received(len(data)):
            super().handleContentChunk(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        """
        Twisted's, but a Content-Type it cannot parse is a 400 (it raised
        inside the channel: no answer and a traceback), and a POST to the JSON
        API is not parsed as a form (the API answers a wrong type with 415).
        """
        if command == b"POST":
            if path == b"/api" or path.startswith((b"/api/", b"/api?")):
                self._parsePOSTFormSubmission = False
            ctype = (self.requestHeaders.getRawHeaders(b"content-type") or [b""])[0]
            if ctype:
                try:
                    _parseContentType(ctype)
                except Exception as e:
                    self.method, self.uri, self.clientproto = command, path, version
                    self.path = path.partition(b"?")[0]
                    peer = host_of(self.getClientAddress())
                    log.info("400 for {peer}: unreadable Content-Type {value} ({error})", peer=peer,
                             value=escape_value(ctype), error=e.__class__.__name__)
                    self.channel._reject(400)
                    return
        super().requestReceived(command, path, version)

    def _handleStar(self) -> None:
        security_headers(self)
        super()._handleStar()

    def write(self, data: bytes) -> None:
        if not self.startedWriting:
            headers = self.responseHeaders
            headers.setRawHeaders(b"Server", [SERVER_NAME])
            if not headers.hasHeader(b"X-Content-Type-Options"):
                headers.setRawHeaders(b"X-Content-Type-Options", [b"nosniff"])
            if not headers.hasHeader(b"X-Frame-Options"):
                headers.setRawHeaders(b"X-Frame-Options", [b"DENY"])
            if self.channel.site.hsts(self.isSecure()):
                headers.setRawHeaders(b"Strict-Transport-Security", [HSTS])
        super().write(data)


class GatewaySite(server.Site):
    """
    The web administration's site: `GatewayChannel` connections, statistics
    and the access log.  `settings()` gives the running ``HttpConfig``.
    """

    protocol = GatewayChannel  # type: ignore[assignment]
    requestFactory = GatewayRequest
    displayTracebacks = False

    #: The channel receiving an upload's body, if any (one at a time).
    uploading: Any = None

    def hsts(self, secure: bool) -> bool:
        """HSTS on an answer: over HTTPS, with ``http.hsts`` on, while HTTPS is the only listener."""
        return secure and self.settings().hsts and not self.plain_http()

    def __init__(self, resource: Any, settings: Settings, stats: HttpStatistics | None = None,
                 access_log: AccessLog | None = None, reactor: Any = None,
                 plain_http: Callable[[], bool] = lambda: False) -> None:
        super().__init__(resource, timeout=None, reactor=reactor)
        self.settings = settings
        #: Whether the admin also listens on plain HTTP now (then HSTS would send browsers away from it).
        self.plain_http = plain_http
        self.stats = stats if stats is not None else HttpStatistics()
        self.access_log = access_log if access_log is not None else AccessLog(settings().max_log_entries)
        self.channels: set[GatewayChannel] = set()

    def close_connections(self) -> None:
        """Close every connection (each after the answer it is sending): the web part stops."""
        for channel in list(self.channels):
            channel.close_when_idle()

    def acceptableProtocols(self) -> list[bytes]:
        """ALPN: the channels speak HTTP/1.1 only."""
        return [b"http/1.1"]

    def _updateLogDateTime(self) -> None:
        """
        No once-a-second timer for Twisted's cached log date (``HTTPFactory``
        starts one with the factory): this site's access log (`log`) stamps
        each record itself, and the timer would only run between the
        tunnel's bytes.
        """

    def log(self, request: Any) -> None:
        """Called once per answered request (by ``Request.finish``)."""
        self.stats.count_response(request.code)
        self._add(AccessRecord.from_request(request, self.reactor.seconds()))

    def log_rejected(self, record: AccessRecord) -> None:
        """A request refused before it was whole (400, 408, 413)."""
        if record.status is not None:
            self.stats.count_response(record.status)
        self._add(record)

    def _add(self, record: AccessRecord) -> None:
        settings = self.settings()
        if not settings.logging:
            return
        self.access_log.resize(settings.max_log_entries)
        self.access_log.add(format_entry(settings.log_format, record), record)
