"""
Tests for cmegw.readout.push: the HTTP POST target against a real twisted.web
receiver on 127.0.0.1 (plain HTTP, and HTTPS with a test CA made here with
`cryptography`).
"""

import base64
import datetime
import json
import os
from pathlib import Path

import attrs
from twisted.internet import defer, protocol, reactor, ssl
from twisted.protocols import policies
from twisted.trial.unittest import TestCase
from twisted.web import resource, server

from cmegw import __version__
from cmegw.readout.push import HttpPushTarget, PushError
from cmegw.config.readout import PushConfig
from cmegw.readout.reading import TARGET_CONNECTED, TARGET_CONNECTING, TARGET_DOWN, TARGET_OFF, StoredReading
from tests import pki

NOW = datetime.datetime.now(datetime.timezone.utc)
DAY = datetime.timedelta(days=1)
#: The longest any test waits for the receiver's connections to close.
CLOSE_LIMIT = 10.0


def as_json(reading):
    """A stand-in for cmegw.readout.payload's JSON."""
    return json.dumps({"id": reading.id, "meter": reading.meter, "time": reading.time,
                       "decoded": dict(reading.decoded)}).encode("utf-8")


def as_csv(reading):
    return f"id,meter,time\r\n{reading.id},{reading.meter},{reading.time}\r\n".encode("utf-8")


def reading(number=1):
    return StoredReading(id=number, meter=f"meter-{number}", time=1_700_000_000.0 + number,
                         telegrams=("6808086808",), decoded={"records": [{"value": 12.5, "unit": "m3"}]})


# -- the receiver -------------------------------------------------------------------------


@attrs.frozen
class Received:
    path: bytes
    headers: dict
    body: bytes

    def header(self, name):
        return self.headers.get(name.lower())


class Receiver(resource.Resource):
    """Records each POST; `mode` makes it accept, refuse, stall, drop or redirect."""

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.mode = "accept"
        self.code = 503
        self.answer = b"busy, try later"
        self.authorization = None
        self.received = []
        self.stalled = []

    def render_POST(self, request):
        self.received.append(Received(request.uri, {k.decode().lower(): v[0].decode()
                                                    for k, v in request.requestHeaders.getAllRawHeaders()},
                                      request.content.read()))
        if self.authorization is not None and request.getHeader("authorization") != self.authorization:
            request.setResponseCode(401)
            request.setHeader("WWW-Authenticate", 'Basic realm="readings"')
            return b"who are you?"
        if self.mode == "refuse":
            request.setResponseCode(self.code)
            return self.answer
        if self.mode == "redirect":
            request.setResponseCode(301)
            request.setHeader("Location", "https://elsewhere.example/in")
            return b""
        if self.mode == "stall":
            self.stalled.append(request)
            request.notifyFinish().addErrback(lambda _: None)
            return server.NOT_DONE_YET
        if self.mode == "drop":
            request.channel.transport.abortConnection()
            return server.NOT_DONE_YET
        request.setResponseCode(201)
        return b"stored"


class Connections(policies.WrappingFactory):
    """The receiver's factory, counting its connections and telling when all are closed."""

    def __init__(self, factory):
        super().__init__(factory)
        self.opened = 0
        self._waiting = []

    def registerProtocol(self, p):
        self.opened += 1
        super().registerProtocol(p)

    def unregisterProtocol(self, p):
        super().unregisterProtocol(p)
        if not self.protocols:
            waiting, self._waiting = self._waiting, []
            for d in waiting:
                d.callback(None)

    def closed(self):
        """Fires once no connection is open (each is aborted first), within `CLOSE_LIMIT`."""
        if not self.protocols:
            return defer.succeed(None)
        d = defer.Deferred()
        self._waiting.append(d)
        for p in list(self.protocols):
            p.transport.abortConnection()
        return d.addTimeout(CLOSE_LIMIT, reactor)


class PlainAnswer(protocol.Protocol):
    """A plain HTTP server's answer to a TLS hello: a 400, at once, then closed."""

    def dataReceived(self, data):
        self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        self.transport.loseConnection()


# -- a test PKI ---------------------------------------------------------------------------


class Authority(pki.Authority):
    """The test CA of `tests.pki`, which writes its certificate where a push target reads its CA bundle."""

    def write(self, directory, name="ca.pem"):
        return pki.write(directory, name, pki.pem(self.certificate))


# -- the target ---------------------------------------------------------------------------


class PushTestsBase(TestCase):
    """A receiver on 127.0.0.1 port 0 and targets aimed at it, all closed at the end."""

    def listen(self, tls=None):
        self.receiver = Receiver()
        self.connections = Connections(server.Site(self.receiver))
        if tls is None:
            port = reactor.listenTCP(0, self.connections, interface="127.0.0.1")
        else:
            port = reactor.listenSSL(0, self.connections, tls, interface="127.0.0.1")
        self.addCleanup(self.connections.closed)
        self.addCleanup(port.stopListening)
        self.scheme = "https" if tls is not None else "http"
        self.port = port.getHost().port
        return self.receiver

    def target(self, number=1, path="/in", **settings):
        url = settings.pop("url", None) or f"{self.scheme}://127.0.0.1:{self.port}{path}"
        target = HttpPushTarget(number, PushConfig(url=url, **settings), reactor, "gw-test", as_json, as_csv)
        target.start()
        self.addCleanup(target.stop)
        return target


class DeliveryTests(PushTestsBase):
    def setUp(self):
        self.listen()

    @defer.inlineCallbacks
    def test_json_reading_posted_with_its_headers(self):
        target = self.target()
        self.assertEqual((target.name, target.window, target.status.state), ("push.1", 1, TARGET_CONNECTING))
        result = yield target.deliver(reading(7))
        self.assertIsNone(result)
        [got] = self.receiver.received
        self.assertEqual(got.path, b"/in")
        self.assertEqual(json.loads(got.body), json.loads(as_json(reading(7))))
        self.assertEqual(got.header("content-type"), "application/json")
        self.assertEqual(got.header("user-agent"), f"cmegw/{__version__}")
        self.assertEqual(got.header("x-reading-id"), "7")
        self.assertEqual(got.header("x-gateway-id"), "gw-test")
        self.assertEqual(got.header("idempotency-key"), '"gw-test-7-1700000007000"')
        self.assertEqual(got.header("content-length"), str(len(as_json(reading(7)))))
        self.assertIsNone(got.header("authorization"))
        self.assertEqual(target.status.state, TARGET_CONNECTED)
        self.assertEqual(target.status.error, "")

    @defer.inlineCallbacks
    def test_csv_reading(self):
        target = self.target(format="csv")
        yield target.deliver(reading(3))
        [got] = self.receiver.received
        self.assertEqual(got.body, as_csv(reading(3)))
        self.assertTrue(got.header("content-type").startswith("text/csv"), got.header("content-type"))

    @defer.inlineCallbacks
    def test_basic_authentication(self):
        self.receiver.authorization = "Basic " + base64.b64encode(b"meter:right").decode()
        wrong = self.target(number=2, auth="basic", username="meter", password="wrong")
        failure = yield self.assertFailure(wrong.deliver(reading()), PushError)
        self.assertEqual(str(failure), f"http://127.0.0.1:{self.port}/in answered 401 Unauthorized: "
                                       'check the user name and password (it said: "who are you?")')
        self.assertEqual(failure.code, 401)
        self.assertEqual(wrong.status.state, TARGET_DOWN)
        self.assertEqual(wrong.status.error, str(failure))
        target = self.target(auth="basic", username="meter", password="right")
        yield target.deliver(reading())
        self.assertEqual(self.receiver.received[-1].header("authorization"), self.receiver.authorization)
        self.assertEqual(target.status.state, TARGET_CONNECTED)

    @defer.inlineCallbacks
    def test_bearer_token(self):
        self.receiver.authorization = "Bearer tok-123.abc"
        target = self.target(auth="bearer", token="tok-123.abc")
        yield target.deliver(reading())
        self.assertEqual(target.status.state, TARGET_CONNECTED)
        bad = self.target(number=2, auth="bearer", token="tok-old")
        failure = yield self.assertFailure(bad.deliver(reading()), PushError)
        self.assertIn("answered 401 Unauthorized: check the token", str(failure))

    @defer.inlineCallbacks
    def test_unasked_credentials(self):
        self.receiver.authorization = "Bearer x"
        target = self.target()
        failure = yield self.assertFailure(target.deliver(reading()), PushError)
        self.assertIn("401 Unauthorized: the receiver wants credentials", str(failure))

    @defer.inlineCallbacks
    def test_refusal_then_recovery(self):
        target = self.target()
        self.receiver.mode = "refuse"
        failure = yield self.assertFailure(target.deliver(reading(1)), PushError)
        self.assertEqual(str(failure), f"http://127.0.0.1:{self.port}/in answered 503 Service Unavailable: the "
                                       'receiver has a problem; the reading is kept and sent again (it said: '
                                       '"busy, try later")')
        self.assertEqual((target.status.state, target.status.error), (TARGET_DOWN, str(failure)))
        self.assertTrue(target.ready(), "the forwarder's back-off decides when to try again")
        self.receiver.mode = "accept"
        yield target.deliver(reading(1))
        self.assertEqual((target.status.state, target.status.error), (TARGET_CONNECTED, ""))
        self.assertEqual([r.header("x-reading-id") for r in self.receiver.received], ["1", "1"])

    @defer.inlineCallbacks
    def test_other_refusals_in_words(self):
        target = self.target()
        self.receiver.mode = "refuse"
        for code, words in [(404, "404 Not Found: check the path of the URL"),
                            (415, "415 Unsupported Media Type: the receiver does not take this format"),
                            (400, "400 Bad Request: the receiver refused the reading")]:
            self.receiver.code = code
            failure = yield self.assertFailure(target.deliver(reading()), PushError)
            self.assertIn(words, str(failure))
            self.assertEqual(failure.code, code)

    @defer.inlineCallbacks
    def test_redirect_not_followed(self):
        self.receiver.mode = "redirect"
        target = self.target()
        failure = yield self.assertFailure(target.deliver(reading()), PushError)
        self.assertIn("answered 301 Moved Permanently: it moved to https://elsewhere.example/in: set that URL",
                      str(failure))
        self.assertEqual(len(self.receiver.received), 1)

    @defer.inlineCallbacks
    def test_stall_times_out_then_recovers(self):
        target = self.target(timeout=0.3)
        self.receiver.mode = "stall"
        failure = yield self.assertFailure(target.deliver(reading()), PushError)
        self.assertEqual(str(failure), f"no answer from 127.0.0.1:{self.port} within 0.3 s")
        self.assertEqual(target.status.state, TARGET_DOWN)
        self.assertEqual(len(self.receiver.stalled), 1)
        self.receiver.mode = "accept"
        yield target.deliver(reading())
        self.assertEqual(target.status.state, TARGET_CONNECTED)

    @defer.inlineCallbacks
    def test_connection_kept_between_readings(self):
        target = self.target()
        for n in range(1, 4):
            yield target.deliver(reading(n))
        self.assertEqual(len(self.receiver.received), 3)
        self.assertEqual(self.connections.opened, 1)
        yield target.stop()
        yield self.connections.closed()
        self.assertEqual(self.connections.protocols, {})

    @defer.inlineCallbacks
    def test_closed_without_answer_is_tried_once_more(self):
        target = self.target()
        self.receiver.mode = "drop"
        failure = yield self.assertFailure(target.deliver(reading(5)), PushError)
        self.assertEqual(str(failure), f"127.0.0.1:{self.port} closed the connection without answering")
        self.assertEqual([r.header("idempotency-key") for r in self.receiver.received],
                         ['"gw-test-5-1700000005000"'] * 2)

    @defer.inlineCallbacks
    def test_ready_and_one_at_a_time(self):
        target = HttpPushTarget(1, PushConfig(url=f"http://127.0.0.1:{self.port}/"), reactor, "gw",
                                as_json, as_csv)
        self.addCleanup(target.stop)
        self.assertFalse(target.ready(), "not before start")
        self.assertEqual(target.status.state, TARGET_OFF)
        target.start()
        self.assertTrue(target.ready())
        self.receiver.mode = "stall"
        pending = target.deliver(reading(1))
        self.assertFalse(target.ready(), "window 1: one reading on its way")
        failure = yield self.assertFailure(target.deliver(reading(2)), PushError)
        self.assertIn("one reading at a time", str(failure))
        yield target.stop()
        failure = yield self.assertFailure(pending, PushError)
        self.assertEqual(str(failure), f"push.1 was stopped before 127.0.0.1:{self.port} answered")
        self.assertEqual(target.status.state, TARGET_OFF)
        self.assertFalse(target.ready())

    @defer.inlineCallbacks
    def test_deliver_after_stop(self):
        target = self.target()
        yield target.deliver(reading(1))
        yield target.stop()
        failure = yield self.assertFailure(target.deliver(reading(2)), PushError)
        self.assertEqual(str(failure), "push.1 is stopped; reading 2 was not sent")
        self.assertEqual(len(self.receiver.received), 1)
        self.assertEqual(target.status.state, TARGET_OFF)

    @defer.inlineCallbacks
    def test_disabled_target_never_posts(self):
        target = self.target(enabled=False)
        self.assertFalse(target.ready())
        failure = yield self.assertFailure(target.deliver(reading()), PushError)
        self.assertIn("push.1 is disabled", str(failure))
        self.assertEqual(self.receiver.received, [])

    @defer.inlineCallbacks
    def test_payload_failure(self):
        def broken(r):
            raise KeyError("records")

        target = HttpPushTarget(1, PushConfig(url=f"http://127.0.0.1:{self.port}/"), reactor, "gw",
                                broken, as_csv)
        target.start()
        self.addCleanup(target.stop)
        failure = yield self.assertFailure(target.deliver(reading(4)), PushError)
        self.assertIn("cannot make the json of reading 4", str(failure))
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)
        self.assertTrue(target.ready())


class UnreachableTests(PushTestsBase):
    @defer.inlineCallbacks
    def test_connection_refused(self):
        port = reactor.listenTCP(0, Connections(server.Site(Receiver())), interface="127.0.0.1")
        number = port.getHost().port
        yield port.stopListening()
        target = HttpPushTarget(1, PushConfig(url=f"http://127.0.0.1:{number}/in"), reactor, "gw",
                                as_json, as_csv)
        target.start()
        self.addCleanup(target.stop)
        failure = yield self.assertFailure(target.deliver(reading()), PushError)
        self.assertTrue(str(failure).startswith(f"cannot reach 127.0.0.1:{number}: connection refused"),
                        str(failure))
        self.assertEqual((target.status.state, target.status.error), (TARGET_DOWN, str(failure)))

    @defer.inlineCallbacks
    def test_http_to_a_tls_port(self):
        ca = Authority("Push Test CA")
        key, certificate = ca.issue(["127.0.0.1"])
        self.listen(ssl.CertificateOptions(privateKey=key, certificate=certificate))
        target = self.target(url=f"http://127.0.0.1:{self.port}/in", timeout=5)
        failure = yield self.assertFailure(target.deliver(reading()), PushError)
        self.assertEqual(str(failure), f"127.0.0.1:{self.port} closed the connection without answering")
        self.assertEqual(target.status.state, TARGET_DOWN)


class HttpsTests(PushTestsBase):
    def setUp(self):
        self.ca = Authority("Push Test CA")
        self.directory = os.path.abspath(self.mktemp())
        Path(self.directory).mkdir()
        self.ca_file = self.ca.write(self.directory)

    def serve(self, names=("127.0.0.1",), authority=None, not_after=None):
        key, certificate = (authority or self.ca).issue(list(names), not_after=not_after)
        return self.listen(ssl.CertificateOptions(privateKey=key, certificate=certificate,
                                                  raiseMinimumTo=ssl.TLSVersion.TLSv1_2))

    @defer.inlineCallbacks
    def test_verified_against_the_ca(self):
        receiver = self.serve()
        receiver.authorization = "Bearer t0ken"
        target = self.target(ca=self.ca_file, auth="bearer", token="t0ken")
        yield target.deliver(reading(1))
        yield target.deliver(reading(2))
        self.assertEqual([r.header("x-reading-id") for r in receiver.received], ["1", "2"])
        self.assertEqual(self.connections.opened, 1)
        self.assertEqual(target.status.state, TARGET_CONNECTED)

    @defer.inlineCallbacks
    def test_other_ca(self):
        self.serve(authority=Authority("Someone Else CA"))
        target = self.target(ca=self.ca_file)
        failure = yield self.assertFailure(target.deliver(reading()), PushError)
        self.assertEqual(str(failure), f"certificate of https://127.0.0.1:{self.port} does not verify: it is "
                                       f"issued by Someone Else CA, which is not in the CA bundle {self.ca_file}")
        self.assertEqual((target.status.state, target.status.error), (TARGET_DOWN, str(failure)))
        self.assertEqual(self.receiver.received, [])

    @defer.inlineCallbacks
    def test_system_trust_store_does_not_know_a_test_ca(self):
        self.serve()
        target = self.target()
        failure = yield self.assertFailure(target.deliver(reading()), PushError)
        self.assertEqual(str(failure), f"certificate of https://127.0.0.1:{self.port} does not verify: it is "
                                       "issued by Push Test CA, which is not in the system's trust store")

    @defer.inlineCallbacks
    def test_wrong_host_name(self):
        self.serve(names=("other.example",))
        target = self.target(ca=self.ca_file)
        failure = yield self.assertFailure(target.deliver(reading()), PushError)
        self.assertEqual(str(failure), f"certificate of https://127.0.0.1:{self.port} does not verify: it is for "
                                       "other.example, not 127.0.0.1")

    @defer.inlineCallbacks
    def test_expired_certificate(self):
        self.serve(not_after=NOW - datetime.timedelta(hours=1))
        target = self.target(ca=self.ca_file)
        failure = yield self.assertFailure(target.deliver(reading()), PushError)
        self.assertIn(f"certificate of https://127.0.0.1:{self.port} does not verify: it expired on ",
                      str(failure))

    @defer.inlineCallbacks
    def test_missing_ca_file(self):
        self.serve()
        missing = str(Path(self.directory) / "gone.pem")
        target = self.target(ca=missing)
        failure = yield self.assertFailure(target.deliver(reading()), PushError)
        self.assertEqual(str(failure), f"cannot read the CA bundle (push.1.ca) {missing}: No such file or directory")
        self.assertEqual(target.status.state, TARGET_DOWN)

    @defer.inlineCallbacks
    def test_https_to_a_plain_port(self):
        self.connections = Connections(protocol.Factory.forProtocol(PlainAnswer))
        port = reactor.listenTCP(0, self.connections, interface="127.0.0.1")
        self.addCleanup(self.connections.closed)
        self.addCleanup(port.stopListening)
        self.port = port.getHost().port
        target = self.target(url=f"https://127.0.0.1:{self.port}/in", ca=self.ca_file)
        failure = yield self.assertFailure(target.deliver(reading()), PushError)
        self.assertEqual(str(failure), f"127.0.0.1:{self.port} does not speak TLS (is the URL http://?)")
