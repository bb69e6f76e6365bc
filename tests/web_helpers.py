"""
Helpers for the web tests: a site on a `StringTransport` driven with raw
bytes, a placeholder admin resource, a response parser and Digest headers;
and for the page tests, `PagesTestBase` (the admin resource in a StubTreq over
a fake gateway, or a running one on a pty) with its fakes (web part, pip,
wheels).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import zipfile
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlencode

import attrs
from treq.testing import StubTreq
from twisted.internet import defer, reactor, task
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial import unittest
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from zope.interface import implementer

from cmegw.config.model import AuthDirective, HttpConfig, User
from cmegw.config.store import ConfigStore, factory_defaults
from cmegw.service import GatewayService, Overrides
from cmegw.stats import HttpStatistics
from cmegw.testing import FakeGateway, MemoryConfigStore
from cmegw.web.app import admin_resource
from cmegw.web.auth import AuthGate, authenticated_user
from cmegw.host.read import HostNetwork
from cmegw.web.accesslog import AccessLog
from cmegw.web.http import GatewaySite
from cmegw.web.pages.system_update import SoftwareUpdater
from tests.support import open_pty


#: The factory user of the directive on / (realm config).
ADMIN = User.with_password("admin", "config", "admin")
#: A plain request through the site.
GET = b"GET /status?x=1 HTTP/1.1\r\nHost: gw\r\nUser-Agent: test\r\nReferer: http://gw/\r\n\r\n"


class Placeholder(Resource):
    """Stands in for the pages (``cmegw.web.app``): says who asked for what."""

    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        user = authenticated_user(request) or "-"
        return b"hello " + user.encode() + b" " + request.path

    def render_POST(self, request: Any) -> bytes:
        return b"got %d" % len(request.content.read())


@attrs.define
class Settings:
    """A mutable stand-in for ``gateway.running_config.http``."""

    http: HttpConfig = attrs.field(factory=HttpConfig)

    def __call__(self) -> HttpConfig:
        return self.http

    def change(self, **changes: Any) -> None:
        self.http = attrs.evolve(self.http, **changes)


def make_site(resource: Any = None, clock: Clock | None = None, **http: Any) -> tuple[GatewaySite, Settings, Clock]:
    clock = clock or Clock()
    settings = Settings(HttpConfig(**http))
    site = GatewaySite(resource if resource is not None else Placeholder(), settings,
                       HttpStatistics(), AccessLog(), reactor=clock)
    return site, settings, clock


def gated_site(kind: str = "Basic", max_bytes: int = 1024) -> GatewaySite:
    """A site behind the real `AuthGate`, one directive of `kind` on / with the user admin/admin."""
    clock = Clock()
    directive = AuthDirective("/", "config", kind, (ADMIN,))
    gate = AuthGate(Placeholder(), lambda: (directive,), lambda: None, clock=clock)
    site, _, _ = make_site(gate, clock=clock, max_bytes=max_bytes)
    return site


def upload_head(path: bytes = b"/api/update", auth: bytes = b"", length: int | None = 200_000) -> bytes:
    size = b"Content-Length: %d\r\n" % length if length is not None else b"Transfer-Encoding: chunked\r\n"
    return b"POST " + path + b" HTTP/1.1\r\nHost: gw\r\n" + auth + size + b"\r\n"


@implementer(ISSLTransport)
class SecureStringTransport(StringTransport):
    """A `StringTransport` that says it is TLS (``request.isSecure()``)."""

    def setTcpNoDelay(self, enabled: bool) -> None:
        pass

    def getPeerCertificate(self) -> None:
        return None


def connect(site: GatewaySite, secure: bool = False, port: int = 8080) -> tuple[Any, StringTransport]:
    kind = SecureStringTransport if secure else StringTransport
    transport = kind(hostAddress=IPv4Address("TCP", "127.0.0.1", port),
                     peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
    channel = site.buildProtocol(transport.getPeer())
    channel.makeConnection(transport)
    return channel, transport


@attrs.frozen
class Response:
    status: int
    headers: dict[str, list[str]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None


def parse_responses(data: bytes) -> list[Response]:
    """Every response in `data` (Content-Length or chunked bodies; at most 100)."""
    responses = []
    for _ in range(100):
        if not data:
            break
        head, _sep, data = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers: dict[str, list[str]] = {}
        for line in lines[1:]:
            name, _colon, value = line.partition(":")
            headers.setdefault(name.strip().lower(), []).append(value.strip())
        if status == 100:
            continue
        if "content-length" in headers:
            size = int(headers["content-length"][0])
            body, data = data[:size], data[size:]
        elif headers.get("transfer-encoding") == ["chunked"]:
            body = b""
            for _ in range(10000):
                size_line, _crlf, data = data.partition(b"\r\n")
                size = int(size_line.split(b";")[0], 16)
                body, data = body + data[:size], data[size + 2:]
                if size == 0:
                    break
        else:
            body, data = data, b""
        responses.append(Response(status, headers, body))
    return responses


def digest_header(challenge: str, user: str, password: str, method: str, uri: str, nc: int = 1,
                  cnonce: str = "0a4f113b", algorithm: str | None = None, **override: str) -> str:
    """The Authorization header a client computes for a Digest challenge (RFC 7616)."""
    params = dict(parse_challenge(challenge))
    algorithm = algorithm or params.get("algorithm", "MD5")
    h = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}.get(algorithm.upper(), hashlib.md5)

    def H(text: str) -> str:
        return h(text.encode()).hexdigest()

    realm, nonce = params["realm"], params["nonce"]
    ha1 = H(f"{user}:{realm}:{password}")
    ha2 = H(f"{method}:{uri}")
    ncs = f"{nc:08x}"
    response = H(f"{ha1}:{nonce}:{ncs}:{cnonce}:auth:{ha2}")
    fields = {"username": user, "realm": realm, "nonce": nonce, "uri": uri, "algorithm": algorithm,
              "response": response, "qop": "auth", "nc": ncs, "cnonce": cnonce, "opaque": params.get("opaque", "")}
    fields.update(override)
    quoted = {"username", "realm", "nonce", "uri", "response", "cnonce", "opaque"}
    return "Digest " + ", ".join(f'{k}="{v}"' if k in quoted else f"{k}={v}" for k, v in fields.items())


def parse_challenge(challenge: str) -> list[tuple[str, str]]:
    from cmegw.web.auth import parse_auth_params

    scheme, _space, rest = challenge.partition(" ")
    return list(parse_auth_params(rest).items())


# -- the admin pages ----------------------------------------------------------------------

BASE = "http://127.0.0.1:8080"

HOST = HostNetwork(interface="eth0", mac="02:00:00:00:00:01", operstate="up", speed="100", duplex="full",
                   hostname="gw1", domain="example.com", search=("example.com",), address="127.0.0.5",
                   netmask="255.0.0.0", address_source="DHCP", gateway="127.0.0.1",
                   dns=("127.0.0.53", "127.0.0.54"))


def fake_log() -> AccessLog:
    """The access log of `FakeWeb`: one line."""
    log = AccessLog()
    log.add('127.0.0.1 2026-12-07 12:00:00 "GET /status HTTP/1.1" 200 99 "-" "<b>agent</b>"')
    return log


@attrs.frozen
class FakeCertificate:
    subject: str = "CN=gw1"
    issuer: str = "CN=gw1"
    not_before: str = "2026-01-01"
    not_after: str = "2036-01-01"
    self_signed: bool = True
    fingerprint: str = "AA:BB"
    path: str = "/tmp/cert.pem"
    problem: None = None


class FakeWeb:
    """What `cmegw.web.service.web_state` gives the pages."""

    def __init__(self) -> None:
        self.stats = HttpStatistics(rx_bytes=1234, tx_bytes=5678, status_200=7, status_400=1, status_401=2,
                                    status_404=3)
        self.access_log = fake_log()
        self.tls = FakeCertificate()
        self.listening = {"http": "127.0.0.1:8080", "https": "127.0.0.1:8443"}
        self.installed: list[tuple[bytes, bytes]] = []

    def install_certificate(self, cert: bytes, key: bytes) -> FakeCertificate:
        if b"BEGIN CERTIFICATE" not in cert:
            raise ValueError("the certificate is not PEM")
        self.installed.append((cert, key))
        self.tls = FakeCertificate(subject="CN=new")
        return self.tls


def csrf_token(body: str) -> str:
    found = re.search(r'name="_csrf" value="([0-9a-f]+)"', body)
    assert found, "no CSRF token in the page"
    return found.group(1)


def multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> tuple[bytes, bytes]:
    boundary = "cmegwtestboundary7MA4YWxk"
    out = io.BytesIO()
    for name, value in fields.items():
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, (filename, data) in files.items():
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                  f'Content-Type: application/octet-stream\r\n\r\n'.encode() + data + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}".encode()


def make_wheel(version: str = "0.2.0", name: str = "cmegw", tamper: bool = False,
               metadata_version: str | None = None) -> bytes:
    """A small wheel of the shape pip installs (METADATA, WHEEL, RECORD with hashes)."""
    info = f"{name}-{version}.dist-info"
    files = {
        "cmegw/__init__.py": f'__version__ = "{version}"\n'.encode(),
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {metadata_version or version}\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{info}/RECORD,,")
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for path, data in files.items():
            z.writestr(path, data + (b"# changed\n" if tamper and path.endswith("__init__.py") else b""))
        z.writestr(f"{info}/RECORD", "\n".join(record) + "\n")
    return out.getvalue()


class FakeRunner:
    """Stands for pip: records the command lines and answers with a chosen exit code."""

    def __init__(self, code: int = 0, output: bytes = b"Successfully installed cmegw") -> None:
        self.code = code
        self.output = output
        self.calls: list[list[str]] = []

    def __call__(self, argv: list[str]) -> defer.Deferred:
        self.calls.append(argv)
        return defer.succeed((self.output, self.code))


class PagesTestBase(unittest.TestCase):
    """
    The admin resource in a StubTreq, over a `cmegw.testing.FakeGateway`
    (a memory store, the published state, the actions recorded); with
    `real_gateway` set, over a running gateway on a pty instead (for the
    tests that prove the faces and the service together).
    """

    pip_code = 0
    real_gateway = False

    def setUp(self) -> None:
        folder = Path(self.mktemp())
        folder.mkdir(parents=True)
        if self.real_gateway:
            self.store = ConfigStore(folder / "cmegw.toml")
            self.store.load()
            master, slave, path = open_pty()
            self.addCleanup(os.close, master)
            self.addCleanup(os.close, slave)
            self.gateway = GatewayService(self.store, reactor,
                                          Overrides(device=path, tunnel="tcp:0:interface=127.0.0.1"))
            self.gateway.startService()
            self.addCleanup(self.gateway.stopService)
        else:
            self.store = MemoryConfigStore(factory_defaults(), path=folder / "cmegw.toml")
            self.gateway = FakeGateway(self.store, MemoryReactorClock(),
                                       Overrides(device="/dev/ttyFAKE0", tunnel="tcp:0:interface=127.0.0.1"))
        self.clock = task.Clock()
        self.web = FakeWeb()
        self.runner = FakeRunner(self.pip_code)
        self.restarted_process: list[bool] = []
        self.restarts: list[str] = []

        def updater(admin: Any) -> SoftwareUpdater:
            return SoftwareUpdater(admin, run=self.runner, restart_process=lambda: self.restarted_process.append(True))

        self.resource = admin_resource(self.gateway, clock=self.clock, host_network=lambda: HOST,
                                       web=lambda: self.web, updater=updater)
        self.http = StubTreq(self.resource)

    @defer.inlineCallbacks
    def get(self, path: str, **kw: Any) -> Any:
        response = yield self.http.get(BASE + path, **kw)
        body = yield response.text()
        return response, body

    @defer.inlineCallbacks
    def token(self, path: str = "/status") -> Any:
        response, body = yield self.get(path)
        return csrf_token(body) if "_csrf" in body else csrf_token((yield self.get("/system"))[1])

    @defer.inlineCallbacks
    def post(self, path: str, fields: dict[str, str], token: str | None = None, headers: Any = None) -> Any:
        if token is None:
            token = yield self.token("/system")
        data = dict(fields)
        if token:
            data["_csrf"] = token
        all_headers = {b"content-type": [b"application/x-www-form-urlencoded"]}
        all_headers.update(headers or {})
        response = yield self.http.post(BASE + path, data=urlencode(data).encode(), headers=all_headers)
        body = yield response.text()
        return response, body

    @defer.inlineCallbacks
    def post_multipart(self, path: str, fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> Any:
        token = yield self.token("/system")
        body, ctype = multipart({"_csrf": token, **fields}, files)
        response = yield self.http.post(BASE + path, data=body, headers={b"content-type": [ctype]})
        text = yield response.text()
        return response, text

    @defer.inlineCallbacks
    def api(self, method: str, path: str, body: Any = None, content_type: bytes = b"application/json",
            headers: Any = None) -> Any:
        all_headers = {b"content-type": [content_type]}
        all_headers.update(headers or {})
        data = body if isinstance(body, bytes) else (json.dumps(body).encode() if body is not None else None)
        response = yield self.http.request(method, BASE + path, data=data, headers=all_headers)
        text = yield response.text()
        return response, (json.loads(text) if text.strip().startswith(("{", "[")) else text)


def settle_treq(test: Any, http: StubTreq, d: defer.Deferred, advance: Callable[[], bool] | None = None,
                turns: int = 1000) -> Any:
    """
    The result of a StubTreq request's Deferred: flushed up to `turns` times,
    `advance()` moving the test's clock between turns (False: nothing left).
    """
    box: list[Any] = []
    d.addBoth(box.append)
    for _ in range(turns):
        http.flush()
        if box or (advance is not None and advance() is False):
            break
    test.assertTrue(box, "no response: a hang")
    if isinstance(box[0], Failure):
        box[0].raiseException()
    return box[0]


def to_next_call(clock: Clock) -> Callable[[], bool]:
    """An `advance` for `settle_treq`: the clock to its next delayed call (False when none is left)."""
    def advance() -> bool:
        calls = clock.getDelayedCalls()
        if not calls:
            return False
        clock.advance(max(0.0, min(c.getTime() for c in calls) - clock.seconds()))
        return True
    return advance
