"""Tests for cmegw.lazy: a package's names imported on first use."""

from __future__ import annotations

import os
import subprocess
import sys

from twisted.trial.unittest import TestCase

import cmegw.tls
from cmegw.lazy import lazy_names
from tests.support import REPO


class LazyNamesTests(TestCase):
    def test_name_from_its_module(self):
        from cmegw.tls.store import TlsManager

        self.assertIs(cmegw.tls.TlsManager, TlsManager)

    def test_unknown_name(self):
        getattr_ = lazy_names("cmegw.tls", {})
        with self.assertRaises(AttributeError) as caught:
            getattr_("Nothing")
        self.assertIn("'cmegw.tls' has no attribute 'Nothing'", str(caught.exception))

    def test_importing_the_package_loads_nothing_heavy(self):
        code = "import sys, cmegw.tls, cmegw.host, cmegw.tunnel; print('cryptography' in sys.modules, " \
               "'cmegw.tunnel.accept' in sys.modules)"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                             env=dict(os.environ, PYTHONPATH=str(REPO)))
        self.assertEqual(out.stdout.split(), ["False", "False"], out.stderr)
