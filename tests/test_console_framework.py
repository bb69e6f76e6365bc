"""
Tests for cmegw.console.framework: the command table (help, errors naming
the command and the argument, prefixes, completion, groups added by other
parts), called as the protocol calls it.  `make_gateway` and
`CommandTestMixin` serve the tests of every command group.
"""

from __future__ import annotations

from pathlib import Path

from twisted.internet import defer
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import TestCase

from cmegw.config.store import ConfigStore
from cmegw.console.commands import COMMANDS
from cmegw.console.framework import CommandTable, Reply, Session
from cmegw.service import Overrides
from cmegw.testing import FakeGateway


def make_gateway(testcase: TestCase, overrides: Overrides = Overrides()) -> FakeGateway:
    """
    A fake gateway on a memory reactor, as one not started yet
    (`cmegw.testing.FakeGateway`: nothing published, the actions recorded)
    over a configuration file in a temporary folder (the console's ``save``
    writes it); the tests set its statistics.
    """
    directory = Path(testcase.mktemp())
    directory.mkdir()
    store = ConfigStore(directory / "cmegw.toml")
    store.load()
    return FakeGateway(store, MemoryReactorClock(), overrides, started=False)



class CommandTestMixin:
    """Runs command lines through the table as the protocol does, on a gateway of `make_gateway`."""

    def setUp(self):
        self.gateway = make_gateway(self)
        self.session = Session(self.gateway, user="admin")

    def run_line(self, line: str):
        result = COMMANDS.run(self.session, line)
        return Reply(result) if isinstance(result, str) else result

    def text(self, line: str) -> str:
        return self.run_line(line).text

    def answer(self, reply: Reply, *answers: str) -> Reply:
        for text in answers:
            self.assertIsNotNone(reply.ask, reply.text)
            result = reply.ask.answer(text)
            reply = Reply(result) if isinstance(result, str) else result
        return reply



class CommandTests(CommandTestMixin, TestCase):
    """The table: help, errors, prefixes, completion, groups."""

    def test_help_lists_every_command(self):
        text = self.text("help")
        for name in ("help", "show", "set", "save", "restart", "factory-defaults", "passwd", "auth", "exit"):
            self.assertIn(f"  {name}", text)

    def test_help_command(self):
        self.assertIn("set [--no-save] NAME VALUE", self.text("help set"))
        self.assertIn("line.1.baud_rate", self.text("help set"))
        self.assertIn("http.http_port", self.text("help set"))
        self.assertIn("show tunnel [N]", self.text("help show"))
        self.assertIn("the M-Bus TCP/IP page", self.text("help show tunnel"))
        self.assertIn("Also: quit, logout", self.text("help exit"))

    def test_help_unknown(self):
        text = self.text("help frobnicate")
        self.assertIn("help: 'frobnicate' is not a command", text)
        self.assertIn("show", text)

    def test_ambiguous_prefix(self):
        text = self.text("s")
        self.assertIn("'s' is ambiguous", text)
        self.assertIn("save, set, show", text)

    def test_unambiguous_prefixes(self):
        self.assertTrue(self.text("sh st").startswith("Status"))

    def test_unknown_page(self):
        # The command groups loaded elsewhere (meters, targets...) may follow.
        self.assertTrue(self.text("show frobs").startswith(
            "show: 'frobs' is unknown; use one of status, network, tunnel, line, http, auth, log, settings"))

    def test_group_otherwise_and_help_topic(self):
        """A group's handler for other words gets the word; help COMMAND WORDS asks the command's topic."""
        table = CommandTable()
        group = table.group("look", "look at something", "THING")

        @group.command("sky", "the sky")
        def sky(session, args):
            return "blue"

        @group.otherwise("NAME", "anything else by name")
        def anything(session, args):
            return f"you asked for {args.text!r}"

        @table.command("explain", "explain a word", "WORD", topic=lambda session, words: f"about {words[0]}")
        def explain(session, args):
            return "explained"

        self.assertEqual(table.run(self.session, "look sky"), "blue")
        self.assertEqual(table.run(self.session, "look tunnel.1"), "you asked for 'tunnel.1'")
        self.assertIn("look NAME  anything else by name", "\n".join(group.summaries("look")))
        self.assertRaises(ValueError, group.otherwise("X", "again"), anything)
        command, _full, rest = table.resolve("", ["explain", "thing"])
        self.assertEqual(command.topic(self.session, rest), "about thing")
        self.assertIn("line.1.baud_rate: Baud rate (baud)", self.text("help set line.1.baud_rate"))

    def test_group_alone(self):
        self.assertIn("show: needs one more word; use one of status", self.text("show"))

    def test_extra_argument(self):
        self.assertEqual(self.text("show status now"),
                         "show status: 'now' is one argument too many; use show status")

    def test_empty_line(self):
        self.assertEqual(self.text("   "), "")

    def test_complete_commands(self):
        self.assertEqual(COMMANDS.complete(self.session, "s"), ["save", "set", "show"])
        self.assertEqual(COMMANDS.complete(self.session, "show st"), ["status"])
        self.assertEqual(COMMANDS.complete(self.session, "show tunnel "), ["1"])
        self.assertEqual(COMMANDS.complete(self.session, "help sh"), ["show"])
        self.assertEqual(COMMANDS.complete(self.session, "frob "), [])

    def test_extension_commands(self):
        table = CommandTable()
        mbus = table.group("mbus", "the integrated M-Bus master")

        @mbus.command("scan", "search the bus", "[LINE]")
        def scan(session, args):
            session.emit("scanning...")
            return defer.succeed(f"found 0 meters on line {args.words[0] if args.words else 1}")

        seen = []
        session = Session(self.gateway, emit=seen.append)
        result = table.run(session, "mbus scan 2")
        self.assertEqual(self.successResultOf(result), "found 0 meters on line 2")
        self.assertEqual(seen, ["scanning..."])
        self.assertEqual(table.complete(session, "mbus s"), ["scan"])
        self.assertRaises(ValueError, table.group, "mbus", "again")
