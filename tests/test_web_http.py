"""
Tests for `cmegw.web.http`: Max Timeout (408), Max Bytes (413), malformed
requests (400) and the statistics, on a `StringTransport` with a `Clock`
(the access log's tests are in tests/test_web_accesslog.py).
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource

from cmegw.stats import HttpStatistics
from cmegw.web.auth import NONCE_LIFETIME
from cmegw.web.http import ABORT_AFTER, UPLOAD_MAX_BYTES, GatewaySite
from tests.web_helpers import (GET, Placeholder, connect, digest_header, gated_site, make_site, parse_responses,
                               upload_head)

#: admin:admin, valid for ADMIN; foo:bar, valid for nobody.
BASIC_ADMIN = b"Authorization: Basic YWRtaW46YWRtaW4=\r\n"
FORGED = b"Authorization: Basic Zm9vOmJhcg==\r\n"


class RequestsTests(SynchronousTestCase):
    def test_answer_and_counters(self) -> None:
        """A request is answered; rx/tx bytes are what crossed the wire; 200 is counted."""
        site, _, _ = make_site()
        channel, transport = connect(site)
        channel.dataReceived(GET)
        [response] = parse_responses(transport.value())
        self.assertEqual((response.status, response.body), (200, b"hello - /status"))
        self.assertEqual(site.stats.rx_bytes, len(GET))
        self.assertEqual(site.stats.tx_bytes, len(transport.value()))
        self.assertEqual((site.stats.status_200, site.stats.status_unknown), (1, 0))

    def test_no_software_version(self) -> None:
        """The Server header names cmegw, not the web framework and its version."""
        site, _, _ = make_site()
        channel, transport = connect(site)
        channel.dataReceived(GET)
        [response] = parse_responses(transport.value())
        self.assertEqual(response.header("server"), "cmegw")
        self.assertEqual(response.header("x-content-type-options"), "nosniff")

    def test_pipelined_counted_once(self) -> None:
        """Pipelined requests are each answered, and their bytes counted once."""
        site, _, _ = make_site()
        channel, transport = connect(site)
        channel.dataReceived(GET * 3)
        self.assertEqual([r.status for r in parse_responses(transport.value())], [200, 200, 200])
        self.assertEqual(site.stats.rx_bytes, 3 * len(GET))
        self.assertEqual(site.stats.tx_bytes, len(transport.value()))

    def test_404_and_unknown(self) -> None:
        root = Resource()
        root.putChild(b"status", Placeholder())
        site, _, _ = make_site(root)
        channel, transport = connect(site)
        channel.dataReceived(b"GET /missing HTTP/1.1\r\nHost: gw\r\n\r\nPUT /status HTTP/1.1\r\nHost: gw\r\n"
                             b"Content-Length: 0\r\n\r\n")
        self.assertEqual([r.status for r in parse_responses(transport.value())], [404, 501])
        self.assertEqual((site.stats.status_404, site.stats.status_501), (1, 1))
        self.assertEqual(site.stats.by_status, {404: 1, 501: 1})

    def test_counted_statuses(self) -> None:
        stats = HttpStatistics()
        for code in (200, 400, 401, 404, 408, 413, 501, 302, 500):
            stats.count_response(code)
        counted = stats.as_dict()
        for code in (200, 400, 401, 404, 408, 413, 501):
            self.assertEqual(counted[f"status_{code}"], 1)
        self.assertEqual(counted["status_unknown"], 2)
        stats.reset()
        self.assertEqual(stats, HttpStatistics())

    def test_socket_errors(self) -> None:
        """A connection lost uncleanly is a socket error; a clean close is not."""
        site, _, _ = make_site()
        channel, _ = connect(site)
        channel.connectionLost(Failure(ConnectionDone()))
        channel, _ = connect(site)
        channel.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(site.stats.socket_errors, 1)

    def test_post_body(self) -> None:
        site, _, _ = make_site()
        channel, transport = connect(site)
        channel.dataReceived(b"POST /f HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\n\r\nhello")
        self.assertEqual(parse_responses(transport.value())[0].body, b"got 5")


class MaxTimeoutTests(SynchronousTestCase):
    def test_nothing_sent(self) -> None:
        """A client that sends nothing gets 408 after Max Timeout, and the connection is closed."""
        site, _, clock = make_site(max_timeout=10)
        channel, transport = connect(site)
        clock.advance(9.9)
        self.assertEqual(transport.value(), b"")
        clock.advance(0.1)
        [response] = parse_responses(transport.value())
        self.assertEqual(response.status, 408)
        self.assertEqual(response.header("connection"), "close")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(site.stats.status_408, 1)

    def test_slow_trickle(self) -> None:
        """A byte a second does not extend Max Timeout."""
        site, _, clock = make_site(max_timeout=10)
        channel, transport = connect(site)
        for byte in GET[:30]:
            channel.dataReceived(bytes([byte]))
            clock.advance(1)
            if transport.value():
                break
        self.assertEqual(parse_responses(transport.value())[0].status, 408)
        self.assertEqual(clock.seconds(), 10)
        self.assertTrue(transport.disconnecting)

    def test_slow_body(self) -> None:
        """The body counts too: headers in time but the body late is a 408."""
        site, _, clock = make_site(max_timeout=10)
        channel, transport = connect(site)
        channel.dataReceived(b"POST /f HTTP/1.1\r\nHost: gw\r\nContent-Length: 20\r\n\r\n12345")
        clock.advance(10)
        self.assertEqual(parse_responses(transport.value())[0].status, 408)

    def test_whole_request_in_time(self) -> None:
        """A request received whole in time is answered; the timer does not fire afterwards."""
        site, _, clock = make_site(max_timeout=10)
        channel, transport = connect(site)
        clock.advance(9)
        channel.dataReceived(GET)
        clock.advance(5)
        self.assertEqual([r.status for r in parse_responses(transport.value())], [200])
        self.assertFalse(transport.disconnecting)

    def test_idle_keep_alive_closed_silently(self) -> None:
        """After a response, a connection that asks nothing more is closed without a 408."""
        site, _, clock = make_site(max_timeout=10)
        channel, transport = connect(site)
        channel.dataReceived(GET)
        answered = transport.value()
        clock.advance(10)
        self.assertEqual(transport.value(), answered)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(site.stats.status_408, 0)

    def test_second_request_timed_from_its_start(self) -> None:
        site, _, clock = make_site(max_timeout=10)
        channel, transport = connect(site)
        clock.advance(8)
        channel.dataReceived(GET + b"GET / HTTP/1.1\r\n")
        clock.advance(9.9)
        self.assertEqual(len(parse_responses(transport.value())), 1)
        clock.advance(0.1)
        self.assertEqual([r.status for r in parse_responses(transport.value())], [200, 408])

    def test_applies_live(self) -> None:
        """A changed Max Timeout applies to the next request."""
        site, settings, clock = make_site(max_timeout=10)
        settings.change(max_timeout=3)
        channel, transport = connect(site)
        clock.advance(3)
        self.assertEqual(parse_responses(transport.value())[0].status, 408)

    def test_aborted_when_the_client_does_not_close(self) -> None:
        site, _, clock = make_site(max_timeout=10)
        channel, transport = connect(site)
        clock.advance(10)
        self.assertFalse(transport.disconnected)
        clock.advance(ABORT_AFTER)
        self.assertTrue(transport.disconnected)

    def test_no_timer_after_close(self) -> None:
        site, _, clock = make_site(max_timeout=10)
        channel, transport = connect(site)
        channel.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_no_log_date_timer(self) -> None:
        """A started site runs no timer of its own (Twisted's once-a-second log date is not used)."""
        site, _, clock = make_site()
        site.doStart()
        self.addCleanup(site.doStop)
        self.assertEqual(clock.getDelayedCalls(), [])


class MaxBytesTests(SynchronousTestCase):
    def test_upload_paths_have_their_own_limit(self) -> None:
        """A software update (a wheel is larger than Max Bytes) is bounded by the upload limit."""
        site = gated_site()
        channel, transport = connect(site)
        body = b"x" * 200_000
        channel.dataReceived(upload_head(b"/system/update", BASIC_ADMIN) + body[:1000])
        self.assertIs(site.uploading, channel, "the slot is taken while the body arrives")
        channel.dataReceived(body[1000:])
        self.assertEqual(parse_responses(transport.value())[0].status, 200)
        self.assertEqual(parse_responses(transport.value())[0].body, b"got %d" % len(body))
        self.assertIsNone(site.uploading, "the upload slot is free again")
        channel, transport = connect(gated_site())
        channel.dataReceived(upload_head(b"/system/update", BASIC_ADMIN, UPLOAD_MAX_BYTES + 1))
        self.assertEqual(parse_responses(transport.value())[0].status, 413)
        channel, transport = connect(gated_site())
        channel.dataReceived(upload_head(b"/system/other", BASIC_ADMIN))
        self.assertEqual(parse_responses(transport.value())[0].status, 413)

    def test_anonymous_and_parallel_uploads_are_bounded(self) -> None:
        """No credentials: Max Bytes as any request; a second upload while one is received: 503."""
        site = gated_site()
        channel, transport = connect(site)
        channel.dataReceived(b"POST /api/update HTTP/1.1\r\nHost: gw\r\nContent-Length: 200000\r\n\r\n")
        self.assertEqual(parse_responses(transport.value())[0].status, 413)
        auth = BASIC_ADMIN
        first, first_transport = connect(site)
        first.dataReceived(b"POST /api/update HTTP/1.1\r\nHost: gw\r\n" + auth
                           + b"Content-Length: 200000\r\n\r\n" + b"x" * 1000)
        self.assertIs(site.uploading, first)
        second, second_transport = connect(site)
        second.dataReceived(b"POST /system/update HTTP/1.1\r\nHost: gw\r\n" + auth
                            + b"Content-Length: 200000\r\n\r\n")
        self.assertEqual(parse_responses(second_transport.value())[0].status, 503)
        first.connectionLost(Failure(ConnectionLost()))
        self.assertIsNone(site.uploading, "a dropped upload frees the slot")
        third, third_transport = connect(site)
        third.dataReceived(b"POST /system/update HTTP/1.1\r\nHost: gw\r\n" + auth
                           + b"Content-Length: 5\r\n\r\nhello")
        self.assertEqual(parse_responses(third_transport.value())[0].status, 200)

    def test_upload_headers_obey_max_bytes(self) -> None:
        """Only the body of an upload has the upload limit: its headers still obey Max Bytes."""
        site, _, _ = make_site(max_bytes=1024)
        channel, transport = connect(site)
        channel.dataReceived(b"POST /api/update HTTP/1.1\r\nHost: gw\r\nX-Big: " + b"a" * 1100
                             + b"\r\nContent-Length: 5\r\n\r\nhello")
        self.assertEqual(parse_responses(transport.value())[0].status, 413)

    def test_headers_too_large(self) -> None:
        site, _, _ = make_site(max_bytes=1024)
        channel, transport = connect(site)
        channel.dataReceived(b"GET / HTTP/1.1\r\nHost: gw\r\nX-Big: " + b"a" * 1100 + b"\r\n\r\n")
        [response] = parse_responses(transport.value())
        self.assertEqual(response.status, 413)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(site.stats.status_413, 1)

    def test_many_small_headers(self) -> None:
        site, _, _ = make_site(max_bytes=1024)
        channel, transport = connect(site)
        channel.dataReceived(b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * 200 + b"\r\n")
        self.assertEqual(parse_responses(transport.value())[0].status, 413)

    def test_line_without_end(self) -> None:
        """A line that never ends is refused as soon as it is too long."""
        site, _, _ = make_site(max_bytes=1024)
        channel, transport = connect(site)
        channel.dataReceived(b"GET /" + b"a" * 600)
        self.assertEqual(transport.value(), b"")
        channel.dataReceived(b"a" * 600)
        self.assertEqual(parse_responses(transport.value())[0].status, 413)

    def test_header_above_twisted_limit_below_max_bytes(self) -> None:
        """Max Bytes decides, not Twisted's own 16 KiB header limit."""
        site, _, _ = make_site(max_bytes=40960)
        channel, transport = connect(site)
        channel.dataReceived(b"GET / HTTP/1.1\r\nHost: gw\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n")
        self.assertEqual(parse_responses(transport.value())[0].status, 200)

    def test_content_length_refused_before_the_body(self) -> None:
        """An announced body too large is refused at once, without a 100 Continue."""
        site, _, _ = make_site(max_bytes=1024)
        channel, transport = connect(site)
        channel.dataReceived(b"POST /f HTTP/1.1\r\nHost: gw\r\nExpect: 100-continue\r\nContent-Length: 5000\r\n\r\n")
        self.assertNotIn(b"100 Continue", transport.value())
        self.assertEqual(parse_responses(transport.value())[0].status, 413)
        channel.dataReceived(b"x" * 5000)
        self.assertEqual(len(parse_responses(transport.value())), 1)

    def test_body_within_limit(self) -> None:
        site, _, _ = make_site(max_bytes=1024)
        channel, transport = connect(site)
        head = b"POST /f HTTP/1.1\r\nHost: gw\r\nContent-Length: %d\r\n\r\n"
        size = 1024 - len(head % 1000)
        channel.dataReceived(head % size + b"x" * size)
        self.assertEqual(parse_responses(transport.value())[0].status, 200)

    def test_chunked_body(self) -> None:
        """A chunked body is counted as it arrives: 413 once past Max Bytes."""
        site, _, _ = make_site(max_bytes=1024)
        channel, transport = connect(site)
        channel.dataReceived(b"POST /f HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(10):
            channel.dataReceived(b"100\r\n" + b"x" * 256 + b"\r\n")
        [response] = parse_responses(transport.value())
        self.assertEqual(response.status, 413)
        self.assertTrue(transport.disconnecting)

    def test_chunked_within_limit(self) -> None:
        site, _, _ = make_site(max_bytes=1024)
        channel, transport = connect(site)
        channel.dataReceived(b"POST /f HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n"
                             b"5\r\nhello\r\n3\r\nabc\r\n0\r\n\r\n")
        self.assertEqual(parse_responses(transport.value())[0].body, b"got 8")

    def test_applies_live(self) -> None:
        site, settings, _ = make_site(max_bytes=40960)
        settings.change(max_bytes=1024)
        channel, transport = connect(site)
        channel.dataReceived(b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 2000 + b"\r\n\r\n")
        self.assertEqual(parse_responses(transport.value())[0].status, 413)


class UploadAllowanceTests(SynchronousTestCase):
    """The upload allowance goes only to a request the gate will let in, checked when its headers arrive."""

    def test_forged_credentials_keep_max_bytes(self) -> None:
        """Credentials nobody has (or a wrong password) get Max Bytes, and never the slot."""
        wrong = b"Authorization: Basic YWRtaW46d3Jvbmc=\r\n"  # admin:wrong
        for auth in (FORGED, wrong, b"Authorization: Basic !!!\r\n", b"Authorization: Bearer x\r\n"):
            site = gated_site()
            channel, transport = connect(site)
            channel.dataReceived(upload_head(b"/api/update", auth))
            self.assertEqual(parse_responses(transport.value())[0].status, 413, auth)
            self.assertIsNone(site.uploading)

    def test_forged_chunked_body_never_takes_the_slot(self) -> None:
        """Without a Content-Length the body is refused once past Max Bytes, the slot untouched all along."""
        site = gated_site()
        channel, transport = connect(site)
        channel.dataReceived(upload_head(b"/system/update", FORGED, length=None))
        self.assertIsNone(site.uploading)
        for _ in range(10):
            channel.dataReceived(b"100\r\n" + b"x" * 256 + b"\r\n")
            self.assertIsNone(site.uploading)
        self.assertEqual(parse_responses(transport.value())[0].status, 413)

    def test_forged_upload_cannot_block_a_genuine_one(self) -> None:
        """A forged upload neither holds the slot against the administrator nor gets 503 beside one."""
        site = gated_site()
        forged, forged_transport = connect(site)
        forged.dataReceived(upload_head(b"/api/update", FORGED, length=None) + b"10\r\n" + b"x" * 16 + b"\r\n")
        genuine, genuine_transport = connect(site)
        genuine.dataReceived(upload_head(b"/api/update", BASIC_ADMIN, 100_000) + b"x" * 50_000)
        self.assertIs(site.uploading, genuine)
        again, again_transport = connect(site)
        again.dataReceived(upload_head(b"/system/update", FORGED))
        self.assertEqual(parse_responses(again_transport.value())[0].status, 413)
        genuine.dataReceived(b"x" * 50_000)
        self.assertEqual(parse_responses(genuine_transport.value())[0].body, b"got 100000")
        self.assertIsNone(site.uploading)

    def test_small_forged_upload_gets_the_gates_401(self) -> None:
        channel, transport = connect(gated_site())
        channel.dataReceived(upload_head(b"/api/update", FORGED, 5) + b"hello")
        self.assertEqual(parse_responses(transport.value())[0].status, 401)

    def challenge(self, site: GatewaySite, path: str) -> str:
        channel, transport = connect(site)
        channel.dataReceived(upload_head(path.encode(), b"", 0))
        [response] = parse_responses(transport.value())
        self.assertEqual(response.status, 401)
        return next(c for c in response.headers["www-authenticate"] if "SHA-256" in c)

    def test_digest(self) -> None:
        """A valid Digest response gets the allowance; looking at it first does not use its nonce count up."""
        site = gated_site("Digest")
        path = "/http/certificate"
        header = digest_header(self.challenge(site, path), "admin", "admin", "POST", path)
        auth = b"Authorization: " + header.encode() + b"\r\n"
        channel, transport = connect(site)
        channel.dataReceived(upload_head(path.encode(), auth) + b"x" * 1000)
        self.assertIs(site.uploading, channel)
        channel.dataReceived(b"x" * 199_000)
        self.assertEqual(parse_responses(transport.value())[0].body, b"got 200000")
        self.assertIsNone(site.uploading)
        replay, replay_transport = connect(site)
        replay.dataReceived(upload_head(path.encode(), auth))
        self.assertEqual(parse_responses(replay_transport.value())[0].status, 413, "a replayed nonce count")
        self.assertIsNone(site.uploading)

    def test_digest_upload_outlasting_its_nonce(self) -> None:
        """A nonce fresh when the headers came in stays good for a body that takes longer than it lives."""
        site = gated_site("Digest")
        path = "/api/update"
        header = digest_header(self.challenge(site, path), "admin", "admin", "POST", path)
        site.reactor.advance(NONCE_LIFETIME / 3)  # the user takes a while to pick the file
        channel, transport = connect(site)
        channel.dataReceived(upload_head(path.encode(), b"Authorization: " + header.encode() + b"\r\n")
                             + b"x" * 1000)
        self.assertIs(site.uploading, channel)
        site.reactor.advance(NONCE_LIFETIME * 5 / 6)  # a slow link; within the upload time limit
        channel.dataReceived(b"x" * 199_000)
        self.assertEqual(parse_responses(transport.value())[0].body, b"got 200000")
        # A request sent after the nonce expired is told it is stale.
        late, late_transport = connect(site)
        late.dataReceived(upload_head(path.encode(), b"Authorization: " + header.encode() + b"\r\n", 0))
        [response] = parse_responses(late_transport.value())
        self.assertEqual(response.status, 401)
        self.assertIn('stale="true"', " ".join(response.headers["www-authenticate"]))

    def test_digest_wrong_password(self) -> None:
        site = gated_site("Digest")
        header = digest_header(self.challenge(site, "/api/update"), "admin", "nope", "POST", "/api/update")
        channel, transport = connect(site)
        channel.dataReceived(upload_head(b"/api/update", b"Authorization: " + header.encode() + b"\r\n"))
        self.assertEqual(parse_responses(transport.value())[0].status, 413)
        self.assertIsNone(site.uploading)

    def test_open_path_needs_no_credentials(self) -> None:
        """Where a None directive lets anyone in (and update), anyone may send the file: one at a time."""
        site = gated_site("None")
        channel, transport = connect(site)
        channel.dataReceived(upload_head() + b"x" * 1000)
        self.assertIs(site.uploading, channel)
        channel.dataReceived(b"x" * 199_000)
        self.assertEqual(parse_responses(transport.value())[0].body, b"got 200000")

    def test_refused_paths_keep_max_bytes(self) -> None:
        """SSL over plain HTTP (the gate redirects or refuses): Max Bytes, even with good credentials."""
        for kind in ("SSL", "SSL/Basic"):
            site = gated_site(kind)
            channel, transport = connect(site)
            channel.dataReceived(upload_head(b"/api/update", BASIC_ADMIN))
            self.assertEqual(parse_responses(transport.value())[0].status, 413, kind)
        site = gated_site("SSL/Basic")
        channel, transport = connect(site, secure=True)
        channel.dataReceived(upload_head(b"/api/update", BASIC_ADMIN) + b"x" * 200_000)
        self.assertEqual(parse_responses(transport.value())[0].body, b"got 200000")

    def test_root_that_cannot_judge(self) -> None:
        """A site without a gate gives no allowance, whatever the request carries."""
        site, _, _ = make_site(max_bytes=1024)
        channel, transport = connect(site)
        channel.dataReceived(upload_head(b"/api/update", BASIC_ADMIN))
        self.assertEqual(parse_responses(transport.value())[0].status, 413)

    def test_pending_answer_is_no(self) -> None:
        """A gate that has not answered when the headers are in: Max Bytes, and its question is cancelled."""
        asked: list[Deferred] = []

        class SlowGate(Placeholder):
            def admits(self, method: bytes, uri: bytes, headers: Headers, secure: bool,
                       peer: str | None = None) -> Deferred:
                asked.append(Deferred())
                return asked[-1]

        site, _, _ = make_site(SlowGate(), max_bytes=1024)
        channel, transport = connect(site)
        channel.dataReceived(upload_head(b"/api/update", BASIC_ADMIN))
        self.assertEqual(parse_responses(transport.value())[0].status, 413)
        self.assertIsNone(site.uploading)
        self.assertTrue(asked[0].called)


class MalformedTests(SynchronousTestCase):
    def assertBadRequest(self, data: bytes) -> None:
        site, _, _ = make_site()
        channel, transport = connect(site)
        channel.dataReceived(data)
        responses = parse_responses(transport.value())
        self.assertEqual([r.status for r in responses], [400], data)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(site.stats.status_400, 1)

    def test_request_line(self) -> None:
        self.assertBadRequest(b"GARBAGE\r\n\r\n")

    def test_header_without_colon(self) -> None:
        self.assertBadRequest(b"GET / HTTP/1.1\r\nHost gw\r\n\r\n")

    def test_header_name(self) -> None:
        self.assertBadRequest(b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n")

    def test_content_length(self) -> None:
        self.assertBadRequest(b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n")

    def test_two_lengths(self) -> None:
        self.assertBadRequest(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n")

    def test_chunk_size(self) -> None:
        self.assertBadRequest(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")

    def test_transfer_encoding(self) -> None:
        self.assertBadRequest(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n")

    def test_bad_multipart(self) -> None:
        self.assertBadRequest(b"POST / HTTP/1.1\r\nContent-Type: multipart/form-data; boundary=x\r\n"
                              b"Content-Length: 5\r\n\r\nhello")

    def test_binary_noise_is_never_500(self) -> None:
        """Noise gets a 400 or nothing yet, never a 500 nor an exception."""
        import random

        noise = random.Random(7)
        for _ in range(200):
            site, _, clock = make_site()
            channel, transport = connect(site)
            channel.dataReceived(bytes(noise.randrange(256) for _ in range(noise.randrange(1, 300))))
            clock.advance(11)
            statuses = [r.status for r in parse_responses(transport.value())]
            self.assertIn(statuses, ([400], [408], [413]))
        self.assertEqual(self.flushLoggedErrors(), [])
