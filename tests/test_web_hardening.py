"""
Hardening of the web layer (issue 14): requests with control bytes in any
header get an HTTP answer and one log line (never Twisted's "Unhandled
Error"), non-UTF-8 paths no Klein traceback, HSTS on HTTPS only, ``OPTIONS *``
with the security headers, multipart to ``/api/update`` a JSON 415.
"""

from __future__ import annotations

import itertools
import json
import socket
from typing import Any

from twisted.internet import defer, reactor, threads
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from cmegw.config.model import AuthDirective
from cmegw.web.auth import AuthGate
from tests.web_helpers import ADMIN, GET, PagesTestBase, Placeholder, connect, make_site, multipart, parse_responses

#: Every C0 control byte, DEL, and bytes that are not ASCII (NEL, NBSP, 0x80, 0xff).
CONTROL = tuple(bytes([b]) for b in (*range(0x20), 0x7F, 0x80, 0x85, 0xA0, 0xFF))
HEADERS = (b"Host", b"Content-Type", b"Content-Length", b"Authorization", b"Cookie", b"Origin", b"Referer",
           b"User-Agent", b"X-Filename", b"Connection")
REQUESTS = ((b"GET", b"/status"), (b"POST", b"/"), (b"POST", b"/api/update"))
#: Seconds a fuzz connection may wait for its answer.
WAIT = 5


def _base_headers(method: bytes) -> dict[bytes, bytes]:
    headers = {b"Host": b"127.0.0.1", b"Content-Type": b"application/x-www-form-urlencoded",
               b"Content-Length": b"3", b"Authorization": b"Basic YWRtaW46YWRtaW4=", b"Cookie": b"a=b",
               b"Origin": b"http://127.0.0.1", b"Referer": b"http://127.0.0.1/", b"User-Agent": b"fuzz",
               b"X-Filename": b"cmegw.whl", b"Connection": b"keep-alive"}
    if method == b"GET":
        del headers[b"Content-Length"], headers[b"Content-Type"]
    return headers


def fuzz_cases() -> list[bytes]:
    """
    Each control byte in the middle of each header's name and at the start,
    middle and end of its value, in each of the requests (a few thousand).
    """
    cases = []
    for control in CONTROL:
        for name in HEADERS:
            for where, (method, path) in itertools.product(("name", "value-start", "value-middle", "value-end"),
                                                           REQUESTS):
                headers = _base_headers(method)
                value = headers.pop(name, b"x-y")
                key = name
                if where == "name":
                    key = name[:2] + control + name[2:]
                elif where == "value-start":
                    value = control + value
                elif where == "value-middle":
                    value = value[:1] + control + value[1:]
                else:
                    value = value + control
                headers[key] = value
                head = b"".join(b"%s: %s\r\n" % item for item in headers.items())
                body = b"a=b" if method == b"POST" else b""
                cases.append(b"%s %s HTTP/1.1\r\n%s\r\n%s" % (method, path, head, body))
    cases += [b"POST / HTTP/1.1\r\nHost: gw\r\nContent-Type: a\x1cb\r\nContent-Length: 3\r\n\r\na=b",
              b"GET /static/%c0%ae%c0%ae/etc/passwd HTTP/1.1\r\nHost: gw\r\n\r\n",
              b"GET /status/%ff HTTP/1.1\r\nHost: gw\r\n\r\n",
              b"GET /status HTTP/1.1\r\nHost: \xc0\xae\r\n\r\n"]
    return cases


def exchange(port: int, data: bytes) -> bytes:
    """Send `data` and read until the head of an answer is in, the server closes, or WAIT passes."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
        sock.sendall(data)
        answer = b""
        for _ in range(100):
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                break
            answer += chunk
            if not chunk or b"\r\n\r\n" in answer:
                break
        return answer


class ControlBytesFuzzTests(PagesTestBase):
    """The real pages behind the real gate, on a loopback listener: every request gets an answer."""

    @defer.inlineCallbacks
    def test_every_request_answered_without_traceback(self) -> Any:
        directives = (AuthDirective("/", "config", "None"), AuthDirective("/http", "config", "Basic", (ADMIN,)))
        gate = AuthGate(self.resource, lambda: directives, lambda: None)
        site, _, _ = make_site(gate, clock=reactor)
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.addCleanup(site.close_connections)
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        cases = fuzz_cases()
        self.assertGreater(len(cases), 300)
        for data in cases:
            answer = yield threads.deferToThread(exchange, port.getHost().port, data)
            self.assertTrue(answer.startswith(b"HTTP/1.1 "), (data, answer[:200]))
            status = int(answer.split(b" ", 2)[1])
            self.assertLess(status, 500, (data, answer[:300]))
        self.assertEqual(self.flushLoggedErrors(), [])
        problems = [e for e in events if e.get("log_failure") is not None or e.get("isError")
                    or "Unhandled" in str(e.get("log_format", "")) or "Traceback" in str(e.get("log_text", ""))]
        self.assertEqual(problems, [])
        refusals = [e for e in events if "400 for" in str(e.get("log_format", ""))]
        self.assertTrue(any("Content-Type" in e["log_format"] for e in refusals))
        self.assertTrue(any(e.get("what") == "path" for e in refusals))
        self.assertTrue(any(e.get("what") == "host name" for e in refusals))


class ContentTypeTests(SynchronousTestCase):
    def test_control_bytes_in_content_type(self) -> None:
        """Twisted's parser raises on these: 400, one short body, the connection closed, one log line."""
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        for ctype in (b"a\x1cb", b"a\x85b", b"a\x0cb", b"text/plain\x0bx"):
            site, _, _ = make_site()
            channel, transport = connect(site)
            channel.dataReceived(b"POST / HTTP/1.1\r\nHost: gw\r\nContent-Type: " + ctype +
                                 b"\r\nContent-Length: 3\r\n\r\na=b")
            [response] = parse_responses(transport.value())
            self.assertEqual((response.status, response.body), (400, b"400 Bad Request\n"), ctype)
            self.assertTrue(transport.disconnecting)
            self.assertEqual(site.stats.status_400, 1)
            self.assertIn('"POST / HTTP/1.1" 400', site.access_log.entries[-1])
        self.assertEqual(self.flushLoggedErrors(), [])
        lines = [e for e in events if "Content-Type" in str(e.get("log_format", ""))]
        self.assertEqual(len(lines), 4)


class HstsTests(SynchronousTestCase):
    def answer(self, secure: bool, data: bytes = GET, **http: Any) -> Any:
        site, _, _ = make_site(**http)
        channel, transport = connect(site, secure=secure)
        channel.dataReceived(data)
        return parse_responses(transport.value())[0]

    def test_on_https(self) -> None:
        self.assertEqual(self.answer(True).header("strict-transport-security"), "max-age=31536000")

    def test_never_on_http(self) -> None:
        self.assertIsNone(self.answer(False).header("strict-transport-security"))
        self.assertIsNone(self.answer(False, b"GARBAGE\r\n\r\n").header("strict-transport-security"))

    def test_refusals_over_https_too(self) -> None:
        response = self.answer(True, b"GARBAGE\r\n\r\n")
        self.assertEqual(response.status, 400)
        self.assertEqual(response.header("strict-transport-security"), "max-age=31536000")

    def test_setting_off(self) -> None:
        self.assertIsNone(self.answer(True, hsts=False).header("strict-transport-security"))

    def test_not_while_plain_http_listens_too(self) -> None:
        """With the admin on plain HTTP as well, HSTS would send browsers away from it."""
        site, _, _ = make_site()
        site.plain_http = lambda: True
        for data in (GET, b"GARBAGE\r\n\r\n"):
            channel, transport = connect(site, secure=True)
            channel.dataReceived(data)
            self.assertIsNone(parse_responses(transport.value())[0].header("strict-transport-security"))

    def test_setting_default_on(self) -> None:
        from cmegw.config.store import factory_defaults

        self.assertTrue(factory_defaults().http.hsts)


class OptionsStarTests(SynchronousTestCase):
    def test_security_headers(self) -> None:
        site, _, _ = make_site(Placeholder())
        channel, transport = connect(site)
        channel.dataReceived(b"OPTIONS * HTTP/1.1\r\nHost: gw\r\n\r\n")
        [response] = parse_responses(transport.value())
        self.assertEqual(response.status, 200)
        for name in ("content-security-policy", "x-content-type-options", "referrer-policy", "x-frame-options",
                     "cache-control"):
            self.assertIsNotNone(response.header(name), name)
        self.assertEqual(response.header("x-frame-options"), "DENY")


class ApiMultipartTests(PagesTestBase):
    def test_update_as_multipart_is_json_415(self) -> None:
        """Through the HTTP layer (as a browser or curl -F sends it): the API's JSON 415, nothing installed."""
        body, ctype = multipart({"note": "x"}, {"file": ("cmegw-0.2.0-py3-none-any.whl", b"PK\x03\x04" * 8)})
        site, _, _ = make_site(self.resource)
        channel, transport = connect(site)
        channel.dataReceived(b"POST /api/update HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: " + ctype +
                             b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        [response] = parse_responses(transport.value())
        self.assertEqual(response.status, 415)
        self.assertEqual(response.header("content-type"), "application/json; charset=utf-8")
        self.assertIn("application/octet-stream", json.loads(response.body)["error"])
        self.assertEqual(self.runner.calls, [])

    def test_site_does_not_parse_api_forms(self) -> None:
        """Through the HTTP layer: a malformed multipart body to the API is the API's to judge, not a 400."""
        site, _, _ = make_site(self.resource)
        channel, transport = connect(site)
        channel.dataReceived(b"POST /api/update HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                             b"Content-Type: multipart/form-data; boundary=x\r\nContent-Length: 5\r\n\r\nhello")
        [response] = parse_responses(transport.value())
        self.assertEqual(response.status, 415)
        self.assertIn("error", json.loads(response.body))
