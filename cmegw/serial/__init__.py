"""Serial lines: the M-Bus adapters."""
