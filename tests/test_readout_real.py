"""
The readouts end to end with real parts: a real ``twistd cmegw --simulate``,
a real Mosquitto broker and a head-end's ``mosquitto_sub`` with a persistent
session, the JSON API through curl.  The broker stopped for several readouts
and started again: every reading arrives, in order, none lost; cmegw killed
with -9 while a backlog waits: after its restart the backlog is delivered.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from twisted.internet import defer, reactor, task, threads
from twisted.trial.unittest import TestCase

from tests.mosquitto import Mosquitto, subscribe
from tests.support import GatewayProcess, defaults_with, free_port, require_program

GATEWAY = "gw1"
METERS = """
[meter.heat-1]
line = 1
address = "12345678-KAM-19-04"
name = "Flat 3 heat"
interval = "1d"

[meter.water-2]
line = 1
address = "2"
name = "Cold water"
interval = "1d"
"""
READING_TOPICS = [f"cmegw/{GATEWAY}/heat-1", f"cmegw/{GATEWAY}/water-2"]
WAIT = 30.0


class ReadoutRealTests(TestCase):
    timeout = 180

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        self.curl = require_program("curl")
        self.dir = Path(self.mktemp()).resolve()
        self.dir.mkdir()
        self.broker = Mosquitto(self.dir / "broker", persistent=True)
        yield self.broker.start()
        self.addCleanup(self.broker.stop)
        # The head-end subscribes first with a persistent session: QoS 1 readings wait for it at the broker.
        first = yield subscribe(self.broker, READING_TOPICS, count=1, timeout=5, session="head-end")
        yield first.done
        self.http_port = free_port()
        text = defaults_with(('serial_number = ""', f'serial_number = "{GATEWAY.upper()}"'),
                             ('url = ""', f'url = "{self.broker.url}"'), extra=METERS)
        (self.dir / "cmegw.toml").write_text(text)
        self.gw = self.gateway()
        self.addCleanup(lambda: self.gw.stop())  # whichever gateway runs at the end (a test starts a second)
        yield threads.deferToThread(self.gw.start, [self.http_port])

    def gateway(self) -> GatewayProcess:
        return GatewayProcess(self.dir, ["--config", "cmegw.toml", "--simulate",
                                         "--tunnel", "tcp:0:interface=127.0.0.1",
                                         "--http", f"tcp:{self.http_port}:interface=127.0.0.1",
                                         "--https", "tcp:0:interface=127.0.0.1",
                                         "--console", "tcp:0:interface=127.0.0.1"])

    def _api(self, method: str, path: str) -> Any:
        command = [self.curl, "-s", "--max-time", "30", "--digest", "-u", "admin:admin", "-X", method,
                   f"http://127.0.0.1:{self.http_port}{path}"]
        if method == "POST":
            command += ["-H", "Content-Type: application/json", "--data", "{}"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=40)
        start = done.stdout.find("{")
        if done.returncode == 0 and start >= 0:
            return json.loads(done.stdout[start:])
        raise AssertionError(f"no answer from {path}: {done.returncode} {done.stdout[:500]}\n{self.gw.log()[-3000:]}")

    def api(self, method: str, path: str) -> defer.Deferred:
        return threads.deferToThread(self._api, method, path)

    @defer.inlineCallbacks
    def until(self, condition: Any, what: str, timeout: float = WAIT) -> Any:
        """Check `condition()` every 0.2 s on the reactor, for at most `timeout` s."""
        deadline = time.monotonic() + timeout
        for _ in range(int(timeout / 0.2) + 1):
            value = yield defer.maybeDeferred(condition)
            if value:
                return value
            if time.monotonic() > deadline:
                break
            yield task.deferLater(reactor, 0.2, lambda: None)
        raise AssertionError(f"never: {what}\n{self.gw.log()[-3000:]}")

    @defer.inlineCallbacks
    def read_all(self, times: int) -> Any:
        for _ in range(times):
            answer = yield self.api("POST", "/api/readout/read")
            self.assertEqual(answer.get("good"), 2, answer)

    def target(self, answer: dict) -> dict:
        return answer["targets"].get("mqtt", {"state": "not yet", "backlog": None})

    @defer.inlineCallbacks
    def test_broker_down_then_up_every_reading_arrives_in_order(self) -> Any:
        head_end = yield subscribe(self.broker, READING_TOPICS, count=8, timeout=120, session="head-end")
        self.addCleanup(head_end.stop)
        yield self.until(lambda: self.api("GET", "/api/readout").addCallback(
            lambda a: self.target(a)["state"] == "connected"), "cmegw connected to the broker")
        yield self.read_all(1)
        yield self.until(lambda: len(head_end.received()) >= 2, "the first two readings")
        heat = [json.loads(m.payload) for m in head_end.received() if m.topic.endswith("/heat-1")][0]
        self.assertEqual((heat["id"], heat["meter"], heat["name"], heat["manufacturer"]),
                         ("12345678", "heat-1", "Flat 3 heat", "KAM"))
        self.assertEqual(heat["total_energy_consumption_kwh"], 48213)
        self.assertTrue(heat["timestamp"].endswith("Z"))
        self.assertIn("records", heat)

        yield self.broker.stop()
        yield self.until(lambda: self.api("GET", "/api/readout").addCallback(
            lambda a: self.target(a)["state"] == "down"), "the target down")
        yield self.read_all(3)
        status = yield self.until(lambda: self.api("GET", "/api/readout").addCallback(
            lambda a: a if self.target(a)["backlog"] == 6 else None), "six readings waiting")
        self.assertTrue(self.target(status)["error"], "the target says why it is down")

        yield self.broker.start()
        received = yield head_end.done
        ids = [json.loads(m.payload)["reading_id"] for m in received]
        self.assertEqual(len(set(ids)), 8, f"every reading, none twice: {ids}")
        self.assertEqual(ids, sorted(ids), "in the order they were read")
        yield self.until(lambda: self.api("GET", "/api/readout").addCallback(
            lambda a: self.target(a)["backlog"] == 0), "the backlog emptied")

    @defer.inlineCallbacks
    def test_kill_9_with_a_backlog_then_restart_delivers_it(self) -> Any:
        yield self.until(lambda: self.api("GET", "/api/readout").addCallback(
            lambda a: self.target(a)["state"] == "connected"), "cmegw connected to the broker")
        yield self.broker.stop()
        yield self.read_all(2)
        yield self.until(lambda: self.api("GET", "/api/readout").addCallback(
            lambda a: self.target(a)["backlog"] == 4), "four readings waiting")
        self.gw.signal(signal.SIGKILL)
        yield threads.deferToThread(self.gw.stop)
        yield self.broker.start()
        head_end = yield subscribe(self.broker, READING_TOPICS, count=4, timeout=60, session="head-end")
        self.addCleanup(head_end.stop)
        self.gw = self.gateway()
        self.addCleanup(self.gw.stop)
        yield threads.deferToThread(self.gw.start, [self.http_port])
        received = yield head_end.done
        ids = [json.loads(m.payload)["reading_id"] for m in received]
        self.assertEqual(sorted(set(ids)), [1, 2, 3, 4], f"the four readings of before the kill: {ids}")
        yield self.until(lambda: self.api("GET", "/api/readout").addCallback(
            lambda a: self.target(a)["backlog"] == 0), "the backlog emptied")

    @defer.inlineCallbacks
    def test_home_assistant_discovery(self) -> Any:
        configs = yield subscribe(self.broker, ["homeassistant/sensor/gw1_heat-1/total_energy_consumption_kwh/config",
                                                "homeassistant/binary_sensor/gw1_heat-1/alarm/config",
                                                "cmegw/gw1/status"], count=3, timeout=60)
        self.addCleanup(configs.stop)
        yield self.read_all(1)
        received = {m.topic: m for m in (yield configs.done)}
        self.assertEqual(len(received), 3, sorted(received))
        energy = json.loads(received["homeassistant/sensor/gw1_heat-1/total_energy_consumption_kwh/config"].payload)
        self.assertEqual((energy["device_class"], energy["state_class"], energy["unit_of_measurement"]),
                         ("energy", "total_increasing", "kWh"))
        self.assertEqual(energy["state_topic"], "cmegw/gw1/heat-1")
        self.assertEqual(energy["device"]["serial_number"], "12345678")
        alarm = json.loads(received["homeassistant/binary_sensor/gw1_heat-1/alarm/config"].payload)
        self.assertEqual(alarm["device_class"], "problem")
        self.assertEqual(received["cmegw/gw1/status"].payload, b"online")
        later = yield subscribe(self.broker, sorted(received), count=3, timeout=20)
        self.addCleanup(later.stop)
        kept = yield later.done
        self.assertEqual(sorted((m.topic, m.retain) for m in kept), [(topic, True) for topic in sorted(received)],
                         "retained for Home Assistant when it (re)starts")
