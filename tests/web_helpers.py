"""
Helpers for the web tests: a site on a `StringTransport` driven with raw
bytes, a placeholder admin resource, a response parser and Digest headers.
"""

from __future__ import annotations

import hashlib
from typing import Any

import attrs
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.web.resource import Resource
from zope.interface import implementer

from cmegw.config.model import HttpConfig
from cmegw.web.auth import authenticated_user
from cmegw.stats import HttpStatistics
from cmegw.web.http import AccessLog, GatewaySite


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
