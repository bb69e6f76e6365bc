"""Tests for cmegw.tap: options and the service they build."""

import os
from pathlib import Path

from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage
from twisted.trial.unittest import TestCase

from cmegw.service import GatewayService, Overrides
from cmegw.tap import Options, makeService


class OptionsTests(TestCase):
    def test_all_options(self):
        o = Options()
        o.parseOptions(["--config", "x.toml", "--device", "/dev/ttyUSB3", "--tunnel", "tcp:10001:interface=127.0.0.1",
                        "--http", "tcp:8080", "--https", "tcp:8443", "--console", "tcp:2323"])
        self.assertEqual(o.overrides(), Overrides(device="/dev/ttyUSB3", tunnel="tcp:10001:interface=127.0.0.1",
                                                  simulate=False, http="tcp:8080", https="tcp:8443",
                                                  console="tcp:2323"))
        self.assertEqual(o["config"], "x.toml")

    def test_default_config_path(self):
        o = Options()
        o.parseOptions([])
        self.assertEqual(o["config"], "cmegw.toml")

    def test_systemd_configuration_directory(self):
        os.environ["CONFIGURATION_DIRECTORY"] = "/etc/cmegw"
        self.addCleanup(os.environ.pop, "CONFIGURATION_DIRECTORY")
        o = Options()
        o.parseOptions(["--simulate"])
        self.assertEqual(o["config"], "/etc/cmegw/cmegw.toml")
        self.assertTrue(o.overrides().simulate)

    def test_bad_endpoint(self):
        with self.assertRaises(usage.UsageError) as cm:
            Options().parseOptions(["--tunnel", "bogus:1"])
        self.assertIn("--tunnel", str(cm.exception))

    def test_device_and_simulate_exclusive(self):
        self.assertRaises(usage.UsageError, Options().parseOptions, ["--device", "/dev/x", "--simulate"])

    def test_make_service(self):
        path = Path(self.mktemp())
        path.parent.mkdir(parents=True, exist_ok=True)
        o = Options()
        o.parseOptions(["--config", str(path), "--device", "/dev/ttyS9", "--tunnel", "tcp:0"])
        svc = makeService(o, reactor=MemoryReactorClock())
        self.assertIsInstance(svc, GatewayService)
        self.assertTrue(path.exists(), "created from the factory defaults")
        self.assertEqual(svc.running_config.lines[1].device, "/dev/ttyS9")
        self.assertEqual(svc.running_config.tunnels[1].listen, "tcp:0")
        self.assertEqual(svc.store.config.lines[1].device, "/dev/ttyUSB0", "overrides are not saved")

    def test_plugin_found(self):
        from twisted.application.service import IServiceMaker
        from twisted.plugin import getPlugins

        names = [p.tapname for p in getPlugins(IServiceMaker)]
        self.assertIn("cmegw", names)


class ReactorChoiceTests(TestCase):
    def test_twistd_runs_the_lean_reactor(self):
        """Without --reactor, twistd cmegw runs cmegw.reactor; with it, the operator's choice."""
        import subprocess
        import sys

        from tests.support import REPO

        # twistd up to makeService, then print the reactor it would run instead of running it.
        code = ("import sys\n"
                "from twisted.application import app\n"
                "def run(self):\n"
                "    from cmegw.tap import makeService\n"
                "    makeService(self.config.subOptions)\n"
                "    from twisted.internet import reactor\n"
                "    print(type(reactor).__name__)\n"
                "app.ApplicationRunner.run = run\n"
                "from twisted.scripts.twistd import run as twistd\n"
                "sys.argv = ['twistd'] + sys.argv[1:]\n"
                "twistd()\n")
        env = dict(os.environ, PYTHONPATH=str(REPO))
        tmp = self.mktemp()
        os.makedirs(tmp)
        base = ["-n", "--pidfile=", "cmegw", "--config", os.path.join(tmp, "c.toml"), "--device", "/nonexistent"]
        out = subprocess.run([sys.executable, "-c", code] + base, env=env, capture_output=True, text=True,
                             timeout=60)
        self.assertIn("GatewayReactor", out.stdout, out.stderr)
        out = subprocess.run([sys.executable, "-c", code, "--reactor=poll"] + base, env=env, capture_output=True,
                             text=True, timeout=60)
        self.assertIn("PollReactor", out.stdout, out.stderr)
