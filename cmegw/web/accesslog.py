# -*- test-case-name: tests.test_web_accesslog -*-
"""
The access log of the web administration (the HTTP page's Log tab).

``AccessLog``: the ring of the last Max Log Entries lines (and at most
`MAX_LOG_BYTES` of them): ``entries`` (list of str, oldest first),
``records`` (the same as `LogEntry`: the line with its time, status and
path), ``bytes`` (their size, a newline each), ``clear()``, and
``select(LogQuery)``: one page of the lines, newest first, filtered.

``format_entry(log_format, record) -> str``: one log line; the directives
``%a %b %B %h %{Header}i %m %p %q %t %u %U %r %s`` (and ``%%``), each expanded
value escaped (``"``, ``\\``, control and non-ASCII bytes as ``\\xHH``: no log
injection) and cut at `LOG_VALUE_LIMIT` bytes (for ``%r``, each of its
parts); ``%t`` is the local date and time.  The headers Authorization,
Proxy-Authorization and Cookie are never logged (``-``).  ``AccessRecord``
is what a line is made from.
"""

from __future__ import annotations

import collections
import re
import time
from typing import Any

import attrs
from twisted.web.http_headers import Headers

from cmegw.web.auth import authenticated_user

#: Each expanded log directive is cut at this many bytes (a whole request line fits).
LOG_VALUE_LIMIT = 1024
#: Request headers whose values are secrets and never logged.
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})
#: The most the log holds, whatever Max Log Entries says: the oldest lines go first beyond it.
MAX_LOG_BYTES = 4 * 1024 * 1024
#: The live updates of the pages (web/static/live.js) send this header with their fetches.
LIVE_HEADER = b"x-cmegw-live"
#: Paths of the static files (the stylesheet, scripts and icons every page loads).
STATIC_PREFIXES = ("/static/", "/favicon")
#: Lines shown per page of the Log tab.
LOG_PAGE_SIZE = 100


@attrs.frozen
class LogEntry:
    """One line of the access log, with what the Log tab filters on."""

    text: str
    time: float = 0.0
    status: int | None = None
    path: str = ""
    live: bool = False

    @property
    def static(self) -> bool:
        return self.path.startswith(STATIC_PREFIXES)

    def __str__(self) -> str:
        return self.text


@attrs.frozen
class LogQuery:
    """What the Log tab shows: which lines (hidden kinds, a search) and which page of them."""

    static: bool = False
    unauthorized: bool = False
    live: bool = False
    search: str = ""
    page: int = 1
    size: int = LOG_PAGE_SIZE

    def keeps(self, entry: LogEntry) -> bool:
        if not self.static and entry.static:
            return False
        if not self.unauthorized and entry.status == 401:
            return False
        if not self.live and entry.live:
            return False
        return not self.search or self.search.casefold() in entry.text.casefold()


@attrs.frozen
class LogPage:
    """One page of `AccessLog.select`: its lines (newest first), the page number, how many matched and hid."""

    entries: list[LogEntry]
    page: int
    pages: int
    matched: int
    hidden: int


@attrs.define
class AccessLog:
    """The last `max_entries` lines of the access log, at most `max_bytes` of them."""

    max_entries: int = 2000
    max_bytes: int = MAX_LOG_BYTES
    _lines: collections.deque[LogEntry] = attrs.field(init=False)
    _bytes: int = attrs.field(init=False, default=0)

    def __attrs_post_init__(self) -> None:
        self._lines = collections.deque()

    @property
    def entries(self) -> list[str]:
        return [entry.text for entry in self._lines]

    @property
    def records(self) -> list[LogEntry]:
        return list(self._lines)

    @property
    def bytes(self) -> int:
        return self._bytes

    def resize(self, max_entries: int) -> None:
        """Keep at most `max_entries` lines from now on (the newest stay)."""
        if max_entries != self.max_entries:
            self.max_entries = max_entries
            self._trim()

    def add(self, line: str, record: "AccessRecord | None" = None) -> None:
        """Add `line`, made from `record` (which says its time, status and path) when given."""
        if record is None:
            entry = LogEntry(line)
        else:
            entry = LogEntry(line, record.time, record.status, record.path.decode("utf-8", "replace"),
                             record.headers.hasHeader(LIVE_HEADER))
        self._lines.append(entry)
        self._bytes += _size(entry)
        self._trim()

    def _trim(self) -> None:
        while self._lines and (len(self._lines) > self.max_entries or self._bytes > self.max_bytes):
            self._bytes -= _size(self._lines.popleft())

    def clear(self) -> None:
        self._lines.clear()
        self._bytes = 0

    def select(self, query: LogQuery) -> LogPage:
        """The lines `query` keeps, newest first, cut to its page (the last page when it asks beyond)."""
        kept = [entry for entry in reversed(self._lines) if query.keeps(entry)]
        size = max(1, query.size)
        pages = max(1, -(-len(kept) // size))
        page = min(max(1, query.page), pages)
        return LogPage(kept[(page - 1) * size:page * size], page, pages, len(kept), len(self._lines) - len(kept))


def _size(entry: LogEntry) -> int:
    return len(entry.text.encode("utf-8")) + 1


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
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.time))
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
