"""
Tests for cut-short, empty and corrupt configuration files (issue 14): the
store never runs on a file that would lock everyone out, and never keeps such
a file as the last good copy.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from cmegw.config import auth as config_auth
from cmegw.config.model import AuthDirective, ConfigError, directive_for
from cmegw.config.store import ConfigFileError, ConfigStore, factory_defaults_text
from cmegw.service import GatewayService, Overrides
from tests.support import defaults_with, open_pty

GOOD = factory_defaults_text()
#: Where each section header of the factory defaults begins, in order, with its name in messages.
HEADERS = [(m.start(), m.group(1)) for m in re.finditer(r"^(\[\[?[a-z.0-9]+\]\]?)$", GOOD, re.MULTILINE)]
NAMES = {"[line.1]": "[line.N]", "[tunnel.1]": "[tunnel.N]"}
#: Sections a file may lack (files written before the readout had none of them).
OPTIONAL = ("[readout]", "[mqtt]")


def missing_after(cut: int) -> list[str]:
    """The top-level sections (as messages name them) whose headers are cut off at `cut`."""
    return [NAMES.get(name, name) for start, name in HEADERS if start >= cut and name != "[[auth.user]]"
            and name not in OPTIONAL]


def assert_admin_can_log_in(case: TestCase, config) -> None:
    case.assertIn(1, config.tunnels)
    root = directive_for(config.auth, "/")
    case.assertIsNotNone(root, "a directive covers /")
    case.assertEqual(root.uri, "/")
    case.assertTrue(root.users, "/ has a user")
    case.assertTrue(any(u.name == "admin" and u.check_password(root.realm, "admin") for u in root.users))


class CutFileTests(TestCase):
    """Each bad file: the last good config is used, `problem` says why, last-good is left alone."""

    def setUp(self):
        self.dir = Path(self.mktemp())
        self.dir.mkdir()
        self.path = self.dir / "cmegw.toml"
        self.good = defaults_with(("baud_rate = 2400", "baud_rate = 300"))
        self.path.write_text(self.good)
        store = ConfigStore(self.path)
        store.load()
        self.assertIsNone(store.problem)
        self.last_good = store.last_good_path.read_bytes()
        self.assertEqual(self.last_good.decode(), self.good)

    def load_bad(self, content: str | bytes) -> ConfigStore:
        if isinstance(content, bytes):
            self.path.write_bytes(content)
        else:
            self.path.write_text(content)
        store = ConfigStore(self.path)
        config = store.load()
        self.assertIsNotNone(store.problem, f"refused: {content[:60]!r}...")
        self.assertEqual(config.lines[1].baud_rate, 300, "the last good copy is used")
        self.assertEqual(store.last_good_path.read_bytes(), self.last_good, "last-good is unchanged")
        self.assertEqual(self.path.read_bytes(), content if isinstance(content, bytes) else content.encode(),
                         "the bad file is left as it is")
        assert_admin_can_log_in(self, config)
        return store

    def test_headers_found(self):
        self.assertEqual([n for _, n in HEADERS], ["[identity]", "[network]", "[line.1]", "[tunnel.1]", "[http]",
                                                   "[console]", "[readout]", "[mqtt]", "[[auth]]",
                                                   "[[auth.user]]"])

    def test_cut_at_every_section_boundary(self):
        for start, name in HEADERS:
            with self.subTest(before=name):
                store = self.load_bad(GOOD[:start])
                missing = missing_after(start)
                if missing:
                    self.assertIn(f"is incomplete: {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} "
                                  "missing (a cut-short or partly copied file?)", store.problem)
                else:  # cut before [[auth.user]]: every section is there but / has no user
                    self.assertIn("Users of /: no user on /; keep at least one [[auth.user]]", store.problem)

    def test_cut_inside_sections(self):
        ends = [start for start, _ in HEADERS[1:]] + [len(GOOD)]
        cuts = [1500]
        for (start, _), end in zip(HEADERS, ends):
            cuts += [start + 3, (start + end) // 2, end - 2]
        # Line ends inside the last two tables: a directive without a user, a user without its digests.
        auth = HEADERS[-2][0]
        cuts += [GOOD.index("\n", GOOD.index('uri = "/"', auth)) + 1,
                 GOOD.index("\n", GOOD.index("name = ", auth)) + 1,
                 GOOD.index("\n", GOOD.index("ha1_md5 = ", auth)) + 1]
        for cut in sorted(set(cuts)):
            with self.subTest(cut=cut):
                self.assertLess(cut, len(GOOD))
                store = self.load_bad(GOOD[:cut])
                missing = missing_after(cut)
                if missing and "TOML" not in store.problem:
                    self.assertIn(", ".join(missing), store.problem)

    def test_cut_at_1500_names_what_is_missing(self):
        store = self.load_bad(GOOD[:1500])
        self.assertIn("[tunnel.N]", store.problem)
        self.assertIn("[[auth]]", store.problem)
        self.assertIn("is incomplete", store.problem)

    def test_cut_user(self):
        store = self.load_bad(GOOD[:GOOD.index("\n", GOOD.index("ha1_md5 = ")) + 1])
        self.assertIn("auth.user.ha1_sha256", store.problem)

    def test_empty(self):
        for text in ("", "\n", "# only a comment\n"):
            with self.subTest(text=text):
                store = self.load_bad(text)
                self.assertIn("[identity], [network], [line.N], [tunnel.N], [http], [console], [[auth]] are "
                              "missing", store.problem)

    def test_garbage(self):
        for content in (b"\x00\xff\xfe\x80garbage", bytes(range(256)), b"garbage = [",
                        GOOD.encode()[:2000] + b"\xff\xfe" + GOOD.encode()[2000:]):
            with self.subTest(content=content[:20]):
                self.load_bad(content)

    def test_wrong_types(self):
        for old, new in (("baud_rate = 2400", 'baud_rate = "fast"'), ("keepalive = 45", "keepalive = 'soon'"),
                         ("[tunnel.1]\n", "[tunnel.x]\n"), ('uri = "/"', "uri = 7"),
                         ("enabled = true", "enabled = 1"), ('name = "admin"', "name = ['admin']")):
            with self.subTest(new=new):
                store = self.load_bad(defaults_with((old, new)))
                self.assertNotIn("incomplete", store.problem)

    def test_unknown_keys(self):
        for text in (defaults_with(("baud_rate = 2400", "baud_rate = 2400\ncolour = 'red'")),
                     defaults_with(extra="\n[extra]\nx = 1\n"),
                     "unknown = 1\n" + GOOD):
            with self.subTest(text=text[-30:]):
                store = self.load_bad(text)
                self.assertIn("unknown", store.problem)

    def test_no_root_directive_or_user(self):
        without_user = GOOD[:GOOD.index("[[auth.user]]")]
        for text, why in ((defaults_with(('uri = "/"', 'uri = "/cfg"')), "keep an [[auth]] directive with uri"),
                          (without_user, "keep at least one [[auth.user]]"),
                          (without_user + '[[auth]]\nuri = "/x"\n' + GOOD[GOOD.index("[[auth.user]]"):],
                           "keep at least one [[auth.user]]")):
            with self.subTest(why=why):
                store = self.load_bad(text)
                self.assertIn(why, store.problem)

    def test_no_last_good_uses_factory_defaults(self):
        ConfigStore(self.path).last_good_path.unlink()
        self.path.write_text(GOOD[:1500])
        store = ConfigStore(self.path)
        config = store.load()
        self.assertIn("is incomplete", store.problem)
        self.assertEqual(config.lines[1].baud_rate, 2400)
        self.assertFalse(store.last_good_path.exists(), "the cut file is not kept as the last good copy")
        assert_admin_can_log_in(self, config)

    def test_cut_last_good_is_not_used(self):
        """A last-good copy cut short (an older version kept one) is refused too: the factory defaults."""
        self.path.write_text(GOOD[:1500])
        ConfigStore(self.path).last_good_path.write_text(GOOD[:1500])
        store = ConfigStore(self.path)
        config = store.load()
        self.assertIsNotNone(store.problem)
        assert_admin_can_log_in(self, config)


class ReloadAndChangeTests(TestCase):
    def setUp(self):
        self.dir = Path(self.mktemp())
        self.dir.mkdir()
        self.store = ConfigStore(self.dir / "cmegw.toml")
        self.store.load()
        self.saved = self.store.path.read_text()
        self.last_good = self.store.last_good_path.read_text()
        self.seen = []
        self.store.subscribe(lambda old, new: self.seen.append(new))

    def assert_unchanged(self, before):
        self.assertIs(self.store.config, before)
        self.assertEqual(self.seen, [])
        self.assertEqual(self.store.last_good_path.read_text(), self.last_good)

    def test_reload_refuses_cut_file(self):
        before = self.store.config
        for text in ("", GOOD[:1500], GOOD[:GOOD.index("[[auth.user]]")]):
            with self.subTest(size=len(text)):
                self.store.path.write_text(text)
                e = self.assertRaises(ConfigFileError, self.store.reload)
                self.assertIn("/" if "[[auth]]" in text else "is incomplete", str(e))
                self.assert_unchanged(before)

    def test_change_refuses_no_root_directive(self):
        before = self.store.config
        for save in (True, False):
            e = self.assertRaises(ConfigError, self.store.change, before.evolve(auth=()), save=save)
            self.assertIn("Authentication: no directive on /; keep an [[auth]] directive", str(e))
            others = (AuthDirective(uri="/cfg", users=directive_for(before.auth, "/").users),)
            self.assertRaises(ConfigError, self.store.change, before.evolve(auth=others), save=save)
        self.assert_unchanged(before)
        self.assertEqual(self.store.path.read_text(), self.saved)
        self.assertFalse(self.store.unsaved)

    def test_change_refuses_root_without_users(self):
        before = self.store.config
        for save in (True, False):
            e = self.assertRaises(ConfigError, self.store.change,
                                  before.evolve(auth=(AuthDirective(uri="/", auth_type="None"),)), save=save)
            self.assertIn("Users of /: no user on /; keep at least one", str(e))
        self.assert_unchanged(before)
        self.assertEqual(self.store.path.read_text(), self.saved)

    def test_check_lives_in_auth_rules(self):
        config = self.store.config
        config_auth.check_root_directive(config)
        self.assertRaises(ConfigError, config_auth.check_root_directive, config.evolve(auth=()))

    def test_change_still_works(self):
        new = config_auth.add_directive(self.store.config, "/status", "config", "None")
        self.store.change(new)
        self.assertEqual(len(self.seen), 1)
        self.assertIn('uri = "/status"', self.store.path.read_text())


class GatewayOnCutFileTests(TestCase):
    """Through a real GatewayService: a cut file starts the tunnel and lets the admin in."""

    def test_truncated_file(self):
        master, slave, device = open_pty()
        self.addCleanup(os.close, master)
        self.addCleanup(os.close, slave)
        d = Path(self.mktemp())
        d.mkdir()
        (d / "cmegw.toml").write_text(GOOD[:1500])
        store = ConfigStore(d / "cmegw.toml")
        store.load()
        gateway = GatewayService(store, reactor, Overrides(device=device, tunnel="tcp:0:interface=127.0.0.1"))
        gateway.startService()
        self.addCleanup(gateway.stopService)
        self.assertIn("is incomplete", gateway.status.config_problem)
        self.assertIsNotNone(gateway.tunnels[1].port, "the tunnel is started")
        assert_admin_can_log_in(self, gateway.running_config)
        self.assertFalse(store.last_good_path.exists(), "the cut file is not kept as the last good copy")
        self.assertEqual((d / "cmegw.toml").read_text(), GOOD[:1500], "the cut file is left for the operator")
