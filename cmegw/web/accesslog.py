# -*- test-case-name: tests.test_web_accesslog -*-
"""
The access log of the web administration (the HTTP page's Log tab).

``AccessLog``: the scrolling log of the last Max Log Entries lines:
``entries`` (list of str, oldest first), ``bytes`` (their size, a newline
each), ``clear()``.

``format_entry(log_format, record) -> str``: one log line; the directives
``%a %b %B %h %{Header}i %m %p %q %t %u %U %r %s`` (and ``%%``), each expanded
value escaped (``"``, ``\\``, control and non-ASCII bytes as ``\\xHH``: no log
injection) and cut at 64 bytes (for ``%r``, each of its parts).  The headers
Authorization, Proxy-Authorization and Cookie are never logged (``-``).
``AccessRecord`` is what a line is made from.
"""

from __future__ import annotations

import collections
import re
import time
from typing import Any

import attrs
from twisted.web.http_headers import Headers

from cmegw.web.auth import authenticated_user

#: Each expanded log directive is cut at this many bytes.
LOG_VALUE_LIMIT = 64
#: Request headers whose values are secrets and never logged.
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})


@attrs.define
class AccessLog:
    """The last `max_entries` lines of the access log."""

    max_entries: int = 50
    _lines: collections.deque[str] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._lines = collections.deque(maxlen=self.max_entries)

    @property
    def entries(self) -> list[str]:
        return list(self._lines)

    @property
    def bytes(self) -> int:
        return sum(len(line.encode("utf-8")) + 1 for line in self._lines)

    def resize(self, max_entries: int) -> None:
        """Keep at most `max_entries` lines from now on (the newest stay)."""
        if max_entries != self.max_entries:
            self.max_entries = max_entries
            self._lines = collections.deque(self._lines, maxlen=max_entries)

    def add(self, line: str) -> None:
        self._lines.append(line)

    def clear(self) -> None:
        self._lines.clear()


@attrs.frozen
class AccessRecord:
    """What one access log line is made from: a request and its answer."""

    remote: str = "-"
    local_port: int | None = None
    method: bytes = b""
    path: bytes = b""
    query: bytes = b""
    version: bytes = b""
    status: int | None = None
    body_bytes: int = 0
    user: str | None = None
    headers: Headers = attrs.field(factory=Headers)
    time: float = 0.0

    @classmethod
    def from_request(cls, request: Any, now: float, status: int | None = None,
                     body_bytes: int | None = None) -> "AccessRecord":
        uri = request.uri if isinstance(request.uri, bytes) else b""
        path, question, query = uri.partition(b"?")
        method = request.method if isinstance(request.method, bytes) else b""
        version = request.clientproto if isinstance(request.clientproto, bytes) else b""
        return cls(remote=host_of(request.getClientAddress()), local_port=getattr(request.getHost(), "port", None),
                   method=method, path=path, query=question + query, version=version,
                   status=request.code if status is None else status,
                   body_bytes=request.sentLength if body_bytes is None else body_bytes,
                   user=authenticated_user(request), headers=request.requestHeaders, time=now)


def host_of(address: Any) -> str:
    return str(getattr(address, "host", None) or "-")


def escape_value(raw: bytes, limit: int = LOG_VALUE_LIMIT) -> str:
    """A log value that cannot forge a line or a field: at most `limit` bytes once escaped."""
    out: list[str] = []
    size = 0
    for byte in raw:
        if byte == 0x22:
            piece = '\\"'
        elif byte == 0x5C:
            piece = "\\\\"
        elif 0x20 <= byte < 0x7F:
            piece = chr(byte)
        else:
            piece = f"\\x{byte:02x}"
        if size + len(piece) > limit:
            break
        out.append(piece)
        size += len(piece)
    return "".join(out)


_DIRECTIVE = re.compile(r"%(?:\{([^{}]{1,64})\}i|([aBbhmpqtuUrs%]))")


def _header_value(headers: Headers, name: str) -> bytes:
    if name.lower() in SECRET_HEADERS:
        return b"-"
    try:
        values = headers.getRawHeaders(name.encode("ascii"))
    except (UnicodeEncodeError, ValueError):
        values = None
    return b", ".join(values) if values else b"-"


def _expand(record: AccessRecord, header: str | None, letter: str | None) -> str:
    if header is not None:
        return escape_value(_header_value(record.headers, header))
    if letter == "%":
        return "%"
    if letter in ("a", "h"):
        return escape_value(record.remote.encode("utf-8", "replace"))
    if letter == "b":
        return str(record.body_bytes)
    if letter == "B":
        return str(record.body_bytes) if record.body_bytes else "-"
    if letter == "m":
        return escape_value(record.method or b"-")
    if letter == "p":
        return str(record.local_port) if record.local_port is not None else "-"
    if letter == "q":
        return escape_value(record.query)
    if letter == "t":
        return time.strftime("%H:%M:%S", time.localtime(record.time))
    if letter == "u":
        return escape_value(record.user.encode("utf-8")) if record.user else "-"
    if letter == "U":
        return escape_value(record.path or b"-")
    if letter == "r":
        parts = (escape_value(record.method or b"-"),
                 escape_value(record.path or b"-") + escape_value(record.query),
                 escape_value(record.version or b"-"))
        return " ".join(parts)
    return str(record.status) if record.status is not None else "-"


def format_entry(log_format: str, record: AccessRecord) -> str:
    """One access log line in the operator's format (see the module docstring)."""
    return _DIRECTIVE.sub(lambda m: _expand(record, m.group(1), m.group(2)), log_format)
