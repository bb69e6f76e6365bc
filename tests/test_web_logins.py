"""
Tests for the login limit of `cmegw.web.auth.AuthGate` (`cmegw.login.LoginLimiter`):
failed Basic and Digest logins logged and counted per source address, 429
with Retry-After while the source waits, other addresses unaffected, and the
counters in /metrics.
"""

from __future__ import annotations

import base64

from prometheus_client.exposition import generate_latest
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers

from cmegw.config.model import AuthDirective
from cmegw.login import BLOCK_AFTER, BLOCK_SECONDS, FREE_FAILURES, LoginLimiter
from cmegw.ops.metrics import registry_for
from cmegw.testing import fake_state
from cmegw.web.auth import AuthGate
from tests.test_login import capture_logs
from tests.web_helpers import ADMIN, Placeholder, Response, digest_header, make_site, parse_responses

ATTACKER = "192.0.2.66"
ADMIN_HOST = "192.0.2.10"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class WebLoginLimitTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.logins = LoginLimiter(self.clock)
        self.directives = (AuthDirective("/", "config", "Digest", (ADMIN,)),
                           AuthDirective("/basic", "basic", "Basic", (ADMIN,)),
                           AuthDirective("/public", "config", "None"))
        self.gate = AuthGate(Placeholder(), lambda: self.directives, lambda: None, clock=self.clock,
                             logins=self.logins)
        self.site, _, _ = make_site(self.gate, clock=self.clock)

    def request(self, path: str = "/status", peer: str = ATTACKER, **headers: str) -> Response:
        transport = StringTransport(hostAddress=IPv4Address("TCP", "127.0.0.1", 8080),
                                    peerAddress=IPv4Address("TCP", peer, 40000))
        channel = self.site.buildProtocol(transport.getPeer())
        channel.makeConnection(transport)
        lines = [f"GET {path} HTTP/1.1", "Host: gw"] + [f"{k}: {v}" for k, v in headers.items()]
        channel.dataReceived(("\r\n".join(lines) + "\r\n\r\n").encode())
        [response] = parse_responses(transport.value())
        return response

    def digest(self, password: str, peer: str = ATTACKER, user: str = "admin") -> Response:
        first = self.request(peer=peer)
        if first.status == 429:
            return first
        header = digest_header(first.headers["www-authenticate"][0], user, password, "GET", "/status")
        return self.request(peer=peer, Authorization=header)

    def block(self) -> None:
        for _ in range(BLOCK_AFTER):
            self.clock.advance(self.logins.wait(ATTACKER))
            self.assertEqual(self.digest("wrong").status, 401)

    def test_first_failures_are_plain_401(self) -> None:
        for _ in range(FREE_FAILURES):
            self.assertEqual(self.digest("wrong").status, 401)
        self.assertEqual(self.digest("admin").status, 200)

    def test_wait_then_429_with_retry_after(self) -> None:
        for _ in range(FREE_FAILURES + 1):
            self.digest("wrong")
        response = self.request(Authorization=basic("admin", "admin"))
        self.assertEqual(response.status, 429)
        self.assertEqual(response.headers["retry-after"], ["1"])
        self.clock.advance(1)
        self.assertEqual(self.digest("wrong").status, 401)
        self.assertEqual(self.request().headers["retry-after"], ["2"], "the wait grows")

    def test_blocked_source_and_the_administrator_elsewhere(self) -> None:
        self.block()
        response = self.digest("admin")
        self.assertEqual(response.status, 429)
        self.assertEqual(int(response.headers["retry-after"][0]), BLOCK_SECONDS)
        self.assertEqual(self.request("/basic", Authorization=basic("admin", "admin")).status, 429)
        self.assertEqual(self.request("/public").status, 200, "open paths are still served")
        self.assertEqual(self.digest("admin", peer=ADMIN_HOST).status, 200, "another address logs in")
        self.clock.advance(BLOCK_SECONDS)
        self.assertEqual(self.digest("admin").status, 200)
        self.assertEqual(self.digest("wrong").status, 401, "a good login cleared the count")

    def test_good_login_resets(self) -> None:
        for _ in range(FREE_FAILURES):
            self.digest("wrong")
        self.assertEqual(self.digest("admin").status, 200)
        for _ in range(FREE_FAILURES):
            self.assertEqual(self.digest("wrong").status, 401)

    def test_no_credentials_and_stale_nonces_are_not_failures(self) -> None:
        for _ in range(BLOCK_AFTER * 2):
            self.assertEqual(self.request().status, 401)
        header = digest_header(self.request().headers["www-authenticate"][0], "admin", "admin", "GET", "/status",
                               nonce="unknown")
        for _ in range(BLOCK_AFTER):
            self.assertEqual(self.request(Authorization=header).status, 401)
        self.assertEqual(len(self.logins), 0)

    def test_failures_logged_with_source_user_realm(self) -> None:
        events = capture_logs(self, "cmegw.login")
        self.request("/basic", Authorization=basic("ev\x1b[2Jil", "x"))
        self.digest("wrong", user="root")
        texts = [e["log_format"].format(**e) for e in events]
        self.assertEqual(len(texts), 2)
        self.assertIn(ATTACKER, texts[0])
        self.assertIn("'basic'", texts[0])
        self.assertIn(repr("ev\x1b[2Jil"), texts[0])
        self.assertNotIn("\x1b", texts[0])
        self.assertIn("'root'", texts[1])
        self.assertIn("'config'", texts[1])

    def test_counted_in_metrics(self) -> None:
        state = fake_state(self.clock, logins=self.logins)
        self.block()
        self.request()
        text = generate_latest(registry_for(state)).decode()
        self.assertIn(f'cmegw_login_failures_total{{face="web"}} {BLOCK_AFTER}.0', text)
        self.assertIn('cmegw_login_failures_total{face="console"} 0.0', text)
        self.assertIn('cmegw_login_refused_total{face="web"} 1.0', text)
        self.assertIn("cmegw_login_sources 1.0", text)

    def test_admits_refuses_a_waiting_source(self) -> None:
        self.block()
        challenge = self.request(peer=ADMIN_HOST).headers["www-authenticate"][0]
        header = digest_header(challenge, "admin", "admin", "POST", "/api/update")
        headers = Headers({b"authorization": [header.encode()]})
        answers: list[bool] = []
        self.gate.admits(b"POST", b"/api/update", headers, False, peer=ATTACKER).addBoth(answers.append)
        self.gate.admits(b"POST", b"/api/update", headers, False, peer=ADMIN_HOST).addBoth(answers.append)
        self.assertEqual(answers, [False, True])
