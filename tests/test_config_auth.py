"""Tests for cmegw.config.auth: the directive rules every front end shares."""

from twisted.trial.unittest import TestCase

from cmegw.config import auth
from cmegw.config.model import ConfigError
from cmegw.config.store import factory_defaults


class DirectiveRulesTests(TestCase):
    def setUp(self):
        self.config = factory_defaults()

    def test_add_and_remove(self):
        c = auth.add_directive(self.config, "/metrics", "", "None")
        self.assertEqual(auth.find_directive(c, "/metrics").realm, "config")
        self.assertRaises(ConfigError, auth.add_directive, c, "/metrics", "x", "None")
        c = auth.delete_directive(c, "/metrics")
        self.assertEqual([d.uri for d in c.auth], ["/"])
        with self.assertRaises(ConfigError) as cm:
            auth.delete_directive(c, "/")
        self.assertIn("holds the console's users", str(cm.exception))

    def test_password_types_need_a_user(self):
        c = auth.add_directive(self.config, "/api", "api", "None")
        self.assertRaises(ConfigError, auth.set_auth_type, c, "/api", "Digest")
        c = auth.add_user(c, "/api", "ops", "secret")
        c = auth.set_auth_type(c, "/api", "Digest")
        with self.assertRaises(ConfigError) as cm:
            auth.delete_user(c, "/api", "ops")
        self.assertIn("last user", str(cm.exception))

    def test_the_type_a_directive_has_is_no_change(self):
        """A directive added with Digest before its first user: its type form sent as drawn changes nothing."""
        c = auth.add_directive(self.config, "/api", "api", "Digest")
        self.assertIs(auth.set_auth_type(c, "/api", "Digest"), c)
        self.assertRaises(ConfigError, auth.set_auth_type, auth.set_auth_type(c, "/api", "None"), "/api", "Basic")

    def test_root_keeps_a_user_whatever_its_type(self):
        c = auth.set_auth_type(self.config, "/", "None")
        self.assertRaises(ConfigError, auth.delete_user, c, "/", "admin")

    def test_add_user_sets_a_password(self):
        c = auth.add_user(self.config, "/", "admin", "n3w")
        [user] = auth.find_directive(c, "/").users
        self.assertTrue(user.check_password("config", "n3w"))
        self.assertFalse(user.check_password("config", "admin"))
        self.assertRaises(ConfigError, auth.find_directive, c, "/nope")
