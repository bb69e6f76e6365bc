"""
Tests for cmegw.host.apply, the opt-in backend that applies the Network
settings to the host (its commands, failures and being off), and for where
the gateway, the pages, the JSON API and the console use it.  The backends'
own tests are in tests.test_host_networkd and tests.test_host_networkmanager,
which share the fakes defined here.

Every command is a fake: a small shell script in the test's temporary folder
that records its arguments, and PATH holds only that folder while a test
runs, so the host's own networkctl, nmcli or ethtool can never be reached.
Files go to a temporary folder, never to /etc.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import attrs
from twisted.internet import defer, reactor
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import TestCase

from cmegw.config.model import Config, NetworkConfig
from cmegw.config.settings import apply_settings
from cmegw.config.store import ConfigStore
from cmegw.host.apply import HostNetworkResult, NetworkApplier, default_interface
from cmegw.host.commands import CommandRun, CommandRunner, Refused
from cmegw.console.commands import COMMANDS, Session
from cmegw.service import GatewayService
from tests.web_helpers import PagesTestBase

FAKE = """#!/bin/sh
# A fake {name}: records its arguments (one call a line, each argument followed by \\037), prints
# {name}.out if there is one, exits with the number in {name}.status (0 without it).
here="${{0%/*}}"
printf '%s\\037' "${{0##*/}}" "$@" >> "$here/calls.log"
printf '\\n' >> "$here/calls.log"
if [ -f "$here/{name}.out" ]; then
    while IFS= read -r line || [ -n "$line" ]; do printf '%s\\n' "$line"; done < "$here/{name}.out"
fi
status=0
if [ -f "$here/{name}.status" ]; then read -r status < "$here/{name}.status"; fi
exit "$status"
"""

ON = NetworkConfig(apply_to_host=True, interface="eth0")


def network(**settings: Any) -> NetworkConfig:
    """Network settings as the pages and the console make them (the address field parsed the same way)."""
    config = apply_settings(Config(), {f"network.{k}": v for k, v in settings.items()})
    return attrs.evolve(config.network, apply_to_host=settings.get("apply_to_host", True),
                        interface=settings.get("interface", "eth0"))


class FakeCommands:
    """Fake networkctl, nmcli and ethtool in a folder that is, while a test runs, all of PATH."""

    def __init__(self, testcase: TestCase, names: tuple[str, ...] = ("networkctl", "nmcli", "ethtool")) -> None:
        self.bin = Path(testcase.mktemp())
        self.bin.mkdir(parents=True)
        for name in names:
            self.add(name)
        old = os.environ.get("PATH")
        os.environ["PATH"] = str(self.bin)
        testcase.addCleanup(self._restore, old)

    @staticmethod
    def _restore(old: str | None) -> None:
        if old is None:
            os.environ.pop("PATH", None)
        else:
            os.environ["PATH"] = old

    def add(self, name: str, output: str = "", status: int = 0, script: str | None = None) -> None:
        path = self.bin / name
        path.write_text(script if script is not None else FAKE.format(name=name))
        path.chmod(0o755)
        (self.bin / f"{name}.out").write_text(output)
        (self.bin / f"{name}.status").write_text(f"{status}\n")

    def remove(self, name: str) -> None:
        (self.bin / name).unlink()

    @property
    def calls(self) -> list[list[str]]:
        log = self.bin / "calls.log"
        if not log.exists():
            return []
        return [line.split("\x1f")[:-1] for line in log.read_text().splitlines()]


class Base(TestCase):
    def setUp(self) -> None:
        self.fake = FakeCommands(self, ("networkctl", "nmcli"))
        self.directory = Path(self.mktemp())
        self.directory.mkdir()
        self.applier = NetworkApplier(reactor, networkd_directory=self.directory,
                                      find_interface=lambda: "eth9")

    def file(self, interface: str = "eth0") -> str:
        return (self.directory / f"10-cmegw-{interface}.network").read_text()

    def written(self) -> list[str]:
        return sorted(p.name for p in self.directory.iterdir())


class FailureTests(Base):
    @defer.inlineCallbacks
    def test_permission_denied_puts_the_file_back(self) -> None:
        self.fake.add("networkctl", output="Failed to reload network settings: Access denied", status=1)
        result = yield self.applier.apply(network())
        self.assertFalse(result.ok)
        self.assertIn("was refused: the gateway lacks the permission", result.message)
        self.assertIn("Access denied", result.message)
        self.assertIn("was put back as it was", result.message)
        self.assertEqual(self.written(), [])
        self.assertEqual(self.fake.calls, [["networkctl", "reload"]])
        self.assertIn("$ networkctl reload: exit status 1", result.details())

    @defer.inlineCallbacks
    def test_failure_keeps_the_previous_file(self) -> None:
        yield self.applier.apply(network(dhcp="on"))
        before = self.file()
        self.fake.add("networkctl", output="Failed to reload: networkd is not running", status=3)
        result = yield self.applier.apply(network(dhcp="off", ip_address="10.0.0.2/8"))
        self.assertIn("ended with exit status 3 (Failed to reload: networkd is not running)", result.message)
        self.assertEqual(self.file(), before)

    @defer.inlineCallbacks
    def test_networkctl_missing(self) -> None:
        self.fake.remove("networkctl")
        result = yield self.applier.apply(network())
        self.assertFalse(result.ok)
        self.assertIn("networkctl is not installed on this host", result.message)
        self.assertEqual(self.written(), [])
        self.assertEqual(result.commands[0].status, None)

    @defer.inlineCallbacks
    def test_reconfigure_fails(self) -> None:
        script = FAKE.format(name="networkctl").replace(
            'exit "$status"', '[ "$1" = reconfigure ] && status=1\nexit "$status"')
        self.fake.add("networkctl", output="Interface \"eth0\" not found.", script=script)
        result = yield self.applier.apply(network())
        self.assertFalse(result.ok)
        self.assertIn("reconfiguring eth0 failed", result.message)

    @defer.inlineCallbacks
    def test_directory_missing(self) -> None:
        applier = NetworkApplier(reactor, networkd_directory=self.directory / "absent")
        result = yield applier.apply(network())
        self.assertFalse(result.ok)
        self.assertIn("does not exist; is systemd-networkd installed?", result.message)
        self.assertEqual(self.fake.calls, [])

    @defer.inlineCallbacks
    def test_directory_not_writable(self) -> None:
        applier = self.applier
        if os.geteuid() != 0:
            self.directory.chmod(0o500)
            self.addCleanup(self.directory.chmod, 0o700)
        else:
            # Root may write into any mode-0500 directory; sysfs refuses a new file even to root.
            sysfs = Path("/sys/kernel")
            if not sysfs.is_dir():
                self.skipTest("no /sys/kernel to stand for a directory root cannot write")
            applier = NetworkApplier(reactor, networkd_directory=sysfs, find_interface=lambda: "eth9")
        result = yield applier.apply(network())
        self.assertFalse(result.ok)
        self.assertIn("no permission to write", result.message)
        self.assertEqual(self.fake.calls, [])

    @defer.inlineCallbacks
    def test_hung_command_is_killed(self) -> None:
        self.fake.add("networkctl", script="#!/bin/sh\nexec /bin/sleep 30\n")
        applier = NetworkApplier(reactor, networkd_directory=self.directory,
                                 runner=CommandRunner(reactor, timeout=0.3))
        result = yield applier.apply(network())
        self.assertFalse(result.ok)
        self.assertIn("killed after 0.3 seconds", result.message)
        self.assertEqual(self.written(), [])

    @defer.inlineCallbacks
    def test_killed_command_whose_child_keeps_the_output_open(self) -> None:
        # The child left behind holds the output pipe: the run must still end at the time limit.
        self.fake.add("networkctl", script="#!/bin/sh\n/bin/sleep 3 &\nexec /bin/sleep 30\n")
        applier = NetworkApplier(reactor, networkd_directory=self.directory,
                                 runner=CommandRunner(reactor, timeout=0.3))
        started = reactor.seconds()
        result = yield applier.apply(network())
        self.assertIn("killed after 0.3 seconds", result.message)
        self.assertLess(reactor.seconds() - started, 2.5)

    @defer.inlineCallbacks
    def test_unexpected_error_is_a_result(self) -> None:
        def broken() -> str:
            raise RuntimeError("boom")

        applier = NetworkApplier(reactor, networkd_directory=self.directory, find_interface=broken)
        result = yield applier.apply(attrs.evolve(network(), interface=""))
        self.assertFalse(result.ok)
        self.assertIn("unexpected error", result.message)
        self.flushLoggedErrors(RuntimeError)

    def test_default_interface(self) -> None:
        root = Path(self.mktemp())
        (root / "proc/net").mkdir(parents=True)
        (root / "sys/class/net/lo").mkdir(parents=True)
        (root / "sys/class/net/eth0").mkdir()
        (root / "sys/class/net/eth1").mkdir()
        (root / "proc/net/route").write_text(
            "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n"
            "eth1\t00000000\t0101A8C0\t0003\t0\t0\t0\t00000000\n")
        self.assertEqual(default_interface(root), "eth1")
        (root / "proc/net/route").write_text("Iface\tDestination\n")
        with self.assertRaises(Refused) as caught:
            default_interface(root)
        self.assertIn("several interfaces (eth0, eth1); set network.interface", str(caught.exception))
        (root / "sys/class/net/eth1").rmdir()
        self.assertEqual(default_interface(root), "eth0")


class OffTests(Base):
    """With network.apply_to_host off (the factory default) nothing is written or run, ever."""

    def test_factory_default_is_off(self) -> None:
        self.assertFalse(Config().network.apply_to_host)
        self.assertFalse(NetworkConfig().apply_to_host)

    @defer.inlineCallbacks
    def test_applier_does_nothing(self) -> None:
        for net in (network(apply_to_host=False), attrs.evolve(network(apply_to_host=False), backend="networkmanager")):
            for action in (self.applier.apply, self.applier.renew):
                result = yield action(net)
                self.assertFalse(result.ok)
                self.assertIn("applying the Network settings to the host is off", result.message)
        self.assertEqual(self.written(), [])
        self.assertEqual(self.fake.calls, [])
        self.assertIsNone(self.applier.last)


class RecordingApplier:
    """Stands in for `NetworkApplier` in the gateway: records what it is asked, runs nothing."""

    def __init__(self, ok: bool = True) -> None:
        self.calls: list[tuple[str, NetworkConfig]] = []
        self.ok = ok
        self.last: HostNetworkResult | None = None

    def _record(self, action: str, net: NetworkConfig) -> defer.Deferred:
        self.calls.append((action, net))
        self.last = HostNetworkResult(action, self.ok, f"{action} done" if self.ok else f"{action} failed",
                                      net.backend, "eth0", (), (), 0.0)
        return defer.succeed(self.last)

    def apply(self, net: NetworkConfig) -> defer.Deferred:
        return self._record("apply", net)

    def renew(self, net: NetworkConfig) -> defer.Deferred:
        return self._record("renew", net)


def gateway_on(testcase: TestCase, apply_to_host: bool) -> tuple[GatewayService, ConfigStore]:
    folder = Path(testcase.mktemp())
    folder.mkdir()
    store = ConfigStore(folder / "cmegw.toml")
    store.load()
    if apply_to_host:
        store.change(apply_settings(store.config, {"network.apply_to_host": True, "network.interface": "eth0"}))
    return GatewayService(store, MemoryReactorClock()), store


class GatewayTests(TestCase):
    def test_a_default_gateway_never_applies(self) -> None:
        gateway, store = gateway_on(self, False)
        self.assertIsInstance(gateway.netapply, NetworkApplier)
        gateway.netapply = gateway.state.host_applier = fake = RecordingApplier()  # type: ignore[assignment]
        gateway.startService()
        self.addCleanup(gateway.stopService)
        self.assertEqual(fake.calls, [])

    @defer.inlineCallbacks
    def test_applied_at_start_and_after_every_restart(self) -> None:
        gateway, store = gateway_on(self, True)
        gateway.netapply = gateway.state.host_applier = fake = RecordingApplier(ok=False)  # type: ignore[assignment]
        saved = store.config
        gateway.startService()
        self.addCleanup(gateway.stopService)
        self.assertEqual([(a, n.interface) for a, n in fake.calls], [("apply", "eth0")])
        yield gateway.restart()
        self.assertEqual([a for a, _ in fake.calls], ["apply", "apply"])
        self.assertEqual(store.config, saved)  # a failed apply changes nothing stored

    @defer.inlineCallbacks
    def test_the_real_applier_on_a_gateway_touches_nothing_when_off(self) -> None:
        fake = FakeCommands(self)
        gateway, store = gateway_on(self, False)
        gateway.startService()
        self.addCleanup(gateway.stopService)
        result = yield gateway.netapply.renew(gateway.running_config.network)
        self.assertFalse(result.ok)
        self.assertEqual(fake.calls, [])


class FrontEndTests(PagesTestBase):
    """The Network page's Renew button, the JSON API and the console's show network, on a running gateway."""

    real_gateway = True

    def switch_on(self, ok: bool = True) -> RecordingApplier:
        running = self.gateway.running_config
        self.gateway.running_config = running.evolve(network=attrs.evolve(
            running.network, apply_to_host=True, interface="eth0"))
        self.gateway.netapply = self.gateway.state.host_applier = fake = RecordingApplier(ok)  # type: ignore[assignment]
        return fake

    @defer.inlineCallbacks
    def test_off_no_button_and_renew_refused(self) -> None:
        _, body = yield self.get("/network")
        self.assertNotIn('action="/network/renew"', body)
        self.assertIn("the host's DHCP client renews its own lease", body)
        response, body = yield self.post("/network/renew", {})
        self.assertEqual(response.code, 409)
        self.assertIn("applying the Network settings to the host is off", body)
        response, data = yield self.api("POST", "/api/network/renew", {})
        self.assertEqual(response.code, 409)
        self.assertFalse(data["renewed"])

    @defer.inlineCallbacks
    def test_renew_button(self) -> None:
        fake = self.switch_on()
        _, body = yield self.get("/network")
        self.assertIn('action="/network/renew"', body)
        self.assertIn("Renew DHCP lease", body)
        self.assertIn("backend networkd, interface eth0", body)
        self.assertIn("Not applied yet.", body)
        response, body = yield self.post("/network/renew", {})
        self.assertEqual(response.code, 200)
        self.assertIn("renew done", body)
        self.assertIn("Last renew", body)
        self.assertEqual([a for a, _ in fake.calls], ["renew"])

    @defer.inlineCallbacks
    def test_renew_needs_the_csrf_token(self) -> None:
        fake = self.switch_on()
        response, _ = yield self.post("/network/renew", {}, token="")
        self.assertEqual(response.code, 403)
        response, _ = yield self.post("/network/renew", {}, token="0" * 32)
        self.assertEqual(response.code, 403)
        self.assertEqual(fake.calls, [])

    @defer.inlineCallbacks
    def test_api_renew(self) -> None:
        fake = self.switch_on(ok=False)
        response, data = yield self.api("POST", "/api/network/renew", {})
        self.assertEqual(response.code, 502)
        self.assertEqual((data["renewed"], data["message"]), (False, "renew failed"))
        self.assertEqual(data["result"]["action"], "renew")
        response, _ = yield self.api("POST", "/api/network/renew", {}, content_type=b"text/plain")
        self.assertEqual(response.code, 415)
        response, _ = yield self.api("POST", "/api/network/renew", {}, headers={b"origin": [b"http://evil.example"]})
        self.assertEqual(response.code, 403)
        self.assertEqual(len(fake.calls), 1)
        _, status = yield self.api("GET", "/api/status")
        self.assertTrue(status["network"]["apply_to_host"])
        self.assertEqual(status["network"]["host_backend_last"]["message"], "renew failed")

    def test_console_show_network(self) -> None:
        session = Session(self.gateway, user="admin")
        text = COMMANDS.run(session, "show network")
        self.assertIn("not applied to it (network.apply_to_host)", text)
        self.assertRegex(text, r"backend\s+networkd\s+networkd")
        self.switch_on()
        self.gateway.netapply.last = HostNetworkResult(
            "apply", False, "not applied: no permission to write /etc/systemd/network/10-cmegw-eth0.network",
            "networkd", "eth0", (), (CommandRun(("networkctl", "reload"), 1, "Access denied"),), 0.0)
        text = COMMANDS.run(session, "show network")
        self.assertIn("applied to it at every restart (backend networkd, interface eth0)", text)
        self.assertIn("Last apply (", text)
        self.assertIn("): not applied: no permission to write", text)
        self.assertIn("$ networkctl reload: exit status 1", text)
        self.assertIn("    Access denied", text)
