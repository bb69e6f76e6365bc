"""
Tests for cmegw.console.ssh: a single command over SSH answers as the telnet
session does.
"""

from __future__ import annotations

from twisted.internet import defer, task
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import TestCase

from cmegw.console.framework import CommandTable
from cmegw.console.protocol import Console
from tests.test_console_framework import make_gateway



class SSHCommandTests(TestCase):
    """A single command over SSH (``ssh gateway show status``) answers as the telnet session does."""

    def setUp(self):
        try:
            from cmegw.console.ssh import ConsoleAvatar
        except ImportError as e:
            raise self.skipTest(f"twisted.conch.ssh cannot be imported here: {e}")
        self.gateway = make_gateway(self)
        self.clock = task.Clock()
        table = CommandTable()

        @table.command("later", "fails after a while")
        def later(session, args):
            return defer.fail(RuntimeError("kaput"))

        self.avatar = ConsoleAvatar(Console(self.gateway, self.clock, table), "admin")
        self.commands = ConsoleAvatar(Console(self.gateway, self.clock), "admin")

    def run_command(self, line: str, avatar=None) -> tuple[str, list]:
        transport = StringTransport()
        ended = []
        transport.processEnded = ended.append
        (avatar or self.avatar).execCommand(transport, line.encode())
        self.clock.advance(0)
        return transport.value().decode(), ended

    def exit_status(self, line: str) -> int:
        """The exit status ``ssh gw LINE`` reports, the console's commands answering."""
        out, ended = self.run_command(line, self.commands)
        self.assertEqual(len(ended), 1, out)
        return ended[0].value.exitCode

    def test_failure_is_reported_as_in_a_session(self):
        out, ended = self.run_command("later now")
        self.assertEqual(out, "later: failed (kaput); the gateway's log has the details.\n")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(len(ended), 1)
        self.assertEqual(ended[0].value.exitCode, 1)

    def test_success_exits_0(self):
        self.assertEqual(self.exit_status("show status"), 0)
        self.assertEqual(self.exit_status("set line.1.baud_rate 9600"), 0)
        self.assertEqual(self.exit_status(""), 0)

    def test_refused_command_exits_1(self):
        self.assertEqual(self.exit_status("frobnicate"), 1)  # not a command
        self.assertEqual(self.exit_status("show"), 1)  # a group needs one more word
        self.assertEqual(self.exit_status("show status extra"), 1)  # one argument too many

    def test_bad_setting_exits_1(self):
        self.assertEqual(self.exit_status("set line.1.baud_rate 12345"), 1)  # the model refuses it
        self.assertEqual(self.exit_status("set no.such.setting 1"), 1)

    def test_question_exits_1(self):
        out, ended = self.run_command("restart", self.commands)
        self.assertIn("asks a question", out)
        self.assertEqual(ended[0].value.exitCode, 1)
