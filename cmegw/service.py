# -*- test-case-name: tests.test_service -*-
"""
GatewayService: the parent service that builds one child per part from the
configuration, applies changes live, restarts in-process and resets to the
factory defaults.
"""

from __future__ import annotations

import functools
import gc
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import attrs
from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger

from cmegw.config.model import MAX_SCAN_RETRIES, Config
from cmegw.config.settings import apply_setting, live_update
from cmegw.config.store import ConfigFileError, ConfigStore
from cmegw.host.apply import NetworkApplier
from cmegw.mbus.arbiter import BusArbiter
from cmegw.mbus.master import Master, parse_meter_address
from cmegw.serial.line import SerialLine
from cmegw.state import BusView, GatewayState, TunnelView
from cmegw.stats import ConnectStatistics, GatewayStatus, LineStatistics, TunnelStatistics
from cmegw.tunnel.accept import TunnelService
from cmegw.tunnel.ownership import LineOwnership

if TYPE_CHECKING:
    from cmegw.tunnel.connect import ConnectTunnelService

log = Logger(namespace="cmegw.service")

@attrs.frozen
class Overrides:
    """Command-line values: they override the file for this run only and are never saved."""

    device: str | None = None
    tunnel: str | None = None
    simulate: bool = False
    http: str | None = None
    https: str | None = None
    console: str | None = None

    def apply(self, config: Config) -> Config:
        line = config.lines.get(1)
        if line is not None and (self.device or self.simulate):
            changes: dict[str, Any] = {}
            if self.device:
                changes["device"] = self.device
            if self.simulate:
                changes["simulate"] = True
            config = config.with_line(1, attrs.evolve(line, **changes))
        tunnel = config.tunnels.get(1)
        if tunnel is not None and self.tunnel:
            config = config.with_tunnel(1, attrs.evolve(tunnel, listen=self.tunnel))
        return config


PartFactory = Callable[["GatewayService"], service.IService]


class GatewayService(service.MultiService):
    """
    The gateway: lines and tunnels from the configuration, plus the parts
    (web, console, ...) given as `parts` (or added with `add_part`), all
    built together by `_build` at every start and restart.

    A simulated line's bus comes from `simulator_factory(reactor, line)`: its
    ``start()`` gives the pty's path (or a Deferred of it), its ``stop()`` ends
    it (may return a Deferred); one that restarts offers ``on_restart(gone,
    back)`` (the line waits, then moves to the new pty).  The default runs it
    in a process of its own, kept running (`cmegw.mbus.simprocess`).
    """

    def __init__(self, store: ConfigStore, reactor: Any, overrides: Overrides = Overrides(),
                 simulator_factory: Callable[[Any, int], Any] | None = None,
                 parts: Sequence[PartFactory] = (), settle: bool = False) -> None:
        super().__init__()
        self.store = store
        self.reactor = reactor
        self.overrides = overrides
        self.simulator_factory = simulator_factory or default_simulator
        #: The opt-in backend that applies the Network settings to the host (only with network.apply_to_host).
        self.netapply = NetworkApplier(reactor)
        #: What the gateway publishes and the faces read, kept across restarts; ``state.logins`` counts
        #: failed logins per source address for the web and the console alike.
        self.state = GatewayState(reactor, store, overrides, config=overrides.apply(store.config),
                                  host_applier=self.netapply)
        self.lines: dict[int, SerialLine] = {}
        self.tunnels: dict[int, TunnelService] = {}
        #: Per line: the arbiter between the line and its users, and the gateway's M-Bus master.
        self.arbiters: dict[int, BusArbiter] = {}
        self.masters: dict[int, Master] = {}
        #: Per tunnel whose configuration turned connect mode on: its connect mode (dial-out, `_connector`); per
        #: tunnel: who holds its line (given to accept and connect mode), and connect mode's published state.
        self.connectors: dict[int, ConnectTunnelService] = {}
        self._ownerships: dict[int, LineOwnership] = {}
        self._connect_stats: dict[int, ConnectStatistics] = {}
        self.simulators: dict[int, Any] = {}
        #: The scheduled readouts of the meter list, their store and delivery (`cmegw.readout.service`).
        self.readout: Any = None
        #: The parts beside lines, bus and tunnels (web, console, ...): built with them at every start.
        self._part_factories: list[PartFactory] = list(parts)
        self._restarting: defer.Deferred | None = None
        #: Whether every start and restart ends with `settle_heap` (the daemon's; not a test's process).
        self.settle = settle
        #: The start-up heap's freeze, due once the reactor turns after a start.
        self._settling: Any = None
        #: True while `restart` stops and starts the parts (a part's stopService is not the end then).
        self.restarting = False
        store.subscribe(self._config_changed)

    # -- what the service publishes ----------------------------------------------

    @property
    def running_config(self) -> Config:
        """The configuration in force (published as ``state.config``)."""
        return self.state.config

    @running_config.setter
    def running_config(self, config: Config) -> None:
        self.state.config = config

    @property
    def status(self) -> GatewayStatus:
        return self.state.status

    @property
    def traces(self) -> dict[int, Any]:
        return self.state.traces

    def _publish(self) -> None:
        """Publish the statistics objects of the parts just built."""
        state = self.state
        state.lines = {n: line.stats for n, line in self.lines.items()}
        state.tunnels = {n: TunnelView(n, t.stats, getattr(t, "access", None), self._connect_stats.get(n),
                                       getattr(t.factory, "sharing", None))
                         for n, t in self.tunnels.items()}
        state.bus = {n: BusView(n, master) for n, master in self.masters.items()}
        state.readout = self.readout

    # -- composition --------------------------------------------------------------

    def add_part(self, factory: PartFactory) -> None:
        """Add a part (web, console, ...) built by `factory(gateway)`; it is rebuilt on restart."""
        self._part_factories.append(factory)
        if self.running:
            factory(self).setServiceParent(self)

    def _build(self) -> None:
        config = self.running_config
        for n, line_config in config.lines.items():
            ready = self._start_simulator(n) if line_config.simulate else None
            line = SerialLine(n, line_config, self.reactor, LineStatistics(), device_ready=ready)
            line.setServiceParent(self)
            self.lines[n] = line
            if n in self.traces and self.traces[n].enabled:
                self.traces[n].attach(line)
            arbiter = BusArbiter(n, line, self.reactor, slack=line.delivery_slack)
            arbiter.setServiceParent(self)
            self.arbiters[n] = arbiter
            master = Master(n, arbiter, self.reactor)
            master.setServiceParent(self)
            self.masters[n] = master
        self.connectors, self._ownerships, self._connect_stats = {}, {}, {}
        for n, tunnel_config in config.tunnels.items():
            ownership = self._ownerships[n] = LineOwnership(self.arbiters[n].port)
            self._connect_stats[n] = ConnectStatistics()
            tunnel = self._tunnel(n, tunnel_config, TunnelStatistics(), ownership)
            tunnel.setServiceParent(self)
            self.tunnels[n] = tunnel
            if tunnel_config.connect_mode != "disabled":
                self._connector(n).setServiceParent(self)
        self.readout = self._readout(config)
        self.readout.setServiceParent(self)
        self._publish()
        for factory in self._part_factories:
            factory(self).setServiceParent(self)

    def _connector(self, n: int) -> ConnectTunnelService:
        """Tunnel `n`'s connect mode, built (its modules loaded) when its configuration first turns it on."""
        from cmegw.tunnel.connect import ConnectTunnelService

        first = self.tunnels[n]
        connector = self.connectors[n] = ConnectTunnelService(
            n, lambda: self.tunnels.get(n, first), self.arbiters[n].port, self.reactor, first.stats,
            arbiter=self.arbiters[n], ownership=self._ownerships[n], connect_stats=self._connect_stats[n])
        return connector

    def _start_simulator(self, n: int) -> defer.Deferred:
        """Line `n`'s simulated bus: fires with its pty's path (at once in-process, once its process runs)."""
        simulator = self.simulators[n] = self.simulator_factory(self.reactor, n)

        def started(device: str) -> str:
            pid = getattr(simulator, "pid", None)
            log.info("Line {n}: simulated M-Bus on {device}{process}", n=n, device=device,
                     process=f" (process {pid})" if pid else "")
            return device

        if hasattr(simulator, "on_restart"):
            simulator.on_restart(lambda why: self.lines[n].device_gone(why),
                                 lambda device: self.lines[n].apply(self.lines[n].config, device=started(device)))
        return defer.maybeDeferred(simulator.start).addCallback(started)

    def _readout(self, config: Config) -> Any:
        """The meter list's schedule, reading store and delivery, reading through the lines' masters."""
        from cmegw.readout.service import ReadoutService, state_directory

        def read(line: int, address: str) -> defer.Deferred:
            return self.read_meter(line, parse_meter_address(address))

        return ReadoutService(config, self.reactor, read, state_directory(Path(self.store.path)))

    def _tunnel(self, n: int, config: Any, stats: TunnelStatistics, ownership: LineOwnership) -> TunnelService:
        """Tunnel `n` on its line's arbiter: transparent (the device's tunnel, RFC 2217 if on) or sharing."""
        if config.sharing:
            from cmegw.tunnel.sharing import SharingTunnelService

            return SharingTunnelService(n, config, self.arbiters[n], self.reactor, stats,
                                        https_files=self._https_files, ownership=ownership)
        return TunnelService(n, config, self.arbiters[n].port, self.reactor, stats,  # type: ignore[arg-type]
                             change_baud=functools.partial(self.set_baud_rate, n), https_files=self._https_files,
                             ownership=ownership)

    def _https_files(self) -> tuple[Path, Path]:
        """
        The certificate and key HTTPS serves, which a TLS tunnel serves too: the
        HTTPS store's own choice (the configured pair, or the self-signed one
        when that pair is missing or does not load, made on first use).
        """
        from cmegw.tls.store import TlsManager

        manager = TlsManager(Path(self.store.path).parent, lambda: self.running_config.http)
        manager.reload()
        assert manager.files is not None
        return manager.files

    def set_baud_rate(self, n: int, baud: int) -> str | None:
        """
        Set line `n`'s baud rate (an RFC 2217 client's request), validated and
        saved as on the M-Bus Serial page; the refusal in words, or None.
        """
        try:
            self.store.change(apply_setting(self.store.config, f"line.{n}.baud_rate", baud))
        except (ValueError, OSError, ConfigFileError) as e:
            return str(e)
        return None

    def _replace_tunnel(self, n: int, config: Any) -> None:
        """Sharing switched on or off: the old tunnel stops listening, then the other kind listens."""
        old = self.tunnels[n]
        new = self.tunnels[n] = self._tunnel(n, config, old.stats, self._ownerships[n])
        stopped = defer.maybeDeferred(old.disownServiceParent)
        self._publish()
        stopped.addCallback(lambda _: new.setServiceParent(self) if self.tunnels.get(n) is new else None)
        stopped.addErrback(lambda f: log.failure("Tunnel {n}: cannot switch sharing", f, n=n))

    def startService(self) -> None:
        self.status.started_at = self.reactor.seconds()
        self.status.config_problem = self.store.problem
        self._build()
        super().startService()
        self.state.running = True
        if self.running_config.network.apply_to_host:
            self.netapply.apply(self.running_config.network)
        if self.settle:
            self._settling = self.reactor.callLater(0, self._settle)

    def _settle(self) -> None:
        self._settling = None
        settle_heap()

    @defer.inlineCallbacks
    def stopService(self) -> Any:
        self.state.running = False
        if self._settling is not None and self._settling.active():
            self._settling.cancel()
        self._settling = None
        parts = defer.maybeDeferred(super().stopService)  # every part's stopService has run: the lines are closed
        simulators, self.simulators = list(self.simulators.values()), {}
        yield defer.gatherResults([parts] + [defer.maybeDeferred(simulator.stop) for simulator in simulators],
                                  consumeErrors=True)

    # -- changes ----------------------------------------------------------------

    def _config_changed(self, old: Config, new: Config) -> None:
        """
        Compare each part's section with the new one by value and hand it its
        own new section, which the part then holds (the published
        ``state.config`` shows those same objects); what waits for a restart
        (a setting marked so in the model, a line or tunnel added or removed)
        stays as it runs.
        """
        wanted = self.overrides.apply(new)
        for n, line in self.lines.items():
            section = live_update(line.config, wanted.lines.get(n, line.config))
            if section != line.config:
                line.apply(section)
        for n, tunnel in list(self.tunnels.items()):
            section = live_update(tunnel.config, wanted.tunnels.get(n, tunnel.config))
            if section == tunnel.config:
                continue
            if section.sharing != tunnel.config.sharing:
                self._replace_tunnel(n, section)
            else:
                tunnel.apply(section)
            if n in self.connectors:
                self.connectors[n].apply(section)
            elif section.connect_mode != "disabled":
                self._connector(n).setServiceParent(self)
        previous = self.running_config

        def held(built: dict[int, Any], sections: dict[int, Any], wanted: dict[int, Any]) -> dict[int, Any]:
            return {n: built[n].config if n in built else live_update(section, wanted.get(n, section))
                    for n, section in sections.items()}

        self.running_config = previous.evolve(
            identity=wanted.identity, auth=wanted.auth,
            meters=wanted.meters, readout=wanted.readout, mqtt=wanted.mqtt, push=wanted.push,
            network=live_update(previous.network, wanted.network),
            http=live_update(previous.http, wanted.http),
            console=live_update(previous.console, wanted.console),
            lines=held(self.lines, previous.lines, wanted.lines),
            tunnels=held(self.tunnels, previous.tunnels, wanted.tunnels))
        if self.readout is not None:
            self.readout.apply(self.running_config)

    def restart(self) -> defer.Deferred:
        """The device's reboot, in-process: stop every part, reload the configuration, start again."""
        if self._restarting is not None:
            return self._restarting
        d = self._restarting = self._restart()
        d.addBoth(self._restarted)
        return d

    def _restarted(self, result: Any) -> Any:
        self._restarting = None
        return result

    @defer.inlineCallbacks
    def _restart(self) -> Any:
        log.info("Restarting")
        self.restarting = True
        try:
            yield defer.maybeDeferred(self.stopService)
        finally:
            self.restarting = False
        for child in list(self):
            child.disownServiceParent()
        self.lines.clear()
        self.tunnels.clear()
        self.arbiters.clear()
        self.masters.clear()
        self.readout = None
        self.store.load()
        self.running_config = self.overrides.apply(self.store.config)
        self.status.restarts += 1
        self.startService()
        log.info("Restarted")

    # -- operations (systemd, SIGHUP, trace) ------------------------------------------

    def when_listening(self) -> defer.Deferred:
        """
        Fires once every listener is up: each part that offers
        ``when_listening()`` (tunnels, web, console) has fired its own, and
        each simulated bus has started (or failed to).  A listener that keeps
        failing keeps this waiting (cancel it).
        """
        parts = [defer.maybeDeferred(child.when_listening) for child in self if hasattr(child, "when_listening")]
        parts += [line.when_device_known() for line in self.lines.values()]
        return defer.gatherResults(parts, consumeErrors=True).addCallback(lambda _: None)

    def reload_config(self) -> None:
        """
        Read the configuration file again (SIGHUP) and apply what applies live;
        a bad file is refused and logged, and `ConfigFileError` raised: the
        running configuration stays.
        """
        try:
            self.store.reload()
        except ConfigFileError as e:
            log.error("Configuration reload refused, the running configuration stays: {e}", e=e)
            self.status.config_problem = f"the configuration file was not reloaded: {e}"
            raise
        self.status.config_problem = None
        pending = self.state.pending_restart()
        log.info("Configuration reloaded from {path}{rest}", path=str(self.store.path),
                 rest=f"; waiting for a restart: {', '.join(pending)}" if pending else "")

    def set_trace(self, n: int, on: bool) -> Any:
        """
        Turn the traffic trace of line `n` on or off and return it (a
        `cmegw.ops.trace.LineTrace`; its buffer stays when turned off).
        """
        from cmegw.ops.trace import LineTrace

        if n not in self.running_config.lines:
            raise KeyError(f"there is no line {n}")
        trace = self.traces.get(n)
        if trace is None:
            trace = self.traces[n] = LineTrace(n, clock=self.reactor, peer=lambda: self.state.line_peer(n))
        if trace.enabled != on:
            log.info("Line {n}: traffic trace {state}", n=n, state="on" if on else "off")
        trace.enabled = on
        if not on:
            trace.detach()
        elif n in self.lines:
            trace.attach(self.lines[n])
        return trace

    def start_scan(self, n: int, kind: str, identify: bool = True, silent_retries: int | None = None) -> Any:
        """
        Start a primary or secondary scan of line `n` and return its
        `cmegw.mbus.results.Scan`; a silent address is tried again
        `silent_retries` times (default: the line's ``scan_silent_retries``).
        """
        master = self._master(n)
        if silent_retries is None:
            silent_retries = self.running_config.lines[n].scan_silent_retries
        elif not 0 <= silent_retries <= MAX_SCAN_RETRIES:
            raise ValueError(f"tries again after silence: use 0 to {MAX_SCAN_RETRIES}, not {silent_retries}")
        if kind == "primary":
            return master.scan_primary(identify=identify, silent_retries=silent_retries)
        if kind == "secondary":
            return master.scan_secondary(silent_retries=silent_retries)
        raise ValueError(f"{kind!r} is not a kind of scan; use primary or secondary")

    def read_meter(self, n: int, address: Any) -> defer.Deferred:
        """Read the meter at `address` on line `n`: fires with a `cmegw.mbus.results.Reading`."""
        return self._master(n).read(address)

    def read_meters_now(self, keys: Sequence[str] | None = None) -> defer.Deferred:
        """Read meters of the list now (all when `keys` is None): fires with {id: StoredReading or None}."""
        if self.readout is None or not self.readout.running:
            return defer.fail(RuntimeError("the readouts are not running"))
        return self.readout.read_now(keys)

    def adopt_meters(self, n: int, found: Sequence[Any] | None = None, interval: str = "") -> list[str]:
        """Add the meters line `n`'s last scans found (or `found`) to the meter list and save it; the ids added."""
        from cmegw.readout.meterlist import adopt

        if found is None:
            results = self._master(n).results
            found = list(results.get("secondary") or []) + list(results.get("primary") or [])
        config, added = adopt(self.store.config, n, found, interval)
        if added:
            self.store.change(config)
        return added

    def _master(self, n: int) -> Master:
        master = self.masters.get(n)
        if master is None:
            raise KeyError(f"there is no line {n}")
        return master

    def renew_dhcp(self, network: Any) -> defer.Deferred:
        """Ask the host for a new DHCP lease (the Network page's Renew)."""
        return self.netapply.renew(network)

    def factory_reset(self) -> defer.Deferred:
        """Write the factory defaults, then restart."""
        self.store.factory_reset()
        log.info("Configuration reset to the factory defaults")
        return self.restart()


def settle_heap() -> None:
    """
    Once the parts are built: collect the start-up garbage, then move every
    object left to the collector's permanent generation.  Start-up leaves
    some 70 000 long-lived objects (modules, classes, pages) that each full
    collection would walk again: measured at 130 ms with the web and the
    console built, a stall of every tunnel's byte path whenever one comes
    around; after the freeze a full collection walks only what came later.
    What was frozen before (a restart's old parts) is thawed first, so a
    restart's collection frees the parts it dropped.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def default_simulator(reactor: Any, line: int) -> Any:
    """The built-in simulated M-Bus: its default meters on a pty, at a real line's pace, in its own process, kept running."""
    from cmegw.mbus.simprocess import SupervisedSimulator

    return SupervisedSimulator(reactor, line)


def in_process_simulator(reactor: Any, line: int) -> Any:
    """The same bus in the gateway's own process (tests: its pty is there at once, its meters inspectable)."""
    from cmegw.mbus.meterbus import MeterBus, default_meters
    from cmegw.mbus.simulator import paced_bus

    return paced_bus(reactor, MeterBus(default_meters()), seed=line)
