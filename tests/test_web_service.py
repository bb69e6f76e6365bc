"""
Tests for `cmegw.web.service`: the web part on real loopback sockets (port 0)
with the real reactor: HTTP and HTTPS listening, Digest through the whole
stack, a certificate installed live, TLS versions switched live, the part
found by `web_state`, and connections closed when it stops.
"""

from __future__ import annotations

import ssl as stdlib_ssl
from pathlib import Path
from typing import Any

import attrs
from twisted.internet import defer, reactor, ssl, threads
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool, readBody
from twisted.web.http_headers import Headers
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from cmegw.config.model import AuthDirective
from cmegw.config.settings import apply_settings
from cmegw.config.store import ConfigStore
from cmegw.service import GatewayService, Overrides
from cmegw.web.service import WebService, http_endpoint, https_endpoint, web_state
from cmegw.tls.store import SELF_SIGNED_CERT, generate_self_signed
from cmegw.tls.certificates import CertificateError
from tests.web_helpers import Placeholder, digest_header

LOOPBACK = "tcp:0:interface=127.0.0.1"


@implementer(IPolicyForHTTPS)
@attrs.frozen
class TrustOne:
    """HTTPS to the test's own self-signed certificate (issued for localhost)."""

    pem: bytes

    def creatorForNetloc(self, hostname: bytes, port: int) -> Any:
        return ssl.optionsForClientTLS("localhost", trustRoot=ssl.Certificate.loadPEM(self.pem))


class WebServiceTests(TestCase):
    def setUp(self) -> None:
        self.dir = Path(self.mktemp())
        self.dir.mkdir()
        self.store = ConfigStore(self.dir / "cmegw.toml")
        self.store.load()
        self.gateway = GatewayService(self.store, reactor, Overrides(http=LOOPBACK, https=LOOPBACK))
        self.pool = HTTPConnectionPool(reactor, persistent=False)

    def start(self) -> WebService:
        web = WebService(self.gateway, Placeholder())
        web.setServiceParent(self.gateway)  # the gateway itself is not started: no serial line
        web.startService()
        self.addCleanup(web.stopService)
        return web

    def port(self, web: WebService, kind: str) -> int:
        return int(web.listening[kind].rsplit(":", 1)[1])

    @defer.inlineCallbacks
    def get(self, url: str, authorization: str | None = None, pem: bytes | None = None) -> Any:
        agent = Agent(reactor, contextFactory=TrustOne(pem), pool=self.pool) if pem else Agent(reactor, pool=self.pool)
        headers = Headers({b"Authorization": [authorization.encode()]}) if authorization else None
        response = yield agent.request(b"GET", url.encode(), headers)
        body = yield readBody(response)
        return response, body

    @defer.inlineCallbacks
    def digest_get(self, url: str, path: str, pem: bytes | None = None) -> Any:
        response, _ = yield self.get(url, pem=pem)
        self.assertEqual(response.code, 401)
        challenge = response.headers.getRawHeaders(b"www-authenticate")[0].decode()
        header = digest_header(challenge, "admin", "admin", "GET", path)
        result = yield self.get(url, header, pem=pem)
        return result

    def certificate_pem(self) -> bytes:
        return (self.dir / SELF_SIGNED_CERT).read_bytes()

    def test_endpoints(self) -> None:
        self.assertEqual((http_endpoint(self.gateway), https_endpoint(self.gateway)), (LOOPBACK, LOOPBACK))
        gateway = GatewayService(self.store, reactor)
        self.assertEqual((http_endpoint(gateway), https_endpoint(gateway)), ("tcp:80", "tcp:443"))
        config = apply_settings(self.store.config, {"http.interface": "::1", "http.http_port": "8080"})
        gateway.running_config = config
        self.assertEqual(http_endpoint(gateway), "tcp:8080:interface=\\:\\:1")

    @defer.inlineCallbacks
    def test_http_digest(self) -> None:
        """The factory Digest admin/admin, end to end over a real socket."""
        web = self.start()
        url = f"http://127.0.0.1:{self.port(web, 'http')}/status?x=1"
        response, body = yield self.digest_get(url, "/status?x=1")
        self.assertEqual((response.code, body), (200, b"hello admin /status"))
        self.assertEqual(web.stats.status_401, 1)
        self.assertEqual(web.stats.status_200, 1)
        self.assertGreater(web.stats.rx_bytes, 0)
        self.assertEqual(len(web.access_log.entries), 2)

    @defer.inlineCallbacks
    def test_https(self) -> None:
        """HTTPS serves the self-signed certificate made on first start."""
        web = self.start()
        self.assertTrue(web.tls is not None and web.tls.self_signed)
        url = f"https://127.0.0.1:{self.port(web, 'https')}/status"
        response, body = yield self.digest_get(url, "/status", pem=self.certificate_pem())
        self.assertEqual((response.code, body), (200, b"hello admin /status"))

    @defer.inlineCallbacks
    def test_ssl_directive_redirects_to_the_https_port(self) -> None:
        web = self.start()
        self.gateway.running_config = self.gateway.running_config.evolve(
            auth=(AuthDirective("/", "config", "SSL"),))
        response, _ = yield self.get(f"http://127.0.0.1:{self.port(web, 'http')}/a?b=1")
        self.assertEqual(response.code, 302)
        location = response.headers.getRawHeaders(b"location")[0].decode()
        self.assertEqual(location, f"https://127.0.0.1:{web.https_port}/a?b=1")
        response, body = yield self.get(location, pem=self.certificate_pem())
        self.assertEqual((response.code, body), (200, b"hello - /a"))

    @defer.inlineCallbacks
    def test_install_certificate_live(self) -> None:
        """An uploaded certificate is saved in the configuration and served to the next connection."""
        web = self.start()
        port = self.port(web, "https")
        cert_pem, key_pem = generate_self_signed("uploaded")
        info = web.install_certificate(cert_pem, key_pem)
        self.assertEqual((info.subject, info.problem), ("O=cmegw,CN=uploaded", None))
        self.assertTrue(self.store.config.http.certificate.startswith("cmegw-https-"))
        self.assertIn(self.store.config.http.certificate, (self.dir / "cmegw.toml").read_text())
        served = yield threads.deferToThread(stdlib_ssl.get_server_certificate, ("127.0.0.1", port))
        self.assertEqual(served.strip(), cert_pem.decode().strip())
        self.assertEqual(self.port(web, "https"), port)
        self.assertRaises(CertificateError, web.install_certificate, b"not pem", key_pem)

    @defer.inlineCallbacks
    def test_tls_versions_live(self) -> None:
        """No TLS version enabled: HTTPS stops listening; enabled again: it listens again."""
        web = self.start()
        self.assertIsNotNone(web.https_port)
        self.store.change(apply_settings(self.store.config, {"http.tls_versions": ""}))
        yield defer.succeed(None)
        self.assertIsNone(web.https_port)
        self.assertEqual(web.listening["https"], "off (no TLS version enabled)")
        self.store.change(apply_settings(self.store.config, {"http.tls_versions": "TLSv1.3"}))
        self.assertIsNotNone(web.https_port)

    def test_server_off(self) -> None:
        self.store.change(apply_settings(self.store.config, {"http.enabled": "off"}))
        gateway = GatewayService(self.store, reactor, Overrides(http=LOOPBACK, https=LOOPBACK))
        web = WebService(gateway, Placeholder())
        web.startService()
        self.addCleanup(web.stopService)
        self.assertEqual(web.listening, {"http": "off", "https": "off"})

    def test_cannot_listen(self) -> None:
        """A port that cannot be opened is reported; the part keeps running."""
        from twisted.internet.protocol import ServerFactory

        taken = reactor.listenTCP(0, ServerFactory(), interface="127.0.0.1")
        self.addCleanup(taken.stopListening)
        busy = f"tcp:{taken.getHost().port}:interface=127.0.0.1"
        gateway = GatewayService(self.store, reactor, Overrides(http=busy, https="ssl:0"))
        web = WebService(gateway, Placeholder())
        web.startService()
        self.addCleanup(web.stopService)
        self.assertTrue(web.listening["http"].startswith(f"cannot listen on {busy}: "), web.listening)
        self.assertIn("give a tcp: endpoint", web.listening["https"])
        self.flushLoggedErrors()

    def test_web_state(self) -> None:
        self.assertRaises(LookupError, web_state, self.gateway)
        web = self.start()
        self.assertIs(web_state(self.gateway), web)

    @defer.inlineCallbacks
    def test_stop_closes_connections(self) -> None:
        """Stopping (a restart) closes the open keep-alive connections and the ports."""
        from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
        from twisted.internet.protocol import Protocol

        web = self.start()
        closed: defer.Deferred = defer.Deferred()

        class Client(Protocol):
            def connectionLost(self, reason: Any) -> None:
                closed.callback(None)

        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port(web, "http"))
        yield connectProtocol(endpoint, Client())
        for _ in range(100):
            if web.site.channels:
                break
            yield threads.deferToThread(lambda: None)
        yield web.stopService()
        yield closed
        self.assertEqual(web.listening, {"http": "off", "https": "off"})
