"""
Tests for the console's login limits: the per-source limiter shared by telnet
and SSH (`cmegw.login.LoginLimiter`), failures logged and counted in the
metrics, and the bounds on what a client may send before it has logged in.
"""

from __future__ import annotations

from pathlib import Path

from prometheus_client.exposition import generate_latest
from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from cmegw.console.login import LOGIN_FAILURE_DELAY
from cmegw.console.protocol import MAX_LOGIN_LINE, Console
from cmegw.console.telnet import MAX_PRE_LOGIN_BYTES
from cmegw.login import BLOCK_AFTER, BLOCK_SECONDS, LoginLimiter
from cmegw.ops.metrics import registry_for
from tests.test_console_framework import make_gateway
from cmegw.console.telnet import TelnetConsoleFactory
from tests.test_console_telnet import IAC_DO_ECHO, FakeClient
from tests.test_login import capture_logs

ATTACKER = "192.0.2.66"
ADMIN_HOST = "192.0.2.10"


class Client(FakeClient):
    """A telnet client from `host`."""

    def __init__(self, console: Console, host: str = ATTACKER) -> None:
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", host, 50000))
        self.protocol = TelnetConsoleFactory(console).buildProtocol(None)
        self.protocol.makeConnection(self.transport)
        self.send(IAC_DO_ECHO)


class FakeSSHTransport:
    """What `SSHUserAuthServer.auth_password` uses of its transport."""

    def __init__(self, host: str) -> None:
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", host, 50001))
        self.disconnected: list[bytes] = []

    def sendDisconnect(self, code: int, reason: bytes) -> None:
        self.disconnected.append(reason)


class ConsoleLoginLimitTests(TestCase):
    def setUp(self):
        self.gateway = make_gateway(self)
        self.clock = task.Clock()
        self.logins = LoginLimiter(self.clock)
        self.console = Console(self.gateway, self.clock, logins=self.logins)

    def fail_once(self, host: str = ATTACKER) -> Client:
        client = Client(self.console, host)
        client.send("admin\rwrong\r")
        self.clock.advance(LOGIN_FAILURE_DELAY)
        return client

    def block(self) -> None:
        """BLOCK_AFTER failures from ATTACKER, over parallel connections, waiting when told to."""
        for _ in range(BLOCK_AFTER):
            self.clock.advance(self.logins.wait(ATTACKER))
            self.fail_once()

    def test_state_has_the_gateways_limiter(self):
        self.assertIs(Console(self.gateway).logins, self.gateway.state.logins)

    def test_blocked_across_connections(self):
        self.block()
        client = Client(self.console)
        out = client.text()
        self.assertIn("Too many failed logins from your address; try again in 299 seconds.", out)
        self.assertNotIn("login:", out)
        self.assertTrue(client.closed)
        other = Client(self.console, ADMIN_HOST)
        other.send("admin\radmin\r")
        self.assertIn("Logged in as admin", other.text(), "another address still logs in")
        self.clock.advance(BLOCK_SECONDS)
        client = Client(self.console)
        client.send("admin\radmin\r")
        self.assertIn("Logged in as admin", client.text())
        self.assertEqual(len(self.logins), 0, "a good login cleared the count")

    def test_refused_at_the_password_when_blocked_meanwhile(self):
        client = Client(self.console)
        client.send("admin\r")
        self.block()
        client.send("admin\r")
        self.assertIn("Too many failed logins", client.text())
        self.assertTrue(client.closed)
        self.assertEqual(self.logins.stats.refused["console"], 1)

    def test_failures_logged_and_counted(self):
        events = capture_logs(self, "cmegw.login")
        client = Client(self.console)
        client.send("ro\x1bot\rwrong\r")
        texts = [e["log_format"].format(**e) for e in events]
        self.assertEqual(len(texts), 1)
        self.assertIn(ATTACKER, texts[0])
        self.assertIn("console", texts[0])
        self.assertIn(f"realm {self.console.realm!r}", texts[0])
        self.assertNotIn("\x1b", texts[0])
        self.gateway.state.logins = self.logins
        text = generate_latest(registry_for(self.gateway.state)).decode()
        self.assertIn('cmegw_login_failures_total{face="console"} 1.0', text)

    def ssh_auth(self, host: str = ATTACKER, password: bytes = b"wrong"):
        try:
            from cmegw.console.ssh import ConsoleSSHFactory, load_host_key
        except ImportError as e:
            raise self.skipTest(f"twisted.conch.ssh cannot be imported here: {e}")
        from twisted.conch.ssh.common import NS

        if not hasattr(self, "ssh_factory"):
            key_dir = Path(self.mktemp())
            key_dir.mkdir()
            self.ssh_factory = ConsoleSSHFactory(self.console, load_host_key(key_dir / "key"))
        auth = self.ssh_factory.services[b"ssh-userauth"]()
        auth.transport = FakeSSHTransport(host)
        auth.portal = self.ssh_factory.portal
        auth.user = b"admin"
        outcome: list = []
        auth.auth_password(b"\x00" + NS(password)).addBoth(outcome.append)
        self.clock.advance(LOGIN_FAILURE_DELAY)
        return auth.transport, outcome

    def test_ssh_shares_the_limit(self):
        for _ in range(BLOCK_AFTER - 1):
            self.clock.advance(self.logins.wait(ATTACKER))
            transport, outcome = self.ssh_auth()
            self.assertEqual(transport.disconnected, [])
            self.assertEqual(len(outcome), 1)
        self.clock.advance(self.logins.wait(ATTACKER))
        self.fail_once()  # the last one over telnet
        transport, outcome = self.ssh_auth(password=b"admin")
        self.assertEqual(len(transport.disconnected), 1)
        self.assertIn(b"too many failed logins", transport.disconnected[0])
        client = Client(self.console)
        self.assertIn("Too many failed logins", client.text())
        transport, outcome = self.ssh_auth(ADMIN_HOST, b"admin")
        self.assertEqual(transport.disconnected, [])
        self.assertEqual(outcome[0][0].__name__, "IConchUser")
        self.assertEqual(self.logins.stats.failures["console"], BLOCK_AFTER)
        self.flushLoggedErrors()


class PreLoginFloodTests(TestCase):
    def setUp(self):
        self.gateway = make_gateway(self)
        self.clock = task.Clock()
        self.console = Console(self.gateway, self.clock, logins=LoginLimiter(self.clock))

    def test_flood_before_login_closes(self):
        events = capture_logs(self, "cmegw.console")
        client = FakeClient(self.console)
        client.send(b"\r\n" * ((MAX_PRE_LOGIN_BYTES - 100) // 2))
        self.assertFalse(client.closed)
        client.read()
        client.send(b"\r" * 1024 * 1024)
        self.assertTrue(client.closed)
        self.assertIn("Too much input before login; closing.", client.text())
        client.send(b"admin\radmin\r")
        self.assertEqual(client.read(), b"", "nothing more is read")
        self.assertTrue(any("before logging in" in e.get("log_format", "") for e in events))
        client.protocol.connectionLost(Failure(ConnectionDone()))

    def test_long_login_line_closes(self):
        for echo in (True, False):
            client = FakeClient(self.console, echo=echo)
            client.send(b"x" * (MAX_LOGIN_LINE + 1))
            self.assertTrue(client.closed)
            self.assertIn("closing", client.text())
            client = FakeClient(self.console, echo=echo)
            client.send(b"admin\r" + b"p" * (MAX_LOGIN_LINE + 1))
            self.assertTrue(client.closed, "a password too")

    def test_after_login_the_allowance_is_gone(self):
        client = FakeClient(self.console)
        client.send("admin\radmin\r")
        self.assertIn("Logged in", client.text())
        for _ in range(20):
            client.send(b"x" * 500 + b"\x15")  # typed and erased (Ctrl-U)
        self.assertFalse(client.closed)
        client.send("show auth\r")
        self.assertIn("Authentication directives", client.text())
