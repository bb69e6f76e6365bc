# -*- test-case-name: tests.test_tap -*-
"""
``twistd cmegw``: command-line options and the service they build.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from twisted.application import service
from twisted.internet.endpoints import _parseServer
from twisted.logger import Logger
from twisted.python import usage

from cmegw.config.checks import endpoint_problem
from cmegw.config.store import ConfigStore
from cmegw.service import GatewayService, Overrides

log = Logger(namespace="cmegw")


def default_config_path() -> str:
    """``$CONFIGURATION_DIRECTORY/cmegw.toml`` under systemd, else ``./cmegw.toml``."""
    directory = os.environ.get("CONFIGURATION_DIRECTORY", "").split(":")[0]
    return str(Path(directory or ".") / "cmegw.toml")


def _endpoint(option: str, value: str) -> str:
    try:
        _parseServer(value, None)
    except Exception as e:
        raise usage.UsageError(f"--{option}: {value!r} is not an endpoint such as tcp:10001 "
                               f"({endpoint_problem(e)})") from None
    return value


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = ("Software M-Bus gateway: each serial line (an M-Bus master adapter) gets a transparent "
                "TCP tunnel, as the Elvaco CMe3000 does. Command-line values override the "
                "configuration file for this run only and are never saved.")

    optFlags = [
        ["simulate", None, "Run line 1 on the built-in simulated M-Bus (no hardware needed)."],
    ]
    optParameters = [
        ["config", "c", None, "Configuration file (TOML); created from the factory defaults when missing. "
                              "[default: $CONFIGURATION_DIRECTORY/cmegw.toml or ./cmegw.toml]"],
        ["device", "d", None, "Serial device of line 1, e.g. /dev/ttyUSB0."],
        ["tunnel", "t", None, "Listening endpoint of tunnel 1, e.g. tcp:10001:interface=127.0.0.1."],
        ["http", None, None, "Listening endpoint of the web administration over HTTP, e.g. tcp:8080."],
        ["https", None, None, "Listening endpoint of the web administration over HTTPS, e.g. tcp:8443."],
        ["console", None, None, "Listening endpoint of the telnet configuration console, e.g. tcp:2323."],
    ]

    def postOptions(self) -> None:
        if self["config"] is None:
            self["config"] = default_config_path()
        for name in ("tunnel", "http", "https", "console"):
            if self[name] is not None:
                _endpoint(name, self[name])
        if self["device"] is not None and self["simulate"]:
            raise usage.UsageError("--device and --simulate exclude each other: pick the adapter or the simulator")

    def overrides(self) -> Overrides:
        return Overrides(device=self["device"], tunnel=self["tunnel"], simulate=bool(self["simulate"]),
                         http=self["http"], https=self["https"], console=self["console"])


def makeService(options: Options, reactor: Any = None) -> service.IService:
    """Build the gateway from parsed options: load the configuration, compose the parts."""
    if reactor is None:
        reactor = default_reactor()
    store = ConfigStore(Path(options["config"]))
    store.load()
    return GatewayService(store, reactor, options.overrides(), parts=part_factories(), settle=True)


def default_reactor() -> Any:
    """
    The reactor twistd will run: the one chosen with ``twistd --reactor``, or
    else cmegw's lean epoll reactor (cmegw.reactor), installed here, before
    anything imports Twisted's default one.
    """
    import sys

    if "twisted.internet.reactor" not in sys.modules and sys.platform.startswith("linux"):
        from cmegw.reactor import install

        install()
    from twisted.internet import reactor

    return reactor


def part_factories() -> list[Any]:
    """The parts beside lines and tunnels (web, console, ...), each built from the gateway."""
    from cmegw.console.service import make_console
    from cmegw.ops.graphs import graphs_part
    from cmegw.ops.systemd import hangup_part, systemd_part
    from cmegw.web.service import make_web

    return [make_web, make_console, graphs_part, hangup_part, systemd_part]
