"""
M-Bus (EN 13757): the gateway's link layer and everything above it on a line.

- L{frames}: telegrams (build, measure, parse) and L{address}: secondary
  addresses -- pure, no Twisted.
- L{records}: the data records of RSP_UD user data (decode, encode) -- pure.
- L{timing}: EN 13757-2 answer windows and timeouts at a baud rate -- pure.
- L{arbiter}: the bus arbiter, one transaction at a time on a line, with its
  transparent port for the tunnel (L{transparent}).
- L{master}: the gateway's own master (scans and reads), reporting L{results}.
- L{meterbus}: simulated meters on a pure bus; L{pacing}: the wire time of a
  simulated line (pure); L{simulator}: that bus on a pty, instant or paced;
  L{simprocess}: the gateway's built-in bus in a process of its own.

Importing this package imports none of them.
"""
