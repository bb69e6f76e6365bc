"""The HTTP POST target against a real twisted.web receiver on loopback: HTTP and HTTPS, refusals, stalls."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from twisted.internet import defer, reactor, ssl
from twisted.trial import unittest
from twisted.web import resource, server

from cmegw.config.model import ConfigError
from cmegw.config.readout import PushConfig
from cmegw.readout.push import HttpPushTarget, PushError
from cmegw.readout.reading import TARGET_CONNECTED, TARGET_DOWN, StoredReading
from tests.pki import Authority, key_pem, pem, write

READING = StoredReading(7, "heat-1", 1700000000.0, True, ("68aa",), {"records": []})


class Receiver(resource.Resource):
    """Records POSTs; answers `code`, or never (stall)."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.code = 200
        self.stall = False
        self.requests: list[tuple[dict[bytes, bytes], bytes]] = []
        self.stalled: list[Any] = []

    def render_POST(self, request: Any) -> Any:
        headers = {k.lower(): v[0] for k, v in request.requestHeaders.getAllRawHeaders()}
        self.requests.append((headers, request.content.read()))
        if self.stall:
            self.stalled.append(request)
            return server.NOT_DONE_YET
        request.setResponseCode(self.code)
        return b"nope" if self.code >= 300 else b""


class PushTests(unittest.TestCase):
    def listen(self, tls: Any = None) -> str:
        self.receiver = Receiver()
        site = server.Site(self.receiver)
        site.displayTracebacks = False
        if tls is None:
            port = reactor.listenTCP(0, site, interface="127.0.0.1")
        else:
            port = reactor.listenSSL(0, site, tls, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.addCleanup(lambda: [r.finish() for r in self.receiver.stalled if not r.finished])
        scheme = "https" if tls is not None else "http"
        return f"{scheme}://127.0.0.1:{port.getHost().port}/readings?site=3"

    def target(self, url: str, **settings: Any) -> HttpPushTarget:
        target = HttpPushTarget(1, PushConfig(url=url, **settings), reactor, "cmegw-1234",
                                lambda r: json.dumps({"id": r.id}).encode(),
                                lambda r: f"cmegw-1234;{r.id}\n".encode())
        target.start()
        self.addCleanup(target.stop)
        return target

    @defer.inlineCallbacks
    def test_json_with_bearer(self) -> Any:
        target = self.target(self.listen(), auth="bearer", token="t0k3n")
        yield target.deliver(READING)
        [(headers, body)] = self.receiver.requests
        self.assertEqual(json.loads(body), {"id": 7})
        self.assertEqual(headers[b"authorization"], b"Bearer t0k3n")
        self.assertEqual(headers[b"content-type"], b"application/json")
        self.assertEqual(headers[b"x-reading-id"], b"7")
        self.assertIn(b"cmegw-1234-7-", headers[b"idempotency-key"])
        self.assertEqual(target.status.state, TARGET_CONNECTED)

    @defer.inlineCallbacks
    def test_csv_with_basic(self) -> Any:
        target = self.target(self.listen(), auth="basic", username="meter", password="pw", format="csv")
        yield target.deliver(READING)
        [(headers, body)] = self.receiver.requests
        self.assertEqual(body, b"cmegw-1234;7\n")
        self.assertEqual(headers[b"authorization"], b"Basic " + base64.b64encode(b"meter:pw"))
        self.assertTrue(headers[b"content-type"].startswith(b"text/csv"))

    @defer.inlineCallbacks
    def test_refused_then_recovers(self) -> Any:
        target = self.target(self.listen())
        self.receiver.code = 401
        failure = yield self.assertFailure(target.deliver(READING), PushError)
        self.assertIn("answered 401 Unauthorized", str(failure))
        self.assertEqual(target.status.state, TARGET_DOWN)
        self.assertIn("401", target.status.error)
        self.receiver.code = 204
        yield target.deliver(READING)
        self.assertEqual((target.status.state, target.status.error), (TARGET_CONNECTED, ""))

    @defer.inlineCallbacks
    def test_stall_times_out(self) -> Any:
        target = self.target(self.listen(), timeout=1)
        self.receiver.stall = True
        failure = yield self.assertFailure(target.deliver(READING), PushError)
        self.assertIn("within 1 s", str(failure))

    @defer.inlineCallbacks
    def test_unreachable(self) -> Any:
        url = self.listen()
        port = int(url.split(":")[2].split("/")[0])
        yield defer.maybeDeferred(reactor.getDelayedCalls)  # noqa: the port stays ours until cleanup
        target = self.target(f"http://127.0.0.1:{port + 1 if port < 65535 else port - 1}/x")
        failure = yield self.assertFailure(target.deliver(READING), PushError)
        self.assertIn("cannot reach 127.0.0.1", str(failure))

    @defer.inlineCallbacks
    def test_https_verified_against_the_ca(self) -> Any:
        ca = Authority("Test Receiver CA")
        key, certificate = ca.issue(["127.0.0.1"])
        folder = Path(self.mktemp()).resolve()
        folder.mkdir()
        options = ssl.PrivateCertificate.loadPEM(key_pem(key) + pem(certificate)).options()
        url = self.listen(options)
        good = self.target(url, ca=write(folder, "ca.pem", pem(ca.certificate)))
        yield good.deliver(READING)
        self.assertEqual(len(self.receiver.requests), 1)
        other = Authority("Someone Else")
        bad = HttpPushTarget(2, PushConfig(url=url, ca=write(folder, "other.pem", pem(other.certificate))), reactor,
                             "gw", lambda r: b"{}", lambda r: b"")
        bad.start()
        self.addCleanup(bad.stop)
        failure = yield self.assertFailure(bad.deliver(READING), PushError)
        self.assertIn("does not verify", str(failure))
        self.assertEqual(len(self.receiver.requests), 1, "nothing sent to an unverified receiver")

    def test_after_stop(self) -> None:
        target = self.target("http://127.0.0.1:9/x")
        self.successResultOf(target.stop())
        self.failureResultOf(target.deliver(READING), PushError)

    def test_settings_refused(self) -> None:
        for bad, name in (({"url": "ftp://x/"}, "push.url"), ({"auth": "bearer"}, "push.token"),
                          ({"auth": "basic"}, "push.username"), ({"token": "a\r\nb"}, "push.token")):
            e = self.assertRaises(ConfigError, PushConfig, **bad)
            self.assertEqual(e.setting, name)
