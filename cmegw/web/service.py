# -*- test-case-name: tests.test_web_service -*-
"""
The web part of the gateway: the HTTP and HTTPS listeners around the pages.

Public API:

``make_web(gateway) -> IService``
    The part registered in `cmegw.tap.part_factories` (built by the gateway service).  It serves
    ``cmegw.web.app.admin_resource(gateway)`` behind the authentication gate
    (`cmegw.web.auth.AuthGate`) in a `cmegw.web.http.GatewaySite`, on HTTP
    (``gateway.overrides.http`` or ``tcp:<http_port>:interface=<interface>``)
    and on HTTPS (``gateway.overrides.https`` or ``tcp:<https_port>...``; a
    plain stream endpoint such as ``tcp:8443:interface=127.0.0.1``: cmegw adds
    TLS itself, so that only TLS 1.2/1.3 are offered) when the server is on;
    HTTPS also needs at least one TLS version enabled (a change of the
    versions or of the certificate applies at once).  A port that cannot be
    opened is logged and shown in ``listening``; the gateway keeps running.

``web_state(gateway) -> WebService``
    What the pages read and the one thing they change here.  Raises
    ``LookupError`` when the web part is not running.  Ask per request (a
    restart builds a new one).  Attributes:

    - ``stats``: `cmegw.stats.HttpStatistics` (rx_bytes, tx_bytes,
      status_200 ... status_501, status_unknown, work_queue_full,
      socket_errors, memory_errors; ``as_dict()``);
    - ``access_log``: `cmegw.web.accesslog.AccessLog` (``entries`` oldest first,
      ``bytes``, ``clear()``);
    - ``tls``: `cmegw.tls.certificates.CertificateInfo` of the certificate in use
      (subject, issuer, not_before, not_after, self_signed, fingerprint,
      problem: why a configured certificate is not used, or None); None when
      no certificate could be made (the reason is in ``listening["https"]``);
    - ``listening``: ``{"http": "127.0.0.1:8080", "https": "..."}`` or a
      reason ("off", "cannot listen on ...: ...");
    - ``https_port``: the HTTPS port listening, or None;
    - ``install_certificate(cert_pem: bytes, key_pem: bytes) -> CertificateInfo``:
      validates (PEM, the key matches, valid now), writes both files beside
      the configuration file (key mode 0600), sets ``http.certificate`` and
      ``http.private_key`` through ``gateway.store.change`` and serves the
      new certificate at once.  Raises `cmegw.tls.certificates.CertificateError`
      (a ``ValueError``) with a message for the page.

Relative ``http.certificate`` / ``http.private_key`` names are relative to
the configuration file's folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.application import service
from twisted.internet import defer, endpoints
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory

from cmegw.config.model import Config, HttpConfig
from cmegw.config.settings import apply_settings
from cmegw.web.auth import AuthGate
from cmegw.stats import HttpStatistics
from cmegw.web.accesslog import AccessLog
from cmegw.web.http import GatewaySite
from cmegw.tls.certificates import CertificateInfo
from cmegw.tls.store import TlsManager

log = Logger(namespace="cmegw.web")

HTTP = "http"
HTTPS = "https"


def _endpoint(port: int, interface: str) -> str:
    where = f":interface={interface.replace(':', chr(92) + ':')}" if interface else ""
    return f"tcp:{port}{where}"


def http_endpoint(gateway: Any) -> str:
    http = gateway.state.config.http
    return gateway.overrides.http or _endpoint(http.http_port, http.interface)


def https_endpoint(gateway: Any) -> str:
    http = gateway.state.config.http
    return gateway.overrides.https or _endpoint(http.https_port, http.interface)


class WebService(service.Service):
    """The web administration's listeners, statistics, access log and certificate."""

    name = "web"

    def __init__(self, gateway: Any, resource: Any, reactor: Any = None) -> None:
        self.gateway = gateway
        self.reactor = reactor if reactor is not None else gateway.reactor
        self.stats = HttpStatistics()
        self.access_log = AccessLog(self._http().max_log_entries)
        self._tls = TlsManager(Path(gateway.store.path).parent, self._http)
        gate = AuthGate(resource, lambda: gateway.state.config.auth, lambda: self.https_port, clock=self.reactor,
                        logins=gateway.state.logins)
        self.site = GatewaySite(gate, self._http, self.stats, self.access_log, reactor=self.reactor,
                                plain_http=lambda: HTTP in self._ports)
        self.listening = {HTTP: "off", HTTPS: "off"}
        self._ports: dict[str, Any] = {}
        self._attempts: dict[str, defer.Deferred] = {}
        self._tls_settings: tuple[Any, ...] | None = None

    def _http(self) -> HttpConfig:
        return self.gateway.state.config.http

    # -- what the pages read --------------------------------------------------------

    @property
    def https_port(self) -> int | None:
        port = self._ports.get(HTTPS)
        return port.getHost().port if port is not None else None

    @property
    def tls(self) -> CertificateInfo | None:
        if self._tls.info is None:
            try:
                self._tls.reload()
            except OSError as e:
                log.error("No HTTPS certificate: {e}", e=e)
        return self._tls.info

    def install_certificate(self, cert_pem: bytes, key_pem: bytes) -> CertificateInfo:
        """Validate, save and serve an uploaded certificate and key (see the module docstring)."""
        cert_name, key_name = self._tls.install(cert_pem, key_pem)
        store = self.gateway.store
        store.change(apply_settings(store.config, {"http.certificate": cert_name, "http.private_key": key_name}))
        info = self._tls.reload()
        self._tls_settings = None
        self._update_https()
        self._tls.remove_unused()
        log.info("HTTPS certificate installed: {subject}", subject=info.subject)
        return info

    # -- listening ------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        http = self._http()
        if not http.enabled:
            log.info("The web server is off (http.enabled = false)")
            return
        self.gateway.state.web = self
        self.gateway.store.subscribe(self._config_changed)
        self._listen(HTTP, http_endpoint(self.gateway), self.site)
        self._update_https()

    def stopService(self) -> defer.Deferred:
        super().stopService()
        if self.gateway.state.web is self:
            self.gateway.state.web = None
        self.gateway.store.unsubscribe(self._config_changed)
        self.site.close_connections()
        stopping = [self._stop_listening(kind) for kind in list(self._ports)]
        return defer.gatherResults(stopping).addCallback(lambda _: None)

    def _listen(self, kind: str, description: str, factory: Any) -> None:
        try:
            endpoint = endpoints.serverFromString(self.reactor, description)
        except (ValueError, TypeError, KeyError) as e:
            self._not_listening(e, kind, description)
            return
        self.listening[kind] = f"starting on {description}"
        d = endpoint.listen(factory)
        d.addCallbacks(self._now_listening, self._not_listening, (kind,), None, (kind, description))
        self._attempts[kind] = d

    def when_listening(self) -> defer.Deferred:
        """
        Fires once the HTTP and HTTPS listeners being opened listen (systemd's
        READY waits for it); a listener that could not be opened keeps it waiting.
        """
        waits = []
        for kind, attempt in self._attempts.items():
            wait: defer.Deferred = defer.Deferred()

            def done(result: Any, kind: str = kind, wait: defer.Deferred = wait) -> Any:
                if kind in self._ports:
                    wait.callback(None)
                return result

            attempt.addBoth(done)
            waits.append(wait)
        return defer.gatherResults(waits, consumeErrors=True).addCallback(lambda _: None)

    def _now_listening(self, port: Any, kind: str) -> None:
        if not self.running or kind in self._ports:
            port.stopListening()
            return
        self._ports[kind] = port
        host = port.getHost()
        self.listening[kind] = f"{getattr(host, 'host', host)}:{getattr(host, 'port', '')}"
        log.info("Web administration on {kind}://{where}", kind=kind, where=self.listening[kind])

    def _not_listening(self, reason: Any, kind: str, description: str) -> None:
        message = getattr(reason, "value", reason)
        self.listening[kind] = f"cannot listen on {description}: {message}"
        log.error("Web administration: {problem}", problem=self.listening[kind])

    def _stop_listening(self, kind: str) -> defer.Deferred:
        port = self._ports.pop(kind, None)
        self.listening[kind] = "off"
        return defer.maybeDeferred(port.stopListening) if port is not None else defer.succeed(None)

    def _update_https(self) -> None:
        """Listen on HTTPS when a TLS version is enabled, with the configured certificate."""
        http = self._http()
        wanted = (http.certificate, http.private_key, http.tls_versions)
        if wanted == self._tls_settings:
            return
        self._tls_settings = wanted
        if not http.tls_versions:
            self._stop_listening(HTTPS)
            self.listening[HTTPS] = "off (no TLS version enabled)"
            return
        try:
            self._tls.reload()
        except OSError as e:
            self._stop_listening(HTTPS)
            self.listening[HTTPS] = f"off: no certificate ({e})"
            log.error("HTTPS is off: {e}", e=e)
            return
        description = https_endpoint(self.gateway)
        if description.split(":", 1)[0].lower() == "ssl":
            self.listening[HTTPS] = f"cannot listen on {description}: give a tcp: endpoint, cmegw adds TLS itself"
            log.error("Web administration: {problem}", problem=self.listening[HTTPS])
        elif HTTPS not in self._ports:
            self._listen(HTTPS, description, TLSMemoryBIOFactory(self._tls, False, self.site))

    def _config_changed(self, old: Config, new: Config) -> None:
        if self.running:
            self._update_https()


def make_web(gateway: Any) -> service.IService:
    """The web administration of `gateway`: its pages behind authentication, on HTTP and HTTPS."""
    from cmegw.web.app import admin_resource

    return WebService(gateway, admin_resource(gateway))


def web_state(gateway: Any) -> WebService:
    """The running web part of `gateway`, as published in its state; LookupError when there is none."""
    if gateway.state.web is None:
        raise LookupError("the web administration is not running")
    return gateway.state.web
