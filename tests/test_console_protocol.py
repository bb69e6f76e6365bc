"""
Tests for cmegw.console.protocol and cmegw.console.login: the telnet
session (login, echo, editing, history, completion, timers) on StringTransport.
"""

from __future__ import annotations

from twisted.conch import telnet
from twisted.internet import defer, task
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import TestCase

from cmegw.config.settings import apply_setting
from cmegw.console.framework import CommandTable
from cmegw.console.login import LOGIN_FAILURE_DELAY, LOGIN_TIMEOUT
from cmegw.console.protocol import Console
from cmegw.console.telnet import TelnetConsoleFactory
from tests.test_console_framework import make_gateway
from tests.test_console_telnet import IAC_DONT_ECHO, IAC_WILL_ECHO, FakeClient

UP, DOWN, LEFT, RIGHT = b"\x1b[A", b"\x1b[B", b"\x1b[D", b"\x1b[C"



class SessionTests(TestCase):
    """The telnet session: login, echo, editing, history, completion, timers."""

    def setUp(self):
        self.gateway = make_gateway(self)
        self.clock = task.Clock()
        self.console = Console(self.gateway, self.clock)

    def connect(self, echo: bool = True) -> FakeClient:
        return FakeClient(self.console, echo)

    def login(self, echo: bool = True) -> FakeClient:
        client = self.connect(echo)
        client.send("admin\r\nadmin\r\n")
        self.assertIn("Logged in as admin", client.text())
        return client

    def test_negotiation_and_banner(self):
        transport = StringTransport()
        TelnetConsoleFactory(self.console).buildProtocol(None).makeConnection(transport)
        out = transport.value()
        self.assertIn(IAC_WILL_ECHO, out)
        self.assertIn(telnet.IAC + telnet.WILL + telnet.SGA, out)
        self.assertIn(telnet.IAC + telnet.DO + telnet.NAWS, out)
        self.assertTrue(out.endswith(b"cmegw console\r\nlogin: "))

    def test_login(self):
        client = self.connect()
        client.read()
        client.send("admin\r")
        self.assertEqual(client.text(), "admin\r\nPassword: ")
        client.send("admin\r")
        out = client.text()
        self.assertNotIn("admin", out.split("Logged in")[0], "the password is not echoed")
        self.assertTrue(out.endswith("cmegw> "))
        self.assertEqual(self.console.sessions, {client.console})

    def test_password_not_echoed_while_typed(self):
        client = self.connect()
        client.send("admin\r")
        client.read()
        client.send("adm")
        self.assertEqual(client.read(), b"")
        client.send("in\r")
        self.assertIn("Logged in", client.text())

    def test_wrong_password_is_delayed(self):
        client = self.connect()
        client.send("admin\rwrong\r")
        client.read()
        client.send("admin\radmin\r")  # typed during the delay: dropped
        self.assertEqual(client.read(), b"")
        self.clock.advance(LOGIN_FAILURE_DELAY)
        self.assertEqual(client.text(), "Login incorrect.\r\nlogin: ")
        client.send("admin\radmin\r")
        self.assertIn("Logged in as admin", client.text())

    def test_unknown_user_is_a_failure_too(self):
        client = self.connect()
        client.send("root\rroot\r")
        self.clock.advance(LOGIN_FAILURE_DELAY)
        self.assertIn("Login incorrect.", client.text())

    def test_three_failures_close(self):
        client = self.connect()
        for attempt in range(3):
            self.assertFalse(client.closed)
            client.send("admin\rwrong\r")
            self.clock.advance(LOGIN_FAILURE_DELAY)
        self.assertIn("3 failures; closing", client.text())
        self.assertTrue(client.closed)

    def test_login_timeout(self):
        """Typing does not extend the time allowed to log in."""
        client = self.connect()
        for _ in range(int(LOGIN_TIMEOUT) - 1):
            self.clock.advance(1)
            client.send("x")
        self.assertFalse(client.closed)
        self.clock.advance(1)
        self.assertTrue(client.closed)
        self.assertIn("No login within 60 seconds", client.text())

    def test_idle_timeout(self):
        client = self.login()
        timeout = self.gateway.running_config.console.idle_timeout
        self.clock.advance(timeout - 1)
        client.send("h")  # any input restarts the timer
        self.clock.advance(timeout - 1)
        self.assertFalse(client.closed)
        self.clock.advance(1)
        self.assertTrue(client.closed)
        self.assertIn(f"Idle for {timeout} seconds; closing.", client.text())

    def test_idle_timeout_follows_the_setting(self):
        client = self.login()
        client.send("set console.idle_timeout 5\r")
        self.assertIn("applied at once", client.text())
        self.clock.advance(5)
        self.assertTrue(client.closed)

    def test_idle_timeout_zero_is_never(self):
        self.gateway.store.change(apply_setting(self.gateway.store.config, "console.idle_timeout", "0"), save=False)
        client = self.login()
        self.clock.advance(7 * 86400)
        self.assertFalse(client.closed)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_command_echo_and_reply(self):
        client = self.login()
        client.send("show auth\r")
        out = client.text()
        self.assertTrue(out.startswith("show auth\r\nAuthentication directives"), out)
        self.assertTrue(out.endswith("\r\ncmegw> "))

    def test_dumb_client(self):
        """A client that never agrees to the server's echo (nc) sends lines: no echo, no escapes."""
        client = self.connect(echo=False)
        client.read()
        client.send("admin\nadmin\nshow auth\n")
        out = client.read()
        self.assertNotIn(b"\x1b", out)
        self.assertTrue(out.startswith(b"Password: Logged in as admin"), out)
        self.assertIn(b"cmegw> Authentication directives", out)

    def test_echo_refused(self):
        client = self.connect(echo=False)
        client.send(IAC_DONT_ECHO)
        self.assertFalse(client.console.interactive)

    def test_crlf_and_cr_nul(self):
        client = self.login()
        client.send("show auth\r\n")
        client.send("show auth\r\x00")
        self.assertEqual(client.text().count("Authentication directives"), 2)

    def test_line_editing(self):
        client = self.login()
        client.send(b"shw" + LEFT + b"o")
        self.assertEqual(client.line, b"show")
        client.send(b"\x01x\x05y")  # Ctrl-A, Ctrl-E
        self.assertEqual(client.line, b"xshowy")
        client.send(b"\x7f\x01" + b"\x1b[3~")  # Backspace, Home, Delete
        self.assertEqual(client.line, b"show")
        client.send(b"\x05 authx\x08")  # Ctrl-E, Ctrl-H
        client.send(b"\r")
        self.assertIn("Authentication directives", client.text())
        client.send(b"garbage\x15")  # Ctrl-U
        self.assertEqual(client.line, b"")

    def test_history(self):
        client = self.login()
        client.send("show auth\rhelp\r")
        client.read()
        client.send(UP)
        self.assertEqual(client.line, b"help")
        client.send(UP)
        self.assertEqual(client.line, b"show auth")
        client.send(DOWN)
        self.assertEqual(client.line, b"help")
        client.send(UP + b"\r")
        self.assertIn("Authentication directives", client.text())

    def test_passwords_stay_out_of_the_history(self):
        client = self.login()
        client.send("passwd admin\rnewpass\rnewpass\r")
        self.assertIn("admin has a new password", client.text())
        self.assertEqual(client.console.historyLines, [b"passwd admin"])

    def test_question_answer_not_echoed_when_secret(self):
        client = self.login()
        client.send("passwd admin\r")
        self.assertTrue(client.text().endswith("New password for admin: "))
        client.send("topsecret")
        self.assertEqual(client.read(), b"")

    def test_tab_completes_a_command(self):
        client = self.login()
        client.send("sh\t")
        self.assertEqual(client.line, b"show ")
        client.send("st\t")
        self.assertEqual(client.line, b"show status ")

    def test_tab_completes_a_setting(self):
        client = self.login()
        client.send("set line.1.ba\t")
        self.assertEqual(client.line, b"set line.1.baud_rate ")
        client.send("30\t")
        self.assertEqual(client.line, b"set line.1.baud_rate 300 ")

    def test_tab_lists_candidates(self):
        client = self.login()
        client.read()
        client.send("s\t")
        out = client.text()
        self.assertIn("save", out)
        self.assertIn("set", out)
        self.assertIn("show", out)
        self.assertTrue(out.endswith("cmegw> s"), out)
        self.assertEqual(client.line, b"s")

    def test_tab_without_candidates_rings(self):
        client = self.login()
        client.send("frob")
        client.read()
        client.send("\t")
        self.assertEqual(client.read(), b"\x07")

    def test_ctrl_c_cancels_a_question(self):
        client = self.login()
        client.send("restart\r")
        client.send(b"\x03")
        self.assertIn("Cancelled.", client.text())
        client.send("show auth\r")
        self.assertIn("Authentication directives", client.text())

    def test_restart_closes_after_saying_so(self):
        calls = []
        self.gateway.restart = lambda: calls.append("restart")
        client = self.login()
        client.send("restart\ry\r")
        self.assertIn("Restarting; this session closes.", client.text())
        self.assertEqual(calls, ["restart"])
        self.assertTrue(client.closed)

    def test_exit_and_ctrl_d(self):
        client = self.login()
        client.send("quit\r")
        self.assertIn("Bye.", client.text())
        self.assertTrue(client.closed)
        client = self.login()
        client.send(b"\x04")
        self.assertTrue(client.closed)

    def test_long_command_and_cancel(self):
        table = CommandTable()
        running = defer.Deferred()

        @table.command("wait", "wait for something")
        def wait(session, args):
            session.emit("waiting...")
            return running

        console = Console(self.gateway, self.clock, table)
        client = FakeClient(console)
        client.send("admin\radmin\r")
        client.read()
        client.send("wait\r")
        self.assertTrue(client.text().endswith("waiting...\r\n"))
        client.send("help\r")  # ignored while the command runs
        client.send(b"\x03")
        self.assertIn("wait: cancelled.", client.text())
        client.send("wait\r")
        self.assertTrue(client.text().endswith("waiting...\r\ncmegw> "), "the session takes commands again")

    def test_command_failure_is_reported_and_logged(self):
        table = CommandTable()

        @table.command("boom", "fails")
        def boom(session, args):
            raise RuntimeError("kaput")

        client = FakeClient(Console(self.gateway, self.clock, table))
        client.send("admin\radmin\rboom\r")
        self.assertIn("boom: failed (kaput); the gateway's log has the details.", client.text())
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertFalse(client.closed)

    def test_window_size(self):
        client = self.login()
        client.send(telnet.IAC + telnet.WILL + telnet.NAWS)
        client.send(telnet.IAC + telnet.SB + telnet.NAWS + b"\x00\x64\x00\x20" + telnet.IAC + telnet.SE)
        self.assertEqual((client.console.width, client.console.height), (100, 32))

    def test_close_all(self):
        clients = [self.login(), self.login()]
        self.console.close_all("Stopping.")
        for client in clients:
            self.assertTrue(client.closed)
            self.assertIn("Stopping.", client.text())
