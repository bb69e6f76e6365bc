"""
Tests for cmegw.console.commands: the table holds every built-in command, and
the extensions are loaded once.
"""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from cmegw.console import commands as C
from cmegw.console.commands import COMMANDS
from tests.test_console_framework import CommandTestMixin


class CommandTableTests(CommandTestMixin, TestCase):
    """The table of every command, and its extensions."""

    def test_unknown_command(self):
        """The message lists every command of the table (extensions such as mbus included once loaded)."""
        from cmegw.console.commands import COMMANDS

        self.assertEqual(self.text("frobnicate now"),
                         "frobnicate: 'frobnicate' is not a command; use one of "
                         + ", ".join(c.name for c in COMMANDS) + " ('help' explains each)")
        for name in ("help", "show", "set", "save", "restart", "factory-defaults", "passwd", "auth", "exit"):
            self.assertIn(name, COMMANDS.names())

    def test_extensions_are_loaded_once(self):
        """A missing extension is skipped, and the extensions are imported on the first call only."""
        imported = []
        import_module = C.importlib.import_module
        self.patch(C.importlib, "import_module", lambda name: imported.append(name) or import_module(name))
        self.patch(C, "EXTENSIONS", ("cmegw.console.does_not_exist",))
        self.patch(C, "_loaded", False)
        self.assertIs(C.commands(), COMMANDS)
        self.assertIs(C.commands(), COMMANDS)
        self.assertEqual(imported, ["cmegw.console.does_not_exist"])
