"""
Test doubles shared by cmegw's tests and its users: a memory serial line, one
with simulated meters behind it, a way to drive a `task.Clock` until a
Deferred fires, an in-memory configuration store, a gateway state made of
plain statistics and a fake gateway (`FakeGateway`: that store, that state
and the service's named actions, recorded), so faces can be tested without
a pty or a running service.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet import defer, task
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from cmegw.config.model import Config, LineConfig
from cmegw.mbus import frames
from cmegw.mbus.meterbus import MeterBus
from cmegw.stats import LINE_OPEN, LineStatistics


@implementer(IPushProducer)
class FakeLine:
    """A serial line in memory: what is written is kept in `written`; `feed` plays the device's bytes."""

    def __init__(self, config: LineConfig | None = None) -> None:
        self.config = config or LineConfig()
        self.stats = LineStatistics(state=LINE_OPEN, baud_rate=self.config.baud_rate)
        self.written = bytearray()
        self.receiver: Any = None
        self._producer: Any = None
        self.paused = False
        self.open = True

    def attach(self, receiver: Any) -> None:
        self.receiver = receiver

    def write(self, data: bytes) -> bool:
        if not self.open:
            return False
        self.stats.tx_bytes += len(data)
        self.written += data
        return True

    def feed(self, data: bytes) -> None:
        """Bytes arriving from the device."""
        self.stats.rx_bytes += len(data)
        if self.receiver is not None:
            self.receiver(data)

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self._producer = producer

    def unregisterProducer(self) -> None:
        self._producer = None

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False

    def stopProducing(self) -> None:
        self.paused = False

    def apply(self, config: LineConfig) -> None:
        self.config = config
        self.stats.baud_rate = config.baud_rate


Tamper = Callable[[bytes, bytes | None], bytes | None]


class BusLine(FakeLine):
    """
    A FakeLine with a `MeterBus` behind it: each request telegram written is
    answered `delay` seconds later on the clock; `tamper(request, reply)` may
    change or drop the answer.
    """

    def __init__(self, bus: MeterBus, clock: task.Clock, delay: float = 0.01,
                 config: LineConfig | None = None) -> None:
        super().__init__(config)
        self.bus = bus
        self.clock = clock
        self.delay = delay
        self.requests: list[bytes] = []
        self.tamper: Tamper | None = None
        self._partial = b""

    def write(self, data: bytes) -> bool:
        if not super().write(data):
            return False
        telegrams, self._partial, _ = frames.split_telegrams(self._partial + data)
        for telegram in telegrams:
            self.requests.append(telegram)
            reply = self.bus.handle(telegram)
            if self.tamper is not None:
                reply = self.tamper(telegram, reply)
            if reply:
                self._answer(telegram, reply)
        return True

    def _answer(self, request: bytes, reply: bytes) -> None:
        """Play the bus's `reply` to `request` back, `delay` seconds after the write."""
        self.clock.callLater(self.delay, self.feed, reply)


def simulated_readings(read_at: float = 0.0) -> dict[int, Any]:
    """
    A `cmegw.mbus.results.Reading` of each of the simulated bus's four
    meters (`cmegw.mbus.meterbus.default_meters`), by primary address, read
    by a real master on a `task.Clock` standing at `read_at`.
    """
    from cmegw.mbus.arbiter import BusArbiter
    from cmegw.mbus.master import Master
    from cmegw.mbus.meterbus import default_meters

    clock = task.Clock()
    clock.advance(read_at)
    meters = default_meters()
    master = Master(1, BusArbiter(1, BusLine(MeterBus(meters), clock), clock), clock)
    return {meter.primary: run_clock(clock, master.read(meter.primary)) for meter in meters}


def stored_readings(read_at: float = 0.0) -> list[tuple[str, list[str], dict]]:
    """(name, telegrams as hex, decoded) of each simulated meter's readout, as the readout service stores it."""
    from cmegw.readout.reading import stored_form

    found = []
    for primary, reading in simulated_readings(read_at).items():
        telegrams, decoded = stored_form(reading, f"meter-{primary}", 1)
        found.append((f"meter-{primary}", list(telegrams), decoded))
    return found


def run_clock(clock: task.Clock, d: defer.Deferred, limit: int = 1_000_000) -> Any:
    """Advance the clock call by call until `d` fires; its result (a Failure is returned, not raised)."""
    box: list[Any] = []
    d.addBoth(box.append)
    for _ in range(limit):
        if box:
            return box[0]
        calls = clock.getDelayedCalls()
        if not calls:
            raise AssertionError("nothing scheduled and the Deferred has not fired: a hang")
        clock.advance(max(0.0, min(call.getTime() for call in calls) - clock.seconds()))
    raise AssertionError(f"not done after {limit} steps")


class MemoryConfigStore:
    """A `cmegw.config.store.ConfigStore` in memory: `change` keeps the value and tells the listeners."""

    def __init__(self, config: Config | None = None, path: str = "/nonexistent/cmegw.toml") -> None:
        self.config = config if config is not None else Config()
        #: What the "file" holds: `config` unless a change was not saved.
        self.saved = self.config
        self.path = path
        self.problem: str | None = None
        self.unsaved = False
        self.saves = 0
        self._listeners: list[Callable[[Config, Config], None]] = []

    def subscribe(self, listener: Callable[[Config, Config], None]) -> None:
        self._listeners.append(listener)

    def unsubscribe(self, listener: Callable[[Config, Config], None]) -> None:
        self._listeners.remove(listener)

    def change(self, new: Config, save: bool = True) -> Config:
        old, self.config = self.config, new
        if save:
            self.saves += 1
            self.saved = new
        else:
            self.unsaved = True
        for listener in list(self._listeners):
            listener(old, new)
        return new

    def save(self) -> None:
        self.saves += 1
        self.saved = self.config
        self.unsaved = False

    def render(self, config: Config) -> str:
        """The file's text of `config` (no comments: there is no file)."""
        import tomlkit

        return tomlkit.dumps(config.to_dict())

    def factory_reset(self) -> Config:
        from cmegw.config.store import factory_defaults

        return self.change(factory_defaults())


class NoOverrides:
    """The command line overrides nothing."""

    http = https = console = tunnel = device = None
    simulate = False

    def apply(self, config: Config) -> Config:
        return config


def fake_state(clock: Any = None, config: Config | None = None, **published: Any) -> Any:
    """
    A `cmegw.state.GatewayState` over a memory store, with whatever statistics
    are given (``lines={1: LineStatistics()}``, ``tunnels={1: TunnelView(...)}``,
    ``bus={1: BusView(1, master)}``...).
    """
    from cmegw.state import GatewayState

    store = MemoryConfigStore(config)
    state = GatewayState(clock if clock is not None else task.Clock(), store, NoOverrides(), store.config)
    for name, value in published.items():
        setattr(state, name, value)
    return state


class FakeReadout:
    """
    What the faces read of the readouts (`cmegw.readout.service.ReadoutService`),
    in memory: meter statuses, target statuses and backlogs, kept readings.
    ``reads`` records `read_now` calls; tests fill `meters`, `kept` and `statuses`.
    """

    def __init__(self, config: Config | None = None) -> None:
        from cmegw.config.store import factory_defaults
        from cmegw.readout.scheduler import MeterStatus

        self.config = config or factory_defaults()
        self.running = True
        self.meters: dict[str, Any] = {
            key: MeterStatus(key, meter, 3600) for key, meter in self.config.meters.items()}
        self.statuses: dict[str, Any] = {}
        self.backlogs: dict[str, tuple[int, float | None]] = {}
        #: The kept readings (`cmegw.readout.reading.StoredReading`), oldest first.
        self.kept: list[Any] = []
        self.reads: list[Any] = []
        self.problem = ""

    def target_statuses(self) -> dict[str, Any]:
        return dict(self.statuses)

    def store_summary(self) -> dict[str, Any]:
        return {"path": "/tmp/readings.sqlite", "problem": self.problem, "readings": len(self.kept)}

    def read_now(self, keys: Any = None) -> defer.Deferred:
        self.reads.append(keys)
        chosen = list(self.meters) if keys is None else list(keys)
        return defer.succeed({key: None for key in chosen})

    def readings(self, key: Any, since: Any = None, until: Any = None, limit: int = 1000,
                 ok_only: bool = False) -> defer.Deferred:
        found = [r for r in self.kept if (key is None or r.meter == key) and (since is None or r.time >= since)
                 and (until is None or r.time <= until) and (r.ok or not ok_only)]
        return defer.succeed(found[-limit:])

    def export(self, key: Any, since: Any, until: Any, kind: str) -> defer.Deferred:
        import json

        rows = [{"id": r.id, "meter": r.meter, "time": r.time, "ok": r.ok} for r in self.kept
                if key is None or r.meter == key]
        return defer.succeed(json.dumps(rows) if kind == "json" else "id,meter\n" + "".join(
            f"{r['id']},{r['meter']}\n" for r in rows))


class FakeGateway:
    """
    What the faces see of a `cmegw.service.GatewayService`, without its parts:
    the configuration store (a `MemoryConfigStore` unless given), the
    published state (statistics of each configured line and tunnel, as a
    freshly started gateway shows them; with `started` False nothing, as a
    gateway not started yet) and the named actions, each recorded in
    `calls`.  A change of the store applies as the service applies it: what
    applies live is in force at once (``state.config``), the rest waits for
    `restart`.
    """

    def __init__(self, store: Any = None, clock: Any = None, overrides: Any = None, started: bool = True) -> None:
        from cmegw.state import GatewayState

        self.store = store if store is not None else MemoryConfigStore(_factory_config())
        self.reactor = clock if clock is not None else task.Clock()
        self.overrides = overrides if overrides is not None else NoOverrides()
        self.state = GatewayState(self.reactor, self.store, self.overrides, self.overrides.apply(self.store.config))
        self.restarting = False
        self.calls: list[tuple[Any, ...]] = []
        if started:
            self._publish()
            self.state.running = True
        self.store.subscribe(self._changed)

    @property
    def running_config(self) -> Config:
        return self.state.config  # type: ignore[no-any-return]

    @running_config.setter
    def running_config(self, config: Config) -> None:
        self.state.config = config

    @property
    def status(self) -> Any:
        return self.state.status

    @property
    def traces(self) -> dict[int, Any]:
        return self.state.traces  # type: ignore[no-any-return]

    def _publish(self) -> None:
        from cmegw.state import TunnelView
        from cmegw.stats import TunnelStatistics
        from cmegw.tunnel.base import AccessStatistics
        from cmegw.stats import ConnectStatistics

        config = self.state.config
        self.state.lines = {n: LineStatistics(state=LINE_OPEN, baud_rate=line.baud_rate, device=line.device)
                            for n, line in config.lines.items()}
        self.state.tunnels = {n: TunnelView(n, TunnelStatistics(listening=_listening(tunnel.listen)),
                                            AccessStatistics(), ConnectStatistics())
                              for n, tunnel in config.tunnels.items()}

    def _changed(self, old: Config, new: Config) -> None:
        from cmegw.config.settings import live_update

        wanted = self.overrides.apply(new)
        running = self.state.config

        def sections(now: dict[int, Any], later: dict[int, Any]) -> dict[int, Any]:
            return {n: live_update(section, later.get(n, section)) for n, section in now.items()}

        self.state.config = running.evolve(
            identity=wanted.identity, auth=wanted.auth, network=live_update(running.network, wanted.network),
            http=live_update(running.http, wanted.http), console=live_update(running.console, wanted.console),
            lines=sections(running.lines, wanted.lines), tunnels=sections(running.tunnels, wanted.tunnels))
        for n, stats in self.state.lines.items():
            if n in self.state.config.lines:
                stats.baud_rate = self.state.config.lines[n].baud_rate

    # -- the service's actions ------------------------------------------------------

    def restart(self) -> defer.Deferred:
        """Take the saved configuration into force, as the service's restart does."""
        self.calls.append(("restart",))
        self.state.config = self.overrides.apply(self.store.config)
        self.state.status.restarts += 1
        self._publish()
        return defer.succeed(None)

    def factory_reset(self) -> defer.Deferred:
        self.calls.append(("factory_reset",))
        self.store.factory_reset()
        return self.restart()

    def reload_config(self) -> None:
        self.calls.append(("reload_config",))

    def when_listening(self) -> defer.Deferred:
        return defer.succeed(None)

    def set_trace(self, n: int, on: bool) -> Any:
        from cmegw.ops.trace import LineTrace

        self.calls.append(("set_trace", n, on))
        if n not in self.state.config.lines:
            raise KeyError(f"there is no line {n}")
        trace = self.state.traces.get(n)
        if trace is None:
            trace = self.state.traces[n] = LineTrace(n, clock=self.reactor, peer=lambda: self.state.line_peer(n))
        trace.enabled = on
        return trace

    def start_scan(self, n: int, kind: str, identify: bool = True, silent_retries: int | None = None) -> Any:
        self.calls.append(("start_scan", n, kind, identify))
        raise KeyError(f"there is no line {n} with a bus in this fake")

    def read_meter(self, n: int, address: Any) -> defer.Deferred:
        self.calls.append(("read_meter", n, address))
        return defer.fail(KeyError(f"there is no line {n} with a bus in this fake"))

    def renew_dhcp(self, network: Any) -> defer.Deferred:
        self.calls.append(("renew_dhcp", network))
        return defer.succeed(None)


def _factory_config() -> Config:
    from cmegw.config.store import factory_defaults

    return factory_defaults()


def _listening(endpoint: str) -> str:
    """Where a tunnel of `endpoint` would listen, in the statistics' words (``127.0.0.1:10001``)."""
    parts = dict(p.split("=", 1) for p in endpoint.split(":")[2:] if "=" in p)
    port = endpoint.split(":")[1] if endpoint.count(":") else ""
    return f"{parts.get('interface', '0.0.0.0')}:{port}"
