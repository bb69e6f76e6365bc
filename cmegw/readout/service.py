# -*- test-case-name: tests.test_readout_service -*-
"""
ReadoutService: the meter list read on its schedule, every reading kept in
the reading store, and delivered to each target (MQTT, HTTP POST) from its
own queue in the store: a reading leaves a target's queue only when the
target acknowledged it, so nothing is lost while a target is down, also
over a restart.

The gateway service builds it with the configuration's readout sections and
the line masters' read action, hands it each new configuration (`apply`),
and publishes it as ``state.readout`` (a `ReadoutView`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from twisted.application import service
from twisted.internet import defer, task
from twisted.logger import Logger

from cmegw.config.model import Config
from cmegw.readout.reading import StoredReading, TargetStatus, gateway_id, stored_form  # noqa: F401 (gateway_id: here too)
from cmegw.readout.scheduler import MeterStatus, ReadMeter, Scheduler
from cmegw.readout.store import ReadingStore

if TYPE_CHECKING:
    from cmegw.readout.delivery import Forwarder

log = Logger(namespace="cmegw.readout")

#: How often the store is pruned to its retention, and how often the backlog figures are refreshed.
PRUNE_INTERVAL = 3600.0
BACKLOG_INTERVAL = 5.0
STORE_FILE = "readings.sqlite"


def state_directory(config_path: Path) -> Path:
    """``$STATE_DIRECTORY`` under systemd, else the configuration file's folder."""
    directory = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    return Path(directory) if directory else Path(config_path).resolve().parent


class ReadoutService(service.Service):
    """Schedule, store and delivery of the meter list's readings."""

    def __init__(self, config: Config, reactor: Any, read: ReadMeter, directory: Path,
                 store: ReadingStore | None = None,
                 targets: Callable[["ReadoutService", Config], list[Any]] | None = None) -> None:
        self.config = config
        self.reactor = reactor
        self.store = store if store is not None else ReadingStore(Path(directory) / STORE_FILE, reactor)
        self.scheduler = Scheduler(reactor, read, self._record)
        self._make_targets = targets or default_targets
        self.targets: dict[str, Any] = {}
        self.forwarders: dict[str, Forwarder] = {}
        #: (count, time of the oldest) of each target's queue, refreshed every few seconds.
        self.backlogs: dict[str, tuple[int, float | None]] = {}
        self._loops: list[task.LoopingCall] = []
        self._starting: defer.Deferred = defer.succeed(None)
        #: Whether the store was opened (the readouts run once the configuration lists a meter or a target).
        self.started = False
        #: Why the readouts do not run ("" while they do): a store that cannot be opened, say.
        self.problem = ""
        self.scheduler.apply(config.meters, config.readout)

    # -- life ------------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        if wanted(self.config):
            self._begin()

    def _begin(self) -> None:
        """Open the store and start: only once the configuration lists a meter or a target (no file before)."""
        self.started = True
        self._starting = self._start()
        self._starting.addErrback(self._start_failed)

    def _start_failed(self, failure: Any) -> None:
        from cmegw.readout.store import StoreError

        self.problem = failure.getErrorMessage() if failure.check(StoreError) else (
            f"the readouts did not start: {failure.getErrorMessage()}")
        log.error("Readouts: {problem}; the meters are not read on schedule", problem=self.problem)

    @defer.inlineCallbacks
    def _start(self) -> Any:
        yield self.store.open()
        for key, status in list(self.scheduler.meters.items()):
            if not self.running:
                return
            found = yield self.store.readings(key, limit=1, ok_only=True)
            status.last_reading = found[-1] if found else None
            results = yield self.store.recent_results(key, self.config.readout.alarm_after)
            status.failures_in_row = next((i for i, ok in enumerate(results) if ok), len(results))
        if not self.running:
            return
        self.problem = ""
        self._start_targets(self._make_targets(self, self.config))
        self.scheduler.start()
        for call, interval in ((self.prune, PRUNE_INTERVAL), (self.refresh_backlogs, BACKLOG_INTERVAL)):
            loop = task.LoopingCall(call)
            loop.clock = self.reactor
            loop.start(interval, now=True).addErrback(lambda f: log.failure("Readout upkeep failed", f))
            self._loops.append(loop)

    @defer.inlineCallbacks
    def stopService(self) -> Any:
        super().stopService()
        if not self.started:
            return
        self.started = False
        yield self._starting  # a start still opening the store ends first (its errors are logged)
        self.scheduler.stop()
        for loop in self._loops:
            if loop.running:
                loop.stop()
        self._loops = []
        yield self._stop_targets(list(self.targets))
        yield self.store.close()

    def _start_targets(self, targets: Sequence[Any]) -> None:
        from cmegw.readout.delivery import Forwarder  # the forwarders exist once a target does

        for target in targets:
            self.targets[target.name] = target
            forwarder = self.forwarders[target.name] = Forwarder(self.store, target, self.reactor)
            target.start()
            forwarder.start()

    def _stop_targets(self, names: Sequence[str]) -> defer.Deferred:
        stopping = []
        for name in names:
            forwarder = self.forwarders.pop(name, None)
            if forwarder is not None:
                forwarder.stop()
            target = self.targets.pop(name, None)
            if target is not None:
                stopping.append(defer.maybeDeferred(target.stop))
        return defer.gatherResults(stopping, consumeErrors=True)

    # -- changes ---------------------------------------------------------------------

    def apply(self, config: Config) -> None:
        """A new configuration: the meter list, the schedule and the targets follow it."""
        old, self.config = self.config, config
        if self.running and not self.started and wanted(config):
            self.scheduler.apply(config.meters, config.readout)
            self._begin()
            return
        if (config.meters, config.readout) != (old.meters, old.readout):
            removed = self.scheduler.apply(config.meters, config.readout)
            for status in removed:
                self._forget_discovery(status)
        changed = ["mqtt"] if (config.mqtt, config.identity) != (old.mqtt, old.identity) else []
        changed += [f"push.{n}" for n in sorted(set(config.push) | set(old.push))
                    if config.push.get(n) != old.push.get(n)]
        if changed and self.running and self.started:
            fresh = [t for t in self._make_targets(self, config) if t.name in changed]
            d = self._stop_targets([name for name in changed if name in self.targets])

            def restart(_: Any) -> None:
                self._start_targets(fresh)
                for name in set(changed) - {t.name for t in fresh}:
                    self.store.drop_target(name)  # a target taken out of the configuration: its queue goes

            d.addCallback(restart)
        if config.readout != old.readout and self.started:
            self.prune()

    # -- readings ----------------------------------------------------------------------

    def _record(self, key: str, reading: Any, error: str) -> defer.Deferred:
        """Keep one outcome of a read; a good reading goes into each target's queue."""
        meter = self.config.meters.get(key)
        name, line = (meter.name, meter.line) if meter else ("", None)
        now = self.reactor.seconds()
        if reading is None:
            d = self.store.add(key, now, False, (), {"name": name, "line": line}, error, ())
        else:
            telegrams, decoded = stored_form(reading, name, line)
            d = self.store.add(key, reading.read_at or now, True, telegrams, decoded, "", list(self.targets))
        d.addCallback(self._recorded, key)
        return d

    def _recorded(self, stored: StoredReading, key: str) -> StoredReading:
        for forwarder in self.forwarders.values():
            forwarder.wake()
        self._publish_state(key, stored)
        return stored

    def _publish_state(self, key: str, stored: StoredReading) -> None:
        """Targets that publish the meters' state (MQTT: discovery configs, alarms) hear of each read."""
        status = self.scheduler.meters.get(key)
        if status is None:
            return
        if stored.ok:
            status.last_reading = stored  # the targets' hooks see the reading they hear of
        for target in self.targets.values():
            meter_read = getattr(target, "meter_read", None)
            if meter_read is not None:
                meter_read(status)

    def _forget_discovery(self, status: MeterStatus) -> None:
        for target in self.targets.values():
            meter_removed = getattr(target, "meter_removed", None)
            if meter_removed is not None:
                meter_removed(status)

    def read_now(self, keys: Sequence[str] | None = None) -> defer.Deferred:
        """Read the meters now (all when `keys` is None): fires with {id: StoredReading or None}."""
        if not self.started:
            return defer.fail(RuntimeError("the meter list is empty: add a meter first"))
        return self.scheduler.read_now(keys)

    # -- upkeep -------------------------------------------------------------------------

    def prune(self) -> defer.Deferred:
        readout = self.config.readout
        d = self.store.prune(readout.retention_days * 86400.0, readout.retention_mb * 1024 * 1024)

        def pruned(count: int) -> None:
            if count:
                log.info("Reading store: {count} oldest readings removed (retention)", count=count)

        return d.addCallback(pruned)

    def refresh_backlogs(self) -> defer.Deferred:
        def got(backlogs: Mapping[str, tuple[int, float | None]]) -> None:
            self.backlogs = {name: backlogs.get(name, (0, None)) for name in self.targets}

        return self.store.backlogs().addCallback(got)

    # -- what the faces read -------------------------------------------------------------

    @property
    def meters(self) -> dict[str, MeterStatus]:
        return self.scheduler.meters

    def target_statuses(self) -> dict[str, TargetStatus]:
        return {name: target.status for name, target in self.targets.items()}

    def store_summary(self) -> dict[str, Any]:
        """The reading store as the pages show it: file, size, readings, what is held in memory, a problem."""
        summary = self.store.stats.as_dict() if self.started else {}
        return {"path": str(self.store.path), "problem": self.problem or self.store.problem or "",
                "running": self.started, **summary}

    def readings(self, key: str | None, since: float | None = None, until: float | None = None,
                 limit: int = 1000, ok_only: bool = False) -> defer.Deferred:
        """A meter's kept readings (all meters' with `key` None), oldest first: fires with [StoredReading]."""
        return self.store.readings(key, since, until, limit, ok_only=ok_only)

    def export(self, key: str | None, since: float | None, until: float | None, kind: str) -> defer.Deferred:
        """The kept readings as ``csv`` (text) or ``json`` (a list of plain readings)."""
        if kind == "csv":
            return self.store.export_csv(key, since, until)
        if kind == "json":
            return self.store.export_json(key, since, until)
        return defer.fail(ValueError(f"{kind!r} is not an export format; use csv or json"))


def wanted(config: Config) -> bool:
    """Whether the configuration gives the readouts something to do: a meter to read or a target."""
    return bool(config.meters or config.mqtt.enabled or config.push)


def default_targets(readout: ReadoutService, config: Config) -> list[Any]:
    """The targets the configuration asks for: MQTT when it has a URL, each enabled HTTP receiver."""
    targets: list[Any] = []
    if config.mqtt.enabled:
        from cmegw.readout import mqttbridge

        targets.append(mqttbridge.make_target(readout, config))
    if config.push:
        from cmegw.readout.push import HttpPushTarget
        from cmegw.readout import payload

        gid = gateway_id(config)
        for n, push in config.push.items():
            if push.enabled:
                targets.append(HttpPushTarget(n, push, readout.reactor, gid,
                                              lambda r, gid=gid: payload.encode(payload.reading_payload(r, gid)),
                                              lambda r, gid=gid: "".join(
                                                  line + "\r\n" for line in payload.csv_lines(r, gid)).encode()))
    return targets
