"""
Tests for cmegw.tls.contexts and cmegw.tls.protocol: verified TLS to head-ends and TLS accept
mode, on loopback in this process, with a test CA and certificates made here
with `cryptography`.
"""

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from twisted.internet import defer, protocol, reactor, ssl, task
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol, wrapClientTLS
from twisted.trial.unittest import TestCase

from cmegw.config.model import Config, ConfigError, TunnelConfig
from cmegw.config.settings import apply_setting
from cmegw.stats import TunnelStatistics
from cmegw.testing import FakeLine
from cmegw.tunnel.accept import TunnelService
from cmegw.tunnel.base import Section
from cmegw.tunnel.connect import CONNECT_CONNECTED, ConnectTunnelService
from cmegw.tls.protocol import TlsClientEndpoint, TunnelTlsFactory

from tests.pki import DAY, NOW, Authority, key_pem, pem, write  # noqa: F401


def server_options(key, certificate, client_ca=None):
    extra = {}
    if client_ca is not None:
        extra["trustRoot"] = ssl.trustRootFromCertificates([ssl.Certificate.loadPEM(pem(client_ca.certificate))])
    return ssl.CertificateOptions(privateKey=key, certificate=certificate,
                                  raiseMinimumTo=ssl.TLSVersion.TLSv1_2, **extra)


class HeadEnd(protocol.Protocol):
    """A head-end's connection: keeps what the gateway sends."""

    def connectionMade(self):
        self.factory.connections.append(self)
        self.received = b""

    def dataReceived(self, data):
        self.received += data


class HeadEndFactory(protocol.Factory):
    protocol = HeadEnd

    def __init__(self):
        self.connections = []


@defer.inlineCallbacks
def wait(condition, timeout=10.0):
    for _ in range(int(timeout / 0.02)):
        if condition():
            return
        yield task.deferLater(reactor, 0.02, lambda: None)
    raise AssertionError("condition not met in time")


# -- connect mode over TLS ----------------------------------------------------------------

class ConnectTlsTests(TestCase):
    """The gateway dials a TLS head-end on 127.0.0.1 that calls itself headend.example."""

    def setUp(self):
        self.dir = Path(self.mktemp()).resolve()
        self.dir.mkdir()
        self.ca = Authority("Test CA")
        self.ca_file = write(self.dir, "ca.pem", pem(self.ca.certificate))
        self.line = FakeLine()
        self.stats = TunnelStatistics()

    @defer.inlineCallbacks
    def head_end(self, key, certificate, client_ca=None):
        self.headend = HeadEndFactory()
        port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            TunnelTlsFactory(server_options(key, certificate, client_ca), False, self.headend))
        self.addCleanup(port.stopListening)
        return port.getHost().port

    def dial(self, port, **settings):
        config = TunnelConfig(connect_mode="always", connect_hosts=(f"tls:host=headend.example:port={port}",),
                              connect_tls_ca=settings.pop("ca", self.ca_file), **settings)

        def endpoint(reactor_, host, creator):  # headend.example is 127.0.0.1 here
            return TlsClientEndpoint(creator, TCP4ClientEndpoint(reactor_, "127.0.0.1", host.port, timeout=5))

        section = Section(config)
        self.connector = ConnectTunnelService(1, lambda: section, self.line, reactor, self.stats,
                                              random=lambda: 0.0, endpoint=endpoint)
        self.connector.startService()
        self.addCleanup(self.connector.stopService)
        return self.connector

    @defer.inlineCallbacks
    def refused(self, port, **settings):
        connector = self.dial(port, **settings)
        yield wait(lambda: connector.connect_stats.tls_failures >= 1)
        self.assertEqual(self.stats.completed_connects, 0)
        self.assertGreaterEqual(self.stats.dropped_connects, 1)
        self.assertEqual(bytes(self.line.written), b"", "an unverified head-end never touches the line")
        self.assertIn("waiting", connector.text())
        return connector.connect_stats.last_error

    @defer.inlineCallbacks
    def test_verified_head_end(self):
        port = yield self.head_end(*self.ca.issue(["headend.example"]))
        connector = self.dial(port)
        yield wait(lambda: connector.connect_stats.state == CONNECT_CONNECTED)
        self.assertEqual(connector.text(), f"connected to headend.example:{port} (TLS)")
        yield wait(lambda: len(self.headend.connections) == 1)
        self.line.feed(b"\x68\x03\x03\x68\x08\x01\x72\x7b\x16")
        yield wait(lambda: self.headend.connections[0].received == b"\x68\x03\x03\x68\x08\x01\x72\x7b\x16")
        self.headend.connections[0].transport.write(b"\x10\x5b\x01\x5c\x16")
        yield wait(lambda: bytes(self.line.written) == b"\x10\x5b\x01\x5c\x16")
        self.assertEqual(self.stats.completed_connects, 1)

    @defer.inlineCallbacks
    def test_certificate_for_another_name(self):
        port = yield self.head_end(*self.ca.issue(["other.example"]))
        reason = yield self.refused(port)
        self.assertIn("the head-end's certificate is for other.example, not headend.example", reason)

    @defer.inlineCallbacks
    def test_certificate_from_another_ca(self):
        other = Authority("Other CA")
        port = yield self.head_end(*other.issue(["headend.example"]))
        reason = yield self.refused(port)
        self.assertIn(f"certificate not trusted: issued by Other CA which is not in the CA bundle {self.ca_file}",
                      reason)

    @defer.inlineCallbacks
    def test_system_trust_store(self):
        port = yield self.head_end(*self.ca.issue(["headend.example"]))
        reason = yield self.refused(port, ca="")
        self.assertIn("certificate not trusted: issued by Test CA which is not in the system's trust store", reason)

    @defer.inlineCallbacks
    def test_expired_certificate(self):
        port = yield self.head_end(*self.ca.issue(["headend.example"], not_before=NOW - 10 * DAY,
                                                  not_after=NOW - 2 * DAY))
        reason = yield self.refused(port)
        self.assertIn("the head-end's certificate expired on", reason)
        self.assertIn((NOW - 2 * DAY).strftime("%Y-%m-%d"), reason)

    @defer.inlineCallbacks
    def test_mutual_tls(self):
        clients = Authority("Client CA")
        port = yield self.head_end(*self.ca.issue(["headend.example"]), client_ca=clients)
        key, certificate = clients.issue(["gateway-1"], client=True)
        connector = self.dial(port, connect_tls_certificate=write(self.dir, "gw.crt", pem(certificate)),
                              connect_tls_key=write(self.dir, "gw.key", key_pem(key)))
        yield wait(lambda: len(self.headend.connections) == 1)
        yield wait(lambda: connector.connect_stats.state == CONNECT_CONNECTED)
        self.line.feed(b"\xe5")
        yield wait(lambda: self.headend.connections[0].received == b"\xe5")

    @defer.inlineCallbacks
    def test_mutual_tls_without_a_client_certificate(self):
        port = yield self.head_end(*self.ca.issue(["headend.example"]), client_ca=Authority("Client CA"))
        connector = self.dial(port)
        yield wait(lambda: "client certificate" in connector.connect_stats.last_error)
        self.assertIn("the head-end refused the TLS handshake", connector.connect_stats.last_error)
        self.assertEqual(b"".join(c.received for c in self.headend.connections), b"")
        self.assertGreaterEqual(connector.connect_stats.tls_failures, 1)


# -- accept mode over TLS ------------------------------------------------------------------

class Client(protocol.Protocol):
    def connectionMade(self):
        self.received = b""
        self.lost = defer.Deferred()

    def dataReceived(self, data):
        self.received += data

    def connectionLost(self, reason):
        self.lost.callback(None)


class AcceptTlsTests(TestCase):
    """The tunnel serves the HTTPS store's certificate; optionally it asks clients for theirs."""

    def setUp(self):
        self.dir = Path(self.mktemp()).resolve()
        self.dir.mkdir()
        self.ca = Authority("Gateway CA")
        key, certificate = self.ca.issue(["localhost", "127.0.0.1"])
        self.files = (Path(write(self.dir, "https.crt", pem(certificate))),
                      Path(write(self.dir, "https.key", key_pem(key))))
        self.line = FakeLine()

    def listen(self, **settings):
        config = TunnelConfig(listen="tcp:0:interface=127.0.0.1", tls=True, **settings)
        self.svc = TunnelService(1, config, self.line, reactor, https_files=lambda: self.files)
        self.svc.startService()
        self.addCleanup(self.svc.stopService)
        return wait(lambda: self.svc.port is not None)

    def connect(self, client_key=None, client_certificate=None):
        trust = ssl.Certificate.loadPEM(pem(self.ca.certificate))
        own = None
        if client_key is not None:
            own = ssl.PrivateCertificate.loadPEM(pem(client_certificate) + key_pem(client_key))
        options = ssl.optionsForClientTLS("localhost", trustRoot=trust, clientCertificate=own)
        endpoint = wrapClientTLS(options, TCP4ClientEndpoint(reactor, "127.0.0.1", self.svc.port.getHost().port))
        return connectProtocol(endpoint, Client())

    @defer.inlineCallbacks
    def test_tls_client_uses_the_line(self):
        yield self.listen()
        client = yield self.connect()
        yield wait(lambda: self.svc.factory.client is not None)
        client.transport.write(b"\x10\x40\x01\x41\x16")
        yield wait(lambda: bytes(self.line.written) == b"\x10\x40\x01\x41\x16")
        self.line.feed(b"\xe5")
        yield wait(lambda: client.received == b"\xe5")
        version = client.transport.getHandle().get_protocol_version_name()
        self.assertIn(version, ("TLSv1.2", "TLSv1.3"))
        client.transport.loseConnection()
        yield client.lost

    @defer.inlineCallbacks
    def test_plain_client_refused(self):
        yield self.listen()
        client = yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.svc.port.getHost().port),
                                       Client())
        client.transport.write(b"\x10\x40\x01\x41\x16" * 20)
        yield client.lost
        yield wait(lambda: self.svc.access.tls_refused == 1)
        self.assertIn("the client does not speak TLS", self.svc.access.last_refused)
        self.assertEqual(self.svc.stats.dropped_accepts, 1)
        self.assertEqual(bytes(self.line.written), b"")
        self.assertEqual(self.svc.stats.completed_accepts, 0)

    @defer.inlineCallbacks
    def test_client_certificate_required(self):
        clients = Authority("Client CA")
        yield self.listen(tls_client_ca=write(self.dir, "clients.pem", pem(clients.certificate)))
        client = yield self.connect()
        yield client.lost
        yield wait(lambda: self.svc.access.tls_refused == 1)
        self.assertIn("the client showed no certificate", self.svc.access.last_refused)
        stranger = Authority("Stranger CA")
        client = yield self.connect(*stranger.issue(["head-end"], client=True))
        yield client.lost
        yield wait(lambda: self.svc.access.tls_refused == 2)
        self.assertIn("issued by Stranger CA, not by the CA in", self.svc.access.last_refused)
        self.assertEqual(bytes(self.line.written), b"")
        client = yield self.connect(*clients.issue(["head-end"], client=True))
        yield wait(lambda: self.svc.factory.client is not None)
        client.transport.write(b"\xe5")
        yield wait(lambda: bytes(self.line.written) == b"\xe5")
        client.transport.loseConnection()
        yield client.lost

    @defer.inlineCallbacks
    def test_unusable_certificate_is_a_listen_failure(self):
        self.files = (self.dir / "missing.crt", self.dir / "missing.key")
        config = TunnelConfig(listen="tcp:0:interface=127.0.0.1", tls=True)
        svc = TunnelService(1, config, self.line, reactor, https_files=lambda: self.files)
        svc.startService()
        self.addCleanup(svc.stopService)
        yield wait(lambda: svc.stats.state == "listen failed")
        self.assertIn("cannot read the HTTPS certificate", svc.stats.error)


# -- the settings ------------------------------------------------------------------------

class SettingTests(TestCase):
    def setUp(self):
        self.dir = Path(self.mktemp()).resolve()
        self.dir.mkdir()

    def refused(self, name, value):
        with self.assertRaises(ConfigError) as caught:
            apply_setting(Config(), name, value)
        self.assertEqual(caught.exception.setting, name)
        return str(caught.exception)

    def test_ca_file_must_be_pem(self):
        not_pem = write(self.dir, "ca.der", b"\x30\x82\x01\x0a not PEM")
        self.assertIn("use a PEM file of certificates", self.refused("tunnel.1.connect_tls_ca", not_pem))
        self.assertIn("use a PEM file of certificates", self.refused("tunnel.1.tls_client_ca", not_pem))
        broken = write(self.dir, "broken.pem", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
        self.assertIn("cannot be read", self.refused("tunnel.1.connect_tls_ca", broken))
        self.assertIn("absolute path", self.refused("tunnel.1.connect_tls_ca", "ca.pem"))
        good = write(self.dir, "ca.pem", pem(Authority("CA").certificate))
        self.assertEqual(apply_setting(Config(), "tunnel.1.connect_tls_ca", good).tunnels[1].connect_tls_ca, good)

    def test_key_must_be_a_plain_pem_key(self):
        key = ec.generate_private_key(ec.SECP256R1())
        locked = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.BestAvailableEncryption(b"secret"))
        self.assertIn("without a passphrase", self.refused("tunnel.1.connect_tls_key", write(self.dir, "k", locked)))
        self.assertIn("PEM private key", self.refused("tunnel.1.connect_tls_key",
                                                      write(self.dir, "c", pem(Authority("x").certificate))))
        good = write(self.dir, "good.key", key_pem(key))
        self.assertEqual(apply_setting(Config(), "tunnel.1.connect_tls_key", good).tunnels[1].connect_tls_key, good)

    def test_hosts(self):
        self.assertIn("at most 12 hosts", self.refused(
            "tunnel.1.connect_hosts", ", ".join(f"tcp:host=10.0.0.{i}:port=1" for i in range(13))))
        self.assertIn("use tcp:host=NAME:port=N", self.refused("tunnel.1.connect_hosts", "tcp:host=a"))
        self.assertIn("use tcp:host=NAME:port=N", self.refused("tunnel.1.connect_hosts", "ssl:host=a:port=1"))
        self.assertIn("connect_tls_*", self.refused("tunnel.1.connect_hosts", "tls:host=a:port=1:certificate=x"))
        self.assertIn("1 to 65535", self.refused("tunnel.1.connect_hosts", "tcp:host=a:port=70000"))
        config = apply_setting(Config(), "tunnel.1.connect_hosts",
                               "tcp:host=headend.example:port=10001, tls:host=\\:\\:1:port=10443:timeout=5")
        self.assertEqual(len(config.tunnels[1].connect_hosts), 2)
