"""
Helpers for the readout faces' web tests: a fake gateway (published state with
a `FakeReadout`, a memory config store, the actions read_meters_now and
adopt_meters, a line master on a simulated bus), real decoded readings of the
simulated meters, and a StubTreq client for the admin resource driven on a
`task.Clock` in UTC.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlencode

from treq.testing import StubTreq
from twisted.internet import defer, task
from twisted.trial.unittest import TestCase

from cmegw.config.model import Config
from cmegw.mbus.arbiter import BusArbiter
from cmegw.mbus.master import Master
from cmegw.mbus.meterbus import MeterBus, default_meters
from cmegw.readout.meterlist import adopt
from cmegw.readout.reading import StoredReading
from cmegw.state import BusView
from cmegw.testing import BusLine, FakeReadout, fake_state, simulated_readings
from cmegw.web.app import admin_resource
from tests.support import local_time_in_utc
from tests.web_helpers import HOST, settle_treq

BASE = "http://127.0.0.1:8080"
#: 2024-03-12 14:23:00 UTC
T0 = 1710253380.0
ERROR_2 = "the meter at address 2 did not answer (4 tries)"


def decoded_readings() -> dict[int, dict[str, Any]]:
    """A StoredReading's ``decoded`` of each simulated meter, by primary address."""
    return {primary: {k: v for k, v in reading.as_dict().items() if k != "frames"}
            for primary, reading in simulated_readings().items()}


DECODED = decoded_readings()


def config() -> Config:
    return Config(meters={
        "heat-1": {"line": 1, "address": "12345678-KAM-19-04", "name": "Flat 3 heat", "interval": "15m"},
        "water-2": {"line": 1, "address": "22110033-SEN-66-16"},
        "gas-10": {"line": 1, "address": "10", "enabled": False},
    })


def reading(key: str, primary: int, when: float = T0, id: int = 1, **decoded: Any) -> StoredReading:
    return StoredReading(id, key, when, True, ("68...16",), {**DECODED[primary], **decoded})


class Gateway:
    """What the web faces see of the gateway: the published state, the store, the actions, a line master."""

    def __init__(self, clock: task.Clock, config: Config) -> None:
        self.reactor = clock
        self.readout = FakeReadout(config)
        self.state = fake_state(clock, config, readout=self.readout)
        self.store = self.state.store
        self.line = BusLine(MeterBus(default_meters()), clock)
        self.master = Master(1, BusArbiter(1, self.line, clock), clock)
        self.state.bus = {1: BusView(1, self.master)}
        #: read_meters_now's calls.
        self.reads: list[Any] = []
        #: What a read gives per meter: a StoredReading, or an error text (None for a read that did not run).
        self.outcomes: dict[str, Any] = {}
        #: Hold the reads until the test fires them (`release`).
        self.hold = False
        self._held: list[tuple[list[str], defer.Deferred]] = []

    def read_meters_now(self, keys: Any = None) -> defer.Deferred:
        readout = self.state.readout
        if readout is None:
            return defer.fail(RuntimeError("the readouts are not running"))
        chosen = list(readout.meters) if keys is None else list(keys)
        for key in chosen:
            if key not in readout.meters:
                return defer.fail(KeyError(f"there is no meter {key}"))
        self.reads.append(keys)
        d: defer.Deferred = defer.Deferred()
        if self.hold:
            self._held.append((chosen, d))
        else:
            d.callback(self._results(chosen))
        return d

    def release(self) -> None:
        for chosen, d in self._held:
            d.callback(self._results(chosen))
        self._held = []

    def _results(self, chosen: list[str]) -> dict[str, Any]:
        out = {}
        for key in chosen:
            outcome = self.outcomes.get(key)
            status = self.readout.meters[key]
            if isinstance(outcome, str):
                status.last_error, status.failures_in_row = outcome, status.failures_in_row + 1
                outcome = None
            elif outcome is not None:
                status.last_reading, status.last_error, status.failures_in_row = outcome, "", 0
            out[key] = outcome
        return out

    def adopt_meters(self, n: int, found: Any = None, interval: str = "") -> list[str]:
        if n != 1:
            raise KeyError(f"there is no line {n}")
        if found is None:
            found = list(self.master.results.get("secondary") or []) + list(self.master.results.get("primary") or [])
        new, added = adopt(self.store.config, n, found, interval)
        if added:
            self.store.change(new)
        return added


class ReadoutWebCase(TestCase):
    """The admin resource over the fake gateway, in a StubTreq, on a clock at T0 + 2 min, in UTC."""

    def setUp(self) -> None:
        local_time_in_utc(self)
        self.clock = task.Clock()
        self.clock.advance(T0 + 120)
        self.gateway = Gateway(self.clock, config())
        self.readout = self.gateway.readout
        self.http = StubTreq(admin_resource(self.gateway, clock=self.clock, host_network=lambda: HOST,
                                            web=lambda: None))

    def fill(self) -> None:
        """heat-1 read well 2 min ago; water-2 in alarm (3 failed reads); gas-10 never read."""
        meters = self.readout.meters
        heat = meters["heat-1"]
        heat.interval, heat.next_due, heat.last_attempt = 900, T0 + 420, T0
        heat.last_reading, heat.last_success, heat.reads = reading("heat-1", 1, id=17), T0, 12
        water = meters["water-2"]
        water.last_reading = reading("water-2", 2, when=T0 - 3600, id=9, status=0x14)
        water.failures_in_row, water.failures, water.reads = 3, 3, 8
        water.last_error = ERROR_2
        water.next_due = T0 + 3480

    #: Seconds the clock advances per turn while waiting (0: not at all); a bus on the clock needs some.
    bus_step = 0.0

    def settle(self, d: defer.Deferred) -> Any:
        advance = (lambda: self.clock.advance(self.bus_step)) if self.bus_step else None
        return settle_treq(self, self.http, d, advance, turns=10_000 if self.bus_step else 1000)

    def request(self, method: str, path: str, **kw: Any) -> tuple[Any, str]:
        response = self.settle(self.http.request(method, BASE + path, **kw))
        return response, self.settle(response.text())

    def get(self, path: str) -> tuple[Any, str]:
        return self.request("GET", path)

    def token(self) -> str:
        _, page = self.get("/readouts")
        found = re.search(r'name="_csrf" value="([0-9a-f]+)"', page)
        assert found, "no CSRF token on the page"
        return found.group(1)

    def post(self, path: str, fields: dict[str, str], token: bool = True) -> tuple[Any, str]:
        data = dict(fields)
        if token:
            data["_csrf"] = self.token()
        return self.request("POST", path, data=urlencode(data).encode(),
                            headers={b"content-type": [b"application/x-www-form-urlencoded"]})

    def api(self, method: str, path: str, body: Any = None, content_type: bytes = b"application/json",
            headers: Any = None) -> tuple[Any, Any]:
        all_headers = {b"content-type": [content_type], **(headers or {})}
        data = body if isinstance(body, bytes) else (json.dumps(body).encode() if body is not None else None)
        response, text = self.request(method, path, data=data, headers=all_headers)
        return response, (json.loads(text) if text.strip().startswith(("{", "[")) else text)
