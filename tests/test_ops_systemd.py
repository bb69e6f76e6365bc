"""
Tests for cmegw.ops.systemd: sd_notify to a test datagram socket, READY only
once the listeners accept, WATCHDOG on a task.Clock, STATUS text, RELOADING
around a restart, STOPPING; SIGHUP with a good and a bad file
(ConfigStore.reload, GatewayService.reload_config).
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import attrs
from twisted.application import service
from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase

from cmegw.config.store import ConfigFileError, ConfigStore
from cmegw.ops import systemd
from cmegw.ops.systemd import Notifier, ReloadOnHangup, SystemdNotify, status_text
from cmegw.service import GatewayService, Overrides
from cmegw.state import BusView
from tests.support import defaults_with, open_pty


class NotifySocket:
    """A datagram socket standing in for systemd's notify socket."""

    def __init__(self, testcase: TestCase, abstract: bool = False) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = f"cmegw-test-{os.getpid()}-{id(self)}"
            self.sock.bind("\0" + name)
            self.address = "@" + name
        else:
            folder = tempfile.mkdtemp(prefix="cmegw-notify-")  # AF_UNIX paths are short: not under _trial_temp
            testcase.addCleanup(shutil.rmtree, folder, True)
            self.address = os.path.join(folder, "notify")
            self.sock.bind(self.address)
        self.sock.setblocking(False)
        testcase.addCleanup(self.sock.close)
        self.received: list[str] = []

    def messages(self) -> list[str]:
        """Everything received so far, one string per datagram."""
        while True:
            try:
                self.received.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return self.received

    def fields(self, key: str) -> list[str]:
        return [line.split("=", 1)[1] for message in self.messages() for line in message.split("\n")
                if line.startswith(key + "=")]

    def wait(self, condition: Any, what: str, timeout: float = 20.0, log: Any = lambda: "") -> Any:
        """
        The first true value of `condition()`, checked again as each datagram
        arrives (select on the socket, no polling); AssertionError after `timeout` s.
        """
        deadline = time.monotonic() + timeout
        while True:
            value = condition()
            if value:
                return value
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{what} did not come within {timeout} s\n{log()}")
            select.select([self.sock], [], [], remaining)


class NotifierTests(TestCase):
    def test_address_from_environment(self):
        self.assertIsNone(systemd.notify_address({}))
        self.assertIsNone(systemd.notify_address({"NOTIFY_SOCKET": ""}))
        self.assertIsNone(systemd.notify_address({"NOTIFY_SOCKET": "relative/path"}))
        self.assertEqual(systemd.notify_address({"NOTIFY_SOCKET": "/run/systemd/notify"}), "/run/systemd/notify")
        self.assertEqual(systemd.notify_address({"NOTIFY_SOCKET": "@abc"}), "\0abc")

    def test_nothing_without_socket(self):
        notifier = Notifier.from_environment({})
        self.assertFalse(notifier.enabled)
        self.assertFalse(notifier.send(READY=1))

    def test_path_socket(self):
        listener = NotifySocket(self)
        notifier = Notifier.from_environment({"NOTIFY_SOCKET": listener.address})
        self.addCleanup(notifier.close)
        self.assertTrue(notifier.send(READY=1, STATUS="line 1 ok\n2400 baud"))
        self.assertEqual(listener.messages(), ["READY=1\nSTATUS=line 1 ok 2400 baud"])

    def test_abstract_socket(self):
        listener = NotifySocket(self, abstract=True)
        notifier = Notifier.from_environment({"NOTIFY_SOCKET": listener.address})
        self.addCleanup(notifier.close)
        self.assertTrue(notifier.send(WATCHDOG=1))
        self.assertEqual(listener.messages(), ["WATCHDOG=1"])

    def test_gone_socket_is_not_fatal(self):
        listener = NotifySocket(self)
        notifier = Notifier(listener.address)
        self.addCleanup(notifier.close)
        os.unlink(listener.address)
        self.assertFalse(notifier.send(READY=1))
        self.assertFalse(notifier.send(READY=1))
        self.flushLoggedErrors()

    def test_watchdog_interval(self):
        pid = os.getpid()
        self.assertIsNone(systemd.watchdog_interval({}))
        self.assertIsNone(systemd.watchdog_interval({"WATCHDOG_USEC": "0"}))
        self.assertEqual(systemd.watchdog_interval({"WATCHDOG_USEC": "20000000"}), 10.0)
        self.assertEqual(systemd.watchdog_interval({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(pid)}), 0.5)
        self.assertIsNone(systemd.watchdog_interval({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(pid + 1)}))


class PendingPart(service.Service):
    """A part whose listener comes up when the test says so."""

    def __init__(self) -> None:
        self.listening = defer.Deferred()

    def when_listening(self) -> defer.Deferred:
        d = defer.Deferred()
        self.listening.addCallback(lambda _: d.callback(None))
        return d


class GatewayTestCase(TestCase):
    """A real gateway on a pty with its tunnel on 127.0.0.1, not started yet."""

    def make_gateway(self, device: str | None = None) -> GatewayService:
        self.dir = Path(self.mktemp())
        self.dir.mkdir()
        if device is None:
            master, slave, device = open_pty()
            self.addCleanup(os.close, master)
            self.addCleanup(os.close, slave)
        self.store = ConfigStore(self.dir / "cmegw.toml")
        self.store.load()
        gateway = GatewayService(self.store, reactor, Overrides(device=device, tunnel="tcp:0:interface=127.0.0.1"))
        self.addCleanup(lambda: gateway.stopService() if gateway.running else None)
        return gateway

    def tunnel_port(self, gateway: GatewayService) -> int:
        return gateway.tunnels[1].port.getHost().port


class SystemdNotifyTests(GatewayTestCase):
    def setUp(self):
        self.listener = NotifySocket(self)
        self.clock = task.Clock()
        self.parts: list[SystemdNotify] = []

    def part(self, gateway: GatewayService, watchdog: float | None = None) -> SystemdNotify:
        part = SystemdNotify(gateway, Notifier(self.listener.address), watchdog, clock=self.clock)
        self.parts.append(part)
        return part

    def add_notify(self, gateway: GatewayService, watchdog: float | None = None) -> None:
        gateway.add_part(lambda gw: self.part(gw, watchdog))

    def test_ready_when_the_tunnel_accepts(self):
        gateway = self.make_gateway()
        self.add_notify(gateway)
        gateway.startService()
        self.assertEqual(self.listener.fields("READY"), ["1"])
        with socket.create_connection(("127.0.0.1", self.tunnel_port(gateway)), timeout=2):
            pass  # READY=1 was sent: the port accepts

    def test_ready_waits_for_every_listener(self):
        gateway = self.make_gateway()
        pending = PendingPart()
        gateway.add_part(lambda gw: pending)
        self.add_notify(gateway)
        gateway.startService()
        self.assertEqual(self.listener.fields("READY"), [])
        self.assertTrue(self.listener.fields("STATUS")[-1].startswith("starting: line 1 ok 2400 baud"))
        pending.listening.callback(None)
        self.assertEqual(self.listener.fields("READY"), ["1"])

    @defer.inlineCallbacks
    def test_ready_waits_for_a_tunnel_that_cannot_listen_yet(self):
        busy = socket.socket()
        self.addCleanup(busy.close)
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        gateway = self.make_gateway()
        gateway.overrides = Overrides(device=gateway.overrides.device, tunnel=f"tcp:{port}:interface=127.0.0.1")
        gateway.running_config = gateway.overrides.apply(self.store.config)
        self.patch(__import__("cmegw.tunnel.accept", fromlist=["LISTEN_RETRY"]), "LISTEN_RETRY", 0.1)
        self.add_notify(gateway)
        gateway.startService()
        self.flushLoggedErrors()
        self.assertEqual(self.listener.fields("READY"), [])
        self.assertIn("cannot listen", self.listener.fields("STATUS")[-1])
        busy.close()
        for _ in range(100):
            if self.listener.fields("READY"):
                break
            yield task.deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(self.listener.fields("READY"), ["1"])

    def test_watchdog_at_half_the_interval(self):
        gateway = self.make_gateway()
        env = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
        self.add_notify(gateway, systemd.watchdog_interval(env))
        gateway.startService()
        self.assertEqual(len(self.listener.fields("WATCHDOG")), 1, "one at once")
        self.clock.advance(0.9)
        self.assertEqual(len(self.listener.fields("WATCHDOG")), 1)
        self.clock.advance(0.1)
        self.assertEqual(len(self.listener.fields("WATCHDOG")), 2)
        self.clock.pump([1.0] * 5)
        self.assertEqual(self.listener.fields("WATCHDOG"), ["1"] * 7)

    def test_no_watchdog_without_interval(self):
        gateway = self.make_gateway()
        self.add_notify(gateway, None)
        gateway.startService()
        self.clock.advance(100)
        self.assertEqual(self.listener.fields("WATCHDOG"), [])

    def test_status_follows_the_tunnel(self):
        gateway = self.make_gateway()
        self.add_notify(gateway)
        gateway.startService()
        port = self.tunnel_port(gateway)
        self.assertEqual(self.listener.fields("STATUS")[-1],
                         f"line 1 ok 2400 baud, tunnel 1 listening on 127.0.0.1:{port}")
        gateway.tunnels[1].stats.state = "connected"
        gateway.tunnels[1].stats.peer = "127.0.0.1:5555"
        self.clock.advance(systemd.STATUS_INTERVAL)
        self.assertEqual(self.listener.fields("STATUS")[-1],
                         "line 1 ok 2400 baud, tunnel 1 connected to 127.0.0.1:5555")
        count = len(self.listener.fields("STATUS"))
        self.clock.advance(systemd.STATUS_INTERVAL)
        self.assertEqual(len(self.listener.fields("STATUS")), count, "sent only when it changes")

    def test_no_status_timer_without_systemd(self):
        """Without $NOTIFY_SOCKET the STATUS= line is never sent: nothing looks at it every 5 s."""
        gateway = self.make_gateway()
        clock = task.Clock()
        gateway.add_part(lambda gw: SystemdNotify(gw, Notifier(None), None, clock=clock))
        gateway.startService()
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_status_of_a_missing_adapter(self):
        gateway = self.make_gateway(device=str(Path(self.mktemp()) / "ttyUSB9"))
        self.add_notify(gateway)
        gateway.startService()
        self.flushLoggedErrors()
        status = self.listener.fields("STATUS")[-1]
        self.assertTrue(status.startswith("line 1 error: cannot open "), status)
        self.assertIn("no such device (adapter unplugged?)", status)
        self.assertEqual(self.listener.fields("READY"), ["1"], "a missing adapter does not keep it from starting")

    @defer.inlineCallbacks
    def test_stopping(self):
        gateway = self.make_gateway()
        self.add_notify(gateway)
        gateway.startService()
        yield gateway.stopService()
        messages = self.listener.messages()
        self.assertIn("STOPPING=1", messages[-1])
        self.assertNotIn("RELOADING=1", "\n".join(messages))

    @defer.inlineCallbacks
    def test_reloading_around_a_restart(self):
        gateway = self.make_gateway()
        self.add_notify(gateway, 1.0)
        gateway.startService()
        yield gateway.restart()
        messages = self.listener.messages()
        reloading = [i for i, m in enumerate(messages) if "RELOADING=1" in m]
        ready = [i for i, m in enumerate(messages) if "READY=1" in m]
        self.assertEqual(len(reloading), 1)
        self.assertIn("MONOTONIC_USEC=", messages[reloading[0]])
        self.assertEqual(len(ready), 2)
        self.assertLess(ready[0], reloading[0])
        self.assertLess(reloading[0], ready[1])
        self.assertNotIn("STOPPING=1", "\n".join(messages))
        self.assertFalse(self.parts[0].running)
        self.assertTrue(self.parts[1].running, "the part is rebuilt with the others")
        self.assertFalse(self.parts[0]._watchdog.running, "the old part's watchdog stopped")

    def test_status_text_with_meters(self):
        gateway = self.make_gateway()
        gateway.startService()

        class Master:
            results = {"primary": [1, 2, 3]}

        gateway.state.bus = {1: BusView(1, Master())}
        self.assertTrue(status_text(gateway.state).endswith(", 3 meters"))
        gateway.status.config_problem = "bad file"
        self.assertTrue(status_text(gateway.state).endswith("3 meters, configuration problem: bad file"))


    def test_status_text_with_connect_mode(self):
        gateway = self.make_gateway()
        gateway.startService()

        class Connect:
            state = "connected"

            def text(self, now):
                return "connected to head-end.example:9000"

        gateway.state.tunnels[1] = attrs.evolve(gateway.state.tunnels[1], connect=Connect())
        self.assertTrue(status_text(gateway.state).endswith(", tunnel 1 connect mode: connected to head-end.example:9000"))


GOOD_CHANGE = ("keepalive = 45", "keepalive = 7")


class ReloadTests(GatewayTestCase):
    def setUp(self):
        self.listener = NotifySocket(self)
        self.gateway = self.make_gateway()
        self.gateway.startService()
        self.path = self.store.path

    def edit(self, old: str, new: str) -> str:
        text = self.path.read_text()
        self.assertIn(old, text)
        text = text.replace(old, new, 1)
        self.path.write_text(text)
        return text

    def test_store_reload_does_not_rewrite(self):
        text = self.edit(*GOOD_CHANGE) + "\n# an operator's comment stays\n"
        self.path.write_text(text)
        stat = self.path.stat()
        seen = []
        self.store.subscribe(lambda old, new: seen.append((old.tunnels[1].keepalive, new.tunnels[1].keepalive)))
        self.store.reload()
        self.assertEqual(seen, [(45, 7)])
        self.assertEqual(self.path.read_text(), text)
        self.assertEqual(self.path.stat().st_mtime_ns, stat.st_mtime_ns)
        self.assertEqual(self.store.last_good_path.read_text(), text)

    def test_store_reload_refuses_a_bad_file(self):
        before = self.store.config
        last_good = self.store.last_good_path.read_text()
        self.path.write_text(defaults_with(("keepalive = 45", "keepalive = -3")))
        seen = []
        self.store.subscribe(lambda old, new: seen.append(new))
        self.assertRaises(ConfigFileError, self.store.reload)
        self.path.write_text("this is = = not toml")
        self.assertRaises(ConfigFileError, self.store.reload)
        self.path.unlink()
        self.assertRaises(ConfigFileError, self.store.reload)
        self.assertIs(self.store.config, before)
        self.assertEqual(seen, [])
        self.assertEqual(self.store.last_good_path.read_text(), last_good)
        self.assertFalse(self.path.exists(), "a reload never writes the file")

    def hangup(self) -> ReloadOnHangup:
        part = ReloadOnHangup(self.gateway, Notifier(self.listener.address))
        part.startService()
        self.addCleanup(lambda: part.stopService() if part.running else None)
        return part

    def test_good_file_applies_live(self):
        part = self.hangup()
        self.edit(*GOOD_CHANGE)
        self.assertTrue(part.reload())
        self.assertEqual(self.gateway.running_config.tunnels[1].keepalive, 7)
        self.assertEqual(self.gateway.tunnels[1].factory.config.keepalive, 7)
        messages = self.listener.messages()
        self.assertIn("RELOADING=1", messages[0])
        self.assertIn("MONOTONIC_USEC=", messages[0])
        self.assertIn("READY=1", messages[1])
        self.assertIn("STATUS=line 1 ok 2400 baud", messages[1])

    def test_restart_settings_wait(self):
        part = self.hangup()
        self.edit("dhcp = true", "dhcp = false")
        self.assertTrue(part.reload())
        self.assertTrue(self.gateway.running_config.network.dhcp)
        self.assertEqual(self.gateway.state.pending_restart(), ["network.dhcp"])

    def test_bad_file_is_refused(self):
        part = self.hangup()
        running = self.gateway.running_config
        bad = defaults_with(("keepalive = 45", "keepalive = 'soon'"))
        self.path.write_text(bad)
        self.assertFalse(part.reload())
        self.assertIs(self.gateway.running_config, running)
        self.assertEqual(self.path.read_text(), bad, "the bad file is left as it is")
        status = self.listener.fields("STATUS")[-1]
        self.assertTrue(status.startswith("configuration reload refused: "), status)
        self.assertIn("keepalive", status)
        self.assertIn("not reloaded", self.gateway.status.config_problem)
        self.assertEqual(self.listener.fields("READY"), ["1"], "still ready: it runs on")

    @defer.inlineCallbacks
    def test_real_signal(self):
        self.hangup()
        self.edit(*GOOD_CHANGE)
        os.kill(os.getpid(), signal.SIGHUP)
        for _ in range(100):
            if self.gateway.running_config.tunnels[1].keepalive == 7:
                break
            yield task.deferLater(reactor, 0.02, lambda: None)
        self.assertEqual(self.gateway.running_config.tunnels[1].keepalive, 7)

    def test_handler_restored(self):
        before = signal.getsignal(signal.SIGHUP)
        part = self.hangup()
        self.assertNotEqual(signal.getsignal(signal.SIGHUP), before)
        part.stopService()
        self.assertEqual(signal.getsignal(signal.SIGHUP), before)


class ListenersReadyTests(GatewayTestCase):
    """gateway.when_listening() waits for the web and console listeners, not only the tunnels."""

    @defer.inlineCallbacks
    def test_web_and_console_listening(self):
        from cmegw.console.service import make_console
        from cmegw.web.service import make_web

        gateway = self.make_gateway()
        gateway.overrides = Overrides(device=gateway.overrides.device, tunnel="tcp:0:interface=127.0.0.1",
                                      http="tcp:0:interface=127.0.0.1", https="tcp:0:interface=127.0.0.1",
                                      console="tcp:0:interface=127.0.0.1")
        gateway.add_part(make_web)
        gateway.add_part(make_console)
        gateway.startService()
        yield gateway.when_listening()
        web = gateway.getServiceNamed("web")
        console = gateway.getServiceNamed("console")
        self.assertEqual(sorted(web._ports), ["http", "https"])
        self.assertTrue(all(listener.port is not None for listener in console))

    @defer.inlineCallbacks
    def test_console_port_in_use_holds_ready(self):
        from cmegw.console.service import make_console

        busy = socket.socket()
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        self.addCleanup(busy.close)
        gateway = self.make_gateway()
        gateway.overrides = Overrides(device=gateway.overrides.device, tunnel="tcp:0:interface=127.0.0.1",
                                      console=f"tcp:{busy.getsockname()[1]}:interface=127.0.0.1")
        gateway.add_part(make_console)
        gateway.startService()
        ready = gateway.when_listening()
        yield task.deferLater(reactor, 0.3, lambda: None)
        self.assertFalse(ready.called, "no READY while the console cannot listen")
        ready.cancel()
        self.flushLoggedErrors()
        yield ready.addErrback(lambda f: None)
