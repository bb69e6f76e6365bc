"""
Tests for cmegw.console.system_commands: ``restart``, ``factory-defaults``,
``passwd``, ``auth`` and ``exit``.
"""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from cmegw.config.model import directive_for
from tests.test_console_framework import CommandTestMixin


class SystemCommandTests(CommandTestMixin, TestCase):
    """restart, factory-defaults, passwd, auth, exit."""

    def test_restart_asks(self):
        calls = []
        self.gateway.restart = lambda: calls.append("restart")
        reply = self.run_line("restart")
        self.assertEqual(reply.ask.prompt, "Restart the gateway now? [y/N] ")
        self.assertEqual(self.answer(reply, "n").text, "Not restarted.")
        self.assertEqual(calls, [])
        done = self.answer(self.run_line("restart"), "y")
        self.assertTrue(done.close)
        done.after()
        self.assertEqual(calls, ["restart"])

    def test_restart_warns_of_unsaved_changes(self):
        self.text("set --no-save line.1.baud_rate 300")
        self.assertIn("Unsaved changes are lost", self.run_line("restart").ask.prompt)

    def test_factory_defaults_asks(self):
        calls = []
        self.gateway.factory_reset = lambda: calls.append("reset")
        reply = self.run_line("factory-defaults")
        self.assertIn("factory defaults", reply.ask.prompt)
        self.assertEqual(self.answer(reply, "").text, "Nothing changed.")
        done = self.answer(self.run_line("factory-defaults"), "yes")
        done.after()
        self.assertEqual(calls, ["reset"])

    def test_passwd(self):
        reply = self.answer(self.run_line("passwd admin"), "s3cret", "s3cret")
        self.assertIn("admin has a new password for /", reply.text)
        directive = directive_for(self.gateway.store.config.auth, "/")
        self.assertTrue(directive.users[0].check_password("config", "s3cret"))
        self.assertFalse(directive.users[0].check_password("config", "admin"))
        self.assertTrue(self.run_line("passwd admin").ask.secret)

    def test_passwd_mismatch_and_errors(self):
        reply = self.answer(self.run_line("passwd admin"), "one", "two")
        self.assertEqual(reply.text, "passwd: the passwords differ; nothing changed.")
        self.assertTrue(directive_for(self.gateway.store.config.auth, "/").users[0].check_password("config", "admin"))
        self.assertEqual(self.text("passwd nobody"), "passwd: 'nobody' is not a user of /; users: admin")
        self.assertIn("passwd: 'a b' is one argument too many", self.text("passwd admin a b"))

    def test_auth_commands(self):
        self.assertIn("Directive /private added (None, realm config)", self.text("auth add /private None"))
        self.assertIn("add a user to this directive before asking for passwords",
                      self.text("auth type /private Basic"), "the web page's rule and message")
        self.assertIn("is not allowed", self.text("auth add /x Kerberos"))
        self.assertIn("has a directive already", self.text("auth add /private Digest"))
        self.answer(self.run_line("auth user-add /private bob"), "pw", "pw")
        directive = next(d for d in self.gateway.store.config.auth if d.uri == "/private")
        self.assertEqual([u.name for u in directive.users], ["bob"])
        self.assertIn("AuthType Digest", self.text("auth type /private Digest"))
        self.assertIn("the last user of a directive that asks for a password stays",
                      self.text("auth user-remove /private bob"), "the web page's rule and message")
        self.assertIn("AuthType None", self.text("auth type /private None"))
        self.assertIn("bob removed", self.text("auth user-remove /private bob"))
        self.assertIn("removed", self.text("auth remove /private"))
        self.assertEqual([d.uri for d in self.gateway.store.config.auth], ["/"])

    def test_auth_keeps_a_console_user(self):
        self.assertIn("holds the console's users", self.text("auth remove /"))
        self.assertIn("so does the last user of /", self.text("auth user-remove / admin"))
        self.assertIn("auth user-add: 'space' is one argument too many; use auth user-add URI NAME",
                      self.text("auth user-add / has space"))

    def test_exit(self):
        for word in ("exit", "quit", "logout"):
            reply = self.run_line(word)
            self.assertTrue(reply.close)
            self.assertEqual(reply.text, "Bye.")
