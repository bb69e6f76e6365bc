"""Tests for cmegw.console.backup_commands: ``config export`` and ``config import`` (also through telnet)."""

from __future__ import annotations

import tomllib

import attrs
from twisted.trial.unittest import TestCase

from cmegw.console.commands import commands
from tests.test_console_framework import CommandTestMixin
from tests import test_console_real as real


class ConfigBackupCommandTests(CommandTestMixin, TestCase):
    def setUp(self) -> None:
        super().setUp()
        commands()
        store = self.gateway.store
        store.change(store.config.evolve(mqtt=attrs.evolve(store.config.mqtt, password="mqtt-secret")))

    def paste(self, text: str) -> str:
        reply = self.run_line("config import")
        self.assertIn("then a line with a single '.'", reply.text)
        return self.answer(reply, *text.splitlines(), ".").text

    def test_export_leaves_secrets_out(self) -> None:
        text = self.text("config export")
        self.assertTrue(text.startswith("# cmegw configuration backup"))
        self.assertNotIn("mqtt-secret", text)
        self.assertNotIn(self.gateway.store.config.auth[0].users[0].ha1_md5, text)
        self.assertEqual(tomllib.loads(text)["line"]["1"]["baud_rate"], 2400)

    def test_import_applies_and_keeps_secrets(self) -> None:
        text = self.text("config export").replace("baud_rate = 2400", "baud_rate = 300")
        said = self.paste(text)
        self.assertIn("Restored from the pasted file and saved", said)
        self.assertIn("Kept this gateway's: mqtt.password", said)
        self.assertEqual(self.gateway.store.config.lines[1].baud_rate, 300)
        self.assertEqual(self.gateway.store.config.mqtt.password, "mqtt-secret")

    def test_bad_import_changes_nothing(self) -> None:
        before = self.gateway.store.config
        text = self.text("config export").replace("baud_rate = 2400", "baud_rate = 1234")
        said = self.paste(text)
        self.assertIn("config import: nothing was changed: the pasted file, line ", said)
        self.assertIn("setting line.1.baud_rate: Baud rate of line 1: 1234 is not allowed", said)
        self.assertIn("is incomplete", self.paste("[line.1]\nbaud_rate = 300"))
        self.assertIs(self.gateway.store.config, before)


class ConfigBackupTelnetTests(TestCase):
    """Debian's telnet against a real gateway: export, then the changed file pasted back."""

    setUp = real.ConsoleProcessTests.setUp
    login = real.ConsoleProcessTests.login
    command = real.ConsoleProcessTests.command

    def test_export_and_import(self) -> None:
        child = self.login()
        exported = self.command(child, "config export")
        self.assertIn("# cmegw configuration backup", exported)
        self.assertIn("Secrets are left out", exported)
        saved = tomllib.loads((self.dir / "cmegw.toml").read_text())
        self.assertNotIn(saved["auth"][0]["user"][0]["ha1_md5"], exported)
        text = exported[exported.index("# cmegw configuration backup"):].replace("\r\n", "\n")
        child.send("config import\r")
        child.expect("then a line with a single '.'")
        for line in text.replace("baud_rate = 2400", "baud_rate = 300").splitlines():
            child.send(line + "\r")
        child.send(".\r")
        child.expect("Restored from the pasted file and saved")
        child.expect(real.PROMPT)
        saved = tomllib.loads((self.dir / "cmegw.toml").read_text())
        self.assertEqual(saved["line"]["1"]["baud_rate"], 300)
        self.assertEqual(len(saved["auth"][0]["user"][0]["ha1_md5"]), 32, "the password hashes are kept")
