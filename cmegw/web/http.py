# -*- test-case-name: tests.test_web_http -*-
"""
The HTTP layer of the web administration, as the device's HTTP page describes it.

Public API:

``HttpStatistics``: counters of the HTTP / Statistics page: ``rx_bytes``,
``tx_bytes``, ``status_200``, ``status_400``, ``status_401``, ``status_404``,
``status_408``, ``status_413``, ``status_501``, ``status_unknown`` (any other
status), ``work_queue_full`` and ``memory_errors`` (always 0: cmegw has no such
limits), ``socket_errors`` (connections lost uncleanly, TLS failures
included); ``by_status`` (every status counted); ``as_dict()``, ``reset()``.

``AccessLog``: the scrolling log of the last Max Log Entries lines:
``entries`` (list of str, oldest first), ``bytes`` (their size, a newline
each), ``clear()``.

``format_entry(log_format, record) -> str``: one log line; the directives
``%a %b %B %h %{Header}i %m %p %q %t %u %U %r %s`` (and ``%%``), each expanded
value escaped (``"``, ``\\``, control and non-ASCII bytes as ``\\xHH``: no log
injection) and cut at 64 bytes (for ``%r``, each of its parts).  The headers
Authorization, Proxy-Authorization and Cookie are never logged (``-``).

``GatewaySite(resource, settings, stats, access_log, reactor=None)``: a
``Site`` whose connections enforce, from ``settings()`` (the running
``HttpConfig``, read per connection and request):
- Max Timeout: a request not received whole within ``max_timeout`` seconds of
  its start (or of the connection) gets 408 and the connection is closed; a
  slow trickle does not extend it.  An idle keep-alive connection is closed
  silently after the same time.
- Max Bytes: request line + headers + body (chunked bodies counted decoded)
  larger than ``max_bytes`` gets 413 (as soon as a Content-Length says so).
- A malformed request gets 400.  All three close the connection.
"""
