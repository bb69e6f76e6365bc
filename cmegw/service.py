# -*- test-case-name: tests.test_service -*-
"""
GatewayService: the parent service that builds one child per part from the
configuration, applies changes live, restarts in-process and resets to the
factory defaults.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import attrs
from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger

from cmegw.config.model import Config
from cmegw.config.settings import get_setting, needs_restart, setting_names, apply_setting
from cmegw.config.store import ConfigFileError, ConfigStore
from cmegw.mbus.master import Master
from cmegw.netapply import NetworkApplier
from cmegw.serial.arbiter import BusArbiter
from cmegw.serial.line import SerialLine
from cmegw.stats import LINE_ERROR, TUNNEL_CONNECTED, GatewayStatus, LineStatistics, TunnelStatistics
from cmegw.tunnel.accept import TunnelService
from cmegw.tunnel.connect import ConnectStatistics, ConnectTunnelService
from cmegw.tunnel.sharing import SharingTunnelService

log = Logger(namespace="cmegw.service")

#: Seconds over which traffic makes the ACT indication flash.
ACTIVITY_WINDOW = 2.0


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
    (web, console, ...) added with `add_part`, rebuilt on restart.
    """

    def __init__(self, store: ConfigStore, reactor: Any, overrides: Overrides = Overrides(),
                 simulator_factory: Callable[[Any, int], Any] | None = None) -> None:
        super().__init__()
        self.store = store
        self.reactor = reactor
        self.overrides = overrides
        self.simulator_factory = simulator_factory or default_simulator
        self.status = GatewayStatus()
        self.running_config: Config = overrides.apply(store.config)
        self.lines: dict[int, SerialLine] = {}
        self.tunnels: dict[int, TunnelService] = {}
        #: Per line: the arbiter between the line and its users, and the gateway's M-Bus master.
        self.arbiters: dict[int, BusArbiter] = {}
        self.masters: dict[int, Master] = {}
        #: Per tunnel: its connect mode (dial-out), sharing the line with the accept-mode tunnel.
        self.connectors: dict[int, ConnectTunnelService] = {}
        self.simulators: dict[int, Any] = {}
        self._part_factories: list[PartFactory] = []
        self._restarting: defer.Deferred | None = None
        #: True while `restart` stops and starts the parts (a part's stopService is not the end then).
        self.restarting = False
        #: Traffic traces by line number (`cmegw.ops.trace.LineTrace`), kept across restarts.
        self.traces: dict[int, Any] = {}
        #: Line bytes counted when the indications were last read, and when they last changed.
        self._activity = (0, 0.0)
        #: The opt-in backend that applies the Network settings to the host (only with network.apply_to_host).
        self.netapply = NetworkApplier(reactor)
        store.subscribe(self._config_changed)

    # -- statistics read by the other parts ------------------------------------

    @property
    def line_stats(self) -> dict[int, LineStatistics]:
        return {n: line.stats for n, line in self.lines.items()}

    @property
    def tunnel_stats(self) -> dict[int, TunnelStatistics]:
        return {n: t.stats for n, t in self.tunnels.items()}

    @property
    def connect_stats(self) -> dict[int, ConnectStatistics]:
        return {n: c.connect_stats for n, c in self.connectors.items()}

    def uptime(self) -> float:
        return self.reactor.seconds() - self.status.started_at

    def pending_restart(self) -> list[str]:
        """Settings saved in the file that wait for a restart to take effect."""
        saved = self.overrides.apply(self.store.config)
        names = []
        for name in setting_names(saved):
            try:
                if get_setting(saved, name) != get_setting(self.running_config, name):
                    names.append(name)
            except ValueError:
                names.append(name)  # a line or tunnel added or removed
        if set(saved.lines) != set(self.running_config.lines) or set(saved.tunnels) != set(
                self.running_config.tunnels):
            names.append("line/tunnel set")
        return names

    def indications(self) -> dict[str, bool]:
        """The device's four LEDs: PWR, ERR, LINK, ACT."""
        now = self.reactor.seconds()
        total = sum(s.rx_bytes + s.tx_bytes for s in self.line_stats.values())
        last_total, last_change = self._activity
        if total != last_total:
            self._activity = (total, now)
            last_change = now
        return {
            "PWR": self.running,
            "ERR": any(s.state == LINE_ERROR for s in self.line_stats.values()),
            "LINK": any(t.state == TUNNEL_CONNECTED for t in self.tunnel_stats.values())
            or any(c.connected for c in self.connectors.values()),
            "ACT": now - last_change < ACTIVITY_WINDOW and last_change > 0,
        }

    # -- composition --------------------------------------------------------------

    def add_part(self, factory: PartFactory) -> None:
        """Add a part (web, console, ...) built by `factory(gateway)`; it is rebuilt on restart."""
        self._part_factories.append(factory)
        if self.running:
            factory(self).setServiceParent(self)

    def _build(self) -> None:
        config = self.running_config
        for n, line_config in config.lines.items():
            device = None
            if line_config.simulate:
                simulator = self.simulator_factory(self.reactor, n)
                device = simulator.start()
                self.simulators[n] = simulator
                log.info("Line {n}: simulated M-Bus on {device}", n=n, device=device)
            line = SerialLine(n, line_config, self.reactor, LineStatistics(), device=device)
            line.setServiceParent(self)
            self.lines[n] = line
            if n in self.traces and self.traces[n].enabled:
                self.traces[n].attach(line)
            arbiter = BusArbiter(n, line, self.reactor)
            arbiter.setServiceParent(self)
            self.arbiters[n] = arbiter
            master = Master(n, arbiter, self.reactor)
            master.setServiceParent(self)
            self.masters[n] = master
        self.connectors = {}
        for n, tunnel_config in config.tunnels.items():
            tunnel = self._tunnel(n, tunnel_config, TunnelStatistics())
            tunnel.setServiceParent(self)
            self.tunnels[n] = tunnel
            connector = ConnectTunnelService(n, tunnel_config, self.arbiters[n].port, self.reactor, tunnel.stats,
                                             arbiter=self.arbiters[n], accept=lambda n=n: self.tunnels.get(n))
            connector.setServiceParent(self)
            self.connectors[n] = connector
        for factory in self._part_factories:
            factory(self).setServiceParent(self)

    def _tunnel(self, n: int, config: Any, stats: TunnelStatistics) -> TunnelService:
        """Tunnel `n` on its line's arbiter: transparent (the device's tunnel) or sharing."""
        tunnel: TunnelService

        def change_baud(baud: int) -> str | None:
            return self._remote_baud(n, baud)

        if config.sharing:
            tunnel = SharingTunnelService(n, config, self.arbiters[n], self.reactor, stats,
                                          change_baud=change_baud, https_files=self._https_files)
        else:
            tunnel = TunnelService(n, config, self.arbiters[n].port, self.reactor, stats,  # type: ignore[arg-type]
                                   change_baud=change_baud, https_files=self._https_files)
        return tunnel

    def _https_files(self) -> tuple[Path, Path]:
        """
        The certificate and key HTTPS serves, which a TLS tunnel serves too: the
        HTTPS store's own choice (the configured pair, or the self-signed one
        when that pair is missing or does not load, made on first use).
        """
        from cmegw.web.tls import TlsManager

        manager = TlsManager(Path(self.store.path).parent, lambda: self.running_config.http)
        manager.reload()
        assert manager.files is not None
        return manager.files

    def _remote_baud(self, n: int, baud: int) -> str | None:
        """An RFC 2217 client sets line `n`'s baud rate: validated and saved as on the M-Bus Serial page."""
        try:
            self.store.change(apply_setting(self.store.config, f"line.{n}.baud_rate", baud))
        except (ValueError, OSError, ConfigFileError) as e:
            return str(e)
        return None

    def _replace_tunnel(self, n: int, config: Any) -> None:
        """Sharing switched on or off: the old tunnel stops listening, then the other kind listens."""
        old = self.tunnels[n]
        new = self.tunnels[n] = self._tunnel(n, config, old.stats)
        stopped = defer.maybeDeferred(old.disownServiceParent)
        stopped.addCallback(lambda _: new.setServiceParent(self) if self.tunnels.get(n) is new else None)
        stopped.addErrback(lambda f: log.failure("Tunnel {n}: cannot switch sharing", f, n=n))

    def startService(self) -> None:
        self.status.started_at = self.reactor.seconds()
        self.status.config_problem = self.store.problem
        self._build()
        super().startService()
        if self.running_config.network.apply_to_host:
            self.netapply.apply(self.running_config.network)

    @defer.inlineCallbacks
    def stopService(self) -> Any:
        yield defer.maybeDeferred(super().stopService)
        for simulator in self.simulators.values():
            simulator.stop()
        self.simulators.clear()

    # -- changes ----------------------------------------------------------------

    def _config_changed(self, old: Config, new: Config) -> None:
        """Apply what applies live; the rest waits for a restart."""
        wanted = self.overrides.apply(new)
        running = self.running_config
        for name in setting_names(wanted):
            if needs_restart(name) or name.split(".")[0] in ("line", "tunnel") and not _exists(running, name):
                continue
            value = get_setting(wanted, name)
            if get_setting(running, name) != value:
                try:
                    running = apply_setting(running, name, value)
                except ValueError as e:
                    log.error("Cannot apply {name} live: {e}", name=name, e=e)
        running = running.evolve(auth=wanted.auth, identity=wanted.identity)
        previous, self.running_config = self.running_config, running
        for n, line in self.lines.items():
            if running.lines[n] != previous.lines[n]:
                line.apply(running.lines[n])
        for n, tunnel in list(self.tunnels.items()):
            if running.tunnels[n] != previous.tunnels[n]:
                if running.tunnels[n].sharing != previous.tunnels[n].sharing:
                    self._replace_tunnel(n, running.tunnels[n])
                else:
                    tunnel.apply(running.tunnels[n])
        for n, connector in self.connectors.items():
            if running.tunnels[n] != previous.tunnels[n]:
                connector.apply(running.tunnels[n])

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
        self.store.load()
        self.running_config = self.overrides.apply(self.store.config)
        self.status.restarts += 1
        self.startService()
        log.info("Restarted")

    # -- operations (systemd, SIGHUP, trace) ------------------------------------------

    def when_listening(self) -> defer.Deferred:
        """
        Fires once every listener is up: each part that offers
        ``when_listening()`` (tunnels, web, console) has fired its own.  A
        listener that keeps failing keeps this waiting (cancel it).
        """
        parts = [defer.maybeDeferred(child.when_listening) for child in self if hasattr(child, "when_listening")]
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
        pending = self.pending_restart()
        log.info("Configuration reloaded from {path}{rest}", path=str(self.store.path),
                 rest=f"; waiting for a restart: {', '.join(pending)}" if pending else "")

    def line_peer(self, n: int) -> str:
        """Whom line `n`'s bytes come from and go to right now: its tunnel's client, or ""."""
        tunnel = self.tunnels.get(n)
        return tunnel.stats.peer if tunnel is not None else ""

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
            trace = self.traces[n] = LineTrace(n, clock=self.reactor, peer=lambda: self.line_peer(n))
        if trace.enabled != on:
            log.info("Line {n}: traffic trace {state}", n=n, state="on" if on else "off")
        trace.enabled = on
        if not on:
            trace.detach()
        elif n in self.lines:
            trace.attach(self.lines[n])
        return trace

    def factory_reset(self) -> defer.Deferred:
        """Write the factory defaults, then restart."""
        self.store.factory_reset()
        log.info("Configuration reset to the factory defaults")
        return self.restart()


def _exists(config: Config, name: str) -> bool:
    try:
        get_setting(config, name)
        return True
    except ValueError:
        return False


def default_simulator(reactor: Any, line: int) -> Any:
    """The built-in simulated M-Bus with its default meters, on a pty pair."""
    from cmegw.mbus.simulator import MeterBus, SimulatedBus, default_meters

    return SimulatedBus(reactor, MeterBus(default_meters()), reply_delay=0.01)
